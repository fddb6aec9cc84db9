// MapJob implementation.
#include "server/daemon/broker/map_job.h"

#include <algorithm>
#include <iterator>

namespace forkpool {

MapJob::MapJob(std::string id, std::string pool, std::string function, std::string codec,
               bool ordered, std::function<void()> wake)
    : id_(std::move(id)),
      pool_(std::move(pool)),
      function_(std::move(function)),
      codec_(std::move(codec)),
      ordered_(ordered),
      wake_(std::move(wake)) {}

MapJob::~MapJob() {
  absl::MutexLock lock(&mu_);
  if (budget_ != nullptr) budget_->Release(charged_);
}

void MapJob::SetBudget(MemoryBudget* budget) {
  absl::MutexLock lock(&mu_);
  budget_ = budget;
  SyncBudgetLocked();
}

void MapJob::SyncBudgetLocked() {
  if (budget_ == nullptr) return;
  const uint64_t now = input_bytes_ + result_bytes_;
  budget_->Adjust(static_cast<int64_t>(now) - static_cast<int64_t>(charged_));
  charged_ = now;
}

uint64_t MapJob::accepted() const {
  absl::MutexLock lock(&mu_);
  return accepted_;
}

void MapJob::AddAccepted(uint64_t n, bool end, uint64_t input_bytes) {
  bool wake;
  {
    absl::MutexLock lock(&mu_);
    accepted_ += n;
    input_bytes_ += input_bytes;
    SyncBudgetLocked();
    if (end) input_ended_ = true;
    // An end with everything already taken finishes the job.
    wake = end && taken_ == accepted_;
  }
  if (wake) wake_();
}

void MapJob::AddRun(MapRun run) {
  if (run.count == 0) return;
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_) return;
    // Clamped: a run answering items twice must not wrap the count.
    input_bytes_ -= std::min(input_bytes_, run.input_bytes);
    const uint64_t end = run.first_index + run.count;
    const bool fresh =
        end <= accepted_ && end > run.first_index && NoneSeenLocked(run.first_index, end);
    if (fresh) {
      MarkSeenLocked(run.first_index, end);
      AddFreshRunLocked(std::move(run));
    } else {
      // Some items were answered before (or are unknown): keep the runs of the others.
      PackedItemReader reader(run.outputs);
      std::string_view output;
      std::optional<MapRun> part;
      size_t next_error = 0;
      for (uint64_t index = run.first_index; reader.Next(&output); ++index) {
        const bool keep = index < accepted_ && NoneSeenLocked(index, index + 1);
        if (keep) {
          MarkSeenLocked(index, index + 1);
          if (!part.has_value()) {
            part.emplace();
            part->first_index = index;
          }
          AppendPackedItem(output, &part->outputs);
          ++part->count;
        }
        while (next_error < run.errors.size() && run.errors[next_error].index() < index) {
          ++next_error;
        }
        if (keep && next_error < run.errors.size() && run.errors[next_error].index() == index) {
          part->errors.push_back(std::move(run.errors[next_error]));
        }
        if (!keep && part.has_value()) {
          AddFreshRunLocked(std::move(*part));
          part.reset();
        }
      }
      if (part.has_value()) AddFreshRunLocked(std::move(*part));
    }
    SyncBudgetLocked();
  }
  wake_();
}

bool MapJob::NoneSeenLocked(uint64_t begin, uint64_t end) const {
  if (begin < seen_base_) return false;
  auto it = seen_runs_.lower_bound(begin);
  if (it != seen_runs_.end() && it->first < end) return false;
  return it == seen_runs_.begin() || std::prev(it)->second <= begin;
}

void MapJob::MarkSeenLocked(uint64_t begin, uint64_t end) {
  // Per run, not per item: in order (the usual case) this only moves the base.
  if (begin == seen_base_) {
    seen_base_ = end;
  } else {
    seen_runs_.emplace(begin, end);
  }
  while (!seen_runs_.empty() && seen_runs_.begin()->first <= seen_base_) {
    seen_base_ = std::max(seen_base_, seen_runs_.begin()->second);
    seen_runs_.erase(seen_runs_.begin());
  }
}

void MapJob::SetUnsentLimit(uint64_t limit, std::function<void()> on_room) {
  absl::MutexLock lock(&mu_);
  unsent_limit_ = limit;
  on_room_ = std::move(on_room);
}

bool MapJob::TryPark() {
  absl::MutexLock lock(&mu_);
  if (unsent_limit_ == 0 || cancelled_ || result_bytes_ <= unsent_limit_) return false;
  parked_ = true;
  return true;
}

namespace {
size_t ErrorBytes(const std::vector<v1::MapItemError>& errors);
}  // namespace

void MapJob::AddFreshRunLocked(MapRun run) {
  answered_ += run.count;
  result_bytes_ += run.outputs.size() + ErrorBytes(run.errors) + kMapRunOverheadBytes;
  if (!ordered_) {
    ready_.push_back(std::move(run));
    return;
  }
  if (run.first_index != next_in_order_) {
    const uint64_t first = run.first_index;
    reorder_.emplace(first, std::move(run));
    return;
  }
  next_in_order_ += run.count;
  ready_.push_back(std::move(run));
  while (!reorder_.empty() && reorder_.begin()->first == next_in_order_) {
    next_in_order_ += reorder_.begin()->second.count;
    ready_.push_back(std::move(reorder_.begin()->second));
    reorder_.erase(reorder_.begin());
  }
}

namespace {

size_t ErrorBytes(const std::vector<v1::MapItemError>& errors) {
  size_t bytes = 0;
  for (const v1::MapItemError& e : errors) bytes += e.ByteSizeLong() + 4;
  return bytes;
}

// Moves the leading items of `run` whose outputs and errors fit in `max_bytes` (at
// least one) into a run of their own, which is returned; `run` keeps the rest.
MapRun SplitFront(MapRun& run, size_t max_bytes) {
  PackedItemReader reader(run.outputs);
  std::string_view output;
  uint64_t n = 0;
  size_t cut = 0;     // end of the last item taken
  size_t bytes = 0;   // its outputs and errors
  size_t errors = 0;  // errors of the items taken
  while (reader.Next(&output)) {
    const uint64_t index = run.first_index + n;
    size_t item = reader.offset() - cut;
    size_t e = errors;
    for (; e < run.errors.size() && run.errors[e].index() <= index; ++e) {
      if (run.errors[e].index() == index) item += run.errors[e].ByteSizeLong() + 4;
    }
    if (n > 0 && bytes + item > max_bytes) break;
    bytes += item;
    ++n;
    cut = reader.offset();
    errors = e;
  }
  MapRun front;
  front.first_index = run.first_index;
  front.count = n;
  front.outputs.assign(run.outputs, 0, cut);
  run.outputs.erase(0, cut);
  run.first_index += n;
  run.count -= n;
  front.errors.assign(
      std::make_move_iterator(run.errors.begin()),
      std::make_move_iterator(run.errors.begin() + static_cast<std::ptrdiff_t>(errors)));
  run.errors.erase(run.errors.begin(), run.errors.begin() + static_cast<std::ptrdiff_t>(errors));
  return front;
}

}  // namespace

std::optional<v1::MapResponse> MapJob::TakeBatch() {
  std::function<void()> on_room;
  std::optional<v1::MapResponse> batch;
  {
    absl::MutexLock lock(&mu_);
    batch = TakeBatchLocked();
    SyncBudgetLocked();
    if (parked_ && result_bytes_ <= unsent_limit_ / 2) {
      parked_ = false;
      on_room = on_room_;
    }
  }
  if (on_room) on_room();
  return batch;
}

std::optional<v1::MapResponse> MapJob::TakeBatchLocked() {
  if (ready_.empty()) return std::nullopt;
  v1::MapResponse response;
  size_t bytes = 0;
  while (!ready_.empty()) {
    MapRun& r = ready_.front();
    const size_t size = r.outputs.size() + ErrorBytes(r.errors) + 16;
    if (bytes > 0 && bytes + size > kMaxMapResponseBytes) break;
    const bool split = size > kMaxMapResponseBytes && r.count > 1;
    // Room left for the response's own fields.
    MapRun taken = split ? SplitFront(r, kMaxMapResponseBytes - 1024) : std::move(r);
    bytes += taken.outputs.size() + ErrorBytes(taken.errors) + 16;
    // The run's overhead goes with its last part.
    const uint64_t charge = taken.outputs.size() + ErrorBytes(taken.errors) +
                            (!split || r.count == 0 ? kMapRunOverheadBytes : 0);
    result_bytes_ -= std::min<uint64_t>(result_bytes_, charge);
    v1::MapResultRun* run = response.add_runs();
    run->set_first_index(taken.first_index);
    run->set_outputs(std::move(taken.outputs));
    for (v1::MapItemError& e : taken.errors) *response.add_errors() = std::move(e);
    taken_ += taken.count;
    if (!split || r.count == 0) {
      ready_.pop_front();
    } else {
      break;  // the rest of a run too big for one response goes in the next
    }
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

uint64_t MapJob::InFlightBytes() const {
  absl::MutexLock lock(&mu_);
  return input_bytes_ + result_bytes_;
}

void MapJob::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  ready_.clear();
  reorder_.clear();
  result_bytes_ = 0;
  SyncBudgetLocked();
}

bool MapJob::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

}  // namespace forkpool
