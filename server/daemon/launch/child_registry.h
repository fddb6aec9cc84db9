// ChildRegistry: the pids of forkpoold's children that some part of the daemon
// owns and will reap (workers, helpers). Anything else that is forkpoold's
// child was adopted (forkpoold is a child subreaper) and is ended by the
// OrphanReaper.
#ifndef FORKPOOL_SERVER_DAEMON_LAUNCH_CHILD_REGISTRY_H_
#define FORKPOOL_SERVER_DAEMON_LAUNCH_CHILD_REGISTRY_H_

#include <sys/types.h>

#include <unordered_set>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace forkpool {

// Thread-safe.
class ChildRegistry {
 public:
  void Add(pid_t pid) {
    absl::MutexLock lock(&mu_);
    pids_.insert(pid);
  }
  // Call after the child is reaped.
  void Remove(pid_t pid) {
    absl::MutexLock lock(&mu_);
    pids_.erase(pid);
  }
  bool empty() const {
    absl::MutexLock lock(&mu_);
    return pids_.empty();
  }
  bool Contains(pid_t pid) const {
    absl::MutexLock lock(&mu_);
    return pids_.count(pid) != 0;
  }

 private:
  mutable absl::Mutex mu_;
  std::unordered_set<pid_t> pids_ ABSL_GUARDED_BY(mu_);
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_LAUNCH_CHILD_REGISTRY_H_
