// PoolService: forkpool.v1.Pools on gRPC's callback API.
#ifndef FORKPOOL_SERVER_DAEMON_POOL_SERVICE_H_
#define FORKPOOL_SERVER_DAEMON_POOL_SERVICE_H_

#include "forkpool/v1/forkpool.grpc.pb.h"
#include "server/daemon/scheduler.h"

namespace forkpool {

// Thread-safe; gRPC calls it from its own threads.
class PoolService final : public v1::Pools::CallbackService {
 public:
  PoolService(Scheduler* scheduler, IoLoop* loop) : scheduler_(scheduler), loop_(loop) {}

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
  Scheduler* const scheduler_;
  IoLoop* const loop_;
};

// forkpool.v1.Queues: every method answers UNIMPLEMENTED naming the feature until
// shared queues land.
class QueueService final : public v1::Queues::CallbackService {
 public:
  grpc::ServerUnaryReactor* CreateQueue(grpc::CallbackServerContext* ctx,
                                        const v1::CreateQueueRequest*,
                                        v1::QueueInfo*) override;
  grpc::ServerUnaryReactor* DeleteQueue(grpc::CallbackServerContext* ctx,
                                        const v1::DeleteQueueRequest*,
                                        v1::DeleteQueueResponse*) override;
  grpc::ServerUnaryReactor* ListQueues(grpc::CallbackServerContext* ctx,
                                       const v1::ListQueuesRequest*,
                                       v1::ListQueuesResponse*) override;
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const v1::PutRequest*,
                                v1::PutResponse*) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const v1::QueueGetRequest*,
                                v1::QueueGetResponse*) override;
  grpc::ServerUnaryReactor* Ack(grpc::CallbackServerContext* ctx, const v1::AckRequest*,
                                v1::AckResponse*) override;
  grpc::ServerUnaryReactor* Size(grpc::CallbackServerContext* ctx, const v1::SizeRequest*,
                                 v1::QueueInfo*) override;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_POOL_SERVICE_H_
