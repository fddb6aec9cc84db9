// RootHelperClient: forkpoold's side of the root helper, which makes pool
// helpers.
#ifndef FORKPOOL_SERVER_DAEMON_LAUNCH_ROOT_HELPER_CLIENT_H_
#define FORKPOOL_SERVER_DAEMON_LAUNCH_ROOT_HELPER_CLIENT_H_

#include <sys/types.h>

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/daemon/launch/child_registry.h"
#include "server/daemon/launch/helper_channel.h"
#include "server/daemon/net/io_loop.h"

namespace forkpool {

// Forks the first root helper. Call from main() before any thread exists: the
// child runs the root helper and never returns.
absl::StatusOr<HelperProcess> ForkRootHelper(const std::vector<std::string>& env_deny);

// Thread-safe. A lost root helper is started again (fork+exec of forkpoold in
// root helper mode, on the loop thread); one lost more than 10 times in 30 s is
// a broken installation and forkpoold exits 1 for its supervisor to restart it
// whole. Pool helpers and workers are forkpoold's children and live on without
// it.
class RootHelperClient {
 public:
  RootHelperClient(IoLoop* loop, ChildRegistry* children, std::vector<std::string> env_deny);
  // Takes over the first root helper and starts watching it.
  absl::Status Start(HelperProcess first);
  // Asks for a new pool helper for `pool`; `done` runs on the loop thread with
  // it, or Unavailable when the root helper was lost meanwhile (try again).
  void StartPoolHelper(std::function<void(absl::StatusOr<HelperProcess>)> done);
  // Closes the root helper's socket; it leaves.
  void Stop();
  // The root helper's pid (0 while there is none).
  pid_t pid() const;

 private:
  void Attach(HelperProcess process);
  // Asks the root helper for the next spare unless one is there or on its way.
  void RequestSpare();
  // Sends StartPoolHelper; `done` gets the new helper.
  void Ask(std::function<void(absl::StatusOr<HelperProcess>)> done);
  void OnLost(const std::string& why);
  absl::StatusOr<HelperProcess> Respawn();

  IoLoop* const loop_;
  ChildRegistry* const children_;
  const std::vector<std::string> env_deny_;
  mutable absl::Mutex mu_;
  std::shared_ptr<HelperChannel> channel_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<HelperProcess> spare_ ABSL_GUARDED_BY(mu_);
  bool spare_requested_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<MonoTime> losses_;  // loop thread only
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_LAUNCH_ROOT_HELPER_CLIENT_H_
