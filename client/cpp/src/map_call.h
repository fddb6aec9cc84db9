// MapCall: one Tasks.Map or Tasks.MapStream call, its input-writing thread and the
// unpacking of its batched responses into single results.
#ifndef FORKPOOL_CLIENT_CPP_SRC_MAP_CALL_H_
#define FORKPOOL_CLIENT_CPP_SRC_MAP_CALL_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <string>
#include <memory>
#include <optional>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/packed_items.h"
#include "connection.h"
#include "input_feed.h"
#include "forkpool/map_results.h"
#include "forkpool/v1/forkpool.grpc.pb.h"

namespace forkpool::internal {

// One map call. Next/Finish belong to one consumer thread at a time; Cancel and the
// counters are thread-safe. With a stream, a writer thread feeds inputs from the
// InputSource, never letting more than `window` items be sent and unanswered.
class MapCall {
 public:
  // Starts a Tasks.Map call with all `items` inputs in `request`.
  static std::unique_ptr<MapCall> StartUnary(std::shared_ptr<const Connection> connection,
                                             const v1::MapRequest& request, uint64_t items);
  // A call that never started: Next returns `status`.
  static std::unique_ptr<MapCall> Failed(absl::Status status);
  // Starts a Tasks.MapStream call opened by `open`, fed from `feed`.
  static std::unique_ptr<MapCall> StartStream(std::shared_ptr<const Connection> connection,
                                              const v1::MapStreamOpen& open,
                                              std::unique_ptr<InputFeed> feed);

  MapCall(const MapCall&) = delete;
  MapCall& operator=(const MapCall&) = delete;
  // Cancels the call if it has not ended, and joins the writer thread.
  ~MapCall();

  // See MapResults::Next.
  absl::StatusOr<std::optional<MapItem>> Next();

  // The results Next has not returned yet of one run: consecutive items from
  // `first_index`. Valid until the next call on the MapCall.
  struct RunView {
    uint64_t first_index = 0;
    PackedItemReader outputs{""};
  };
  // The next run's results at once (the rest of the current one first), for a
  // caller that takes them in bulk; false after the last; errors as Next.
  absl::StatusOr<bool> NextRun(RunView* view);
  // True when results already received wait for Next (which then does not block).
  bool HasPending() const {
    return run_ >= 0 && (!outputs_.at_end() || run_ + 1 < batch_.runs_size());
  }
  // The failure of item `index` of the current batch as Next reports it, or nullopt
  // when it succeeded.
  std::optional<absl::Status> ItemError(uint64_t index) const {
    if (errors_.empty()) return std::nullopt;  // the usual case, checked inline
    return FindItemError(index);
  }
  // Thread-safe.
  void Cancel();
  uint64_t done() const;
  uint64_t total() const;
  uint64_t sent() const;
  bool ordered() const { return ordered_; }

 private:
  MapCall(std::shared_ptr<const Connection> connection, bool ordered);

  // The writer thread: sends batches of inputs while the window has room, then `end`.
  void WriteInputs(v1::MapStreamOpen open);
  // Sends one message unless the call is over; false when it could not.
  bool WriteMessage(const v1::MapStreamRequest& message);
  // Ends the call after the last read: stops the writer and collects the status.
  void FinishCall();
  std::optional<absl::Status> FindItemError(uint64_t index) const;
  // Moves to the next run with results, reading batches as needed; false at the end.
  absl::StatusOr<bool> AdvanceRun();

  const std::shared_ptr<const Connection> connection_;
  const bool ordered_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::MapResponse>> reader_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::MapStreamRequest, v1::MapResponse>> stream_;
  std::unique_ptr<InputFeed> feed_;  // set before the writer starts; outlives it
  uint32_t window_ = 0;
  std::thread writer_;

  mutable absl::Mutex mu_;
  uint64_t sent_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t done_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t total_ ABSL_GUARDED_BY(mu_) = 0;
  // Set when the call is over or cancelled: the writer sends nothing more.
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  // True while the writer is inside a gRPC write.
  bool writing_ ABSL_GUARDED_BY(mu_) = false;

  // Consumer side: the batch being read, its run being read and where.
  v1::MapResponse batch_;
  int run_ = -1;
  PackedItemReader outputs_{""};
  uint64_t next_index_ = 0;
  absl::flat_hash_map<uint64_t, int> errors_;  // index -> position in batch_.errors
  bool finished_ = false;
  absl::Status final_status_;
};

}  // namespace forkpool::internal

#endif  // FORKPOOL_CLIENT_CPP_SRC_MAP_CALL_H_
