// Child processes through pidfds: open, wait, reap, describe how they ended.
#ifndef FORKPOOL_SERVER_DAEMON_PROCESS_UTIL_H_
#define FORKPOOL_SERVER_DAEMON_PROCESS_UTIL_H_

#include <sys/types.h>

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

// pidfd_open(pid): an fd that becomes readable when `pid` exits.
absl::StatusOr<UniqueFd> PidfdOpen(pid_t pid);
// Reaps the exited child behind `pidfd` (waitid P_PIDFD, WEXITED). Blocks if it
// has not exited yet.
ExitInfo ReapPidfd(int pidfd);
// A stop or continue of a child since the last look.
enum class StopChange { kNone, kStopped, kContinued };
// waitid(P_PIDFD, WSTOPPED | WCONTINUED | WNOHANG): reports each stop and
// continue of the child behind `pidfd` once. Never reaps (no WEXITED).
StopChange PollStopState(int pidfd);
// Waits up to `timeout` for the process behind `pidfd` to exit; true if it has.
bool WaitPidfd(int pidfd, absl::Duration timeout);
// Sends `sig` to the process behind `pidfd` (no pid-reuse race).
absl::Status PidfdSignal(int pidfd, int sig);
// "SIGSEGV", "SIGKILL", ... or "signal N".
std::string SignalName(int sig);
// "exited with code 3", "killed by SIGKILL (signal 9)".
std::string DescribeExit(const ExitInfo& exit);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_PROCESS_UTIL_H_
