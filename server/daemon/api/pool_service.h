// PoolService: forkpool.v1.Pools on gRPC's callback API.
#ifndef FORKPOOL_SERVER_DAEMON_API_POOL_SERVICE_H_
#define FORKPOOL_SERVER_DAEMON_API_POOL_SERVICE_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "forkpool/v1/forkpool.grpc.pb.h"
#include "server/daemon/executor/pool_registry.h"
#include "server/daemon/net/io_loop.h"

namespace forkpool {

// Default of --max_pools: most pools at once, the default pool included.
inline constexpr int kDefaultMaxPools = 256;

// Thread-safe; gRPC calls it from its own threads.
class PoolService final : public v1::Pools::CallbackService {
 public:
  // CreatePool answers RESOURCE_EXHAUSTED while `max_pools` pools exist (pools being
  // deleted not counted: their workers are already being stopped).
  PoolService(PoolRegistry* pools, IoLoop* loop, int max_pools = kDefaultMaxPools)
      : pools_(pools), loop_(loop), max_pools_(max_pools) {}

  grpc::ServerUnaryReactor* CreatePool(grpc::CallbackServerContext* ctx,
                                       const v1::CreatePoolRequest* request,
                                       v1::PoolInfo* response) override;
  grpc::ServerUnaryReactor* DeletePool(grpc::CallbackServerContext* ctx,
                                       const v1::DeletePoolRequest* request,
                                       v1::DeletePoolResponse* response) override;
  grpc::ServerUnaryReactor* ListPools(grpc::CallbackServerContext* ctx,
                                      const v1::ListPoolsRequest* request,
                                      v1::ListPoolsResponse* response) override;
  grpc::ServerUnaryReactor* DescribePool(grpc::CallbackServerContext* ctx,
                                         const v1::DescribePoolRequest* request,
                                         v1::PoolInfo* response) override;
  grpc::ServerUnaryReactor* ClosePool(grpc::CallbackServerContext* ctx,
                                      const v1::ClosePoolRequest* request,
                                      v1::PoolInfo* response) override;
  grpc::ServerUnaryReactor* JoinPool(grpc::CallbackServerContext* ctx,
                                     const v1::JoinPoolRequest* request,
                                     v1::PoolInfo* response) override;
  grpc::ServerUnaryReactor* TerminatePool(grpc::CallbackServerContext* ctx,
                                          const v1::TerminatePoolRequest* request,
                                          v1::PoolInfo* response) override;

 private:
  PoolRegistry* const pools_;
  IoLoop* const loop_;
  const int max_pools_;
  // Held from counting the pools until the registry holds the new one, so that
  // concurrent CreatePools cannot pass the cap together.
  absl::Mutex create_mu_;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_API_POOL_SERVICE_H_
