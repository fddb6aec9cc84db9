// The root helper: forkpoold's first child, forked before any thread exists. It
// never loads a library; it only makes pool helpers, as forkpoold's children
// (CLONE_PARENT), each with its own control socket and stderr pipe.
// Single-threaded; "fork helper only".
#ifndef FORKPOOL_SERVER_HELPERS_ROOT_HELPER_H_
#define FORKPOOL_SERVER_HELPERS_ROOT_HELPER_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace forkpool {

// argv[1] that makes forkpoold run as the root helper (a replacement started by
// exec after the first one was lost): forkpoold --internal-root-helper PID
// [NAME,...].
inline constexpr char kRootHelperModeFlag[] = "--internal-root-helper";

// Environment variables no helper or worker keeps: systemd's, meant for
// forkpoold alone.
std::vector<std::string> DaemonOnlyEnvironment();

// Runs the root helper on `control` until it closes; never returns.
// `daemon_pid` is forkpoold; `env_deny` names more variables to drop from the
// environment every pool and worker inherits.
[[noreturn]] void RunRootHelper(UniqueFd control, pid_t daemon_pid,
                                const std::vector<std::string>& env_deny);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_HELPERS_ROOT_HELPER_H_
