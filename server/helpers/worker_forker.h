// Makes one worker process as a child of forkpoold (CLONE_PARENT) and sets it
// up: own process group, PDEATHSIG, /dev/null stdin, its stderr pipe, no other
// fds, default signals, the daemon's original soft fd limit, its process title.
// Fork helper only.
#ifndef FORKPOOL_SERVER_HELPERS_WORKER_FORKER_H_
#define FORKPOOL_SERVER_HELPERS_WORKER_FORKER_H_

#include <sys/types.h>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "server/worker/task_registry.h"
#include "server/worker/worker_loop.h"

namespace forkpool {

// What the helper passes up to forkpoold for a new worker.
struct ForkedWorker {
  pid_t pid = -1;
  UniqueFd socket;  // the daemon's end of the worker's socket
  UniqueFd pidfd;
  UniqueFd stderr_read;
};

// Forks a worker that serves `identity` with `registry` (or, for a spawn pool,
// execs identity.spawn_command). `daemon_pid` must be the helper's parent. The
// child never returns from this call.
absl::StatusOr<ForkedWorker> ForkWorker(const WorkerIdentity& identity,
                                        const TaskRegistry& registry, pid_t daemon_pid);

// The fd a worker (and a spawned worker program) finds its socket on.
inline constexpr int kWorkerSocketFd = 3;

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_HELPERS_WORKER_FORKER_H_
