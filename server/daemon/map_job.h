// MapJob: one Map or MapStream call's items: which are answered, which are waiting to
// leave, in input order or as they complete, and how many are in flight.
#ifndef FORKPOOL_SERVER_DAEMON_MAP_JOB_H_
#define FORKPOOL_SERVER_DAEMON_MAP_JOB_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "forkpool/v1/forkpool.pb.h"
#include "google/protobuf/repeated_field.h"

namespace forkpool {

// Largest MapResponse the daemon sends: well under the 4 MiB clients accept by default.
inline constexpr size_t kMaxMapResponseBytes = 1u << 20;

// One item's answer. The error is allocated only for failed items: results are on the
// map's hot path.
struct MapItemResult {
  uint64_t index = 0;
  std::string output;
  std::unique_ptr<v1::MapItemError> error;  // null when the item succeeded
};

// Thread-safe. The Scheduler adds results (under its own lock, which may be held:
// MapJob's lock is taken after it); the call's reactor takes batches to write.
class MapJob {
 public:
  // `wake` is called (without MapJob's lock) when a batch is ready to take or the job
  // has ended; it must not block.
  MapJob(std::string id, std::string pool, std::string function, std::string codec,
         bool ordered, std::function<void()> wake);

  const std::string& id() const { return id_; }
  const std::string& pool() const { return pool_; }
  const std::string& function() const { return function_; }
  const std::string& codec() const { return codec_; }
  // Limits and retries for every item (set before the job starts).
  const v1::TaskOptions& options() const { return options_; }
  void set_options(const v1::TaskOptions& options) { options_ = options; }

  // Items accepted so far: the next input's index.
  uint64_t accepted() const;
  // Items accepted so far (indexes 0..n-1). `end` says no more will come.
  void AddAccepted(uint64_t n, bool end);
  // Records items' answers (one lock and one wake for the batch). Duplicates (after
  // a retry) are ignored.
  void AddResults(std::vector<MapItemResult> results);
  // Takes up to kMaxMapResponseBytes of results that may leave now; nullopt if none.
  std::optional<v1::MapResponse> TakeBatch();
  // True when every accepted item has been taken and no more inputs will come.
  bool Finished() const;
  // Items accepted but not yet taken by the writer (the streaming window's measure).
  uint64_t InFlight() const;

  // Marks the job cancelled: queued chunks are dropped, running ones stopped.
  void Cancel();
  bool cancelled() const;

 private:

  const std::string id_, pool_, function_, codec_;
  const bool ordered_;
  const std::function<void()> wake_;
  v1::TaskOptions options_;

  mutable absl::Mutex mu_;
  uint64_t accepted_ ABSL_GUARDED_BY(mu_) = 0;
  bool input_ended_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t answered_ ABSL_GUARDED_BY(mu_) = 0;  // distinct items with a result
  uint64_t taken_ ABSL_GUARDED_BY(mu_) = 0;     // items handed to the writer
  uint64_t next_in_order_ ABSL_GUARDED_BY(mu_) = 0;
  // Ordered maps: results after a gap, by index - next_in_order_ (null: not yet).
  std::deque<std::unique_ptr<MapItemResult>> reorder_ ABSL_GUARDED_BY(mu_);
  std::deque<MapItemResult> ready_ ABSL_GUARDED_BY(mu_);             // may leave now
  std::vector<bool> seen_ ABSL_GUARDED_BY(mu_);                       // answered indexes
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// A run of consecutive items of one job, dispatched to one worker as one batch.
struct MapChunk {
  std::shared_ptr<MapJob> job;
  uint64_t first_index = 0;  // the job-wide index of the first item
  // Either owned inputs (MapStream) or a range of the unary request's inputs, which
  // outlive the job's chunks (the call cannot end before they are answered or the job
  // is cancelled under the Scheduler's lock).
  std::vector<std::string> owned;
  const google::protobuf::RepeatedPtrField<std::string>* source = nullptr;
  int source_offset = 0;
  int count = 0;
  int attempt = 1;

  const std::string& input(int i) const {
    return source != nullptr ? source->Get(source_offset + i) : owned[static_cast<size_t>(i)];
  }
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_MAP_JOB_H_
