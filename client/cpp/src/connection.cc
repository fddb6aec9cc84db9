// RPC helpers of the C++ client.
#include "connection.h"

#include "absl/strings/str_cat.h"

namespace forkpool::internal {

std::string GrpcTarget(const std::string& address) {
  if (!address.empty() && address[0] == '/') return absl::StrCat("unix:", address);
  return address;
}

absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view method,
                            const Connection& connection) {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::Status(code, absl::StrCat(method, " to forkpoold at ", connection.address,
                                             ": ", status.error_message()));
    default:
      return absl::Status(code, status.error_message());
  }
}

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout) {
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

void SetWaitDeadline(grpc::ClientContext& context, std::optional<absl::Duration> wait) {
  if (!wait.has_value() || *wait == absl::InfiniteDuration()) return;
  const absl::Duration w = std::max(*wait, absl::ZeroDuration());
  // The daemon keeps back a tenth of the time left, at most 100 ms; 2 s more leaves
  // room for that and for a busy machine.
  SetDeadline(context, w + absl::Seconds(2) + w / 10);
}

absl::StatusOr<bool> ToProtoTimeout(std::optional<absl::Duration> wait,
                                    google::protobuf::Duration* out) {
  if (!wait.has_value() || *wait == absl::InfiniteDuration()) return false;
  if (*wait < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout must not be negative (got ", absl::FormatDuration(*wait), ")"));
  }
  // google.protobuf.Duration holds at most 10,000 years: beyond that, no limit.
  if (*wait > absl::Hours(24 * 365) * 10000) return false;
  absl::Duration rest;  // IDivDuration needs somewhere to put the remainder
  const int64_t seconds = absl::IDivDuration(*wait, absl::Seconds(1), &rest);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(rest)));
  return true;
}

}  // namespace forkpool::internal
