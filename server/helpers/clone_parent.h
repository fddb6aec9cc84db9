// A new process as a sibling of the caller: a child of the caller's parent
// (CLONE_PARENT), so that forkpoold, not a helper, is the parent of every pool
// helper and worker. Fork helper only.
#ifndef FORKPOOL_SERVER_HELPERS_CLONE_PARENT_H_
#define FORKPOOL_SERVER_HELPERS_CLONE_PARENT_H_

#include <sys/types.h>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace forkpool {

struct ClonedProcess {
  pid_t pid = -1;  // 0 in the new process
  UniqueFd pidfd;  // in the caller only
};

// Like fork(), but the new process is the caller's parent's child. Uses
// clone3(CLONE_PARENT | CLONE_PIDFD); where clone3 is refused with ENOSYS (the
// default seccomp profile of common container runtimes) it falls back to
// clone(CLONE_PARENT) and pidfd_open. Skips glibc's fork handlers: call it from
// a single-threaded process.
absl::StatusOr<ClonedProcess> CloneParent();

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_HELPERS_CLONE_PARENT_H_
