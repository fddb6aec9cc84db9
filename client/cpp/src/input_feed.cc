// SliceFeed and PrefetchFeed implementation.
#include "input_feed.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/time/time.h"

namespace forkpool::internal {
namespace {

// A prefetched batch is handed over once it holds this many bytes, like a full one.
constexpr size_t kMaxBufferedBytes = 1 << 20;
// How long Take lets a batch fill once its first input is ready. Small batches cost a
// message, a chunk and a worker round trip each (one input per message ran the CLI at
// a third of its speed); a slow source's inputs wait this long at most.
constexpr absl::Duration kFillTime = absl::Milliseconds(1);

}  // namespace

size_t SliceFeed::Take(size_t max_items, size_t max_bytes, std::string* packed, bool* ended) {
  size_t n = 0;
  if (next_ < inputs_->size() && max_items > 0) {
    const size_t end = std::min(inputs_->EndWithin(next_, max_bytes), next_ + max_items);
    const std::string_view range = inputs_->Range(next_, end);
    packed->append(range.data(), range.size());
    n = end - next_;
    next_ = end;
  }
  *ended = next_ >= inputs_->size();
  return n;
}

PrefetchFeed::PrefetchFeed(InputSource source, size_t ahead)
    : source_(std::move(source)), ahead_(std::max<size_t>(ahead, 1)) {
  thread_ = std::thread([this] { Run(); });
}

PrefetchFeed::~PrefetchFeed() {
  Stop();
  thread_.join();
}

void PrefetchFeed::Stop() {
  absl::MutexLock lock(&mu_);
  stop_ = true;
}

void PrefetchFeed::Run() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
  }
  while (true) {
    // Outside the lock: the source may block for as long as it likes.
    std::optional<std::string> next = source_();
    absl::MutexLock lock(&mu_);
    if (!next.has_value()) {
      ended_ = true;
      return;
    }
    AppendPackedItem(*next, &buffer_);
    ++items_;
    auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stop_ || (items_ < ahead_ && buffer_.size() < kMaxBufferedBytes);
    };
    mu_.Await(absl::Condition(&room));
    if (stop_) return;
  }
}

size_t PrefetchFeed::Take(size_t max_items, size_t max_bytes, std::string* packed,
                          bool* ended) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stop_ || ended_ || items_ > 0;
  };
  mu_.Await(absl::Condition(&ready));
  auto full = [this, max_items, max_bytes]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stop_ || ended_ || items_ >= std::min(max_items, ahead_) ||
           buffer_.size() >= std::min(max_bytes, kMaxBufferedBytes);
  };
  mu_.AwaitWithTimeout(absl::Condition(&full), kFillTime);
  size_t n = 0;
  if (!stop_ && items_ > 0 && max_items > 0) {
    if (items_ <= max_items && buffer_.size() <= max_bytes) {
      // The usual case: everything ready goes.
      packed->append(buffer_);
      n = items_;
      buffer_.clear();
      items_ = 0;
    } else {
      PackedItemReader reader(buffer_);
      std::string_view item;
      size_t cut = 0;
      while (n < max_items && reader.Next(&item)) {
        if (n > 0 && reader.offset() > max_bytes) break;
        ++n;
        cut = reader.offset();
      }
      packed->append(buffer_, 0, cut);
      buffer_.erase(0, cut);
      items_ -= n;
    }
  }
  *ended = stop_ || (ended_ && items_ == 0);
  return n;
}

}  // namespace forkpool::internal
