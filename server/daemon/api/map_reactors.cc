// Map and MapStream reactors.
//
// Lifetime: a MapJob may outlive its call (a worker can still hold a chunk), so the
// job wakes its reactor through a WakeToken. The reactor is reference-counted: gRPC
// holds one reference until OnDone, and each wake holds one while it runs, so the
// reactor is deleted only when both are over (a reactor deleted in OnDone while a
// wake runs would be a use-after-free).
#include "server/daemon/api/map_reactors.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/ids.h"
#include "common/packed_items.h"
#include "server/daemon/api/grpc_status.h"
#include "server/daemon/broker/map_job.h"

namespace forkpool {
namespace {

IdGenerator& MapIds() {
  static IdGenerator* ids = new IdGenerator();
  return *ids;
}

class Pumpable {
 public:
  virtual ~Pumpable() = default;
  virtual void Pump() = 0;
  void Ref() { refs_.fetch_add(1); }
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

 private:
  std::atomic<int> refs_{1};  // gRPC's, dropped in OnDone
};

// Shared by a reactor and its job's wake callback.
struct WakeToken {
  absl::Mutex mu;
  Pumpable* target ABSL_GUARDED_BY(mu) = nullptr;
  std::atomic<bool> posted{false};

  // Runs target->Pump() unless the reactor is done; holds a reference meanwhile.
  void Wake() {
    Pumpable* t;
    {
      absl::MutexLock lock(&mu);
      t = target;
      if (t == nullptr) return;
      t->Ref();
    }
    t->Pump();
    t->Unref();
  }
  void Detach() {
    absl::MutexLock lock(&mu);
    target = nullptr;
  }
};

// The writing half shared by both reactors. `Base` is the gRPC reactor type.
template <typename Base>
class MapWriter : public Base, public Pumpable {
 public:
  MapWriter(TaskBroker* broker, IoLoop* loop)
      : broker_(broker), loop_(loop), token_(std::make_shared<WakeToken>()) {
    absl::MutexLock lock(&token_->mu);
    token_->target = this;
  }

  // Takes the next batch and writes it, or finishes the call. Any thread; never
  // called with the broker's lock held (job wakes go through the loop).
  void Pump() override {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || finished_) return;
      if (!error_.ok()) {
        finish = ToGrpcStatus(error_);
      } else if (cancelled_) {
        finish = grpc::Status(grpc::StatusCode::CANCELLED, "map cancelled by the client");
      } else if (job_ != nullptr) {
        if (std::optional<v1::MapResponse> batch = job_->TakeBatch()) {
          out_ = std::move(*batch);
          if (out_.total() > 0) total_sent_ = true;
          writing_ = true;
        } else if (job_->Finished()) {
          if (!total_sent_ && job_->accepted() > 0) {
            // Every result left before the inputs ended: one last (empty) response
            // tells the client the total.
            out_.Clear();
            out_.set_done(job_->accepted());
            out_.set_total(job_->accepted());
            total_sent_ = true;
            writing_ = true;
          } else {
            finish = grpc::Status::OK;
          }
        } else {
          return;
        }
      } else {
        return;
      }
      if (finish) finished_ = true;
    }
    if (finish) {
      this->Finish(*finish);
    } else {
      this->StartWrite(&out_);
    }
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;  // the client is gone
    }
    if (!ok) CancelJob();
    AfterWrite();
    Pump();
  }

  void OnCancel() override {
    CancelJob();
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
    }
    Pump();
  }

  void OnDone() override {
    token_->Detach();
    Unref();
  }

 protected:
  // A wake from the job: coalesced, and run on the loop thread so that it never runs
  // under the broker's lock (which the job's results are added under).
  std::shared_ptr<MapJob> MakeJob(const std::string& pool, const std::string& function,
                                  const std::string& codec, bool ordered) {
    std::shared_ptr<WakeToken> token = token_;
    IoLoop* loop = loop_;
    return std::make_shared<MapJob>(MapIds().Next("m"), pool, function, codec, ordered,
                                    [token, loop] {
                                      if (token->posted.exchange(true)) return;
                                      loop->Post([token] {
                                        token->posted.store(false);
                                        token->Wake();
                                      });
                                    });
  }

  // Ends the call with `status` once no write is in flight; cancels the job.
  void Fail(const absl::Status& status) {
    CancelJob();
    {
      absl::MutexLock lock(&mu_);
      if (error_.ok()) error_ = status;
    }
    Pump();
  }

  void CancelJob() {
    std::shared_ptr<MapJob> job;
    {
      absl::MutexLock lock(&mu_);
      job = job_;
    }
    if (job != nullptr && !job->cancelled()) broker_->CancelMap(job);
  }

  void SetJob(std::shared_ptr<MapJob> job) {
    absl::MutexLock lock(&mu_);
    job_ = std::move(job);
  }
  std::shared_ptr<MapJob> job() {
    absl::MutexLock lock(&mu_);
    return job_;
  }

  // Called after each write completes (the stream reactor reads more then).
  virtual void AfterWrite() {}

  TaskBroker* const broker_;
  IoLoop* const loop_;

 private:
  std::shared_ptr<WakeToken> token_;
  absl::Mutex mu_;
  std::shared_ptr<MapJob> job_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool total_sent_ ABSL_GUARDED_BY(mu_) = false;  // a response carried the total
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  v1::MapResponse out_;  // the write in flight
};

class MapReactor final : public MapWriter<grpc::ServerWriteReactor<v1::MapResponse>> {
 public:
  MapReactor(TaskBroker* broker, IoLoop* loop, const v1::MapRequest* request)
      : MapWriter(broker, loop) {
    std::shared_ptr<MapJob> job =
        MakeJob(request->pool(), request->function(), request->codec(), request->ordered());
    job->set_options(request->options());
    SetJob(job);
    // The request, and so the inputs the chunks point into, lives until OnDone.
    absl::Status s = broker_->StartMap(job, request->inputs(), request->chunksize());
    if (!s.ok()) {
      Fail(s);
      return;
    }
    Pump();
  }
};

class MapStreamReactor final
    : public MapWriter<grpc::ServerBidiReactor<v1::MapStreamRequest, v1::MapResponse>> {
 public:
  MapStreamReactor(TaskBroker* broker, IoLoop* loop) : MapWriter(broker, loop) {
    reading_ = true;
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    // Take what this read brought out of in_ and only then allow the next read:
    // a Feed() on another thread (after a write) may start one at once, and gRPC
    // then writes into in_.
    v1::MapStreamRequest::KindCase kind = v1::MapStreamRequest::KIND_NOT_SET;
    v1::MapStreamOpen open;
    absl::Status bad_inputs;
    {
      absl::MutexLock lock(&feed_mu_);
      if (ok) {
        kind = in_.kind_case();
        if (kind == v1::MapStreamRequest::kInputs) {
          // Indexed once here; chunks then point into these bytes.
          absl::StatusOr<std::shared_ptr<const PackedItems>> items =
              PackedItems::Own(std::move(*in_.mutable_inputs()->mutable_inputs()),
                               broker_->max_input_bytes(), "MapStream inputs");
          if (!items.ok()) {
            bad_inputs = items.status();
          } else if ((*items)->size() > 0) {
            pending_.push_back(PendingInputs{*std::move(items), 0});
          }
        } else if (kind == v1::MapStreamRequest::kOpen) {
          open = std::move(*in_.mutable_open());
        }
        in_.Clear();
      }
      reading_ = false;
    }
    if (!bad_inputs.ok()) {
      Fail(bad_inputs);
      return;
    }
    if (!ok) {
      // The client half-closed (or left): no more inputs.
      if (job() == nullptr) {
        Fail(absl::InvalidArgumentError("MapStream closed before its open message"));
        return;
      }
      EndInputs();
      return;
    }
    switch (kind) {
      case v1::MapStreamRequest::kOpen: {
        if (job() != nullptr) {
          Fail(absl::InvalidArgumentError("MapStream got a second open message"));
          return;
        }
        {
          absl::MutexLock lock(&feed_mu_);
          chunksize_ = open.chunksize();
          window_ = open.window() == 0 ? kDefaultMapWindow : open.window();
        }
        std::shared_ptr<MapJob> job =
            MakeJob(open.pool(), open.function(), open.codec(), open.ordered());
        job->set_options(open.options());
        absl::Status s = broker_->OpenMap(job);
        if (!s.ok()) {
          Fail(s);
          return;
        }
        SetJob(job);
        Feed();
        return;
      }
      case v1::MapStreamRequest::kInputs:
        if (job() == nullptr) {
          Fail(absl::InvalidArgumentError("MapStream inputs came before its open message"));
          return;
        }
        Feed();
        return;
      case v1::MapStreamRequest::kEnd:
        if (job() == nullptr) {
          Fail(absl::InvalidArgumentError("MapStream ended before its open message"));
          return;
        }
        EndInputs();
        return;
      default:
        Fail(absl::InvalidArgumentError(
            absl::StrCat("MapStream message of unknown kind ", static_cast<int>(kind))));
        return;
    }
  }

 private:
  void AfterWrite() override { Feed(); }

  void EndInputs() {
    {
      absl::MutexLock lock(&feed_mu_);
      input_closed_ = true;
    }
    Feed();
    Pump();
  }

  // Hands buffered inputs to the broker while the window has room, then reads
  // more once the buffer is empty. Called after reads and after writes.
  void Feed() {
    std::shared_ptr<MapJob> j = job();
    if (j == nullptr || j->cancelled()) return;
    bool read_more = false;
    absl::Status status;
    bool end_now = false;
    {
      absl::MutexLock lock(&feed_mu_);
      const uint64_t inflight = j->InFlight();
      size_t room = inflight < window_ ? window_ - inflight : 0;
      while (room > 0 && !pending_.empty() && status.ok()) {
        PendingInputs& front = pending_.front();
        const size_t n = std::min(room, front.items->size() - front.next);
        status = broker_->AddMapInputs(j, front.items, front.next, front.next + n, chunksize_);
        front.next += n;
        room -= n;
        if (front.next == front.items->size()) pending_.pop_front();
      }
      if (pending_.empty() && input_closed_ && !end_sent_) {
        end_sent_ = true;
        end_now = true;
      }
      if (status.ok() && pending_.empty() && !input_closed_ && !reading_ &&
          j->InFlight() < window_ && j->InFlightBytes() < kMaxMapStreamBytes) {
        reading_ = true;
        read_more = true;
      }
    }
    if (!status.ok()) {
      Fail(status);
      return;
    }
    if (end_now) {
      j->AddAccepted(0, /*end=*/true);
      Pump();
    }
    if (read_more) StartRead(&in_);
  }

  // A MapInputs message's items, of which those from `next` on wait for room in the
  // window.
  struct PendingInputs {
    std::shared_ptr<const PackedItems> items;
    size_t next = 0;
  };

  v1::MapStreamRequest in_;  // the read in flight
  absl::Mutex feed_mu_;
  std::deque<PendingInputs> pending_ ABSL_GUARDED_BY(feed_mu_);
  bool reading_ ABSL_GUARDED_BY(feed_mu_) = false;
  bool input_closed_ ABSL_GUARDED_BY(feed_mu_) = false;
  bool end_sent_ ABSL_GUARDED_BY(feed_mu_) = false;
  uint32_t chunksize_ ABSL_GUARDED_BY(feed_mu_) = 0;
  uint32_t window_ ABSL_GUARDED_BY(feed_mu_) = kDefaultMapWindow;
};

}  // namespace

grpc::ServerWriteReactor<v1::MapResponse>* NewMapReactor(TaskBroker* broker, IoLoop* loop,
                                                         const v1::MapRequest* request) {
  return new MapReactor(broker, loop, request);
}

grpc::ServerBidiReactor<v1::MapStreamRequest, v1::MapResponse>* NewMapStreamReactor(
    TaskBroker* broker, IoLoop* loop) {
  return new MapStreamReactor(broker, loop);
}

}  // namespace forkpool
