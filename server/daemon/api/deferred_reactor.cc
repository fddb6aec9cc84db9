// Wait deadlines.
#include "server/daemon/api/deferred_reactor.h"

#include <algorithm>
#include <chrono>

#include "absl/status/statusor.h"
#include "server/daemon/broker/task_options.h"

namespace forkpool {

absl::StatusOr<absl::Duration> WaitTimeout(bool has_timeout,
                                           const google::protobuf::Duration& timeout,
                                           const grpc::CallbackServerContext& ctx) {
  absl::Duration wait = absl::InfiniteDuration();
  if (has_timeout) {
    if (absl::Status s = ValidateDuration(timeout, "timeout"); !s.ok()) return s;
    wait = absl::Seconds(timeout.seconds()) + absl::Nanoseconds(timeout.nanos());
  }
  const auto rpc = ctx.deadline();
  if (rpc != std::chrono::system_clock::time_point::max()) {
    // gRPC gives the RPC's deadline on the system clock; only the time left
    // is used, and from here on the wait runs on the monotonic clock.
    const absl::Duration left = absl::FromChrono(rpc) - absl::Now();
    // Leave time for the answer to travel: a tenth of what is left, 2 to 100 ms.
    const absl::Duration margin =
        std::clamp(left / 10, absl::Milliseconds(2), absl::Milliseconds(100));
    wait = std::min(wait, left - margin);
  }
  return wait;
}

}  // namespace forkpool
