// MapJob implementation.
#include "server/daemon/map_job.h"

namespace forkpool {

MapJob::MapJob(std::string id, std::string pool, std::string function, std::string codec,
               bool ordered, std::function<void()> wake)
    : id_(std::move(id)),
      pool_(std::move(pool)),
      function_(std::move(function)),
      codec_(std::move(codec)),
      ordered_(ordered),
      wake_(std::move(wake)) {}

uint64_t MapJob::accepted() const {
  absl::MutexLock lock(&mu_);
  return accepted_;
}

void MapJob::AddAccepted(uint64_t n, bool end) {
  bool wake;
  {
    absl::MutexLock lock(&mu_);
    accepted_ += n;
    if (end) input_ended_ = true;
    seen_.resize(accepted_, false);
    // An end with everything already taken finishes the job.
    wake = end && taken_ == accepted_;
  }
  if (wake) wake_();
}

void MapJob::PushReadyLocked(MapItemResult r) { ready_.push_back(std::move(r)); }

void MapJob::AddResult(MapItemResult result) {
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_ || result.index >= seen_.size() || seen_[result.index]) return;
    seen_[result.index] = true;
    ++answered_;
    if (!ordered_) {
      PushReadyLocked(std::move(result));
    } else if (result.index != next_in_order_) {
      reorder_.emplace(result.index, std::move(result));
      return;  // nothing new may leave yet
    } else {
      PushReadyLocked(std::move(result));
      ++next_in_order_;
      for (auto it = reorder_.begin(); it != reorder_.end() && it->first == next_in_order_;
           it = reorder_.erase(it)) {
        PushReadyLocked(std::move(it->second));
        ++next_in_order_;
      }
    }
  }
  wake_();
}

std::optional<v1::MapResponse> MapJob::TakeBatch() {
  absl::MutexLock lock(&mu_);
  if (ready_.empty()) return std::nullopt;
  v1::MapResponse response;
  size_t bytes = 0;
  while (!ready_.empty()) {
    MapItemResult& r = ready_.front();
    const size_t size = r.output.size() + r.error.error().size() + 16;
    if (bytes > 0 && bytes + size > kMaxMapResponseBytes) break;
    bytes += size;
    response.add_indexes(r.index);
    if (r.ok) {
      response.add_outputs(std::move(r.output));
    } else {
      response.add_outputs();
      *response.add_errors() = std::move(r.error);
    }
    ready_.pop_front();
    ++taken_;
  }
  response.set_done(taken_);
  response.set_total(input_ended_ ? accepted_ : 0);
  return response;
}

bool MapJob::Finished() const {
  absl::MutexLock lock(&mu_);
  return input_ended_ && taken_ == accepted_ && ready_.empty();
}

uint64_t MapJob::InFlight() const {
  absl::MutexLock lock(&mu_);
  return accepted_ - taken_;
}

void MapJob::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  ready_.clear();
  reorder_.clear();
}

bool MapJob::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

}  // namespace forkpool
