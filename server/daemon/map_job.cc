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

void MapJob::AddResults(std::vector<MapItemResult> results) {
  bool any = false;
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_) return;
    for (MapItemResult& result : results) {
      if (result.index >= seen_.size() || seen_[result.index]) continue;
      seen_[result.index] = true;
      ++answered_;
      any = true;
      if (!ordered_) {
        ready_.push_back(std::move(result));
        continue;
      }
      const uint64_t offset = result.index - next_in_order_;
      if (reorder_.size() <= offset) reorder_.resize(offset + 1);
      reorder_[offset] = std::make_unique<MapItemResult>(std::move(result));
      while (!reorder_.empty() && reorder_.front() != nullptr) {
        ready_.push_back(std::move(*reorder_.front()));
        reorder_.pop_front();
        ++next_in_order_;
      }
    }
  }
  if (any) wake_();
}

std::optional<v1::MapResponse> MapJob::TakeBatch() {
  absl::MutexLock lock(&mu_);
  if (ready_.empty()) return std::nullopt;
  v1::MapResponse response;
  size_t bytes = 0;
  while (!ready_.empty()) {
    MapItemResult& r = ready_.front();
    const size_t size = r.output.size() + (r.error ? r.error->ByteSizeLong() : 0) + 16;
    if (bytes > 0 && bytes + size > kMaxMapResponseBytes) break;
    bytes += size;
    response.add_indexes(r.index);
    response.add_outputs(std::move(r.output));
    if (r.error) *response.add_errors() = std::move(*r.error);
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
