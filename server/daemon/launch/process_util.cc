// Process helpers implementation.
#include "server/daemon/launch/process_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/daemon/log.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace forkpool {
namespace {

absl::Duration MonoNow() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return absl::DurationFromTimespec(ts);
}

int WaitidPidfd(int pidfd, siginfo_t* info, int options) {
  return RetryOnEintr([&] {
    return ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), info, options);
  });
}

// TryReapPidfd without the pid check when `expected` is nullopt.
std::optional<ExitInfo> TryReap(int pidfd, std::optional<pid_t> expected) {
  ExitInfo exit;
  siginfo_t info{};
  if (WaitidPidfd(pidfd, &info, WEXITED | WNOHANG) != 0) {
    // ECHILD: reaped already, or not ours. Saying "still running" would make a
    // caller wait for an exit it can never see.
    return exit;
  }
  // WNOHANG with nothing to report leaves si_pid 0 (waitid(2)); info was
  // zeroed.
  if (info.si_pid == 0) return std::nullopt;
  if (expected.has_value() && info.si_pid != *expected) {
    Log("waitid on the pidfd of pid ", *expected, " reaped pid ", info.si_pid,
        " instead; its exit status is dropped");
    return exit;
  }
  exit.reaped = true;
  if (info.si_code == CLD_EXITED) {
    exit.exit_code = info.si_status;
  } else {
    exit.signal = info.si_status;
  }
  return exit;
}

}  // namespace

absl::StatusOr<UniqueFd> PidfdOpen(pid_t pid) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("pidfd_open(", pid, ")"));
  // pidfd_open sets O_CLOEXEC itself.
  return UniqueFd(fd);
}

std::optional<ExitInfo> TryReapPidfd(int pidfd, pid_t expected_pid) {
  return TryReap(pidfd, expected_pid);
}

ExitInfo ReapPidfd(int pidfd, absl::Duration wait) {
  // Read before reaping: afterwards fdinfo says -1.
  const std::optional<pid_t> pid = PidfdPid(pidfd);
  // A pidfd that cannot be polled (EBADF) falls through to waitid, which says
  // so.
  WaitPidfd(pidfd, wait);
  std::optional<ExitInfo> exit = TryReap(pidfd, pid);
  if (exit.has_value()) return *exit;
  Log("pid ", pid.value_or(-1), " did not exit within ", absl::FormatDuration(wait),
      "; left unreaped");
  return ExitInfo{};
}

absl::StatusOr<StopChange> PollStopState(int pidfd) {
  siginfo_t info{};
  StopChange change;
  // No WEXITED: an exit stays for whoever reaps the child.
  if (WaitidPidfd(pidfd, &info, WSTOPPED | WCONTINUED | WNOHANG) != 0) {
    const int err = errno;
    // The kernel answers ECHILD for a child that has exited and is not reaped
    // yet (without WEXITED, nothing about a zombie is waitable): no stop change
    // there. A pidfd that is readable is one whose process has exited.
    pollfd p{pidfd, POLLIN, 0};
    if (err == ECHILD && ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) return change;
    return absl::ErrnoToStatus(err, "waitid(pidfd, WSTOPPED | WCONTINUED)");
  }
  if (info.si_pid == 0) return change;
  switch (info.si_code) {
    case CLD_STOPPED:
    case CLD_TRAPPED:
      change.kind = StopChange::Kind::kStopped;
      change.signal = info.si_status;
      break;
    case CLD_CONTINUED:
      change.kind = StopChange::Kind::kContinued;
      break;
    default:
      // waitid reports only what the options asked for; nothing else can
      // arrive.
      break;
  }
  return change;
}

bool WaitPidfd(int pidfd, absl::Duration timeout) {
  // Monotonic, so that a step of the wall clock neither cuts the wait short nor
  // stretches it.
  const absl::Duration deadline = MonoNow() + timeout;
  while (true) {
    const absl::Duration left = std::max(deadline - MonoNow(), absl::ZeroDuration());
    // Rounded up: a wait rounded down to 0 ms would spin through its last
    // millisecond.
    const int ms = static_cast<int>(std::min<int64_t>(
        absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))), 1 << 30));
    pollfd p{pidfd, POLLIN, 0};
    const int r = ::poll(&p, 1, ms);
    if (r > 0) return (p.revents & POLLIN) != 0;
    if (r == 0) {
      if (left == absl::ZeroDuration()) return false;
      continue;
    }
    if (errno != EINTR) return false;
  }
}

std::optional<pid_t> PidfdPid(int pidfd) {
  const std::string path = absl::StrCat("/proc/self/fdinfo/", pidfd);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return std::nullopt;
  char buf[1024];
  const ssize_t n = RetryOnEintr([&] { return ::read(fd.get(), buf, sizeof(buf)); });
  if (n <= 0) return std::nullopt;
  // absl::string_view: Debian's Abseil has its own, not std::string_view.
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(buf, static_cast<size_t>(n)), '\n')) {
    if (!absl::ConsumePrefix(&line, "Pid:")) continue;
    int pid = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &pid) || pid <= 0) {
      return std::nullopt;
    }
    return static_cast<pid_t>(pid);
  }
  return std::nullopt;
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
