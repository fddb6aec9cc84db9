// absl::Status -> grpc::Status.
#include "server/daemon/api/grpc_status.h"

#include <string>
#include <string_view>

#include "common/text_limit.h"

namespace forkpool {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const absl::string_view message = status.message();
  return grpc::Status(
      static_cast<grpc::StatusCode>(status.code()),
      CapText(std::string_view(message.data(), message.size()), kMaxStatusMessageBytes));
}

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace forkpool
