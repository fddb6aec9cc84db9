// CloneParent: clone3 with a clone fallback.
#include "server/helpers/clone_parent.h"

#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace forkpool {
namespace {

// Set once clone3 said ENOSYS, so later clones skip it.
bool g_no_clone3 = false;

}  // namespace

absl::StatusOr<ClonedProcess> CloneParent() {
  ClonedProcess out;
  if (!g_no_clone3) {
    int pidfd = -1;
    clone_args args{};
    args.flags = CLONE_PARENT | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
    args.exit_signal = 0;  // with CLONE_PARENT the caller's own exit signal is used
    const long pid = ::syscall(SYS_clone3, &args, sizeof(args));
    if (pid == 0) {
      out.pid = 0;
      return out;
    }
    if (pid > 0) {
      out.pid = static_cast<pid_t>(pid);
      out.pidfd = UniqueFd(pidfd);
      return out;
    }
    if (errno != ENOSYS) return absl::ErrnoToStatus(errno, "clone3(CLONE_PARENT)");
    g_no_clone3 = true;
  }
  // clone(2) without a new stack behaves like fork for the child. The pid stays
  // ours to open: only forkpoold reaps, and only through pidfds.
  const long pid = ::syscall(SYS_clone, CLONE_PARENT, nullptr, nullptr, nullptr, 0);
  if (pid < 0) return absl::ErrnoToStatus(errno, "clone(CLONE_PARENT)");
  if (pid == 0) {
    out.pid = 0;
    return out;
  }
  out.pid = static_cast<pid_t>(pid);
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, out.pid, 0));
  if (fd < 0) {
    const int err = errno;
    ::kill(out.pid,
           SIGKILL);  // unusable without a pidfd; forkpoold adopts and reaps it
    return absl::ErrnoToStatus(err, "pidfd_open(cloned process)");
  }
  out.pidfd = UniqueFd(fd);
  return out;
}

}  // namespace forkpool
