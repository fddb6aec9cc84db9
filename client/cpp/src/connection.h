// The channel and stubs every client handle shares, and the RPC helpers around them.
#ifndef FORKPOOL_CLIENT_CPP_SRC_CONNECTION_H_
#define FORKPOOL_CLIENT_CPP_SRC_CONNECTION_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "forkpool/v1/forkpool.grpc.pb.h"
#include "google/protobuf/duration.pb.h"

namespace forkpool::internal {

// One connection to a forkpoold. Immutable after construction, hence thread-safe
// (gRPC stubs are).
struct Connection {
  // The address as the user gave it, and the target handed to gRPC.
  std::string address;
  std::string target;
  // Deadline of calls that do not wait for tasks.
  absl::Duration rpc_timeout;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Tasks::Stub> tasks;
  std::unique_ptr<v1::Pools::Stub> pools;
  std::unique_ptr<v1::Queues::Stub> queues;
};

// The last terminal result seen of a task, shared by the copies of an AsyncResult.
// Thread-safe.
struct ResultCache {
  absl::Mutex mu;
  std::optional<v1::TaskResult> final_result ABSL_GUARDED_BY(mu);
};

// The gRPC target for a user's address: "unix:/path" and "host:port" as they are, a
// bare "/path" as "unix:/path".
std::string GrpcTarget(const std::string& address);

// `status` of RPC `method` as an absl::Status: the daemon's code and message; for
// failures of the transport (UNAVAILABLE, DEADLINE_EXCEEDED) the message names the
// method and the address.
absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view method,
                            const Connection& connection);

// Sets `context`'s deadline to now + `timeout`.
void SetDeadline(grpc::ClientContext& context, absl::Duration timeout);

// Sets the deadline of a call that waits up to `wait` in the daemon: none when `wait`
// is nullopt or infinite, else the wait plus a margin for the answer to travel (the
// daemon clamps its wait to the call's deadline, so the margin keeps the daemon's own
// timeout the one that fires).
void SetWaitDeadline(grpc::ClientContext& context, std::optional<absl::Duration> wait);

// `wait` as the protobuf Duration of a request; false when the request should carry
// no timeout (wait until done). kInvalidArgument for a negative duration.
absl::StatusOr<bool> ToProtoTimeout(std::optional<absl::Duration> wait,
                                    google::protobuf::Duration* out);

}  // namespace forkpool::internal

#endif  // FORKPOOL_CLIENT_CPP_SRC_CONNECTION_H_
