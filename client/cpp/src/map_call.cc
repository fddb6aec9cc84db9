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
constexpr size_t kMaxBatchItems = 4096;
constexpr size_t kMaxBatchBytes = 1 << 20;

}  // namespace

MapCall::MapCall(std::shared_ptr<const Connection> connection, bool ordered)
    : connection_(std::move(connection)), ordered_(ordered) {}

std::unique_ptr<MapCall> MapCall::StartUnary(std::shared_ptr<const Connection> connection,
                                             const v1::MapRequest& request) {
  std::unique_ptr<MapCall> call(new MapCall(std::move(connection), request.ordered()));
  {
    absl::MutexLock lock(&call->mu_);
    call->sent_ = static_cast<uint64_t>(request.inputs_size());
    call->stop_ = true;  // no writer
  }
  call->reader_ = call->connection_->tasks->Map(&call->context_, request);
  return call;
}

std::unique_ptr<MapCall> MapCall::StartStream(std::shared_ptr<const Connection> connection,
                                              const v1::MapStreamOpen& open,
                                              InputSource source) {
  std::unique_ptr<MapCall> call(new MapCall(std::move(connection), open.ordered()));
  call->source_ = std::move(source);
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
      absl::MutexLock lock(&mu_);
      auto has_room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || sent_ - std::min(done_, sent_) < window_;
      };
      mu_.Await(absl::Condition(&has_room));
      if (stop_) return;
      room = window_ - (sent_ - std::min(done_, sent_));
    }
    v1::MapStreamRequest request;
    v1::MapInputs* inputs = request.mutable_inputs();
    size_t bytes = 0;
    const size_t limit = std::min<uint64_t>(room, kMaxBatchItems);
    while (static_cast<size_t>(inputs->inputs_size()) < limit && bytes < kMaxBatchBytes) {
      std::optional<std::string> next = source_();
      if (!next.has_value()) {
        more = false;
        break;
      }
      bytes += next->size() + 8;
      inputs->add_inputs(std::move(*next));
    }
    if (inputs->inputs_size() > 0) {
      {
        absl::MutexLock lock(&mu_);
        sent_ += static_cast<uint64_t>(inputs->inputs_size());
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

absl::StatusOr<std::optional<MapItem>> MapCall::Next() {
  while (true) {
    if (position_ < batch_.indexes_size()) {
      const int i = position_++;
      MapItem item;
      item.index = batch_.indexes(i);
      auto error = errors_.find(item.index);
      if (error != errors_.end()) {
        const v1::MapItemError& e = batch_.errors(error->second);
        item.output = absl::Status(
            TaskStateToCode(e.state()),
            absl::StrCat("map item ", item.index, " failed (", TaskStateName(e.state()),
                         "): ", e.error()));
      } else if (i < batch_.outputs_size()) {
        item.output = std::move(*batch_.mutable_outputs(i));
      } else {
        item.output = absl::InternalError(
            absl::StrCat("map item ", item.index, ": the daemon sent no output"));
      }
      return item;
    }
    if (finished_) {
      if (!final_status_.ok()) return final_status_;
      return std::nullopt;
    }
    const bool got = reader_ != nullptr ? reader_->Read(&batch_) : stream_->Read(&batch_);
    if (!got) {
      batch_.Clear();
      position_ = 0;
      FinishCall();
      continue;
    }
    position_ = 0;
    errors_.clear();
    for (int e = 0; e < batch_.errors_size(); ++e) errors_[batch_.errors(e).index()] = e;
    absl::MutexLock lock(&mu_);
    done_ = batch_.done();
    total_ = batch_.total();
  }
}

void MapCall::Cancel() {
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
