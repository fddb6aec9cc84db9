// The one place where absl::Status becomes grpc::Status (the service edge).
#ifndef FORKPOOL_SERVER_DAEMON_API_GRPC_STATUS_H_
#define FORKPOOL_SERVER_DAEMON_API_GRPC_STATUS_H_

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace forkpool {

// Same code (the numbering is shared), same message as valid UTF-8 cut to
// kMaxStatusMessageBytes (CapText): messages echo what clients and tasks sent, and
// a status message past the trailer limit clients accept costs them the status.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Answers a unary call at once with `status` (the response already filled in).
grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, const absl::Status& status);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_API_GRPC_STATUS_H_
