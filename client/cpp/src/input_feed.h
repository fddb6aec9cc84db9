// InputFeed: where a streamed map's writer thread takes its inputs from, in packed
// batches. SliceFeed slices inputs packed in advance; PrefetchFeed calls a user's
// InputSource on a thread of its own, so that a source that blocks (reading a pipe)
// never holds back the inputs it has already produced.
#ifndef FORKPOOL_CLIENT_CPP_SRC_INPUT_FEED_H_
#define FORKPOOL_CLIENT_CPP_SRC_INPUT_FEED_H_

#include <cstddef>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/packed_items.h"
#include "forkpool/map_results.h"

namespace forkpool::internal {

// Most inputs in one MapInputs message.
inline constexpr size_t kMaxInputBatchItems = 16384;

// Take belongs to the writer thread; Stop is thread-safe.
class InputFeed {
 public:
  virtual ~InputFeed() = default;
  // Appends up to `max_items` inputs to `packed` (stopping once it holds about
  // `max_bytes`) and returns how many; sets `*ended` once no more will come. Blocks
  // until at least one input is ready, the inputs end, or Stop.
  virtual size_t Take(size_t max_items, size_t max_bytes, std::string* packed,
                      bool* ended) = 0;
  // Ends the feed: a blocked Take returns (0, ended) and so do later ones.
  virtual void Stop() {}
};

// Inputs packed before the map started, sent in slices of the same bytes.
class SliceFeed final : public InputFeed {
 public:
  explicit SliceFeed(std::shared_ptr<const PackedItems> inputs) : inputs_(std::move(inputs)) {}
  size_t Take(size_t max_items, size_t max_bytes, std::string* packed, bool* ended) override;

 private:
  const std::shared_ptr<const PackedItems> inputs_;
  size_t next_ = 0;
};

// A user's InputSource, called on a prefetch thread that stays at most `ahead` inputs
// ahead of what Take has taken. Take hands over whatever is ready, so a fast source
// fills large batches and a slow one's inputs leave one by one as they come.
class PrefetchFeed final : public InputFeed {
 public:
  PrefetchFeed(InputSource source, size_t ahead);
  // Stops, and waits for a call of the source in progress to return.
  ~PrefetchFeed() override;

  size_t Take(size_t max_items, size_t max_bytes, std::string* packed, bool* ended) override;
  void Stop() override;

 private:
  void Run();

  InputSource source_;
  const size_t ahead_;
  absl::Mutex mu_;
  std::string buffer_ ABSL_GUARDED_BY(mu_);  // packed inputs not yet taken
  size_t items_ ABSL_GUARDED_BY(mu_) = 0;    // in buffer_
  bool ended_ ABSL_GUARDED_BY(mu_) = false;  // the source said there are no more
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: started once the rest is initialised
};

}  // namespace forkpool::internal

#endif  // FORKPOOL_CLIENT_CPP_SRC_INPUT_FEED_H_
