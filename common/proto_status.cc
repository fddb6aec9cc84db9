// Status conversions.
#include "common/proto_status.h"

#include <string>

namespace forkpool {

void StatusToProto(const absl::Status& status, internal::Status* out) {
  out->set_code(static_cast<int>(status.code()));
  out->set_message(std::string(status.message()));
}

absl::Status StatusFromProto(const internal::Status& proto) {
  const int code = proto.code();
  if (code == 0) return absl::OkStatus();
  const auto c = (code > 0 && code <= 16) ? static_cast<absl::StatusCode>(code)
                                          : absl::StatusCode::kUnknown;
  return absl::Status(c, proto.message());
}

}  // namespace forkpool
