// Scheduler: the daemon's pools, workers and tasks, and the policy that joins
// them: accept tasks, dispatch them to idle workers, collect results, replace
// workers.
#ifndef FORKPOOL_SERVER_DAEMON_SCHEDULER_H_
#define FORKPOOL_SERVER_DAEMON_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "forkpool/v1/forkpool.pb.h"
#include "server/daemon/io_loop.h"
#include "server/daemon/launch/child_registry.h"
#include "server/daemon/launch/root_helper_client.h"
#include "server/daemon/pool.h"
#include "server/daemon/task_table.h"

namespace forkpool {

struct SchedulerOptions {
  // How long a finished task's result is kept.
  absl::Duration result_ttl = absl::Hours(1);
  // Most bytes of finished results kept; past it the oldest go before their
  // TTL.
  size_t max_result_bytes = size_t{1} << 30;
  // Largest frame a worker may send.
  size_t max_frame_bytes = 64u << 20;
  // Most pending tasks per pool unless the pool says otherwise.
  int64_t max_queued_per_pool = 1'000'000;
  // Largest task input.
  size_t max_input_bytes = 16u << 20;
  // A task that has killed this many workers is quarantined ("poison task").
  int poison_threshold = 3;
  // Libraries a pool created without any loads (the default pool's).
  std::vector<std::string> default_libraries;
  // A pool helper that has not loaded its libraries by then is killed and the
  // load fails.
  absl::Duration load_timeout = absl::Seconds(30);
  // A worker that has not said hello (its initializer still runs) by then is
  // killed.
  absl::Duration start_timeout = absl::Seconds(60);
  // A worker stopped (SIGSTOP) longer than this is killed and replaced.
  absl::Duration stopped_grace = absl::Seconds(10);
  // A cancelled map's running item that has not stopped by then has its worker
  // killed.
  absl::Duration cancel_grace = absl::Seconds(5);
  // Largest initializer argument a pool may hold.
  size_t max_initargs_bytes = size_t{1} << 20;
  // Most workers of all pools together; a pool past it is refused.
  int max_workers = 2048;
  // Longest task or map item error text kept (CapText; kDefaultMaxErrorBytes).
  size_t max_error_bytes = size_t{16} << 10;
  // The soft RLIMIT_NOFILE forkpoold started with; workers get it back.
  uint64_t nofile_soft_limit = 0;
  // The worker program of spawn pools without a worker_command.
  std::string worker_program;
};

struct SubmitOutcome {
  std::string task_id;
  bool deduplicated = false;
};

// Thread-safe: gRPC threads call the public methods; worker and helper events
// arrive on the IoLoop's thread. One lock (mu_) guards all state; waiters are
// called after it is released.
class Scheduler {
 public:
  Scheduler(IoLoop* loop, SchedulerOptions options);
  ~Scheduler();

  // Answers a running task's request to the daemon: `reply` sends the answer to
  // the worker and returns false if that worker is gone.
  using WorkerReply = std::function<bool(absl::Status status, std::string body)>;
  using WorkerRequestHandler =
      std::function<void(const std::string& method, const std::string& body, WorkerReply reply)>;
  // Sets the handler of worker requests (set once, before serving).
  void SetWorkerRequestHandler(WorkerRequestHandler handler) {
    request_handler_ = std::move(handler);
  }

  // Connects the root helper, which makes every pool's helper, and the registry
  // of children the daemon owns (set once, before any pool is created).
  void AttachHelpers(RootHelperClient* root, ChildRegistry* children);

  // Validates `settings`, has the helper load the pool's libraries, starts its
  // workers, then calls `done` (on the loop thread, or at once on a validation
  // error).
  void CreatePool(v1::PoolSettings settings,
                  std::function<void(absl::StatusOr<v1::PoolInfo>)> done);
  // multiprocessing's close(): no new work; queued and running work finishes,
  // then the workers exit.
  absl::StatusOr<v1::PoolInfo> ClosePool(const std::string& name);
  // terminate(): closes the pool, cancels queued and running work, kills the
  // workers.
  absl::StatusOr<v1::PoolInfo> TerminatePool(const std::string& name);
  // Terminates the pool and removes it once its workers are reaped.
  absl::Status DeletePool(const std::string& name);
  // join(): calls `done` (on some thread, without the lock) once the closed
  // pool has no work and no workers. FAILED_PRECONDITION if the pool is not
  // closed.
  absl::Status JoinPool(const std::string& name, std::function<void()> done);
  // Pools and their workers.
  std::vector<v1::PoolInfo> ListPools();
  absl::StatusOr<v1::PoolInfo> DescribePool(const std::string& name);
  // Blocks until the pool has `count` idle-or-busy workers or `deadline`
  // passes; true if it did.
  bool AwaitWorkersReady(const std::string& pool, int count, absl::Time deadline);

  // Accepts one task. Errors: NOT_FOUND (pool, function), INVALID_ARGUMENT,
  // FAILED_PRECONDITION (closed pool), RESOURCE_EXHAUSTED (queue full),
  // UNAVAILABLE (shutting down).
  absl::StatusOr<SubmitOutcome> Submit(const v1::TaskSpec& spec);
  // Accepts several tasks of one function, all or none.
  absl::StatusOr<std::vector<std::string>> SubmitMany(const v1::SubmitManyRequest& request);
  // A snapshot of the task's result; NOT_FOUND saying "expired" or "unknown".
  absl::StatusOr<v1::TaskResult> GetResult(const std::string& task_id);
  // The terminal result if the task has ended; otherwise registers `waiter`,
  // stores its id in `*waiter_id` and returns nullopt.
  absl::StatusOr<std::optional<v1::TaskResult>> Watch(const std::string& task_id, TaskWaiter waiter,
                                                      uint64_t* waiter_id);
  // Removes a waiter registered by Watch (harmless if it already ran).
  void Unwatch(const std::string& task_id, uint64_t waiter_id);
  // Cancels a task: drops it if queued, kills its worker if running.
  absl::StatusOr<v1::CancelResponse> Cancel(const std::string& task_id, const std::string& why);

  // Starts a map over packed `inputs` (which must outlive the job's chunks: see
  // MapChunk). `chunksize` 0 means ceil(len / (4 * processes)). Errors as
  // Submit; InvalidArgument for malformed packed inputs.
  absl::Status StartMap(const std::shared_ptr<MapJob>& job, std::string_view inputs,
                        uint32_t chunksize);
  // Opens a streaming map (no inputs yet); validates as Submit.
  absl::Status OpenMap(const std::shared_ptr<MapJob>& job);
  // Adds inputs [begin, end) of `inputs` to a streaming map, cut into chunks of
  // `chunksize` (0: about one chunk per worker from these).
  absl::Status AddMapInputs(const std::shared_ptr<MapJob>& job,
                            std::shared_ptr<const PackedItems> inputs, size_t begin, size_t end,
                            uint32_t chunksize);
  // The largest input (a task's or one map item's) accepted.
  size_t max_input_bytes() const { return options_.max_input_bytes; }
  // Cancels a map: queued chunks are dropped, running ones told to stop. Call
  // before ending the call (the unary inputs are freed with it).
  void CancelMap(const std::shared_ptr<MapJob>& job);

  // Every pool's helper is asked to leave (shutdown, after KillAll).
  void CloseHelpers();

  // Shutdown, in order: BeginDrain (refuse new work, cancel queued tasks), then
  // AwaitRunning (running tasks finish or the deadline passes), then KillAll.
  void BeginDrain();
  bool draining() const;
  // Blocks until no task runs or `deadline` passes; true if none runs.
  bool AwaitRunning(absl::Time deadline);
  // Kills every worker (their tasks end CANCELLED) and waits until the loop has
  // reaped them all or `deadline` passes.
  void KillAll(absl::Time deadline);

 private:
  using Notify = std::vector<std::function<void()>>;

  Pool* FindPoolLocked(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Pool `name` (a deleting one too: its workers must still be drained and
  // reaped) and its worker `key`; {pool or nullptr, nullptr} when either is
  // gone. For the loop's callbacks, which name a worker by pool and key.
  std::pair<Pool*, WorkerSlot*> FindWorkerLocked(const std::string& name, uint64_t key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckAcceptsLocked(const std::string& pool_name, const Pool* pool,
                                  const std::string& function, int64_t count)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Task& AddTaskLocked(Pool& pool, const std::string& function, std::string input, std::string codec,
                      const v1::TaskOptions& options, std::string request_id, uint64_t spec_hash)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DispatchLocked(Pool& pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends one pending entry to an idle worker; false if it was skipped.
  bool SendTaskLocked(Pool& pool, WorkerSlot& w, Task& task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool SendChunkLocked(Pool& pool, WorkerSlot& w, std::shared_ptr<MapChunk> chunk)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool SendLocked(WorkerSlot& w, const internal::ToWorker& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues inputs [begin, begin + count) of `inputs` as chunks of job items
  // first_index, first_index + 1, ...
  void QueueChunksLocked(Pool& pool, const std::shared_ptr<MapJob>& job, uint64_t first_index,
                         const std::shared_ptr<const PackedItems>& inputs, size_t begin, int count,
                         uint32_t chunksize) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Answers a chunk's items [from, count) with `error` (or requeues them).
  void FailChunkItemsLocked(const MapChunk& chunk, int from, v1::TaskState state,
                            const std::string& error, const v1::WorkerLoss* loss)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RequeueChunkRestLocked(Pool& pool, const MapChunk& chunk, int from)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Pool helpers (scheduler_helpers.cc): asks the root helper for a new helper
  // of `pool` and has it load the pool; a lost one is replaced with back-off.
  void StartPoolHelperLocked(Pool& pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnPoolHelperStarted(const std::string& name, uint64_t attempt,
                           absl::StatusOr<HelperProcess> process, int root_tries);
  void OnPoolLoaded(const std::string& name, uint64_t attempt,
                    absl::StatusOr<internal::FromHelper> reply);
  void OnPoolHelperExit(const std::string& name, uint64_t attempt, const std::string& why);
  // A load (first or again) failed with `status`.
  void LoadFailedLocked(Pool& pool, const absl::Status& status, Notify* notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleReloadLocked(Pool& pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts a worker for every index of the pool that has none.
  void StartMissingWorkersLocked(Pool& pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fails the queued work of a FAILED pool that has no live worker to run it.
  void FailStrandedWorkLocked(Pool& pool, Notify* notify) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int LiveWorkersLocked(const Pool& pool) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Workers (loop thread): start deadline, stopped workers, a cancelled chunk's
  // grace.
  void OnStartTimeout(const std::string& pool, uint64_t key);
  void OnStopGrace(const std::string& pool, uint64_t key, uint64_t batch);
  void CheckStoppedWorkers();
  // Whether `w` is stopped now (checks the kernel; updates w.stopped).
  bool StoppedLocked(Pool& pool, WorkerSlot& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartWorkerLocked(Pool& pool, int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleRestartLocked(Pool& pool, int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnWorkerForked(const std::string& pool, uint64_t key,
                      absl::StatusOr<internal::FromHelper> reply, std::vector<UniqueFd> fds);
  void OnWorkerSocket(const std::string& pool, uint64_t key, uint32_t events);
  // Reaps, when it exits, a worker that no pool owns.
  void ReapLaterLocked(UniqueFd pidfd) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnWorkerExit(const std::string& pool, uint64_t key);
  void OnWorkerMessage(Pool& pool, WorkerSlot& worker, internal::FromWorker& message,
                       Notify* notify) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ProtocolErrorLocked(WorkerSlot& worker, const std::string& what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLocked(Pool* pool, Task& task, v1::TaskState state, Notify* notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::PoolInfo InfoLocked(const Pool& pool) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SweepResults();
  // Timer callbacks (loop thread).
  void OnTimeLimit(const std::string& pool, uint64_t key, uint64_t batch);
  void OnQueueDeadline(const std::string& task_id);
  // Arms the hard time limit of the batch `w` now runs.
  void ArmTimeLimitLocked(Pool& pool, WorkerSlot& w, absl::Duration limit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a worker loss or time-out: retries the task if it may, else ends it.
  void RetryOrFinishLocked(Pool& pool, Task& task, v1::TaskState state, Notify* notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends every queued task and map chunk of `pool` in `state` with error `why`.
  void EndPendingLocked(Pool& pool, v1::TaskState state, const std::string& why, Notify* notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends every queued and running piece of work of `pool` as CANCELLED and
  // kills its workers.
  void TerminateLocked(Pool& pool, const std::string& why, Notify* notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // For a closed pool: stops idle workers once no work is left, and fires join
  // waiters once no worker is left.
  void WindDownLocked(Pool& pool, Notify* notify) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void RunNotify(Notify& notify);

  IoLoop* const loop_;
  const SchedulerOptions options_;
  RootHelperClient* root_ = nullptr;      // set once by AttachHelpers
  ChildRegistry* children_ = nullptr;     // set once by AttachHelpers
  WorkerRequestHandler request_handler_;  // set once before serving
  // Sends WorkerReply `correlation_id` to a worker if it still lives.
  bool ReplyToWorker(const std::string& pool, uint64_t key, uint64_t correlation_id,
                     const absl::Status& status, std::string body);

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Pool>> pools_ ABSL_GUARDED_BY(mu_);
  TaskTable tasks_ ABSL_GUARDED_BY(mu_);
  uint64_t next_worker_key_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_batch_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_load_attempt_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t running_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t live_workers_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  IoLoop::TimerId sweep_timer_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<int, UniqueFd> orphans_ ABSL_GUARDED_BY(mu_);  // pidfd -> owner
  IoLoop::TimerId stop_check_timer_ ABSL_GUARDED_BY(mu_) = 0;
  // How often every worker is checked for a stop (SIGSTOP): a stopped one is
  // noticed within this (or at once, when work would go to it).
  static constexpr absl::Duration kStopCheckInterval = absl::Milliseconds(500);
  // How long a pool helper may take to fork a worker.
  static constexpr absl::Duration kForkTimeout = absl::Seconds(10);
  // Consecutive failed reloads after which a pool is FAILED.
  static constexpr int kGiveUpAfter = 5;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_SCHEDULER_H_
