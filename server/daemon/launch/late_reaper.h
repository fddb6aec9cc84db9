// LateReaper: reaps, when they exit, children of forkpoold that nobody serves
// (a worker forked for a pool deleted meanwhile, one whose start failed), so
// none stays a zombie and the OrphanReaper does not mistake them for strays.
#ifndef FORKPOOL_SERVER_DAEMON_LAUNCH_LATE_REAPER_H_
#define FORKPOOL_SERVER_DAEMON_LAUNCH_LATE_REAPER_H_

#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/unique_fd.h"
#include "server/daemon/launch/child_registry.h"
#include "server/daemon/net/io_loop.h"

namespace forkpool {

// Thread-safe; reaps on the loop thread.
class LateReaper {
 public:
  LateReaper(IoLoop* loop, ChildRegistry* children) : loop_(loop), children_(children) {}
  // Takes the child's pidfd; SIGKILLs it first if `kill`.
  void Reap(UniqueFd pidfd, bool kill);

 private:
  IoLoop* const loop_;
  ChildRegistry* const children_;
  absl::Mutex mu_;
  std::map<int, UniqueFd> pidfds_ ABSL_GUARDED_BY(mu_);
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_LAUNCH_LATE_REAPER_H_
