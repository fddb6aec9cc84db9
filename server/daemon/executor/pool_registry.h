// PoolRegistry: the daemon's pools by name, each a PoolExecutor of its own
// generation. It creates them (validating settings and the caps), finds them
// for the pool API, and drives shutdown across all of them.
#ifndef FORKPOOL_SERVER_DAEMON_EXECUTOR_POOL_REGISTRY_H_
#define FORKPOOL_SERVER_DAEMON_EXECUTOR_POOL_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "forkpool/v1/forkpool.pb.h"
#include "server/daemon/broker/task_broker.h"
#include "server/daemon/executor/pool_executor.h"
#include "server/daemon/executor/worker_census.h"
#include "server/daemon/launch/worker_launcher.h"
#include "server/daemon/net/clock.h"

namespace forkpool {

struct RegistryOptions {
  // Most workers of all pools together; a pool past it is refused.
  int max_workers = 2048;
  // Libraries a pool created without any loads (the default pool's).
  std::vector<std::string> default_libraries;
  // Largest initializer argument a pool may hold.
  size_t max_initargs_bytes = size_t{1} << 20;
};

// Makes the launcher of a new pool.
using LauncherFactory = std::function<std::shared_ptr<WorkerLauncher>(const v1::PoolSettings&)>;

// Thread-safe. Its lock is never held while an executor is called (lock order:
// PoolExecutor::mu_ -> PoolRegistry::mu_, for a deleted pool's removal).
class PoolRegistry {
 public:
  PoolRegistry(Clock* clock, TaskBroker* broker, WorkerCensus* census, RegistryOptions options,
               ExecutorOptions executor_options, LauncherFactory launchers);

  // Sets the handler of worker requests (once, before any pool is created).
  void SetWorkerRequestHandler(WorkerRequestHandler handler) { handler_ = std::move(handler); }

  // Validates `settings`, loads the pool, starts its workers, then calls `done`
  // (on the loop thread, or at once on a validation error).
  void CreatePool(v1::PoolSettings settings, PoolExecutor::CreateDone done);
  absl::StatusOr<v1::PoolInfo> ClosePool(const std::string& name);
  absl::StatusOr<v1::PoolInfo> TerminatePool(const std::string& name);
  // Terminates the pool; its name is free again once its workers are reaped.
  absl::Status DeletePool(const std::string& name);
  absl::Status JoinPool(const std::string& name, std::function<void()> done);
  std::vector<v1::PoolInfo> ListPools();
  absl::StatusOr<v1::PoolInfo> DescribePool(const std::string& name);
  // Blocks until the pool has `count` idle-or-busy workers or `deadline`
  // passes; true if it did.
  bool AwaitWorkersReady(const std::string& name, int count, absl::Time deadline);

  // Shutdown, in order: BeginDrain (refuse new work, cancel queued work),
  // AwaitRunning, KillAll, CloseHelpers.
  void BeginDrain();
  bool AwaitRunning(absl::Time deadline);
  // Kills every worker and waits until all are reaped or `deadline` passes.
  void KillAll(absl::Time deadline);
  void CloseHelpers();

 private:
  struct Entry {
    std::shared_ptr<PoolExecutor> executor;
    bool deleting = false;
  };
  // The live (not deleting) pool `name` ("" is the default pool).
  std::shared_ptr<PoolExecutor> Find(const std::string& name);
  std::vector<std::shared_ptr<PoolExecutor>> All();
  void Remove(const std::string& name, uint64_t generation);

  Clock* const clock_;
  TaskBroker* const broker_;
  WorkerCensus* const census_;
  const RegistryOptions options_;
  const ExecutorOptions executor_options_;
  const LauncherFactory launchers_;
  WorkerRequestHandler handler_;  // set once before serving

  absl::Mutex mu_;
  std::map<std::string, Entry> pools_ ABSL_GUARDED_BY(mu_);
  uint64_t next_generation_ ABSL_GUARDED_BY(mu_) = 1;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_EXECUTOR_POOL_REGISTRY_H_
