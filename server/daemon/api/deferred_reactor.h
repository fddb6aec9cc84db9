// DeferredReactor: a unary call answered later, exactly once, by whichever event
// comes first (the awaited result, a timer, the client cancelling).
#ifndef FORKPOOL_SERVER_DAEMON_API_DEFERRED_REACTOR_H_
#define FORKPOOL_SERVER_DAEMON_API_DEFERRED_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"

namespace forkpool {

// Shared by the reactor and every callback that may finish it. Whoever wins
// Claim() calls Finish; the reactor lives until Finish is called, so the winner may
// touch it, and losers must not.
struct CallClaim {
  std::atomic<bool> claimed{false};
  // True for exactly one caller.
  bool Claim() { return !claimed.exchange(true); }
};

// Deletes itself in OnDone. Thread-safe in the sense above.
class DeferredReactor : public grpc::ServerUnaryReactor {
 public:
  DeferredReactor() : claim_(std::make_shared<CallClaim>()) {}
  const std::shared_ptr<CallClaim>& claim() const { return claim_; }
  // Runs once if the client cancels (or its deadline passes); set before the
  // reactor is returned to gRPC.
  void set_on_cancel(std::function<void()> fn) { on_cancel_ = std::move(fn); }
  // Finishes now if nobody has (for answers known at once).
  void FinishOnce(const grpc::Status& status) {
    if (claim_->Claim()) Finish(status);
  }

  void OnCancel() override {
    if (on_cancel_) on_cancel_();
  }
  void OnDone() override { delete this; }

 private:
  std::shared_ptr<CallClaim> claim_;
  std::function<void()> on_cancel_;
};

// How long a wait may last (zero or less: not at all): `timeout` if present
// (absent = forever), clamped to the RPC's own deadline minus a margin so the
// caller gets "not ready" rather than DEADLINE_EXCEEDED. A duration, so that
// the wait runs on the monotonic clock. InvalidArgument for a timeout that is
// negative, has nanos outside [0, 1e9) or is longer than google.protobuf.Duration
// allows (ValidateDuration).
absl::StatusOr<absl::Duration> WaitTimeout(bool has_timeout,
                                           const google::protobuf::Duration& timeout,
                                           const grpc::CallbackServerContext& ctx);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_API_DEFERRED_REACTOR_H_
