// TaskBroker, dispatch: handing pending work to a pool's workers and what comes
// back (a result, a failure, a lost worker), with the retry and poison rules.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/packed_items.h"
#include "common/text_limit.h"
#include "google/protobuf/util/time_util.h"
#include "server/daemon/broker/task_broker.h"

namespace forkpool {
namespace {

absl::Duration ToDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// Payloads without a codec are text.
std::string CodecOrText(const std::string& codec) { return codec.empty() ? "text" : codec; }

}  // namespace

std::optional<Dispatch> TaskBroker::TakeWork(uint64_t gen, uint64_t worker_key, pid_t pid) {
  absl::MutexLock lock(&mu_);
  PoolQueue* q = FindQueueLocked(gen);
  if (q == nullptr) return std::nullopt;
  while (std::optional<PendingWork> work = q->pending->PopFront()) {
    Dispatch d;
    if (work->chunk) {
      // A cancelled map's chunk: its inputs may already be gone; dropped
      // unread.
      if (work->chunk->job->cancelled()) {
        q->queued -= work->chunk->count;
        continue;
      }
      // A map whose client does not read its results waits, holding at most
      // its bound.
      if (work->chunk->job->TryPark()) {
        q->parked[work->chunk->job.get()].push_back(*std::move(work));
        continue;
      }
      MapChunk& queued = *work->chunk;
      if (queued.split > 0 && queued.count > queued.split) {
        // Cut the next chunk off the front; the rest stays first in line.
        auto next = std::make_shared<MapChunk>(queued);
        next->count = queued.split;
        next->split = 0;
        queued.first_index += static_cast<uint64_t>(queued.split);
        queued.begin += static_cast<size_t>(queued.split);
        queued.count -= queued.split;
        q->pending->PushFront(*std::move(work));
        work = PendingWork{std::string(), std::move(next)};
      }
      work->chunk->split = 0;
      const MapJob& job = *work->chunk->job;
      const v1::TaskOptions eff = EffectiveLocked(*q, job.options());
      d.task_id = job.id();
      d.function = job.function();
      d.codec = CodecOrText(job.codec());
      d.attempt = work->chunk->attempt;
      d.time_limit = ToDuration(eff.time_limit());
      d.soft_time_limit = ToDuration(eff.soft_time_limit());
      q->queued -= work->chunk->count;
      d.chunk = std::move(work->chunk);
      return d;
    }
    Task* task = store_->Find(work->task_id);
    if (task == nullptr || task->result.state() != v1::TASK_STATE_PENDING) {
      if (q->dead > 0) --q->dead;
      continue;
    }
    const v1::TaskOptions eff = EffectiveLocked(*q, task->options);
    if (task->queue_timer != 0) clock_->CancelTimer(task->queue_timer);
    task->queue_timer = 0;
    --q->queued;
    task->worker_key = worker_key;
    task->result.set_state(v1::TASK_STATE_RUNNING);
    task->result.set_attempts(task->result.attempts() + 1);
    task->result.set_worker_pid(pid);
    *task->result.mutable_started_at() = google::protobuf::util::TimeUtil::NanosecondsToTimestamp(
        absl::ToUnixNanos(clock_->WallNow()));
    store_->Updated(*task);
    d.task_id = task->result.task_id();
    d.function = task->result.function();
    d.input = task->input;
    d.codec = CodecOrText(task->codec);
    d.attempt = task->result.attempts();
    d.time_limit = ToDuration(eff.time_limit());
    d.soft_time_limit = ToDuration(eff.soft_time_limit());
    return d;
  }
  return std::nullopt;
}

void TaskBroker::ReturnWork(uint64_t gen, Dispatch work) {
  absl::MutexLock lock(&mu_);
  PoolQueue* q = FindQueueLocked(gen);
  if (q == nullptr) return;
  if (work.chunk) {
    q->queued += work.chunk->count;
    q->pending->PushFront(PendingWork{std::string(), std::move(work.chunk)});
    return;
  }
  Task* task = store_->Find(work.task_id);
  if (task == nullptr || task->result.state() != v1::TASK_STATE_RUNNING) return;
  task->result.set_state(v1::TASK_STATE_PENDING);
  task->result.set_attempts(task->result.attempts() - 1);
  task->worker_key = 0;
  ++q->queued;
  q->pending->PushFront(PendingWork{work.task_id, nullptr});
}

void TaskBroker::TaskSucceeded(const std::string& task_id, uint64_t worker_key,
                               std::string_view output, Notify* notify) {
  absl::MutexLock lock(&mu_);
  Task* task = store_->Find(task_id);
  // Ended meanwhile (cancelled), or a later attempt runs elsewhere.
  if (task == nullptr || IsTerminal(task->result.state()) || task->worker_key != worker_key) {
    return;
  }
  task->result.mutable_output()->set_data(output.data(), output.size());
  task->result.mutable_output()->set_codec(CodecOrText(task->codec));
  task->result.clear_error();  // from an earlier attempt
  task->result.clear_worker_loss();
  FinishLocked(*task, v1::TASK_STATE_SUCCEEDED, notify);
}

void TaskBroker::TaskFailed(const std::string& task_id, uint64_t worker_key, v1::TaskState state,
                            std::string error, const v1::WorkerLoss* loss, bool may_retry,
                            Notify* notify) {
  absl::MutexLock lock(&mu_);
  Task* task = store_->Find(task_id);
  if (task == nullptr || IsTerminal(task->result.state()) || task->worker_key != worker_key) {
    return;
  }
  {
    // A worker's text is capped (and made valid UTF-8) before it is kept.
    task->result.set_error(CapText(error, options_.max_error_bytes));
    if (loss != nullptr) *task->result.mutable_worker_loss() = *loss;
    PoolQueue* q = FindQueueLocked(task->pool_generation);
    const v1::TaskOptions eff = q != nullptr ? EffectiveLocked(*q, task->options) : task->options;
    if (state == v1::TASK_STATE_WORKER_LOST) ++task->losses;
    const bool retryable = state == v1::TASK_STATE_WORKER_LOST ||
                           state == v1::TASK_STATE_TIMED_OUT ||
                           (state == v1::TASK_STATE_FAILED && eff.retry_on_error());
    if (task->losses >= options_.poison_threshold) {
      task->result.set_error(absl::StrCat("poison task: it killed ", task->losses,
                                          " workers; the last one: ", task->result.error()));
      FinishLocked(*task, v1::TASK_STATE_FAILED, notify);
      return;
    }
    if (q == nullptr || !may_retry || !retryable || draining_ ||
        task->result.attempts() > eff.max_retries()) {
      FinishLocked(*task, state, notify);
      return;
    }
    task->result.set_state(v1::TASK_STATE_PENDING);
    task->worker_key = 0;
    store_->Updated(*task);
    // The executor that reported this dispatches the retry itself.
    q->pending->PushFront(PendingWork{task_id, nullptr});
    ++q->queued;
  }
}

void TaskBroker::ChunkInterrupted(uint64_t gen, const MapChunk& chunk, int at, v1::TaskState state,
                                  const std::string& error, const v1::WorkerLoss* loss,
                                  bool may_retry) {
  if (at >= chunk.count || chunk.job->cancelled()) return;
  absl::MutexLock lock(&mu_);
  PoolQueue* q = FindQueueLocked(gen);
  const v1::TaskOptions eff =
      q != nullptr ? EffectiveLocked(*q, chunk.job->options()) : chunk.job->options();
  if (q != nullptr && may_retry && state != v1::TASK_STATE_FAILED && !draining_ &&
      chunk.attempt <= eff.max_retries()) {
    // Retry the running item (and the rest) as a new attempt.
    MapChunk again = chunk;
    again.attempt = chunk.attempt + 1;
    RequeueChunkRestLocked(*q, again, at);
    return;
  }
  MapChunk blamed = chunk;
  blamed.count = at + 1;
  FailChunkItems(blamed, at, state, error, state == v1::TASK_STATE_WORKER_LOST ? loss : nullptr);
  if (q == nullptr) {
    FailChunkItems(chunk, at + 1, v1::TASK_STATE_CANCELLED, "cancelled: its pool is gone", nullptr);
    return;
  }
  ++q->counts.failed;
  RequeueChunkRestLocked(*q, chunk, at + 1);
}

void TaskBroker::FailChunkItems(const MapChunk& chunk, int from, v1::TaskState state,
                                const std::string& error, const v1::WorkerLoss* loss) {
  if (from >= chunk.count) return;
  MapRun run;
  run.first_index = chunk.first_index + static_cast<uint64_t>(from);
  run.count = static_cast<uint64_t>(chunk.count - from);
  run.outputs.reserve(run.count * PackedItemBytes(0));
  run.input_bytes = chunk.inputs->RangeBytes(chunk.begin + static_cast<size_t>(from),
                                             chunk.begin + static_cast<size_t>(chunk.count));
  run.errors.reserve(run.count);
  for (int i = from; i < chunk.count; ++i) {
    AppendPackedItem("", &run.outputs);
    v1::MapItemError& e = run.errors.emplace_back();
    e.set_index(chunk.first_index + static_cast<uint64_t>(i));
    e.set_state(state);
    e.set_error(error);
    if (loss != nullptr) *e.mutable_worker_loss() = *loss;
  }
  chunk.job->AddRun(std::move(run));
}

}  // namespace forkpool
