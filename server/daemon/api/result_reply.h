// GetResponse bytes that share a result's output instead of copying it: the
// output travels as a slice of the broker's one copy, so a thousand Gets of a
// 15 MiB result cost 15 MiB, not 15 GiB.
#ifndef FORKPOOL_SERVER_DAEMON_API_RESULT_REPLY_H_
#define FORKPOOL_SERVER_DAEMON_API_RESULT_REPLY_H_

#include <grpcpp/support/byte_buffer.h>

#include <memory>

#include "forkpool/v1/forkpool.pb.h"

namespace forkpool {

// A serialized forkpool.v1.GetResponse {ready, result}: the result without its
// output's data, then the data as a second occurrence of result.output (which
// protobuf parsers merge into the first). The slice holding the data keeps
// `result` alive until gRPC has sent it. `result` may be null (not found: no
// result field).
grpc::ByteBuffer GetResponseBytes(bool ready, std::shared_ptr<const v1::TaskResult> result);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_API_RESULT_REPLY_H_
