// MapResults and MapAsyncResult: the results of one map (Tasks.Map or Tasks.MapStream)
// as they arrive, or all of them later; MapOptions says how to run it.
#ifndef FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_MAP_RESULTS_H_
#define FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_MAP_RESULTS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace forkpool {

namespace internal {
class MapCall;
struct MapAsyncState;
}  // namespace internal

// How a map runs. `MapOptions{chunksize, ordered}` reads as multiprocessing's
// arguments.
struct MapOptions {
  // Items per chunk sent to a worker; 0: ceil(len / (4 * processes)) when all inputs
  // go in one request, else chunks formed from what has arrived.
  uint32_t chunksize = 0;
  // Imap: results in input order (true) or as they complete (false). Map always
  // returns outputs in input order; false only lets the daemon answer sooner.
  bool ordered = true;
  // Most items in flight (sent and not yet answered) of a streamed map; the client
  // sends no more than that, and the daemon holds no more (nor more than 32 MiB of
  // inputs and results: then it stops reading, and the client's writes wait). A
  // window much smaller than the default costs throughput: the pipeline to the
  // workers and back holds many small items.
  uint32_t window = 262144;
  // Codec name of inputs and outputs ("" means "text").
  std::string codec;
  // Hard run-time limit of each item; unset: the pool's default.
  std::optional<absl::Duration> time_limit;
  // Retries of an item on worker loss or time-out.
  int max_retries = 0;
  // Stream the inputs over MapStream even when they would fit one Map request.
  bool force_stream = false;
};

// Produces a map's inputs lazily: returns the next input, or nullopt when there are no
// more. Called on a background thread of its own, one call at a time, at most 16,384
// inputs (or the window, if smaller) ahead of what has been sent; it may block (e.g.
// reading stdin): inputs it returned before are sent meanwhile, so a slow source's
// results still come as its inputs do.
using InputSource = std::function<std::optional<std::string>()>;

// One result of a map: the input's index and its output, or the item's failure
// (code as for a task, see task_status.h; message "map item <i> failed (<STATE>): ...").
struct MapItem {
  uint64_t index = 0;
  absl::StatusOr<std::string> output;
};

// The results of a running map, one at a time, in the order the daemon sends them (input
// order for an ordered map). Move-only. Thread-compatible, except Cancel, which any
// thread may call at any time.
//
// Destroying it before the end cancels the map (the daemon drops queued chunks) and
// waits for a call of the InputSource in progress to return.
class MapResults {
 public:
  explicit MapResults(std::unique_ptr<internal::MapCall> call);
  MapResults(MapResults&&) noexcept;
  MapResults& operator=(MapResults&&) noexcept;
  ~MapResults();

  // Blocks until the next result arrives. Returns it (a failed item is a result, with a
  // non-OK output); nullopt after the last one; a non-OK status when the map itself
  // failed (kNotFound for an unknown pool or function, kFailedPrecondition for a closed
  // pool, kCancelled after Cancel, a transport error, ...) — after which it is over.
  absl::StatusOr<std::optional<MapItem>> Next();

  // Items answered so far and the total (0 until the daemon knows it: a streamed map
  // learns it when the inputs end), as of the last batch received.
  uint64_t done() const;
  uint64_t total() const;
  // Inputs handed to the daemon so far.
  uint64_t sent() const;
  // Whether results come in input order.
  bool ordered() const;
  // True when results already received wait to be returned, so Next will not block
  // (a writer flushes its output when this turns false).
  bool HasPending() const;

  // Cancels the map: the daemon drops its queued chunks; Next then ends with kCancelled
  // (after any results already received). Thread-safe.
  void Cancel();

 private:
  // Takes whole runs of results from the call.
  friend absl::StatusOr<std::vector<std::string>> CollectMap(
      MapResults& results, std::optional<uint64_t> expected_items);

  std::unique_ptr<internal::MapCall> call_;
};

// A map running on a background thread, in the shape of multiprocessing's
// map_async(): Get / Wait / Ready. Move-only; thread-safe.
//
// Destroying the handle while the map runs cancels it and waits for the thread
// (unlike Python, where a dropped AsyncResult runs on: a C++ thread must not outlive
// what it uses).
class MapAsyncResult {
 public:
  explicit MapAsyncResult(MapResults results, std::optional<uint64_t> expected_items);
  MapAsyncResult(MapAsyncResult&&) noexcept;
  MapAsyncResult& operator=(MapAsyncResult&&) noexcept;
  ~MapAsyncResult();

  // Blocks up to `timeout` (nullopt: until done) for the map to end. Returns every
  // output in input order, or the first failing item's error (as Pool::Map), or the
  // map's error; kDeadlineExceeded "map not ready after ..." when the timeout passed
  // first (the map runs on).
  absl::StatusOr<std::vector<std::string>> Get(
      std::optional<absl::Duration> timeout = std::nullopt) const;

  // Blocks up to `timeout` for the map to end; true when it has.
  bool Wait(std::optional<absl::Duration> timeout = std::nullopt) const;

  // True when the map has ended.
  bool Ready() const;

  // Cancels the map; Get then answers kCancelled.
  void Cancel();

 private:
  // Cancels a map still running and joins its thread.
  void Stop();

  std::shared_ptr<internal::MapAsyncState> state_;
};

// Reads `results` to the end and returns the outputs in input order (`expected_items`,
// when known, sizes the vector). When items failed, the one with the lowest index
// becomes the error (and, for an ordered map, the rest of the map is cancelled).
absl::StatusOr<std::vector<std::string>> CollectMap(MapResults& results,
                                                    std::optional<uint64_t> expected_items);

}  // namespace forkpool

#endif  // FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_MAP_RESULTS_H_
