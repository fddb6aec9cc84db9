// QueueService: forkpool.v1.Queues on gRPC's callback API. Blocked puts and gets hold
// no thread: they are waiters in the QueueManager with timers in the I/O loop.
#ifndef FORKPOOL_SERVER_DAEMON_API_QUEUE_SERVICE_H_
#define FORKPOOL_SERVER_DAEMON_API_QUEUE_SERVICE_H_

#include "forkpool/v1/forkpool.grpc.pb.h"
#include "server/daemon/net/peer_connection.h"
#include "server/daemon/queues/queue_manager.h"

namespace forkpool {

// Default of --max_blocked_per_stream: most operations of one Queues.Stream waiting
// at once (for an item or for room).
inline constexpr int kDefaultMaxBlockedPerStream = 1024;

// Thread-safe; gRPC calls it from its own threads.
class QueueService final : public v1::Queues::CallbackService {
 public:
  // `peers` (may be null) tells whether a getter's client still runs. An operation
  // of a stream that already has `max_blocked_per_stream` waiting ones, and would
  // have to wait too, is answered RESOURCE_EXHAUSTED.
  QueueService(QueueManager* queues, const PeerRegistry* peers,
               int max_blocked_per_stream = kDefaultMaxBlockedPerStream)
      : queues_(queues), peers_(peers), max_blocked_per_stream_(max_blocked_per_stream) {}

  grpc::ServerUnaryReactor* CreateQueue(grpc::CallbackServerContext* ctx,
                                        const v1::CreateQueueRequest* request,
                                        v1::QueueInfo* response) override;
  grpc::ServerUnaryReactor* DeleteQueue(grpc::CallbackServerContext* ctx,
                                        const v1::DeleteQueueRequest* request,
                                        v1::DeleteQueueResponse* response) override;
  grpc::ServerUnaryReactor* ListQueues(grpc::CallbackServerContext* ctx,
                                       const v1::ListQueuesRequest* request,
                                       v1::ListQueuesResponse* response) override;
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const v1::PutRequest* request,
                                v1::PutResponse* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx,
                                const v1::QueueGetRequest* request,
                                v1::QueueGetResponse* response) override;
  grpc::ServerUnaryReactor* Ack(grpc::CallbackServerContext* ctx, const v1::AckRequest* request,
                                v1::AckResponse* response) override;
  grpc::ServerUnaryReactor* Size(grpc::CallbackServerContext* ctx, const v1::SizeRequest* request,
                                 v1::QueueInfo* response) override;
  grpc::ServerBidiReactor<v1::QueueStreamRequest, v1::QueueStreamResponse>* Stream(
      grpc::CallbackServerContext* ctx) override;

 private:
  QueueManager* const queues_;
  const PeerRegistry* const peers_;
  const int max_blocked_per_stream_;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_API_QUEUE_SERVICE_H_
