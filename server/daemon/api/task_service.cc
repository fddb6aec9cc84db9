// TaskService implementation.
#include "server/daemon/api/task_service.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/daemon/api/deferred_reactor.h"
#include "server/daemon/api/grpc_status.h"
#include "server/daemon/api/map_reactors.h"
#include "server/daemon/api/result_reply.h"

namespace forkpool {
namespace {

// Results a Wait answers with, at most (below the 4 MiB clients accept by default).
constexpr size_t kMaxWaitResultBytes = 3u << 20;

}  // namespace

grpc::ServerUnaryReactor* TaskService::Submit(grpc::CallbackServerContext* ctx,
                                              const v1::SubmitRequest* request,
                                              v1::SubmitResponse* response) {
  absl::StatusOr<SubmitOutcome> out = broker_->Submit(request->task(), SubmitMode::kDetached);
  if (out.ok()) {
    response->set_task_id(out->task_id);
    response->set_deduplicated(out->deduplicated);
  }
  return Answer(ctx, out.status());
}

grpc::ServerUnaryReactor* TaskService::SubmitMany(grpc::CallbackServerContext* ctx,
                                                  const v1::SubmitManyRequest* request,
                                                  v1::SubmitManyResponse* response) {
  absl::StatusOr<std::vector<std::string>> ids = broker_->SubmitMany(*request);
  if (ids.ok()) {
    for (auto& id : *ids) response->add_task_ids(std::move(id));
  }
  return Answer(ctx, ids.status());
}

grpc::ServerUnaryReactor* TaskService::Cancel(grpc::CallbackServerContext* ctx,
                                              const v1::CancelRequest* request,
                                              v1::CancelResponse* response) {
  absl::StatusOr<v1::CancelResponse> r =
      broker_->Cancel(request->task_id(), "cancelled by a client");
  if (r.ok()) *response = *r;
  return Answer(ctx, r.status());
}

grpc::ServerUnaryReactor* TaskService::Apply(grpc::CallbackServerContext* ctx,
                                             const v1::ApplyRequest* request,
                                             v1::ApplyResponse* response) {
  absl::StatusOr<SubmitOutcome> submitted = broker_->Submit(request->task(), SubmitMode::kTied);
  if (!submitted.ok()) return Answer(ctx, submitted.status());
  const std::string id = submitted->task_id;
  auto* reactor = new DeferredReactor();
  auto claim = reactor->claim();
  auto waiter_id = std::make_shared<std::atomic<uint64_t>>(0);
  TaskBroker* broker = broker_;
  // Tied to the call: a client that leaves cancels the task.
  reactor->set_on_cancel([=] {
    if (!claim->Claim()) return;
    broker->Unwatch(id, waiter_id->load());
    // Cancelled only if no other caller (a retry by key) still wants it.
    broker->CallerLeft(id);
    reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "Apply cancelled by the client"));
  });
  uint64_t wid = 0;
  absl::StatusOr<std::shared_ptr<const v1::TaskResult>> now = broker_->Watch(
      id,
      [=](std::shared_ptr<const v1::TaskResult> result) {
        if (!claim->Claim()) return;
        *response->mutable_result() = *result;
        reactor->Finish(grpc::Status::OK);
      },
      &wid);
  waiter_id->store(wid);
  if (!now.ok()) {
    reactor->FinishOnce(ToGrpcStatus(now.status()));
  } else if (*now != nullptr) {
    if (claim->Claim()) {
      *response->mutable_result() = **now;
      reactor->Finish(grpc::Status::OK);
    }
  }
  return reactor;
}

grpc::ServerUnaryReactor* TaskService::Get(grpc::CallbackServerContext* ctx,
                                           const grpc::ByteBuffer* request_bytes,
                                           grpc::ByteBuffer* response) {
  // Raw bytes in and out: the reply carries the result's output as a slice of
  // the broker's one copy (ResultReply), however many wait for it.
  v1::GetRequest request_msg;
  {
    std::vector<grpc::Slice> slices;
    std::string bytes;
    if (request_bytes->Dump(&slices).ok()) {
      for (const grpc::Slice& slice : slices) {
        bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
      }
    }
    if (!request_msg.ParseFromString(bytes)) {
      return Answer(ctx, absl::InvalidArgumentError("malformed GetRequest"));
    }
  }
  const v1::GetRequest* request = &request_msg;
  absl::StatusOr<absl::Duration> wait =
      WaitTimeout(request->has_timeout(), request->timeout(), *ctx);
  if (!wait.ok()) return Answer(ctx, wait.status());
  const std::string id = request->task_id();
  if (*wait <= absl::ZeroDuration()) {
    absl::StatusOr<std::shared_ptr<const v1::TaskResult>> r = broker_->GetResult(id);
    if (r.ok()) *response = GetResponseBytes(IsTerminal((*r)->state()), *r);
    return Answer(ctx, r.status());
  }

  auto* reactor = new DeferredReactor();
  auto claim = reactor->claim();
  auto waiter_id = std::make_shared<std::atomic<uint64_t>>(0);
  auto timer = std::make_shared<std::atomic<IoLoop::TimerId>>(0);
  TaskBroker* broker = broker_;
  IoLoop* loop = loop_;
  reactor->set_on_cancel([=] {
    if (!claim->Claim()) return;
    broker->Unwatch(id, waiter_id->load());
    loop->CancelTimer(timer->load());
    reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "Get cancelled by the client"));
  });
  uint64_t wid = 0;
  absl::StatusOr<std::shared_ptr<const v1::TaskResult>> now = broker_->Watch(
      id,
      [=](std::shared_ptr<const v1::TaskResult> result) {
        if (!claim->Claim()) return;
        loop->CancelTimer(timer->load());
        *response = GetResponseBytes(true, std::move(result));
        reactor->Finish(grpc::Status::OK);
      },
      &wid);
  waiter_id->store(wid);
  if (!now.ok()) {
    reactor->FinishOnce(ToGrpcStatus(now.status()));
    return reactor;
  }
  if (*now != nullptr) {
    if (claim->Claim()) {
      *response = GetResponseBytes(true, *now);
      reactor->Finish(grpc::Status::OK);
    }
    return reactor;
  }
  if (*wait != absl::InfiniteDuration()) {
    timer->store(loop_->AddTimerAfter(*wait, [=] {
      if (!claim->Claim()) return;
      broker->Unwatch(id, waiter_id->load());
      // Not ready is an answer, not an error; the task keeps running.
      absl::StatusOr<std::shared_ptr<const v1::TaskResult>> r = broker->GetResult(id);
      if (r.ok()) *response = GetResponseBytes(IsTerminal((*r)->state()), *r);
      reactor->Finish(ToGrpcStatus(r.status()));
    }));
    // The waiter may have won before the timer existed.
    if (claim->claimed.load()) loop_->CancelTimer(timer->load());
  }
  return reactor;
}

grpc::ServerUnaryReactor* TaskService::Wait(grpc::CallbackServerContext* ctx,
                                            const v1::WaitRequest* request,
                                            v1::WaitResponse* response) {
  const int n = request->task_ids_size();
  if (n == 0) return Answer(ctx, absl::InvalidArgumentError("Wait needs at least one task id"));
  int needed = n;
  switch (request->mode()) {
    case v1::WAIT_MODE_UNSPECIFIED:
    case v1::WAIT_MODE_ALL:
      break;
    case v1::WAIT_MODE_FIRST:
      needed = 1;
      break;
    case v1::WAIT_MODE_COUNT:
      if (request->count() < 1 || request->count() > n) {
        return Answer(ctx, absl::InvalidArgumentError(
                               absl::StrCat("count must be 1 to ", n,
                                            " (the number of task ids), not ", request->count())));
      }
      needed = request->count();
      break;
    default:
      return Answer(ctx, absl::InvalidArgumentError(absl::StrCat(
                             "unknown wait mode ", static_cast<int>(request->mode()))));
  }
  absl::StatusOr<absl::Duration> wait =
      WaitTimeout(request->has_timeout(), request->timeout(), *ctx);
  if (!wait.ok()) return Answer(ctx, wait.status());
  for (const std::string& id : request->task_ids()) {
    absl::StatusOr<std::shared_ptr<const v1::TaskResult>> r = broker_->GetResult(id);
    if (!r.ok()) return Answer(ctx, r.status());
  }

  struct State {
    std::atomic<int> done{0};
    std::atomic<IoLoop::TimerId> timer{0};
    std::mutex mu;
    std::vector<std::pair<std::string, uint64_t>> waiters;  // guarded by mu
  };
  auto state = std::make_shared<State>();
  auto* reactor = new DeferredReactor();
  auto claim = reactor->claim();
  TaskBroker* broker = broker_;
  IoLoop* loop = loop_;
  // Shared, not copied: every waiter's closure holds `finish`.
  auto ids = std::make_shared<const std::vector<std::string>>(request->task_ids().begin(),
                                                              request->task_ids().end());
  const bool include_results = request->include_results();

  // Runs once, by the winner: unregister, then answer from the table as it is now.
  auto finish = [=](bool satisfied_hint) {
    loop->CancelTimer(state->timer.load());
    {
      std::lock_guard<std::mutex> lock(state->mu);
      for (const auto& [tid, wid] : state->waiters) broker->Unwatch(tid, wid);
    }
    int done = 0;
    size_t result_bytes = 0;
    bool results_fit = include_results;
    for (const std::string& tid : *ids) {
      absl::StatusOr<std::shared_ptr<const v1::TaskResult>> r = broker->GetResult(tid);
      // A result that expired meanwhile has ended too.
      if (!r.ok() || IsTerminal((*r)->state())) {
        response->add_done(tid);
        ++done;
        // Results stay in `done` order: the first one that does not fit (or has
        // expired) ends the list; the caller fetches the rest with Get. Copied
        // once, outside the broker's lock.
        if (results_fit && r.ok() && result_bytes + (*r)->ByteSizeLong() <= kMaxWaitResultBytes) {
          result_bytes += (*r)->ByteSizeLong();
          *response->add_results() = **r;
        } else {
          results_fit = false;
        }
      } else {
        response->add_not_done(tid);
      }
    }
    response->set_satisfied(satisfied_hint || done >= needed);
    reactor->Finish(grpc::Status::OK);
  };
  reactor->set_on_cancel([=] {
    if (!claim->Claim()) return;
    loop->CancelTimer(state->timer.load());
    std::lock_guard<std::mutex> lock(state->mu);
    for (const auto& [tid, wid] : state->waiters) broker->Unwatch(tid, wid);
    reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "Wait cancelled by the client"));
  });
  for (const std::string& id : *ids) {
    uint64_t wid = 0;
    absl::StatusOr<std::shared_ptr<const v1::TaskResult>> now = broker_->Watch(
        id,
        [=](std::shared_ptr<const v1::TaskResult>) {
          if (state->done.fetch_add(1) + 1 >= needed && claim->Claim()) finish(true);
        },
        &wid);
    if (now.ok() && *now != nullptr) {
      state->done.fetch_add(1);
    } else if (now.ok()) {
      std::lock_guard<std::mutex> lock(state->mu);
      state->waiters.emplace_back(id, wid);
    } else {
      state->done.fetch_add(1);  // expired between the check and now: it has ended
    }
  }
  if (state->done.load() >= needed || *wait <= absl::ZeroDuration()) {
    if (claim->Claim()) finish(false);
    return reactor;
  }
  if (*wait != absl::InfiniteDuration()) {
    state->timer.store(loop_->AddTimerAfter(*wait, [=] {
      if (claim->Claim()) finish(false);
    }));
    if (claim->claimed.load()) loop_->CancelTimer(state->timer.load());
  }
  return reactor;
}

grpc::ServerWriteReactor<v1::MapResponse>* TaskService::Map(grpc::CallbackServerContext* ctx,
                                                            const v1::MapRequest* request) {
  return NewMapReactor(broker_, loop_, request);
}

grpc::ServerBidiReactor<v1::MapStreamRequest, v1::MapResponse>* TaskService::MapStream(
    grpc::CallbackServerContext* ctx) {
  return NewMapStreamReactor(broker_, loop_);
}

}  // namespace forkpool
