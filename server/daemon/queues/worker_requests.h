// WorkerRequests: what running tasks may ask of the daemon over the worker protocol
// (workers never link gRPC): today, shared-queue put and get.
#ifndef FORKPOOL_SERVER_DAEMON_QUEUES_WORKER_REQUESTS_H_
#define FORKPOOL_SERVER_DAEMON_QUEUES_WORKER_REQUESTS_H_

#include <string>

#include "server/daemon/executor/pool_executor.h"
#include "server/daemon/queues/queue_manager.h"

namespace forkpool {

// Returns the executors' handler for worker requests, served by `queues`:
// "queue.put" (body: v1.PutRequest; reply: v1.PutResponse) and "queue.get" (body:
// v1.QueueGetRequest, plain gets only; reply: v1.QueueGetResponse).
WorkerRequestHandler MakeWorkerRequestHandler(QueueManager* queues);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_QUEUES_WORKER_REQUESTS_H_
