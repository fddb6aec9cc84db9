// The reactors of Tasks.Map (server streaming) and Tasks.MapStream (bidirectional):
// they feed a MapJob's inputs to the broker and write its results in batches,
// one write in flight at a time.
#ifndef FORKPOOL_SERVER_DAEMON_API_MAP_REACTORS_H_
#define FORKPOOL_SERVER_DAEMON_API_MAP_REACTORS_H_

#include <grpcpp/grpcpp.h>

#include "forkpool/v1/forkpool.grpc.pb.h"
#include "server/daemon/broker/task_broker.h"
#include "server/daemon/net/io_loop.h"

namespace forkpool {

// Default MapStream window when the client gives none.
inline constexpr uint32_t kDefaultMapWindow = 262144;
// A MapStream reads no more inputs while its job holds this many bytes of inputs and
// results (whatever its window): a window counts items, which may be large.
inline constexpr uint64_t kMaxMapStreamBytes = 32u << 20;

// Each creates a reactor that deletes itself in OnDone.
grpc::ServerWriteReactor<v1::MapResponse>* NewMapReactor(TaskBroker* broker, IoLoop* loop,
                                                         const v1::MapRequest* request);
grpc::ServerBidiReactor<v1::MapStreamRequest, v1::MapResponse>* NewMapStreamReactor(
    TaskBroker* broker, IoLoop* loop);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_API_MAP_REACTORS_H_
