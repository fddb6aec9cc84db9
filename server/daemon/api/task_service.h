// TaskService: forkpool.v1.Tasks on gRPC's callback API. A blocked Get, Wait or
// Apply holds no thread: it is a waiter in the task table and a timer in the loop.
#ifndef FORKPOOL_SERVER_DAEMON_API_TASK_SERVICE_H_
#define FORKPOOL_SERVER_DAEMON_API_TASK_SERVICE_H_

#include "forkpool/v1/forkpool.grpc.pb.h"
#include "server/daemon/broker/task_broker.h"
#include "server/daemon/net/io_loop.h"

namespace forkpool {

// Thread-safe; gRPC calls it from its own threads.
// Get is a raw method (bytes in and out) so that its reply shares the result.
class TaskService final : public v1::Tasks::WithRawCallbackMethod_Get<v1::Tasks::CallbackService> {
 public:
  TaskService(TaskBroker* broker, IoLoop* loop) : broker_(broker), loop_(loop) {}

  grpc::ServerUnaryReactor* Apply(grpc::CallbackServerContext* ctx, const v1::ApplyRequest* request,
                                  v1::ApplyResponse* response) override;
  grpc::ServerUnaryReactor* Submit(grpc::CallbackServerContext* ctx,
                                   const v1::SubmitRequest* request,
                                   v1::SubmitResponse* response) override;
  grpc::ServerUnaryReactor* SubmitMany(grpc::CallbackServerContext* ctx,
                                       const v1::SubmitManyRequest* request,
                                       v1::SubmitManyResponse* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request,
                                grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Wait(grpc::CallbackServerContext* ctx, const v1::WaitRequest* request,
                                 v1::WaitResponse* response) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* ctx,
                                   const v1::CancelRequest* request,
                                   v1::CancelResponse* response) override;
  grpc::ServerWriteReactor<v1::MapResponse>* Map(grpc::CallbackServerContext* ctx,
                                                 const v1::MapRequest* request) override;
  grpc::ServerBidiReactor<v1::MapStreamRequest, v1::MapResponse>* MapStream(
      grpc::CallbackServerContext* ctx) override;

 private:
  TaskBroker* const broker_;
  IoLoop* const loop_;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_API_TASK_SERVICE_H_
