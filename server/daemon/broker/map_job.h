// MapJob: one Map or MapStream call's items: which are answered, which are waiting to
// leave, in input order or as they complete, and how many are in flight.
#ifndef FORKPOOL_SERVER_DAEMON_BROKER_MAP_JOB_H_
#define FORKPOOL_SERVER_DAEMON_BROKER_MAP_JOB_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/packed_items.h"
#include "forkpool/v1/forkpool.pb.h"
#include "server/daemon/broker/memory_budget.h"

namespace forkpool {

// Largest MapResponse the daemon sends: well under the 4 MiB clients accept by default.
inline constexpr size_t kMaxMapResponseBytes = 1u << 20;

// Answers of consecutive items, packed as the worker sent them: the map's hot path
// moves these whole and makes no object per item.
struct MapRun {
  uint64_t first_index = 0;
  uint64_t count = 0;
  std::string outputs;                   // packed; a failed item's output is empty
  std::vector<v1::MapItemError> errors;  // the failed items (sparse)
  // Packed bytes of the inputs these results answer (released from the job's count).
  uint64_t input_bytes = 0;
};

// What one run waiting to leave costs beyond its bytes (the run, its queue or
// reorder node), counted against a map's bounds.
inline constexpr uint64_t kMapRunOverheadBytes = sizeof(MapRun) + 64;

// Thread-safe. Executors add results (under their own lock, which may be held:
// MapJob's lock is taken after it); the call's reactor takes batches to write.
class MapJob {
 public:
  // `wake` is called (without MapJob's lock) when a batch is ready to take or the job
  // has ended; it must not block.
  MapJob(std::string id, std::string pool, std::string function, std::string codec, bool ordered,
         std::function<void()> wake);
  // Gives back what it holds to its budget.
  ~MapJob();

  const std::string& id() const { return id_; }
  const std::string& pool() const { return pool_; }
  const std::string& function() const { return function_; }
  const std::string& codec() const { return codec_; }
  // Limits and retries for every item (set before the job starts).
  const v1::TaskOptions& options() const { return options_; }
  void set_options(const v1::TaskOptions& options) { options_ = options; }

  // The generation of the pool the job was admitted to (0 before).
  uint64_t generation() const { return generation_.load(); }
  void set_generation(uint64_t gen) { generation_.store(gen); }

  // Items accepted so far: the next input's index.
  uint64_t accepted() const;
  // Items accepted so far (indexes 0..n-1), with `input_bytes` of packed inputs.
  // `end` says no more will come.
  void AddAccepted(uint64_t n, bool end, uint64_t input_bytes = 0);
  // Records the answers of a run of items (one lock and one wake). `run.outputs`
  // must hold run.count well-formed packed items. Items already answered are
  // ignored (the run is cut around them).
  void AddRun(MapRun run);
  // Takes up to kMaxMapResponseBytes of results that may leave now; nullopt if none.
  std::optional<v1::MapResponse> TakeBatch();
  // True when every accepted item has been taken and no more inputs will come.
  bool Finished() const;
  // Items accepted but not yet taken by the writer (the streaming window's measure).
  uint64_t InFlight() const;
  // Bytes the job holds: inputs accepted and not yet answered, and results not yet
  // taken by the writer (the streaming map's memory bound).
  uint64_t InFlightBytes() const;

  // Results waiting to leave may hold at most `limit` bytes before the
  // broker stops dispatching the job's chunks (0: no limit); `on_room` runs
  // (without the job's lock) when a parked job has drained to half of it.
  void SetUnsentLimit(uint64_t limit, std::function<void()> on_room);
  // Counts what the job holds (InFlightBytes) in `budget` from now on.
  void SetBudget(MemoryBudget* budget);
  // Parks the job if its unsent results are over the limit; true if parked.
  bool TryPark();

  // Marks the job cancelled: queued chunks are dropped, running ones stopped.
  void Cancel();
  bool cancelled() const;

 private:
  const std::string id_, pool_, function_, codec_;
  const bool ordered_;
  const std::function<void()> wake_;
  v1::TaskOptions options_;
  std::atomic<uint64_t> generation_{0};

  mutable absl::Mutex mu_;
  uint64_t accepted_ ABSL_GUARDED_BY(mu_) = 0;
  bool input_ended_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t answered_ ABSL_GUARDED_BY(mu_) = 0;  // distinct items with a result
  uint64_t taken_ ABSL_GUARDED_BY(mu_) = 0;     // items handed to the writer
  uint64_t next_in_order_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t input_bytes_ ABSL_GUARDED_BY(mu_) = 0;   // inputs not yet answered
  uint64_t result_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // outputs not yet taken
  std::optional<v1::MapResponse> TakeBatchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds one run none of whose items was answered before.
  void AddFreshRunLocked(MapRun run) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Whether no item in [begin, end) was answered yet.
  bool NoneSeenLocked(uint64_t begin, uint64_t end) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkSeenLocked(uint64_t begin, uint64_t end) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Ordered maps: runs after a gap, by first index.
  std::map<uint64_t, MapRun> reorder_ ABSL_GUARDED_BY(mu_);
  std::deque<MapRun> ready_ ABSL_GUARDED_BY(mu_);  // may leave now
  // Which items were answered: every one below seen_base_, and the runs
  // [begin, end) in seen_runs_ beyond it (as many as runs answered out of
  // order), so a map streamed for hours stays small.
  uint64_t seen_base_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, uint64_t> seen_runs_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t unsent_limit_ ABSL_GUARDED_BY(mu_) = 0;
  bool parked_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> on_room_ ABSL_GUARDED_BY(mu_);
  MemoryBudget* budget_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t charged_ ABSL_GUARDED_BY(mu_) = 0;  // what budget_ counts for it
  // Brings budget_ up to date with input_bytes_ + result_bytes_.
  void SyncBudgetLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
};

// A run of consecutive items of one job, dispatched to one worker as one batch.
struct MapChunk {
  std::shared_ptr<MapJob> job;
  uint64_t first_index = 0;  // the job-wide index of the first item
  // The packed inputs this chunk's items are in: a MapStream message's bytes (owned),
  // or a view of a unary request's, which outlive the job's chunks (the call cannot
  // end before they are answered or the job is cancelled under the broker's lock).
  std::shared_ptr<const PackedItems> inputs;
  size_t begin = 0;  // index in `inputs` of the chunk's first item
  int count = 0;
  int attempt = 1;
  // While queued: taken `split` items at a time (0: whole), so that a map of
  // millions of items is one queue entry, not millions.
  int split = 0;

  // The chunk's inputs, packed.
  std::string_view packed() const {
    return inputs->Range(begin, begin + static_cast<size_t>(count));
  }
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_BROKER_MAP_JOB_H_
