// OrphanReaper: forkpoold is a child subreaper, so a process that escapes its
// worker (fork, setsid, exec) is re-parented to it when its parent dies. This
// finds such adopted children in /proc, ends them and reaps each through a
// pidfd of its own (never waitid(P_ALL), which would steal workers' statuses).
#ifndef FORKPOOL_SERVER_DAEMON_LAUNCH_ORPHAN_REAPER_H_
#define FORKPOOL_SERVER_DAEMON_LAUNCH_ORPHAN_REAPER_H_

#include <sys/types.h>

#include <map>
#include <set>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "server/daemon/launch/child_registry.h"
#include "server/daemon/net/io_loop.h"

namespace forkpool {

// Thread-safe; scans on the loop thread.
class OrphanReaper {
 public:
  // How often /proc is scanned. A child unknown to `children` in two scans in a
  // row is adopted (one scan could race a worker whose helper's report is in
  // flight), so an adopted process ends within about two intervals.
  static constexpr absl::Duration kInterval = absl::Milliseconds(300);
  // How long one named forkpool-helper or forkpool-worker must stay unknown.
  static constexpr absl::Duration kOwnNameGrace = absl::Seconds(3);

  OrphanReaper(IoLoop* loop, ChildRegistry* children);
  ~OrphanReaper();
  // Starts scanning.
  void Start();

 private:
  void Scan();
  void Reap(pid_t pid);

  IoLoop* const loop_;
  ChildRegistry* const children_;
  const pid_t self_;
  const pid_t self_pgid_;
  const pid_t self_sid_;
  absl::Mutex mu_;
  // Unknown in the last scan, and since when.
  std::map<pid_t, MonoTime> suspects_ ABSL_GUARDED_BY(mu_);
  std::map<pid_t, UniqueFd> ending_ ABSL_GUARDED_BY(mu_);  // killed, awaiting reaping
  IoLoop::TimerId timer_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_LAUNCH_ORPHAN_REAPER_H_
