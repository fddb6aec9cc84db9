// The native worker's loop: says hello, then runs batches sent by forkpoold
// until its socket closes. Runs in a worker process only (single-threaded).
#ifndef FORKPOOL_SERVER_WORKER_WORKER_LOOP_H_
#define FORKPOOL_SERVER_WORKER_WORKER_LOOP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "server/worker/task_registry.h"

namespace forkpool {

struct WorkerIdentity {
  std::string pool;
  int worker_index = 0;
  // Run once before the first task; its failure is reported in Hello.
  std::string initializer;
  std::string initargs;
  // For spawn pools: the program to exec (argv) and the libraries it loads
  // itself.
  std::vector<std::string> spawn_command;
  std::vector<std::string> libraries;
  // RLIMIT_AS for the worker in bytes; 0 = none.
  int64_t memory_limit_bytes = 0;
  // The soft RLIMIT_NOFILE forkpoold started with (0: leave as inherited).
  uint64_t nofile_soft_limit = 0;
};

// Serves `socket` until EOF or Shutdown. Returns the process exit code: 0 after
// a clean end, nonzero after a protocol or initializer error.
int RunWorkerLoop(const WorkerIdentity& identity, const TaskRegistry& registry, UniqueFd socket);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_WORKER_WORKER_LOOP_H_
