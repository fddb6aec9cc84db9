// The fork helper: a single-threaded process that loads the pools' task libraries
// and forks workers on forkpoold's request. "Fork helper only."
#ifndef FORKPOOL_SERVER_FORK_HELPER_FORK_HELPER_H_
#define FORKPOOL_SERVER_FORK_HELPER_FORK_HELPER_H_

#include <sys/types.h>

#include "common/unique_fd.h"

namespace forkpool {

// The fd number the control socket has in a helper started by exec.
inline constexpr int kHelperControlFd = 3;
// argv[1] that makes forkpoold run as a fork helper (after a helper crash).
inline constexpr char kHelperModeFlag[] = "--internal-fork-helper";

// Runs the helper until its control socket closes; never returns. `daemon_pid` is
// the forkpoold process that made it: the helper dies with it (PR_SET_PDEATHSIG)
// and its workers become that process's children (clone3 with CLONE_PARENT).
[[noreturn]] void RunForkHelper(UniqueFd control, pid_t daemon_pid);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_FORK_HELPER_FORK_HELPER_H_
