// Pool settings: validation, defaults and names shared by the daemon's parts.
#ifndef FORKPOOL_SERVER_DAEMON_POOL_SETTINGS_H_
#define FORKPOOL_SERVER_DAEMON_POOL_SETTINGS_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "forkpool/v1/forkpool.pb.h"

namespace forkpool {

inline constexpr char kDefaultPoolName[] = "default";

// Checks `settings` and fills in defaults (processes = CPUs, start method =
// forkserver). Errors name the pool and the field.
// Default largest initializer argument (--max_initargs_bytes): it is kept with the
// pool, sent to every spawned worker and shown by DescribePool.
inline constexpr size_t kMaxInitargsBytes = 1u << 20;

absl::Status NormalizePoolSettings(v1::PoolSettings* settings,
                                   size_t max_initargs_bytes = kMaxInitargsBytes);
// Checks a pool or queue name: [A-Za-z0-9_.-]{1,64}. `what` is "pool" or "queue".
absl::Status ValidateName(const std::string& what, const std::string& name);
// "forkserver", "spawn", "fork".
std::string StartMethodName(v1::StartMethod method);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_POOL_SETTINGS_H_
