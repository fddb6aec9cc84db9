// Child processes through pidfds: open, wait, reap, watch stops, describe how
// they ended.
#ifndef FORKPOOL_SERVER_DAEMON_LAUNCH_PROCESS_UTIL_H_
#define FORKPOOL_SERVER_DAEMON_LAUNCH_PROCESS_UTIL_H_

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "common/unique_fd.h"

namespace forkpool {

// How a process ended.
struct ExitInfo {
  bool reaped = false;  // false if waitid failed (not our child, already reaped)
  int signal = 0;       // nonzero if killed by a signal
  int exit_code = 0;
};

// A change of a child's stop state, as waitid reports it (each change once).
struct StopChange {
  enum class Kind {
    kNone,       // nothing new since the last call
    kStopped,    // stopped (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU) or ptrace-trapped
    kContinued,  // resumed by SIGCONT
  };
  Kind kind = Kind::kNone;
  int signal = 0;  // the stopping signal, for kStopped
};

// How long ReapPidfd waits for the process to exit before giving up.
inline constexpr absl::Duration kDefaultReapWait = absl::Seconds(10);

// pidfd_open(pid): an fd that becomes readable when `pid` exits.
absl::StatusOr<UniqueFd> PidfdOpen(pid_t pid);
// Reaps the child behind `pidfd` if it has exited (waitid P_PIDFD, WEXITED |
// WNOHANG); never blocks. nullopt while it runs. An ExitInfo with reaped=false
// if it cannot be waited for (not our child, already reaped), or if the kernel
// reaped a process other than `expected_pid` (logged; that process's status is
// lost).
std::optional<ExitInfo> TryReapPidfd(int pidfd, pid_t expected_pid);
// Waits up to `wait` for the child behind `pidfd` to exit, then reaps it as
// TryReapPidfd does (the pid it expects is the one /proc says `pidfd` refers
// to). If it has not exited by then, it is left alone (logged) and
// reaped=false: call only for a child that has exited or been sent SIGKILL.
ExitInfo ReapPidfd(int pidfd, absl::Duration wait = kDefaultReapWait);
// Reports, once, whether the child behind `pidfd` stopped or continued since
// the last call (waitid P_PIDFD, WSTOPPED | WCONTINUED | WNOHANG). Never blocks
// and never reaps: an exited child reads as kNone and stays waitable. Errors: a
// process that is not our child and still runs (FAILED_PRECONDITION, waitid's
// ECHILD), or not a pidfd.
absl::StatusOr<StopChange> PollStopState(int pidfd);
// Waits up to `timeout` (on the monotonic clock) for the process behind `pidfd`
// to exit; true if it has.
bool WaitPidfd(int pidfd, absl::Duration timeout);
// The pid `pidfd` refers to, from /proc/self/fdinfo; nullopt if /proc cannot
// say (not mounted, or the process is already reaped).
std::optional<pid_t> PidfdPid(int pidfd);
// Sends `sig` to the process behind `pidfd` (no pid-reuse race).
absl::Status PidfdSignal(int pidfd, int sig);
// "SIGSEGV", "SIGKILL", ... or "signal N".
std::string SignalName(int sig);
// "exited with code 3", "killed by SIGKILL (signal 9)".
std::string DescribeExit(const ExitInfo& exit);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_LAUNCH_PROCESS_UTIL_H_
