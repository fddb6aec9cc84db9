// Process helpers implementation.
#include "server/daemon/process_util.h"

#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace forkpool {

absl::StatusOr<UniqueFd> PidfdOpen(pid_t pid) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("pidfd_open(", pid, ")"));
  // pidfd_open sets O_CLOEXEC itself.
  return UniqueFd(fd);
}

ExitInfo ReapPidfd(int pidfd) {
  ExitInfo exit;
  siginfo_t info{};
  const int r = RetryOnEintr([&] {
    return ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED);
  });
  if (r != 0) return exit;
  exit.reaped = true;
  if (info.si_code == CLD_EXITED) {
    exit.exit_code = info.si_status;
  } else {
    exit.signal = info.si_status;
  }
  return exit;
}

StopChange PollStopState(int pidfd) {
  siginfo_t info{};
  const int r = RetryOnEintr([&] {
    return ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info,
                    WSTOPPED | WCONTINUED | WNOHANG);
  });
  if (r != 0 || info.si_pid == 0) return StopChange::kNone;
  if (info.si_code == CLD_STOPPED || info.si_code == CLD_TRAPPED) return StopChange::kStopped;
  if (info.si_code == CLD_CONTINUED) return StopChange::kContinued;
  return StopChange::kNone;
}

bool WaitPidfd(int pidfd, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const int ms = static_cast<int>(
        absl::ToInt64Milliseconds(std::max(deadline - absl::Now(), absl::ZeroDuration())));
    pollfd p{pidfd, POLLIN, 0};
    const int r = ::poll(&p, 1, ms);
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

absl::Status PidfdSignal(int pidfd, int sig) {
  if (::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) != 0) {
    if (errno == ESRCH) return absl::OkStatus();  // already exited
    return absl::ErrnoToStatus(errno, absl::StrCat("pidfd_send_signal(", sig, ")"));
  }
  return absl::OkStatus();
}

std::string SignalName(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  if (abbrev == nullptr) return absl::StrCat("signal ", sig);
  return absl::StrCat("SIG", abbrev);
}

std::string DescribeExit(const ExitInfo& exit) {
  if (!exit.reaped) return "ended (exit status unknown)";
  if (exit.signal != 0) {
    return absl::StrCat("killed by ", SignalName(exit.signal), " (signal ", exit.signal, ")");
  }
  return absl::StrCat("exited with code ", exit.exit_code);
}

}  // namespace forkpool
