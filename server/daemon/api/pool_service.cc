// PoolService: pool lifecycle calls, answered from the PoolRegistry.
#include "server/daemon/api/pool_service.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/daemon/api/deferred_reactor.h"
#include "server/daemon/api/grpc_status.h"

namespace forkpool {
grpc::ServerUnaryReactor* PoolService::CreatePool(grpc::CallbackServerContext* ctx,
                                                  const v1::CreatePoolRequest* request,
                                                  v1::PoolInfo* response) {
  // Answered once, by the load's end or by the client leaving (the pool then still
  // loads; ListPools shows it). The reactor lives until Finish, so the load's callback
  // may arrive at any time; forkpoold's drain answers loads still running.
  auto* reactor = new DeferredReactor();
  std::shared_ptr<CallClaim> claim = reactor->claim();
  reactor->set_on_cancel([reactor, claim] {
    if (claim->Claim()) reactor->Finish(grpc::Status::CANCELLED);
  });
  auto done = [reactor, claim, response](absl::StatusOr<v1::PoolInfo> info) {
    if (!claim->Claim()) return;
    if (info.ok()) *response = std::move(*info);
    reactor->Finish(ToGrpcStatus(info.status()));
  };
  // The registry has the new pool (or has refused it) when CreatePool returns; the
  // load goes on after.
  absl::MutexLock lock(&create_mu_);
  const size_t pools = pools_->ListPools().size();
  if (pools >= static_cast<size_t>(std::max(0, max_pools_))) {
    done(absl::ResourceExhaustedError(absl::StrCat(
        "forkpoold runs ", pools, " pools, the most it allows (--max_pools=", max_pools_,
        "); delete one first")));
    return reactor;
  }
  pools_->CreatePool(request->settings(), std::move(done));
  return reactor;
}

grpc::ServerUnaryReactor* PoolService::ListPools(grpc::CallbackServerContext* ctx,
                                                 const v1::ListPoolsRequest* request,
                                                 v1::ListPoolsResponse* response) {
  for (auto& info : pools_->ListPools()) *response->add_pools() = std::move(info);
  return Answer(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* PoolService::DescribePool(grpc::CallbackServerContext* ctx,
                                                    const v1::DescribePoolRequest* request,
                                                    v1::PoolInfo* response) {
  absl::StatusOr<v1::PoolInfo> info = pools_->DescribePool(request->name());
  if (info.ok()) *response = std::move(*info);
  return Answer(ctx, info.status());
}

grpc::ServerUnaryReactor* PoolService::DeletePool(grpc::CallbackServerContext* ctx,
                                                  const v1::DeletePoolRequest* request,
                                                  v1::DeletePoolResponse*) {
  return Answer(ctx, pools_->DeletePool(request->name()));
}

grpc::ServerUnaryReactor* PoolService::ClosePool(grpc::CallbackServerContext* ctx,
                                                 const v1::ClosePoolRequest* request,
                                                 v1::PoolInfo* response) {
  absl::StatusOr<v1::PoolInfo> info = pools_->ClosePool(request->name());
  if (info.ok()) *response = std::move(*info);
  return Answer(ctx, info.status());
}

grpc::ServerUnaryReactor* PoolService::TerminatePool(grpc::CallbackServerContext* ctx,
                                                     const v1::TerminatePoolRequest* request,
                                                     v1::PoolInfo* response) {
  absl::StatusOr<v1::PoolInfo> info = pools_->TerminatePool(request->name());
  if (info.ok()) *response = std::move(*info);
  return Answer(ctx, info.status());
}

grpc::ServerUnaryReactor* PoolService::JoinPool(grpc::CallbackServerContext* ctx,
                                                const v1::JoinPoolRequest* request,
                                                v1::PoolInfo* response) {
  absl::StatusOr<absl::Duration> wait =
      WaitTimeout(request->has_timeout(), request->timeout(), *ctx);
  if (!wait.ok()) return Answer(ctx, wait.status());
  auto* reactor = new DeferredReactor();
  auto claim = reactor->claim();
  PoolRegistry* pools = pools_;
  const std::string name = request->name();
  // Answers with the pool as it is; a timeout is not an error (its workers show).
  auto answer = [=] {
    absl::StatusOr<v1::PoolInfo> info = pools->DescribePool(name);
    if (info.ok()) *response = std::move(*info);
    reactor->Finish(ToGrpcStatus(info.status()));
  };
  reactor->set_on_cancel([=] {
    if (claim->Claim())
      reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "JoinPool cancelled"));
  });
  absl::Status s = pools_->JoinPool(name, [=] {
    if (claim->Claim()) answer();
  });
  if (!s.ok()) {
    reactor->FinishOnce(ToGrpcStatus(s));
    return reactor;
  }
  if (*wait != absl::InfiniteDuration()) {
    IoLoop::TimerId id = loop_->AddTimerAfter(*wait, [=] {
      if (claim->Claim()) answer();
    });
    if (claim->claimed.load()) loop_->CancelTimer(id);
  }
  return reactor;
}

}  // namespace forkpool
