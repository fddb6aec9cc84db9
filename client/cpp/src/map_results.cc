// MapResults, MapAsyncResult and CollectMap: the client-side shapes of a map.
#include "forkpool/map_results.h"

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "map_call.h"

namespace forkpool {

namespace internal {

// What a MapAsyncResult's thread shares with its handle. Thread-safe.
struct MapAsyncState {
  explicit MapAsyncState(MapResults r) : results(std::move(r)) {}
  // Read by the thread only (Cancel is thread-safe).
  MapResults results;
  std::thread thread;
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::StatusOr<std::vector<std::string>> outcome ABSL_GUARDED_BY(mu) =
      absl::UnknownError("map not ended");
};

}  // namespace internal

MapResults::MapResults(std::unique_ptr<internal::MapCall> call) : call_(std::move(call)) {}
MapResults::MapResults(MapResults&&) noexcept = default;
MapResults& MapResults::operator=(MapResults&&) noexcept = default;
MapResults::~MapResults() = default;

absl::StatusOr<std::optional<MapItem>> MapResults::Next() { return call_->Next(); }
uint64_t MapResults::done() const { return call_->done(); }
uint64_t MapResults::total() const { return call_->total(); }
uint64_t MapResults::sent() const { return call_->sent(); }
bool MapResults::ordered() const { return call_->ordered(); }
bool MapResults::HasPending() const { return call_->HasPending(); }
void MapResults::Cancel() { call_->Cancel(); }

absl::StatusOr<std::vector<std::string>> CollectMap(MapResults& results,
                                                    std::optional<uint64_t> expected_items) {
  internal::MapCall& call = *results.call_;
  std::vector<std::string> outputs;
  std::vector<bool> seen;
  if (expected_items.has_value()) {
    outputs.resize(*expected_items);
    seen.resize(*expected_items);
  }
  std::optional<uint64_t> first_failed;
  absl::Status first_error;
  // Whole runs at a time: the outputs go straight from the response into place.
  internal::MapCall::RunView run;
  while (true) {
    absl::StatusOr<bool> more = call.NextRun(&run);
    if (!more.ok()) return more.status();
    if (!*more) break;
    std::string_view output;
    for (uint64_t index = run.first_index; run.outputs.Next(&output); ++index) {
      if (std::optional<absl::Status> error = call.ItemError(index)) {
        if (!first_failed.has_value() || index < *first_failed) {
          first_failed = index;
          first_error = *std::move(error);
        }
        // In order, nothing after this item can come before it: stop here.
        if (call.ordered()) {
          call.Cancel();
          return first_error;
        }
        continue;
      }
      if (index >= outputs.size()) {
        if (expected_items.has_value()) {
          return absl::InternalError(absl::StrCat("map answered index ", index, " of ",
                                                  *expected_items, " inputs"));
        }
        outputs.resize(index + 1);
        seen.resize(index + 1);
      }
      outputs[index].assign(output.data(), output.size());
      seen[index] = true;
    }
    if (!run.outputs.status().ok()) {
      return absl::InternalError(
          absl::StrCat("map results from the daemon: ", run.outputs.status().message()));
    }
  }
  if (first_failed.has_value()) return first_error;
  for (size_t i = 0; i < seen.size(); ++i) {
    if (!seen[i]) return absl::InternalError(absl::StrCat("map sent no result for item ", i));
  }
  if (results.total() != 0 && results.total() != outputs.size()) {
    return absl::InternalError(absl::StrCat("map answered ", outputs.size(), " of ",
                                            results.total(), " items"));
  }
  return outputs;
}

MapAsyncResult::MapAsyncResult(MapResults results, std::optional<uint64_t> expected_items)
    : state_(std::make_shared<internal::MapAsyncState>(std::move(results))) {
  internal::MapAsyncState* state = state_.get();
  state_->thread = std::thread([state, expected_items] {
    absl::StatusOr<std::vector<std::string>> outcome = CollectMap(state->results, expected_items);
    absl::MutexLock lock(&state->mu);
    state->outcome = std::move(outcome);
    state->done = true;
  });
}

MapAsyncResult::MapAsyncResult(MapAsyncResult&&) noexcept = default;
MapAsyncResult& MapAsyncResult::operator=(MapAsyncResult&& other) noexcept {
  if (this != &other) {
    Stop();
    state_ = std::move(other.state_);
  }
  return *this;
}

MapAsyncResult::~MapAsyncResult() { Stop(); }

void MapAsyncResult::Stop() {
  if (state_ == nullptr) return;
  if (!Ready()) Cancel();
  if (state_->thread.joinable()) state_->thread.join();
  state_.reset();
}

bool MapAsyncResult::Wait(std::optional<absl::Duration> timeout) const {
  absl::MutexLock lock(&state_->mu);
  const absl::Condition ended(&state_->done);
  if (!timeout.has_value()) {
    state_->mu.Await(ended);
    return true;
  }
  return state_->mu.AwaitWithTimeout(ended, *timeout);
}

bool MapAsyncResult::Ready() const {
  absl::MutexLock lock(&state_->mu);
  return state_->done;
}

absl::StatusOr<std::vector<std::string>> MapAsyncResult::Get(
    std::optional<absl::Duration> timeout) const {
  if (timeout.has_value() && *timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout must not be negative (got ", absl::FormatDuration(*timeout), ")"));
  }
  if (!Wait(timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat("map not ready after ", absl::FormatDuration(*timeout)));
  }
  absl::MutexLock lock(&state_->mu);
  return state_->outcome;
}

void MapAsyncResult::Cancel() { state_->results.Cancel(); }

}  // namespace forkpool
