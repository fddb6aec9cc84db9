// Pool settings: validation, defaults and names shared by the daemon's parts.
#ifndef FORKPOOL_SERVER_DAEMON_EXECUTOR_POOL_SETTINGS_H_
#define FORKPOOL_SERVER_DAEMON_EXECUTOR_POOL_SETTINGS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "forkpool/v1/forkpool.pb.h"

namespace forkpool {

inline constexpr char kDefaultPoolName[] = "default";
// Longest pool or queue name.
inline constexpr size_t kMaxNameBytes = 64;
// Smallest memory_limit_bytes (RLIMIT_AS) other than 0 (none). A forkserver worker
// inherits its pool helper's address space, about 30 MiB before any task library:
// under 32 MiB it dies of std::bad_alloc at its first task (measured: 24 MiB
// fails, 32 MiB runs the example tasks; a spawn worker runs in 16 MiB).
inline constexpr int64_t kMinMemoryLimitBytes = int64_t{32} << 20;
// Smallest max_memory_per_child_bytes (resident set) other than 0 (never). An idle
// native worker holds about 5 MiB: below 16 MiB every worker would be replaced
// after every task.
inline constexpr int64_t kMinMemoryPerChildBytes = int64_t{16} << 20;

// Default largest initializer argument (--max_initargs_bytes): it is kept with the
// pool, sent to every spawned worker and shown by DescribePool.
inline constexpr size_t kMaxInitargsBytes = 1u << 20;

// Checks `settings` (name, counts, task_defaults as ValidateTaskOptions, memory
// limits, libraries, initargs, worker_command) and fills in defaults (processes =
// CPUs, start method = forkserver). Errors name the pool and the field.
absl::Status NormalizePoolSettings(v1::PoolSettings* settings,
                                   size_t max_initargs_bytes = kMaxInitargsBytes);
// Checks a pool or queue name: [A-Za-z0-9_.-]{1,64}, neither "." nor ".." and not
// starting with '-'. `what` is "pool" or "queue".
absl::Status ValidateName(const std::string& what, const std::string& name);
// "forkserver", "spawn", "fork".
std::string StartMethodName(v1::StartMethod method);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_EXECUTOR_POOL_SETTINGS_H_
