// Wait deadlines.
#include "server/daemon/deferred_reactor.h"

#include <algorithm>
#include <chrono>

#include "absl/status/statusor.h"
#include "server/daemon/task_options.h"

namespace forkpool {

absl::StatusOr<absl::Time> WaitDeadline(bool has_timeout,
                                        const google::protobuf::Duration& timeout,
                                        const grpc::CallbackServerContext& ctx) {
  const absl::Time now = absl::Now();
  absl::Time deadline = absl::InfiniteFuture();
  if (has_timeout) {
    if (absl::Status s = ValidateDuration(timeout, "timeout"); !s.ok()) return s;
    deadline = now + absl::Seconds(timeout.seconds()) + absl::Nanoseconds(timeout.nanos());
  }
  const auto rpc = ctx.deadline();
  if (rpc != std::chrono::system_clock::time_point::max()) {
    const absl::Time rpc_deadline = absl::FromChrono(rpc);
    // Leave time for the answer to travel: a tenth of what is left, 2 to 100 ms.
    const absl::Duration left = rpc_deadline - now;
    const absl::Duration margin =
        std::clamp(left / 10, absl::Milliseconds(2), absl::Milliseconds(100));
    deadline = std::min(deadline, rpc_deadline - margin);
  }
  return deadline;
}

}  // namespace forkpool
