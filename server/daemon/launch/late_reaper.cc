// LateReaper implementation.
#include "server/daemon/launch/late_reaper.h"

#include <signal.h>
#include <sys/epoll.h>

#include "server/daemon/launch/process_util.h"
#include "server/daemon/log.h"

namespace forkpool {

void LateReaper::Reap(UniqueFd pidfd, bool kill) {
  if (!pidfd.valid()) return;
  const int fd = pidfd.get();
  if (kill) (void)PidfdSignal(fd, SIGKILL);
  // Registered, so that the OrphanReaper does not take (and reap) it too.
  const pid_t pid = PidfdPid(fd).value_or(0);
  if (pid > 0) children_->Add(pid);
  {
    absl::MutexLock lock(&mu_);
    pidfds_.emplace(fd, std::move(pidfd));
  }
  absl::Status s = loop_->Watch(fd, EPOLLIN, [this, fd, pid](uint32_t) {
    UniqueFd owned;
    {
      absl::MutexLock lock(&mu_);
      auto it = pidfds_.find(fd);
      if (it == pidfds_.end()) return;
      owned = std::move(it->second);
      pidfds_.erase(it);
    }
    loop_->Unwatch(fd);
    ReapPidfd(fd);
    if (pid > 0) children_->Remove(pid);
  });
  if (!s.ok()) Log("cannot watch an unwanted worker: ", s.message());
}

}  // namespace forkpool
