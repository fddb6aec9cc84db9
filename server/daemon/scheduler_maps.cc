// Scheduler, maps: cutting inputs into chunks, dispatching and re-queueing
// them, cancelling a map.
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/packed_items.h"
#include "common/proto_status.h"
#include "common/status_macros.h"
#include "server/daemon/log.h"
#include "server/daemon/pool_settings.h"
#include "server/daemon/process_util.h"
#include "server/daemon/scheduler.h"
#include "server/daemon/scheduler_internal.h"

namespace forkpool {

using internal_scheduler::CodecOrText;
using internal_scheduler::EffectiveOptions;
using internal_scheduler::NowProto;
using internal_scheduler::ToDuration;

bool Scheduler::SendChunkLocked(Pool& pool, WorkerSlot& w, std::shared_ptr<MapChunk> chunk) {
  internal::ToWorker message;
  internal::RunBatch* run = message.mutable_run();
  const uint64_t batch = next_batch_++;
  run->set_batch_id(batch);
  run->set_function(chunk->job->function());
  const std::string_view packed = chunk->packed();
  run->set_inputs(packed.data(), packed.size());
  run->set_task_id(chunk->job->id());
  run->set_attempt(chunk->attempt);
  run->set_codec(CodecOrText(chunk->job->codec()));
  // For a chunk the hard limit covers the whole chunk: the per-item limit times
  // its items; the soft limit is per item (the worker times each one).
  const v1::TaskOptions eff = EffectiveOptions(pool, chunk->job->options());
  const absl::Duration limit = ToDuration(eff.time_limit()) * chunk->count;
  if (limit > absl::ZeroDuration()) {
    run->set_deadline_unix_ns(absl::ToUnixNanos(absl::Now() + limit));
  }
  run->set_soft_time_limit_ns(absl::ToInt64Nanoseconds(ToDuration(eff.soft_time_limit())));
  if (!SendLocked(w, message)) return false;
  pool.queued -= chunk->count;
  ++running_;
  w.state = v1::WORKER_STATE_BUSY;
  w.chunk = std::move(chunk);
  w.chunk_results = 0;
  w.batch_id = batch;
  ArmTimeLimitLocked(pool, w, limit);
  return true;
}

void Scheduler::QueueChunksLocked(Pool& pool, const std::shared_ptr<MapJob>& job,
                                  uint64_t first_index,
                                  const std::shared_ptr<const PackedItems>& inputs, size_t begin,
                                  int count, uint32_t chunksize) {
  const int size = std::max<int>(
      1, static_cast<int>(std::min<uint32_t>(chunksize, static_cast<uint32_t>(count))));
  for (int offset = 0; offset < count; offset += size) {
    auto chunk = std::make_shared<MapChunk>();
    chunk->job = job;
    chunk->first_index = first_index + static_cast<uint64_t>(offset);
    chunk->inputs = inputs;
    chunk->begin = begin + static_cast<size_t>(offset);
    chunk->count = std::min(size, count - offset);
    pool.queued += chunk->count;
    pool.pending.push_back(PendingWork{std::string(), std::move(chunk)});
  }
}

absl::Status Scheduler::StartMap(const std::shared_ptr<MapJob>& job, std::string_view inputs,
                                 uint32_t chunksize) {
  FORKPOOL_ASSIGN_OR_RETURN(std::shared_ptr<const PackedItems> items,
                            PackedItems::View(inputs, options_.max_input_bytes, "map inputs"));
  if (items->size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("a map of ", items->size(), " items in one request; stream them"));
  }
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(job->pool());
  FORKPOOL_RETURN_IF_ERROR(CheckAcceptsLocked(job->pool(), pool, job->function(), 0));
  const int n = static_cast<int>(items->size());
  if (chunksize == 0) {
    // multiprocessing's rule: about four chunks per worker.
    const int per = 4 * std::max(1, pool->settings.processes());
    chunksize = static_cast<uint32_t>(std::max(1, (n + per - 1) / per));
  }
  job->AddAccepted(static_cast<uint64_t>(n), /*end=*/true, inputs.size());
  QueueChunksLocked(*pool, job, 0, items, 0, n, chunksize);
  DispatchLocked(*pool);
  return absl::OkStatus();
}

absl::Status Scheduler::OpenMap(const std::shared_ptr<MapJob>& job) {
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(job->pool());
  return CheckAcceptsLocked(job->pool(), pool, job->function(), 0);
}

absl::Status Scheduler::AddMapInputs(const std::shared_ptr<MapJob>& job,
                                     std::shared_ptr<const PackedItems> inputs, size_t begin,
                                     size_t end, uint32_t chunksize) {
  const int n = static_cast<int>(end - begin);
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(job->pool());
  FORKPOOL_RETURN_IF_ERROR(CheckAcceptsLocked(job->pool(), pool, job->function(), n));
  if (job->cancelled()) return absl::CancelledError("the map was cancelled");
  if (n == 0) return absl::OkStatus();
  if (chunksize == 0) {
    // Chunks from what has arrived: about one per worker, at most 4096 items.
    const int workers = std::max(1, pool->settings.processes());
    chunksize = static_cast<uint32_t>(std::clamp((n + workers - 1) / workers, 1, 4096));
  }
  const uint64_t first = job->accepted();
  job->AddAccepted(static_cast<uint64_t>(n), /*end=*/false, inputs->RangeBytes(begin, end));
  QueueChunksLocked(*pool, job, first, inputs, begin, n, chunksize);
  pool->map_inflight_high_water =
      std::max<int64_t>(pool->map_inflight_high_water, static_cast<int64_t>(job->InFlight()));
  DispatchLocked(*pool);
  return absl::OkStatus();
}

void Scheduler::CancelMap(const std::shared_ptr<MapJob>& job) {
  absl::MutexLock lock(&mu_);
  job->Cancel();
  Pool* pool = FindPoolLocked(job->pool());
  if (pool == nullptr) return;
  // Queued chunks are skipped (and uncounted) at dispatch; running ones are
  // stopped.
  for (auto& [key, w] : pool->workers) {
    if (w.chunk && w.chunk->job == job && w.conn) {
      internal::ToWorker stop;
      stop.mutable_stop()->set_batch_id(w.batch_id);
      (void)SendLocked(w, stop);
      // An item that does not stop (a task that never returns to the loop)
      // would hold the worker for nobody: its worker is killed after a grace.
      const std::string name = pool->settings.name();
      const uint64_t key = w.key, batch = w.batch_id;
      loop_->AddTimer(absl::Now() + options_.cancel_grace,
                      [this, name, key, batch] { OnStopGrace(name, key, batch); });
    }
  }
  // Drop queued chunks now, so the pool's queued count is true at once.
  std::deque<PendingWork> kept;
  for (PendingWork& work : pool->pending) {
    if (work.chunk && work.chunk->job == job) {
      pool->queued -= work.chunk->count;
    } else {
      kept.push_back(std::move(work));
    }
  }
  pool->pending.swap(kept);
}

void Scheduler::FailChunkItemsLocked(const MapChunk& chunk, int from, v1::TaskState state,
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

void Scheduler::RequeueChunkRestLocked(Pool& pool, const MapChunk& chunk, int from) {
  if (from >= chunk.count || chunk.job->cancelled()) return;
  auto rest = std::make_shared<MapChunk>();
  rest->job = chunk.job;
  rest->first_index = chunk.first_index + static_cast<uint64_t>(from);
  rest->inputs = chunk.inputs;
  rest->begin = chunk.begin + static_cast<size_t>(from);
  rest->count = chunk.count - from;
  rest->attempt = chunk.attempt;
  pool.queued += rest->count;
  // To the front: these items were already due.
  pool.pending.push_front(PendingWork{std::string(), std::move(rest)});
}

}  // namespace forkpool
