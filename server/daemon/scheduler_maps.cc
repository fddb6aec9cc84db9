// Scheduler, maps: cutting inputs into chunks, dispatching and re-queueing them,
// cancelling a map.
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/proto_status.h"
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
  run->mutable_inputs()->Reserve(chunk->count);
  for (int i = 0; i < chunk->count; ++i) run->add_inputs(chunk->input(i));
  run->set_task_id(chunk->job->id());
  run->set_attempt(chunk->attempt);
  run->set_codec(CodecOrText(chunk->job->codec()));
  // For a chunk the hard limit covers the whole chunk: the per-item limit times its
  // items; the soft limit is per item (the worker times each one).
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
                                  uint64_t first_index, std::vector<std::string>* owned,
                                  const google::protobuf::RepeatedPtrField<std::string>* source,
                                  int count, uint32_t chunksize) {
  const int size = std::max<int>(1, static_cast<int>(std::min<uint32_t>(
                                        chunksize, static_cast<uint32_t>(count))));
  for (int begin = 0; begin < count; begin += size) {
    auto chunk = std::make_shared<MapChunk>();
    chunk->job = job;
    chunk->first_index = first_index + static_cast<uint64_t>(begin);
    chunk->count = std::min(size, count - begin);
    if (source != nullptr) {
      chunk->source = source;
      chunk->source_offset = begin;
    } else {
      chunk->owned.reserve(static_cast<size_t>(chunk->count));
      for (int i = 0; i < chunk->count; ++i) {
        chunk->owned.push_back(std::move((*owned)[static_cast<size_t>(begin + i)]));
      }
    }
    pool.queued += chunk->count;
    pool.pending.push_back(PendingWork{std::string(), std::move(chunk)});
  }
}

absl::Status Scheduler::StartMap(const std::shared_ptr<MapJob>& job,
                                 const google::protobuf::RepeatedPtrField<std::string>* inputs,
                                 uint32_t chunksize) {
  for (const std::string& input : *inputs) {
    if (input.size() > options_.max_input_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "map input of ", input.size(), " bytes exceeds the limit of ",
          options_.max_input_bytes, " bytes"));
    }
  }
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(job->pool());
  FORKPOOL_RETURN_IF_ERROR(CheckAcceptsLocked(job->pool(), pool, job->function(), 0));
  const int n = inputs->size();
  if (chunksize == 0) {
    // multiprocessing's rule: about four chunks per worker.
    const int per = 4 * std::max(1, pool->settings.processes());
    chunksize = static_cast<uint32_t>(std::max(1, (n + per - 1) / per));
  }
  job->AddAccepted(static_cast<uint64_t>(n), /*end=*/true);
  QueueChunksLocked(*pool, job, 0, nullptr, inputs, n, chunksize);
  DispatchLocked(*pool);
  return absl::OkStatus();
}

absl::Status Scheduler::OpenMap(const std::shared_ptr<MapJob>& job) {
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(job->pool());
  return CheckAcceptsLocked(job->pool(), pool, job->function(), 0);
}

absl::Status Scheduler::AddMapInputs(const std::shared_ptr<MapJob>& job,
                                     std::vector<std::string> inputs, uint32_t chunksize) {
  for (const std::string& input : inputs) {
    if (input.size() > options_.max_input_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "map input of ", input.size(), " bytes exceeds the limit of ",
          options_.max_input_bytes, " bytes"));
    }
  }
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(job->pool());
  FORKPOOL_RETURN_IF_ERROR(CheckAcceptsLocked(job->pool(), pool, job->function(),
                                              static_cast<int64_t>(inputs.size())));
  if (job->cancelled()) return absl::CancelledError("the map was cancelled");
  const int n = static_cast<int>(inputs.size());
  if (n == 0) return absl::OkStatus();
  if (chunksize == 0) {
    // Chunks from what has arrived: about one per worker, at most 4096 items.
    const int workers = std::max(1, pool->settings.processes());
    chunksize = static_cast<uint32_t>(std::clamp((n + workers - 1) / workers, 1, 4096));
  }
  const uint64_t first = job->accepted();
  job->AddAccepted(static_cast<uint64_t>(n), /*end=*/false);
  QueueChunksLocked(*pool, job, first, &inputs, nullptr, n, chunksize);
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
  // Queued chunks are skipped (and uncounted) at dispatch; running ones are stopped.
  for (auto& [key, w] : pool->workers) {
    if (w.chunk && w.chunk->job == job && w.conn) {
      internal::ToWorker stop;
      stop.mutable_stop()->set_batch_id(w.batch_id);
      (void)SendLocked(w, stop);
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
  std::vector<MapItemResult> results;
  for (int i = from; i < chunk.count; ++i) {
    MapItemResult r;
    r.index = chunk.first_index + static_cast<uint64_t>(i);
    r.error = std::make_unique<v1::MapItemError>();
    r.error->set_index(r.index);
    r.error->set_state(state);
    r.error->set_error(error);
    if (loss != nullptr) *r.error->mutable_worker_loss() = *loss;
    results.push_back(std::move(r));
  }
  chunk.job->AddResults(std::move(results));
}

void Scheduler::RequeueChunkRestLocked(Pool& pool, const MapChunk& chunk, int from) {
  if (from >= chunk.count || chunk.job->cancelled()) return;
  auto rest = std::make_shared<MapChunk>();
  rest->job = chunk.job;
  rest->first_index = chunk.first_index + static_cast<uint64_t>(from);
  rest->count = chunk.count - from;
  rest->attempt = chunk.attempt;
  if (chunk.source != nullptr) {
    rest->source = chunk.source;
    rest->source_offset = chunk.source_offset + from;
  } else {
    rest->owned.assign(chunk.owned.begin() + from, chunk.owned.end());
  }
  pool.queued += rest->count;
  // To the front: these items were already due.
  pool.pending.push_front(PendingWork{std::string(), std::move(rest)});
}

}  // namespace forkpool
