// MapCall: runs Tasks.Map / Tasks.MapStream and unpacks their batches.
#include "map_call.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "forkpool/task_status.h"

namespace forkpool::internal {
namespace {

// A batch of streamed inputs is cut at this many items or bytes (well under the
// daemon's and gRPC's message limits).
constexpr size_t kMaxBatchItems = kMaxInputBatchItems;
constexpr size_t kMaxBatchBytes = 1 << 20;

}  // namespace

MapCall::MapCall(std::shared_ptr<const Connection> connection, bool ordered)
    : connection_(std::move(connection)), ordered_(ordered) {}

std::unique_ptr<MapCall> MapCall::StartUnary(std::shared_ptr<const Connection> connection,
                                             const v1::MapRequest& request,
                                             uint64_t items) {
  std::unique_ptr<MapCall> call(new MapCall(std::move(connection), request.ordered()));
  {
    absl::MutexLock lock(&call->mu_);
    call->sent_ = items;
    call->stop_ = true;  // no writer
  }
  call->reader_ = call->connection_->tasks->Map(&call->context_, request);
  return call;
}

std::unique_ptr<MapCall> MapCall::Failed(absl::Status status) {
  std::unique_ptr<MapCall> call(new MapCall(nullptr, true));
  absl::MutexLock lock(&call->mu_);
  call->stop_ = true;
  call->finished_ = true;
  call->final_status_ = std::move(status);
  return call;
}

std::unique_ptr<MapCall> MapCall::StartStream(std::shared_ptr<const Connection> connection,
                                              const v1::MapStreamOpen& open,
                                              std::unique_ptr<InputFeed> feed) {
  std::unique_ptr<MapCall> call(new MapCall(std::move(connection), open.ordered()));
  call->feed_ = std::move(feed);
  call->window_ = std::max<uint32_t>(open.window(), 1);
  call->stream_ = call->connection_->tasks->MapStream(&call->context_);
  v1::MapStreamOpen sent_open = open;
  sent_open.set_window(call->window_);
  call->writer_ = std::thread([c = call.get(), sent_open] { c->WriteInputs(sent_open); });
  return call;
}

MapCall::~MapCall() {
  if (!finished_) {
    Cancel();
    v1::MapResponse ignored;
    if (reader_ != nullptr) {
      while (reader_->Read(&ignored)) {
      }
    } else {
      while (stream_->Read(&ignored)) {
      }
    }
    FinishCall();
  }
  if (writer_.joinable()) writer_.join();
}

bool MapCall::WriteMessage(const v1::MapStreamRequest& message) {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return false;
    writing_ = true;
  }
  const bool ok = stream_->Write(message);
  absl::MutexLock lock(&mu_);
  writing_ = false;
  return ok;
}

void MapCall::WriteInputs(v1::MapStreamOpen open) {
  v1::MapStreamRequest first;
  *first.mutable_open() = std::move(open);
  if (!WriteMessage(first)) return;
  bool more = true;
  while (more) {
    uint64_t room = 0;
    {
      // Bytes need no bound here: forkpoold stops reading a stream that holds too many,
      // and gRPC's flow control then holds the Write below.
      absl::MutexLock lock(&mu_);
      auto has_room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || sent_ - std::min(done_, sent_) < window_;
      };
      mu_.Await(absl::Condition(&has_room));
      if (stop_) return;
      room = window_ - (sent_ - std::min(done_, sent_));
    }
    v1::MapStreamRequest request;
    std::string* packed = request.mutable_inputs()->mutable_inputs();
    const size_t limit = std::min<uint64_t>(room, kMaxBatchItems);
    bool ended = false;
    const size_t n = feed_->Take(limit, kMaxBatchBytes, packed, &ended);
    more = !ended;
    if (n > 0) {
      {
        absl::MutexLock lock(&mu_);
        sent_ += n;
      }
      if (!WriteMessage(request)) return;
    }
  }
  v1::MapStreamRequest end;
  end.mutable_end();
  if (!WriteMessage(end)) return;
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    writing_ = true;
  }
  stream_->WritesDone();
  absl::MutexLock lock(&mu_);
  writing_ = false;
}

void MapCall::FinishCall() {
  if (feed_ != nullptr) feed_->Stop();
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    // A write in progress ends promptly once the call is over; wait for it so that
    // Finish never runs beside it.
    mu_.Await(absl::Condition(
        +[](bool* writing) { return !*writing; }, &writing_));
  }
  const grpc::Status status = reader_ != nullptr ? reader_->Finish() : stream_->Finish();
  finished_ = true;
  final_status_ = FromGrpcStatus(status, reader_ != nullptr ? "Map" : "MapStream", *connection_);
  absl::MutexLock lock(&mu_);
  if (cancelled_ && final_status_.ok()) final_status_ = absl::CancelledError("map cancelled");
}

absl::StatusOr<bool> MapCall::AdvanceRun() {
  while (true) {
    if (run_ >= 0 && run_ + 1 < batch_.runs_size()) {
      ++run_;
      outputs_ = PackedItemReader(batch_.runs(run_).outputs());
      next_index_ = batch_.runs(run_).first_index();
      return true;
    }
    if (finished_) {
      if (!final_status_.ok()) return final_status_;
      return false;
    }
    run_ = -1;
    const bool got = reader_ != nullptr ? reader_->Read(&batch_) : stream_->Read(&batch_);
    if (!got) {
      batch_.Clear();
      FinishCall();
      continue;
    }
    errors_.clear();
    for (int e = 0; e < batch_.errors_size(); ++e) errors_[batch_.errors(e).index()] = e;
    {
      absl::MutexLock lock(&mu_);
      done_ = batch_.done();
      total_ = batch_.total();
    }
    if (batch_.runs_size() > 0) {
      run_ = 0;
      outputs_ = PackedItemReader(batch_.runs(0).outputs());
      next_index_ = batch_.runs(0).first_index();
      return true;
    }
  }
}

std::optional<absl::Status> MapCall::FindItemError(uint64_t index) const {
  auto error = errors_.find(index);
  if (error == errors_.end()) return std::nullopt;
  const v1::MapItemError& e = batch_.errors(error->second);
  return absl::Status(TaskStateToCode(e.state()),
                      absl::StrCat("map item ", index, " failed (", TaskStateName(e.state()),
                                   "): ", e.error()));
}

absl::StatusOr<std::optional<MapItem>> MapCall::Next() {
  while (true) {
    std::string_view output;
    if (run_ >= 0) {
      if (outputs_.Next(&output)) {
        MapItem item;
        item.index = next_index_++;
        if (std::optional<absl::Status> error = ItemError(item.index)) {
          item.output = *std::move(error);
        } else {
          item.output = std::string(output);
        }
        return item;
      }
      if (!outputs_.status().ok()) {
        return absl::InternalError(absl::StrCat("map results from the daemon: ",
                                                outputs_.status().message()));
      }
    }
    absl::StatusOr<bool> more = AdvanceRun();
    if (!more.ok()) return more.status();
    if (!*more) return std::nullopt;
  }
}

absl::StatusOr<bool> MapCall::NextRun(RunView* view) {
  if (run_ < 0 || outputs_.at_end()) {
    absl::StatusOr<bool> more = AdvanceRun();
    if (!more.ok() || !*more) return more;
  }
  view->first_index = next_index_;
  view->outputs = outputs_;
  outputs_ = PackedItemReader("");  // handed out: the next call moves on
  return true;
}

void MapCall::Cancel() {
  if (feed_ != nullptr) feed_->Stop();
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    stop_ = true;
  }
  context_.TryCancel();
}

uint64_t MapCall::done() const {
  absl::MutexLock lock(&mu_);
  return done_;
}

uint64_t MapCall::total() const {
  absl::MutexLock lock(&mu_);
  return total_;
}

uint64_t MapCall::sent() const {
  absl::MutexLock lock(&mu_);
  return sent_;
}

}  // namespace forkpool::internal
