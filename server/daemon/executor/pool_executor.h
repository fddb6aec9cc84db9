// PoolExecutor: one pool's workers. It has its launcher load the pool, starts
// and replaces workers, takes work from the broker for idle ones, speaks the
// worker protocol, enforces time limits, start deadlines and the stopped
// grace, and winds the pool down on close, terminate and delete.
#ifndef FORKPOOL_SERVER_DAEMON_EXECUTOR_POOL_EXECUTOR_H_
#define FORKPOOL_SERVER_DAEMON_EXECUTOR_POOL_EXECUTOR_H_

#include <cstdint>
#include <deque>
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
#include "server/daemon/executor/worker_census.h"
#include "server/daemon/executor/worker_slot.h"
#include "server/daemon/launch/worker_launcher.h"
#include "server/daemon/net/clock.h"

namespace forkpool {

// Answers a running task's request to the daemon (a queue operation): `reply`
// sends the answer to the worker and returns false if that worker is gone.
using WorkerReply = std::function<bool(absl::Status status, std::string body)>;
using WorkerRequestHandler =
    std::function<void(const std::string& method, const std::string& body, WorkerReply reply)>;

struct ExecutorOptions {
  // A worker that has not said hello (its initializer still runs) by then is
  // killed.
  absl::Duration start_timeout = absl::Seconds(60);
  // A worker stopped (SIGSTOP) longer than this is killed and replaced.
  absl::Duration stopped_grace = absl::Seconds(10);
  // A cancelled map's running item that has not stopped by then has its
  // worker killed.
  absl::Duration cancel_grace = absl::Seconds(5);
  // How often every worker is checked for a stop: a stopped one is noticed
  // within this (or at once, when work would go to it).
  absl::Duration stop_check_interval = absl::Milliseconds(500);
  // Consecutive failed (re)loads after which the pool is FAILED.
  int give_up_after = 5;
  // Longest error text of a map item or an initializer kept (--max_error_bytes).
  size_t max_error_bytes = size_t{16} << 10;
};

struct ExecutorDeps {
  Clock* clock = nullptr;
  TaskBroker* broker = nullptr;
  std::shared_ptr<WorkerLauncher> launcher;
  WorkerCensus* census = nullptr;
  WorkerRequestHandler request_handler;  // may be empty
};

// Thread-safe: gRPC threads call the pool operations, the broker calls
// WorkConsumer, the launcher's events arrive on the loop thread. One lock
// (mu_) guards the pool; lock order: mu_ -> TaskBroker -> MapJob, and
// mu_ -> WorkerCensus. Waiters and callbacks run after mu_ is released.
class PoolExecutor : public WorkConsumer, public std::enable_shared_from_this<PoolExecutor> {
 public:
  using CreateDone = std::function<void(absl::StatusOr<v1::PoolInfo>)>;

  // `settings` are validated and complete. The pool is registered with the
  // broker under `generation`.
  static std::shared_ptr<PoolExecutor> Create(uint64_t generation, v1::PoolSettings settings,
                                              ExecutorDeps deps, ExecutorOptions options);
  ~PoolExecutor() override;

  // Loads the pool and starts its workers; `done` runs once, when the first
  // load has ended (with the pool's info or why it failed; a failed pool is
  // gone: `gone` runs too).
  void Start(CreateDone done, std::function<void()> gone);

  uint64_t generation() const { return generation_; }
  // True once the pool is being deleted (or its first load failed): it only
  // winds down.
  bool deleting() const {
    absl::MutexLock lock(&mu_);
    return deleting_;
  }
  const v1::PoolSettings& settings() const { return settings_; }

  v1::PoolInfo Info();
  // multiprocessing's close(): no new work; queued and running work finishes,
  // then the workers exit.
  v1::PoolInfo Close();
  // terminate(): closes the pool, cancels queued and running work, kills the
  // workers.
  v1::PoolInfo Terminate(const std::string& why);
  // Terminates the pool and drops its helper; the `gone` given to Start runs
  // once its last worker is reaped (maybe now).
  void Delete();
  // join(): `done` runs once the closed pool has no work and no workers.
  // FAILED_PRECONDITION if the pool is not closed.
  absl::Status Join(std::function<void()> done);
  // Blocks until `count` workers are idle or busy, the pool is gone, or
  // `deadline` passes; true unless the deadline passed.
  bool AwaitReady(int count, absl::Time deadline);

  // Shutdown: no more starts or retries; a load in progress is answered now.
  void BeginDrain();
  // Kills every worker; their work ends CANCELLED.
  void KillAll();
  // Asks the pool's helper to leave.
  void CloseHelper();

  // WorkConsumer.
  void WorkAdded() override;
  void AbandonRunning(const std::string& task_id, uint64_t worker_key) override;
  void StopChunks(const std::shared_ptr<MapJob>& job) override;

 private:
  using Notify = TaskBroker::Notify;

  PoolExecutor(uint64_t generation, v1::PoolSettings settings, ExecutorDeps deps,
               ExecutorOptions options);

  // --- Loading (pool_executor.cc) ---
  // Arms the stop sweep and starts the first load.
  void StartLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LoadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnLoaded(uint64_t attempt, absl::StatusOr<LoadResult> result);
  void OnHelperLost(uint64_t attempt, const std::string& why);
  void LoadFailedLocked(const absl::Status& status, Notify* notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleReloadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetStateLocked(v1::PoolState state, Notify* notify) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::PoolInfo InfoLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends queued and running work as CANCELLED and kills the workers.
  void TerminateLocked(const std::string& why, Notify* notify) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // For a closed pool: stops idle workers once no work is left, fires join
  // waiters once no worker is left, and `gone` once a deleted pool has none.
  void WindDownLocked(Notify* notify) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int LiveWorkersLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- Workers (pool_executor_workers.cc) ---
  void StartMissingWorkersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartWorkerLocked(int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleRestartLocked(int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnWorkerStarted(uint64_t key, absl::StatusOr<std::unique_ptr<WorkerProcess>> process);
  void OnWorkerIo(uint64_t key, uint32_t events);
  void OnWorkerExit(uint64_t key);
  // The work `w` was running ended with its worker's death.
  void EndLostWorkLocked(WorkerSlot& w, v1::TaskState state, const std::string& error,
                         const v1::WorkerLoss& loss, Notify* notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void KillLocked(WorkerSlot& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- Dispatch and frames (pool_executor_dispatch.cc) ---
  void DispatchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool SendWorkLocked(WorkerSlot& w, Dispatch work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool SendLocked(WorkerSlot& w, const internal::ToWorker& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The batch `w` ran is over: it is idle again (or recycled).
  void BatchOverLocked(WorkerSlot& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnFrameLocked(WorkerSlot& w, internal::FromWorker& m, Notify* notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnHelloLocked(WorkerSlot& w, const internal::Hello& hello)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnResultsLocked(WorkerSlot& w, internal::FromWorker& m, Notify* notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnDoneLocked(WorkerSlot& w, const internal::BatchDone& done, Notify* notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ProtocolErrorLocked(WorkerSlot& w, const std::string& what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ReplyToWorker(uint64_t key, uint64_t correlation_id, const absl::Status& status,
                     std::string body);

  // --- Health (pool_executor_health.cc) ---
  void ArmTimeLimitLocked(WorkerSlot& w, absl::Duration limit) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnTimeLimit(uint64_t key, uint64_t batch);
  void OnStartTimeout(uint64_t key);
  void OnStopGrace(uint64_t key, uint64_t batch);
  void CheckStoppedWorkers();
  // Whether `w` is stopped now (asks the kernel; updates w.stopped and idle_).
  bool StoppedLocked(WorkerSlot& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  WorkerSlot* FindLocked(uint64_t key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void RunNotify(Notify& notify);

  const uint64_t generation_;
  const v1::PoolSettings settings_;
  const ExecutorDeps deps_;
  const ExecutorOptions options_;
  Clock* const clock_;
  TaskBroker* const broker_;

  mutable absl::Mutex mu_;
  v1::PoolState state_ ABSL_GUARDED_BY(mu_) = v1::POOL_STATE_LOADING;
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;  // loaded at least once
  uint64_t load_attempt_ ABSL_GUARDED_BY(mu_) = 0;
  bool has_helper_ ABSL_GUARDED_BY(mu_) = false;
  int helper_failures_ ABSL_GUARDED_BY(mu_) = 0;  // consecutive failed loads and losses
  MonoTime helper_since_ ABSL_GUARDED_BY(mu_);    // when its helper last loaded
  CreateDone create_done_ ABSL_GUARDED_BY(mu_);
  std::function<void()> gone_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool deleting_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::function<void()>> join_waiters_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, WorkerSlot> workers_ ABSL_GUARDED_BY(mu_);  // by key
  std::deque<uint64_t> idle_ ABSL_GUARDED_BY(mu_);               // keys of IDLE workers
  uint64_t next_key_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_batch_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t workers_started_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t workers_lost_ ABSL_GUARDED_BY(mu_) = 0;
  // Map items its workers answered (tasks are counted by the broker).
  int64_t map_items_done_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t map_items_failed_ ABSL_GUARDED_BY(mu_) = 0;
  // Consecutive worker starts that failed: drives the restart back-off.
  int failed_starts_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  Clock::TimerId stop_check_timer_ ABSL_GUARDED_BY(mu_) = 0;
  // For the log line that says how long the pool took to get ready.
  MonoTime created_at_ ABSL_GUARDED_BY(mu_);
  MonoTime loaded_at_ ABSL_GUARDED_BY(mu_);
  bool reported_ready_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_EXECUTOR_POOL_EXECUTOR_H_
