// QueueService implementation: unary calls and the many-operations stream.
#include "server/daemon/api/queue_service.h"

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/text_limit.h"
#include "server/daemon/api/deferred_reactor.h"
#include "server/daemon/api/grpc_status.h"
#include "server/daemon/broker/task_options.h"
#include "server/daemon/net/peer_connection.h"

namespace forkpool {
namespace {

absl::Duration ToDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// A get's lease: a valid Duration (ValidateDuration); its bound is the
// QueueManager's.
absl::StatusOr<absl::Duration> LeaseOf(const v1::QueueGetRequest& request) {
  FORKPOOL_RETURN_IF_ERROR(ValidateDuration(request.lease(), "lease"));
  return ToDuration(request.lease());
}

// A stream operation's status, its message as ToGrpcStatus would send it.
void SetStatus(const absl::Status& status, v1::QueueStreamResponse* message) {
  message->set_code(static_cast<int>(status.code()));
  if (!status.ok()) {
    const absl::string_view text = status.message();
    message->set_message(
        CapText(std::string_view(text.data(), text.size()), kMaxStatusMessageBytes));
  }
}

std::vector<StoredItem> PlainItems(const std::vector<v1::QueueItem>& items) {
  std::vector<StoredItem> plain;
  for (const v1::QueueItem& item : items) {
    if (item.lease_id().empty()) plain.push_back(StoredItem{item.payload(), item.delivery_count()});
  }
  return plain;
}

// A unary get. Plain items leave the queue when their reply is handed to gRPC; if
// the call turns out cancelled when it is done (the client died before the reply
// went out), they go back to the front.
class GetReactor : public grpc::ServerUnaryReactor {
 public:
  GetReactor(QueueManager* queues, const PeerRegistry* peers, grpc::CallbackServerContext* ctx,
             std::string queue)
      : queues_(queues),
        peers_(peers),
        ctx_(ctx),
        queue_(std::move(queue)),
        claim_(std::make_shared<CallClaim>()),
        waiter_(std::make_shared<std::atomic<uint64_t>>(0)) {}

  void Start(const v1::QueueGetRequest& request, v1::QueueGetResponse* response,
             absl::Duration timeout, absl::Duration lease) {
    std::shared_ptr<CallClaim> claim = claim_;
    GetReactor* self = this;
    // The reply may be finished (and this reactor deleted) inside Get: keep only a
    // shared handle to store the waiter id through.
    std::shared_ptr<std::atomic<uint64_t>> waiter = waiter_;
    waiter->store(0);
    const uint64_t id = queues_->Get(
        queue_, request.max_items(), timeout, lease,
        [claim, self, response](absl::StatusOr<std::vector<v1::QueueItem>> items) {
          if (!claim->Claim()) return false;
          if (items.ok() && !items->empty() && ClientGone(self->ctx_->peer(), self->peers_)) {
            // Its client died while it waited: the items stay queued.
            self->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client has gone"));
            return false;
          }
          if (!items.ok()) {
            self->Finish(ToGrpcStatus(items.status()));
            return true;
          }
          response->set_empty(items->empty());
          self->delivered_ = PlainItems(*items);
          for (auto& item : *items) {
            *response->add_items() = std::move(item);
          }
          self->Finish(grpc::Status::OK);
          return true;
        });
    waiter->store(id);
  }

  void OnCancel() override {
    if (!claim_->Claim()) return;
    queues_->CancelWaiter(queue_, waiter_->load());
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "queue get cancelled by the client"));
  }

  void OnDone() override {
    // gRPC says the reply did not go out: the items go back. (Asking the connection
    // here would be wrong: a quick client may have read the reply and closed already.)
    // A client that dies after the hand-over, before it reads the reply, loses the
    // item: plain gets are at most once (docs/queues.md); leased gets are the
    // at-least-once path.
    if (!delivered_.empty() && ctx_->IsCancelled()) {
      queues_->Requeue(queue_, std::move(delivered_));
    }
    delete this;
  }

 private:
  QueueManager* const queues_;
  const PeerRegistry* const peers_;
  grpc::CallbackServerContext* const ctx_;
  const std::string queue_;
  std::shared_ptr<CallClaim> claim_;
  std::shared_ptr<std::atomic<uint64_t>> waiter_;
  std::vector<StoredItem> delivered_;
};

// Many single operations on one stream, each answered with its correlation id as it
// completes. Blocked gets on the stream do not hold up other operations. At most
// `max_blocked` operations wait at once; a correlation id may be reused once its
// operation has been answered, not while it is in flight.
class QueueStreamReactor
    : public grpc::ServerBidiReactor<v1::QueueStreamRequest, v1::QueueStreamResponse> {
 public:
  QueueStreamReactor(QueueManager* queues, grpc::CallbackServerContext* ctx, int max_blocked)
      : queues_(queues), ctx_(ctx), max_blocked_(max_blocked), state_(std::make_shared<State>()) {
    state_->reactor = this;
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      {
        absl::MutexLock lock(&state_->mu);
        state_->read_closed = true;
      }
      Pump(state_);
      return;
    }
    Handle(in_);
    {
      absl::MutexLock lock(&state_->mu);
      // Backpressure: stop reading while many answers wait to be written.
      if (state_->out.size() >= kMaxQueuedAnswers) {
        state_->read_paused = true;
        return;
      }
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    bool resume = false;
    {
      absl::MutexLock lock(&state_->mu);
      state_->writing = false;
      if (!ok) {
        // The answer never left: its plain items go back.
        state_->cancelled = true;
        RequeueLocked(std::move(state_->current));
      }
      state_->current = Pending{};
      if (state_->read_paused && state_->out.size() < kMaxQueuedAnswers && !state_->cancelled) {
        state_->read_paused = false;
        resume = true;
      }
    }
    if (resume) StartRead(&in_);
    Pump(state_);
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&state_->mu);
      state_->cancelled = true;
    }
    Pump(state_);
  }

  void OnDone() override {
    std::vector<Pending> lost;
    {
      absl::MutexLock lock(&state_->mu);
      state_->reactor = nullptr;
      for (auto& p : state_->out) lost.push_back(std::move(p));
      state_->out.clear();
      for (auto& p : state_->requeue) lost.push_back(std::move(p));
      state_->requeue.clear();
    }
    for (auto& p : lost) {
      if (!p.plain.empty()) queues_->Requeue(p.queue, std::move(p.plain));
    }
    delete this;
  }

 private:
  static constexpr size_t kMaxQueuedAnswers = 1024;

  struct Pending {
    v1::QueueStreamResponse message;
    std::string queue;
    std::vector<StoredItem> plain;
  };
  // Shared with the QueueManager's callbacks, which may run after OnDone.
  struct State {
    absl::Mutex mu;
    QueueStreamReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
    std::deque<Pending> out ABSL_GUARDED_BY(mu);
    std::vector<Pending> requeue ABSL_GUARDED_BY(mu);
    Pending current ABSL_GUARDED_BY(mu);  // the write in flight
    bool writing ABSL_GUARDED_BY(mu) = false;
    bool finished ABSL_GUARDED_BY(mu) = false;
    bool read_closed ABSL_GUARDED_BY(mu) = false;
    bool read_paused ABSL_GUARDED_BY(mu) = false;
    bool cancelled ABSL_GUARDED_BY(mu) = false;
    int outstanding ABSL_GUARDED_BY(mu) = 0;  // operations not yet answered
    // The operations not yet answered, by correlation id: their queue and, once the
    // QueueManager has made them wait, their waiter id (0 before).
    std::map<uint64_t, std::pair<std::string, uint64_t>> in_flight ABSL_GUARDED_BY(mu);
    // Entries of in_flight with a waiter id.
    int blocked ABSL_GUARDED_BY(mu) = 0;
  };

  void RequeueLocked(Pending p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->mu) {
    if (!p.plain.empty()) state_->requeue.push_back(std::move(p));
  }

  // Queues the answer of an operation in flight; false if the stream is over (the
  // caller keeps its items).
  static bool Answer(const std::shared_ptr<State>& state, Pending p) {
    {
      absl::MutexLock lock(&state->mu);
      --state->outstanding;
      auto it = state->in_flight.find(p.message.correlation_id());
      if (it != state->in_flight.end()) {
        if (it->second.second != 0) --state->blocked;
        state->in_flight.erase(it);
      }
      if (state->reactor == nullptr || state->finished || state->cancelled) return false;
      state->out.push_back(std::move(p));
    }
    Pump(state);
    return true;
  }

  // Starts the next write, or finishes the call when nothing is left. Any thread.
  static void Pump(const std::shared_ptr<State>& state) {
    QueueStreamReactor* r = nullptr;
    bool finish = false, write = false;
    std::vector<std::pair<std::string, uint64_t>> to_cancel;
    std::vector<Pending> requeue;
    {
      absl::MutexLock lock(&state->mu);
      r = state->reactor;
      if (r == nullptr || state->finished || state->writing) return;
      if (state->cancelled) {
        for (auto& [corr, w] : state->in_flight) {
          if (w.second != 0) to_cancel.push_back(w);
        }
        state->in_flight.clear();
        state->blocked = 0;
        for (auto& p : state->out) requeue.push_back(std::move(p));
        state->out.clear();
        for (auto& p : state->requeue) requeue.push_back(std::move(p));
        state->requeue.clear();
        state->finished = true;
        finish = true;
      } else if (!state->out.empty()) {
        state->current = std::move(state->out.front());
        state->out.pop_front();
        state->writing = true;
        write = true;
      } else if (state->read_closed && state->outstanding == 0) {
        state->finished = true;
        finish = true;
      }
    }
    for (auto& [queue, id] : to_cancel) r->queues_->CancelWaiter(queue, id);
    for (auto& p : requeue) {
      if (!p.plain.empty()) r->queues_->Requeue(p.queue, std::move(p.plain));
    }
    if (write) {
      // current is only touched again after OnWriteDone.
      r->StartWrite(&r->state_->current.message);
    } else if (finish) {
      r->Finish(state->cancelled ? grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled")
                                 : grpc::Status::OK);
    }
  }

  // Answers an operation that was never in flight (a repeated correlation id), leaving
  // the bookkeeping of the one in flight alone.
  static void Refuse(const std::shared_ptr<State>& state, uint64_t corr, const absl::Status& s) {
    {
      absl::MutexLock lock(&state->mu);
      if (state->reactor == nullptr || state->finished || state->cancelled) return;
      Pending p;
      p.message.set_correlation_id(corr);
      SetStatus(s, &p.message);
      state->out.push_back(std::move(p));
    }
    Pump(state);
  }

  // Records waiter `id` (0: none) of operation `corr` while that is in flight. If it
  // is not (answered meanwhile, or the stream was cancelled before the id was known),
  // withdraws the waiter: harmless when it was served, and no waiter outlives a
  // cancelled stream.
  void Waiting(uint64_t corr, const std::string& queue, uint64_t id) {
    if (id == 0) return;
    {
      absl::MutexLock lock(&state_->mu);
      auto it = state_->in_flight.find(corr);
      if (it != state_->in_flight.end()) {
        it->second.second = id;
        ++state_->blocked;
        return;
      }
    }
    queues_->CancelWaiter(queue, id);
  }

  void Handle(const v1::QueueStreamRequest& req) {
    const uint64_t corr = req.correlation_id();
    std::shared_ptr<State> state = state_;
    std::string queue;
    switch (req.op_case()) {
      case v1::QueueStreamRequest::kPut:
        queue = req.put().queue();
        break;
      case v1::QueueStreamRequest::kGet:
        queue = req.get().queue();
        break;
      case v1::QueueStreamRequest::kAck:
        queue = req.ack().queue();
        break;
      default:
        break;
    }
    // Whether this operation may wait: only this thread (the stream's reads come one
    // at a time) adds waiters, so the count cannot pass the cap.
    absl::Status refuse_wait;
    bool repeated = false;
    {
      absl::MutexLock lock(&state->mu);
      // Cancelled meanwhile: its waiters were withdrawn; start nothing new.
      if (state->cancelled || state->finished) return;
      repeated = !state->in_flight.emplace(corr, std::make_pair(queue, uint64_t{0})).second;
      if (!repeated) {
        ++state->outstanding;
        if (state->blocked >= max_blocked_) {
          refuse_wait = absl::ResourceExhaustedError(absl::StrCat(
              "this stream already has ", state->blocked,
              " blocked operations, the most one stream may have (--max_blocked_per_stream=",
              max_blocked_, "); wait for some to be answered, or give this one a timeout of 0"));
        }
      }
    }
    if (repeated) {
      Refuse(state, corr,
             absl::InvalidArgumentError(absl::StrCat(
                 "correlation_id ", corr,
                 " is already in flight on this stream; an id may be reused only after its "
                 "operation has been answered")));
      return;
    }
    auto fail = [&](const absl::Status& s) {
      Pending p;
      p.message.set_correlation_id(corr);
      SetStatus(s, &p.message);
      Answer(state, std::move(p));
    };
    switch (req.op_case()) {
      case v1::QueueStreamRequest::kPut: {
        const v1::PutRequest& put = req.put();
        absl::StatusOr<absl::Duration> deadline =
            WaitTimeout(put.has_timeout(), put.timeout(), *ctx_);
        if (!deadline.ok()) return fail(deadline.status());
        std::vector<v1::Payload> items(put.items().begin(), put.items().end());
        const uint64_t id = queues_->Put(
            queue, std::move(items), *deadline,
            [state, corr](absl::Status s, bool full) {
              Pending p;
              p.message.set_correlation_id(corr);
              SetStatus(s, &p.message);
              if (s.ok()) p.message.mutable_put()->set_full(full);
              Answer(state, std::move(p));
            },
            refuse_wait);
        Waiting(corr, queue, id);
        return;
      }
      case v1::QueueStreamRequest::kGet: {
        const v1::QueueGetRequest& get = req.get();
        absl::StatusOr<absl::Duration> deadline =
            WaitTimeout(get.has_timeout(), get.timeout(), *ctx_);
        if (!deadline.ok()) return fail(deadline.status());
        absl::StatusOr<absl::Duration> lease = LeaseOf(get);
        if (!lease.ok()) return fail(lease.status());
        const uint64_t id = queues_->Get(
            queue, get.max_items(), *deadline, *lease,
            [state, corr, queue](absl::StatusOr<std::vector<v1::QueueItem>> items) {
              Pending p;
              p.message.set_correlation_id(corr);
              p.queue = queue;
              if (!items.ok()) {
                SetStatus(items.status(), &p.message);
              } else {
                p.plain = PlainItems(*items);
                auto* r = p.message.mutable_get();
                r->set_empty(items->empty());
                for (auto& item : *items) *r->add_items() = std::move(item);
              }
              return Answer(state, std::move(p));
            },
            refuse_wait);
        Waiting(corr, queue, id);
        return;
      }
      case v1::QueueStreamRequest::kAck: {
        const v1::AckRequest& ack = req.ack();
        std::vector<std::string> ids(ack.lease_ids().begin(), ack.lease_ids().end());
        absl::StatusOr<std::vector<std::string>> unknown = queues_->Ack(queue, ids);
        if (!unknown.ok()) return fail(unknown.status());
        Pending p;
        p.message.set_correlation_id(corr);
        for (auto& id : *unknown) p.message.mutable_ack()->add_unknown(std::move(id));
        if (!p.message.has_ack()) p.message.mutable_ack();
        Answer(state, std::move(p));
        return;
      }
      default:
        return fail(absl::InvalidArgumentError(absl::StrCat(
            "queue stream operation of unknown kind ", static_cast<int>(req.op_case()))));
    }
  }

  QueueManager* const queues_;
  grpc::CallbackServerContext* const ctx_;
  const int max_blocked_;
  std::shared_ptr<State> state_;
  v1::QueueStreamRequest in_;
};

}  // namespace

grpc::ServerUnaryReactor* QueueService::CreateQueue(grpc::CallbackServerContext* ctx,
                                                    const v1::CreateQueueRequest* request,
                                                    v1::QueueInfo* response) {
  absl::StatusOr<v1::QueueInfo> info =
      queues_->Create(request->name(), request->maxsize(), request->exist_ok());
  if (info.ok()) *response = std::move(*info);
  return Answer(ctx, info.status());
}

grpc::ServerUnaryReactor* QueueService::DeleteQueue(grpc::CallbackServerContext* ctx,
                                                    const v1::DeleteQueueRequest* request,
                                                    v1::DeleteQueueResponse*) {
  return Answer(ctx, queues_->Delete(request->name()));
}

grpc::ServerUnaryReactor* QueueService::ListQueues(grpc::CallbackServerContext* ctx,
                                                   const v1::ListQueuesRequest*,
                                                   v1::ListQueuesResponse* response) {
  for (auto& info : queues_->List()) *response->add_queues() = std::move(info);
  return Answer(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* QueueService::Size(grpc::CallbackServerContext* ctx,
                                             const v1::SizeRequest* request,
                                             v1::QueueInfo* response) {
  absl::StatusOr<v1::QueueInfo> info = queues_->Info(request->queue());
  if (info.ok()) *response = std::move(*info);
  return Answer(ctx, info.status());
}

grpc::ServerUnaryReactor* QueueService::Ack(grpc::CallbackServerContext* ctx,
                                            const v1::AckRequest* request,
                                            v1::AckResponse* response) {
  std::vector<std::string> ids(request->lease_ids().begin(), request->lease_ids().end());
  absl::StatusOr<std::vector<std::string>> unknown = queues_->Ack(request->queue(), ids);
  if (unknown.ok()) {
    for (auto& id : *unknown) response->add_unknown(std::move(id));
  }
  return Answer(ctx, unknown.status());
}

grpc::ServerUnaryReactor* QueueService::Put(grpc::CallbackServerContext* ctx,
                                            const v1::PutRequest* request,
                                            v1::PutResponse* response) {
  absl::StatusOr<absl::Duration> deadline =
      WaitTimeout(request->has_timeout(), request->timeout(), *ctx);
  if (!deadline.ok()) return Answer(ctx, deadline.status());
  auto* reactor = new DeferredReactor();
  auto claim = reactor->claim();
  auto waiter = std::make_shared<std::atomic<uint64_t>>(0);
  QueueManager* queues = queues_;
  const std::string queue = request->queue();
  reactor->set_on_cancel([=] {
    if (!claim->Claim()) return;
    queues->CancelWaiter(queue, waiter->load());
    reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "queue put cancelled by the client"));
  });
  std::vector<v1::Payload> items(request->items().begin(), request->items().end());
  waiter->store(queues_->Put(queue, std::move(items), *deadline, [=](absl::Status s, bool full) {
    if (!claim->Claim()) return;
    response->set_full(full);
    reactor->Finish(ToGrpcStatus(s));
  }));
  return reactor;
}

grpc::ServerUnaryReactor* QueueService::Get(grpc::CallbackServerContext* ctx,
                                            const v1::QueueGetRequest* request,
                                            v1::QueueGetResponse* response) {
  absl::StatusOr<absl::Duration> deadline =
      WaitTimeout(request->has_timeout(), request->timeout(), *ctx);
  if (!deadline.ok()) return Answer(ctx, deadline.status());
  absl::StatusOr<absl::Duration> lease = LeaseOf(*request);
  if (!lease.ok()) return Answer(ctx, lease.status());
  auto* reactor = new GetReactor(queues_, peers_, ctx, request->queue());
  reactor->Start(*request, response, *deadline, *lease);
  return reactor;
}

grpc::ServerBidiReactor<v1::QueueStreamRequest, v1::QueueStreamResponse>* QueueService::Stream(
    grpc::CallbackServerContext* ctx) {
  return new QueueStreamReactor(queues_, ctx, max_blocked_per_stream_);
}

}  // namespace forkpool
