// The pool helper: one per pool, a child of forkpoold made by the root helper.
// It loads that pool's task libraries once (the forkserver start method) or
// checks its worker program (spawn), then forks the pool's workers on request.
// Single-threaded; "fork helper only".
#ifndef FORKPOOL_SERVER_HELPERS_POOL_HELPER_H_
#define FORKPOOL_SERVER_HELPERS_POOL_HELPER_H_

#include <sys/types.h>

#include <string>

namespace forkpool {

// Runs the pool helper on the control socket at kHelperControlFd until it
// closes; never returns. `daemon_pid` is its parent: it dies with it
// (PR_SET_PDEATHSIG) and its workers become that process's children.
[[noreturn]] void RunPoolHelper(pid_t daemon_pid, const std::string& pool);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_HELPERS_POOL_HELPER_H_
