// WorkerCensus: how many tasks run and how many workers live in all pools, for
// shutdown (wait for running work, then for every worker to be reaped).
#ifndef FORKPOOL_SERVER_DAEMON_EXECUTOR_WORKER_CENSUS_H_
#define FORKPOOL_SERVER_DAEMON_EXECUTOR_WORKER_CENSUS_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace forkpool {

// Thread-safe; executors update it under their own lock (lock order:
// PoolExecutor::mu_ -> WorkerCensus::mu_).
class WorkerCensus {
 public:
  void AddRunning(int64_t n) {
    absl::MutexLock lock(&mu_);
    running_ += n;
  }
  void AddLive(int64_t n) {
    absl::MutexLock lock(&mu_);
    live_ += n;
  }
  int64_t live() const {
    absl::MutexLock lock(&mu_);
    return live_;
  }
  // Block until nothing runs / no worker lives, or `deadline` passes; true if
  // so.
  bool AwaitNoneRunning(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
    return mu_.AwaitWithDeadline(absl::Condition(&none), deadline);
  }
  bool AwaitNoneLive(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return live_ == 0; };
    return mu_.AwaitWithDeadline(absl::Condition(&none), deadline);
  }

 private:
  mutable absl::Mutex mu_;
  int64_t running_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t live_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_EXECUTOR_WORKER_CENSUS_H_
