// TaskBroker: owns tasks and the work waiting for workers. It accepts tasks
// and maps, deduplicates by idempotency key, keeps every pool's pending queue,
// hands work to executors, applies the retry and poison rules to what comes
// back, keeps results until their TTL passes and tells waiters.
#ifndef FORKPOOL_SERVER_DAEMON_BROKER_TASK_BROKER_H_
#define FORKPOOL_SERVER_DAEMON_BROKER_TASK_BROKER_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "forkpool/v1/forkpool.pb.h"
#include "server/daemon/broker/map_job.h"
#include "server/daemon/broker/memory_budget.h"
#include "server/daemon/broker/pending_queue.h"
#include "server/daemon/broker/task.h"
#include "server/daemon/broker/task_store.h"
#include "server/daemon/net/clock.h"

namespace forkpool {

struct BrokerOptions {
  // How long an ended task's result is kept.
  absl::Duration result_ttl = absl::Hours(1);
  // Most bytes (results plus per-task overhead) and most ended tasks kept;
  // past either the oldest go before their TTL.
  size_t max_result_bytes = size_t{1} << 30;
  size_t max_results = 1'000'000;
  // Most pending tasks and map items per pool unless the pool says otherwise.
  int64_t max_queued_per_pool = 1'000'000;
  // Largest task input (and map item).
  size_t max_input_bytes = 16u << 20;
  // A task that has killed this many workers is quarantined ("poison task").
  int poison_threshold = 3;
  // Most bytes of results one map may hold waiting for its client to read
  // them; past it its chunks wait (a client that never reads holds this much,
  // not the whole map).
  size_t max_map_unsent_bytes = 64u << 20;
  // Longest task or map item error text kept (CapText; --max_error_bytes).
  size_t max_error_bytes = size_t{16} << 10;
};

struct SubmitOutcome {
  std::string task_id;
  bool deduplicated = false;
};

// How a Submit relates to its caller.
enum class SubmitMode {
  kDetached,  // apply_async: runs on whoever leaves
  kTied,      // apply: cancelled when its last caller leaves
};

// A piece of pending work handed to a worker: a task or a map chunk.
struct Dispatch {
  std::string task_id;  // the task's, or the map's id for a chunk
  std::string function;
  std::shared_ptr<const std::string> input;  // a task's input (null for a chunk)
  std::shared_ptr<MapChunk> chunk;           // a map chunk (null for a task)
  std::string codec;
  int attempt = 1;
  // The effective limits: for a chunk, per item.
  absl::Duration time_limit;
  absl::Duration soft_time_limit;
};

// What the broker asks of the executor that drains a pool's queue. Called
// without the broker's lock, on any thread.
class WorkConsumer {
 public:
  virtual ~WorkConsumer() = default;
  // Work was queued: dispatch it if a worker is idle.
  virtual void WorkAdded() = 0;
  // Task `task_id` (running on worker `worker_key`) ended while it ran
  // (cancelled): free its worker.
  virtual void AbandonRunning(const std::string& task_id, uint64_t worker_key) = 0;
  // Map `job` was cancelled: stop its running chunks.
  virtual void StopChunks(const std::shared_ptr<MapJob>& job) = 0;
};

// What a pool is, as far as accepting work goes (set by its executor).
struct PoolEntry {
  std::string name;
  std::weak_ptr<WorkConsumer> consumer;
  int processes = 1;              // for default chunk sizes
  v1::TaskOptions task_defaults;  // under each task's own options
  int64_t max_queued = 0;         // 0: BrokerOptions::max_queued_per_pool
};

// Per-pool counts shown in PoolInfo.
struct PoolCounts {
  int64_t queued = 0;
  int64_t done = 0;
  int64_t failed = 0;
  int64_t map_inflight_high_water = 0;
};

// Thread-safe. Lock order: PoolExecutor::mu_ -> TaskBroker::mu_ -> MapJob::mu_;
// the broker never calls an executor (WorkConsumer) or a waiter with its lock
// held. Waiters and consumers run on the calling thread after the lock is
// released.
class TaskBroker {
 public:
  using Notify = std::vector<std::function<void()>>;

  // `budget` (shared with the queues; null: unbounded) counts queued inputs,
  // kept results and maps.
  TaskBroker(Clock* clock, BrokerOptions options, std::unique_ptr<TaskStore> store,
             MemoryBudget* budget = nullptr);
  ~TaskBroker();
  TaskBroker(const TaskBroker&) = delete;
  TaskBroker& operator=(const TaskBroker&) = delete;

  // --- Pools (their executors and registry) ---
  // A new pool generation `gen` under `entry.name`; it refuses work until
  // SetFunctions.
  void AddPool(uint64_t gen, PoolEntry entry);
  // The functions the pool's libraries define (after each load); the pool
  // accepts work from now on unless refusing.
  void SetFunctions(uint64_t gen, std::set<std::string> functions);
  // While `why` is not OK, new work for the pool is refused with it (closed,
  // failed); queued work stays.
  void SetRefusal(uint64_t gen, absl::Status why);
  // Ends every queued task and map chunk of the pool in `state` with `why`.
  void EndPending(uint64_t gen, v1::TaskState state, const std::string& why, Notify* notify);
  // Forgets the pool (after EndPending).
  void RemovePool(uint64_t gen);
  PoolCounts Counts(uint64_t gen) const;
  // True when the pool has neither queued tasks nor queued map items.
  bool Idle(uint64_t gen) const;

  // --- Tasks (the API) ---
  // Accepts one task. A known idempotency key answers its task at once
  // (deduplicated), even while the pool is full, closed or gone. Errors:
  // NOT_FOUND (pool, function), INVALID_ARGUMENT, FAILED_PRECONDITION (closed
  // or failed pool), RESOURCE_EXHAUSTED (queue full), UNAVAILABLE (draining).
  absl::StatusOr<SubmitOutcome> Submit(const v1::TaskSpec& spec, SubmitMode mode);
  // Accepts several tasks of one function, all or none; a key repeated within
  // the request is one task.
  absl::StatusOr<std::vector<std::string>> SubmitMany(const v1::SubmitManyRequest& request);
  // The task's result (for an ended task the one shared copy, for a live one
  // a snapshot); NOT_FOUND saying "expired" or "unknown".
  absl::StatusOr<std::shared_ptr<const v1::TaskResult>> GetResult(const std::string& task_id);
  // The terminal result if the task has ended; otherwise registers `waiter`,
  // stores its id in `*waiter_id` and returns null.
  absl::StatusOr<std::shared_ptr<const v1::TaskResult>> Watch(const std::string& task_id,
                                                              TaskWaiter waiter,
                                                              uint64_t* waiter_id);
  // Removes a waiter registered by Watch (harmless if it already ran).
  void Unwatch(const std::string& task_id, uint64_t waiter_id);
  // Cancels a task: drops it if queued, frees (kills) its worker if running.
  absl::StatusOr<v1::CancelResponse> Cancel(const std::string& task_id, const std::string& why);
  // A tied (Apply) caller of the task went away: when it was the last caller
  // and nothing detached wants the task, the task is cancelled and its key
  // forgotten, so that a retry with the key runs anew.
  void CallerLeft(const std::string& task_id);

  // --- Maps (the API) ---
  // Starts a map over packed `inputs` (which must outlive the job's chunks).
  // `chunksize` 0: about four chunks per worker. Errors as Submit; items count
  // against the pool's max_queued.
  absl::Status StartMap(const std::shared_ptr<MapJob>& job, std::string_view inputs,
                        uint32_t chunksize);
  // Opens a streaming map (no inputs yet); validates as Submit.
  absl::Status OpenMap(const std::shared_ptr<MapJob>& job);
  // Adds inputs [begin, end) of `inputs` to a streaming map, cut into chunks of
  // `chunksize` (0: about one chunk per worker from these).
  absl::Status AddMapInputs(const std::shared_ptr<MapJob>& job,
                            std::shared_ptr<const PackedItems> inputs, size_t begin, size_t end,
                            uint32_t chunksize);
  // Cancels a map: queued chunks are dropped, running ones told to stop.
  void CancelMap(const std::shared_ptr<MapJob>& job);
  size_t max_input_bytes() const { return options_.max_input_bytes; }

  // --- Dispatch (executors; their lock may be held) ---
  // The next pending work of the pool, marked running on worker `worker_key`
  // (pid `pid`); nullopt when none.
  std::optional<Dispatch> TakeWork(uint64_t gen, uint64_t worker_key, pid_t pid);
  // Work TakeWork gave that could not be sent: pending again, at the front.
  void ReturnWork(uint64_t gen, Dispatch work);
  // The task's worker answered it.
  void TaskSucceeded(const std::string& task_id, uint64_t worker_key, std::string_view output,
                     Notify* notify);
  // The task's run ended badly. WORKER_LOST and TIMED_OUT are retried while
  // its max_retries allows and `may_retry`; FAILED only with retry_on_error.
  // A task that has lost poison_threshold workers fails as a poison task.
  void TaskFailed(const std::string& task_id, uint64_t worker_key, v1::TaskState state,
                  std::string error, const v1::WorkerLoss* loss, bool may_retry, Notify* notify);
  // A chunk's run ended at item `at` (which was running) without its answer:
  // the item is retried with the rest as a new attempt if allowed, else it is
  // answered with `error` and the rest is queued again.
  void ChunkInterrupted(uint64_t gen, const MapChunk& chunk, int at, v1::TaskState state,
                        const std::string& error, const v1::WorkerLoss* loss, bool may_retry);
  // Answers a chunk's items [from, count) with `error`.
  static void FailChunkItems(const MapChunk& chunk, int from, v1::TaskState state,
                             const std::string& error, const v1::WorkerLoss* loss);

  // --- Shutdown ---
  // Refuses new work and ends all queued work as CANCELLED.
  void BeginDrain();
  bool draining() const;

 private:
  struct PoolQueue {
    PoolEntry entry;
    std::set<std::string> functions;
    bool loaded = false;
    absl::Status refusal;
    std::unique_ptr<PendingQueue> pending;
    int64_t queued = 0;  // PENDING tasks and queued map items
    // Entries of `pending` whose task ended before dispatch (skipped there;
    // compacted when they outnumber the live ones).
    int64_t dead = 0;
    // Chunks of maps whose unsent results are over their bound, by job.
    std::map<const MapJob*, std::vector<PendingWork>> parked;
    PoolCounts counts;
  };

  PoolQueue* FindQueueLocked(uint64_t gen) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The current generation under `name` ("" is the default pool), or nullptr.
  PoolQueue* FindByNameLocked(const std::string& name, uint64_t* gen)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `count` more items of `function` may be queued in `name`.
  absl::StatusOr<PoolQueue*> AdmitLocked(const std::string& name, const std::string& function,
                                         int64_t count, uint64_t* gen)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Deduplication: the task known by `key` if its spec matches `hash`;
  // nullptr when the key is new; INVALID_ARGUMENT when it was used for another.
  absl::StatusOr<Task*> FindByKeyLocked(const std::string& key, uint64_t hash)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Task& AddTaskLocked(uint64_t gen, PoolQueue& q, const std::string& function,
                      std::shared_ptr<const std::string> input, const std::string& codec,
                      const v1::TaskOptions& options, const std::string& request_id, uint64_t hash,
                      SubmitMode mode) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void JoinLocked(Task& task, SubmitMode mode) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLocked(Task& task, v1::TaskState state, Notify* notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes a pending task off its pool's count (cancelled, expired).
  void UnqueueLocked(Task& task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void QueueChunksLocked(PoolQueue& q, const std::shared_ptr<MapJob>& job, uint64_t first_index,
                         const std::shared_ptr<const PackedItems>& inputs, size_t begin, int count,
                         uint32_t chunksize) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RequeueChunkRestLocked(PoolQueue& q, const MapChunk& chunk, int from)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::TaskOptions EffectiveLocked(const PoolQueue& q, const v1::TaskOptions& own) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets a new map's result bound and admits it to pool `gen`.
  void AdmitMapLocked(const std::shared_ptr<MapJob>& job, uint64_t gen)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A parked map has room for results again: its chunks are queued again.
  void Unpark(const std::weak_ptr<MapJob>& job);
  void OnQueueDeadline(const std::string& task_id);
  void Sweep();
  // Calls the pool's consumer (without the lock).
  static void Kick(const std::weak_ptr<WorkConsumer>& consumer);
  static void RunNotify(Notify& notify);

  // Sweeps the store (TTL and caps) and gives what went back to the budget.
  void SweepStoreLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Clock* const clock_;
  const BrokerOptions options_;
  MemoryBudget own_budget_{0};
  MemoryBudget* const budget_;

  mutable absl::Mutex mu_;
  std::unique_ptr<TaskStore> store_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, PoolQueue> pools_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> by_name_ ABSL_GUARDED_BY(mu_);
  uint64_t next_waiter_ ABSL_GUARDED_BY(mu_) = 1;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  Clock::TimerId sweep_timer_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_BROKER_TASK_BROKER_H_
