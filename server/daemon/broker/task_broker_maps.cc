// TaskBroker, maps: cutting inputs into chunks, queueing and re-queueing them,
// cancelling a map.
#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/packed_items.h"
#include "common/status_macros.h"
#include "server/daemon/broker/task_broker.h"
#include "server/daemon/broker/task_options.h"

namespace forkpool {

void TaskBroker::QueueChunksLocked(PoolQueue& q, const std::shared_ptr<MapJob>& job,
                                   uint64_t first_index,
                                   const std::shared_ptr<const PackedItems>& inputs, size_t begin,
                                   int count, uint32_t chunksize) {
  // One entry for all of them, cut into chunks as workers take them.
  auto chunk = std::make_shared<MapChunk>();
  chunk->job = job;
  chunk->first_index = first_index;
  chunk->inputs = inputs;
  chunk->begin = begin;
  chunk->count = count;
  chunk->split = std::max<int>(
      1, static_cast<int>(std::min<uint32_t>(chunksize, static_cast<uint32_t>(count))));
  q.queued += count;
  q.pending->PushBack(PendingWork{std::string(), std::move(chunk)});
}

void TaskBroker::AdmitMapLocked(const std::shared_ptr<MapJob>& job, uint64_t gen) {
  job->set_generation(gen);
  job->SetBudget(budget_);
  std::weak_ptr<MapJob> weak = job;
  job->SetUnsentLimit(options_.max_map_unsent_bytes, [this, weak] { Unpark(weak); });
}

void TaskBroker::Unpark(const std::weak_ptr<MapJob>& weak) {
  std::shared_ptr<MapJob> job = weak.lock();
  if (!job) return;
  std::weak_ptr<WorkConsumer> consumer;
  {
    absl::MutexLock lock(&mu_);
    PoolQueue* q = FindQueueLocked(job->generation());
    if (q == nullptr) return;
    auto it = q->parked.find(job.get());
    if (it == q->parked.end()) return;
    // Back to the front, in their order: they were due.
    for (auto w = it->second.rbegin(); w != it->second.rend(); ++w) {
      q->pending->PushFront(std::move(*w));
    }
    q->parked.erase(it);
    consumer = q->entry.consumer;
  }
  Kick(consumer);
}

void TaskBroker::RequeueChunkRestLocked(PoolQueue& q, const MapChunk& chunk, int from) {
  if (from >= chunk.count || chunk.job->cancelled()) return;
  auto rest = std::make_shared<MapChunk>();
  rest->job = chunk.job;
  rest->first_index = chunk.first_index + static_cast<uint64_t>(from);
  rest->inputs = chunk.inputs;
  rest->begin = chunk.begin + static_cast<size_t>(from);
  rest->count = chunk.count - from;
  rest->attempt = chunk.attempt;
  q.queued += rest->count;
  // To the front: these items were already due.
  q.pending->PushFront(PendingWork{std::string(), std::move(rest)});
}

absl::Status TaskBroker::StartMap(const std::shared_ptr<MapJob>& job, std::string_view inputs,
                                  uint32_t chunksize) {
  FORKPOOL_RETURN_IF_ERROR(ValidateTaskOptions(job->options(), "map"));
  FORKPOOL_RETURN_IF_ERROR(ValidateCodec(job->codec(), "map"));
  FORKPOOL_ASSIGN_OR_RETURN(std::shared_ptr<const PackedItems> items,
                            PackedItems::View(inputs, options_.max_input_bytes, "map inputs"));
  if (items->size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("a map of ", items->size(), " items in one request; stream them"));
  }
  const int n = static_cast<int>(items->size());
  std::weak_ptr<WorkConsumer> consumer;
  {
    absl::MutexLock lock(&mu_);
    uint64_t gen = 0;
    // Its items count against the pool's max_queued like tasks.
    FORKPOOL_ASSIGN_OR_RETURN(PoolQueue * q, AdmitLocked(job->pool(), job->function(), n, &gen));
    // The job counts its inputs and unsent results in the budget itself.
    FORKPOOL_RETURN_IF_ERROR(budget_->Check(inputs.size(), "a map's inputs"));
    if (chunksize == 0) {
      // multiprocessing's rule: about four chunks per worker.
      const int per = 4 * std::max(1, q->entry.processes);
      chunksize = static_cast<uint32_t>(std::max(1, (n + per - 1) / per));
    }
    AdmitMapLocked(job, gen);
    job->AddAccepted(static_cast<uint64_t>(n), /*end=*/true, inputs.size());
    QueueChunksLocked(*q, job, 0, items, 0, n, chunksize);
    consumer = q->entry.consumer;
  }
  Kick(consumer);
  return absl::OkStatus();
}

absl::Status TaskBroker::OpenMap(const std::shared_ptr<MapJob>& job) {
  FORKPOOL_RETURN_IF_ERROR(ValidateTaskOptions(job->options(), "map"));
  FORKPOOL_RETURN_IF_ERROR(ValidateCodec(job->codec(), "map"));
  absl::MutexLock lock(&mu_);
  uint64_t gen = 0;
  FORKPOOL_RETURN_IF_ERROR(AdmitLocked(job->pool(), job->function(), 0, &gen).status());
  AdmitMapLocked(job, gen);
  return absl::OkStatus();
}

absl::Status TaskBroker::AddMapInputs(const std::shared_ptr<MapJob>& job,
                                      std::shared_ptr<const PackedItems> inputs, size_t begin,
                                      size_t end, uint32_t chunksize) {
  const int n = static_cast<int>(end - begin);
  std::weak_ptr<WorkConsumer> consumer;
  {
    absl::MutexLock lock(&mu_);
    uint64_t gen = 0;
    FORKPOOL_ASSIGN_OR_RETURN(PoolQueue * q, AdmitLocked(job->pool(), job->function(), n, &gen));
    if (job->cancelled()) return absl::CancelledError("the map was cancelled");
    FORKPOOL_RETURN_IF_ERROR(budget_->Check(inputs->RangeBytes(begin, end), "a map's inputs"));
    if (gen != job->generation()) {
      return absl::NotFoundError(
          absl::StrCat("pool '", job->pool(), "' was deleted (and made again) during the map"));
    }
    if (n == 0) return absl::OkStatus();
    if (chunksize == 0) {
      // Chunks from what has arrived: about one per worker, at most 4096 items.
      const int workers = std::max(1, q->entry.processes);
      chunksize = static_cast<uint32_t>(std::clamp((n + workers - 1) / workers, 1, 4096));
    }
    const uint64_t first = job->accepted();
    job->AddAccepted(static_cast<uint64_t>(n), /*end=*/false, inputs->RangeBytes(begin, end));
    QueueChunksLocked(*q, job, first, inputs, begin, n, chunksize);
    q->counts.map_inflight_high_water =
        std::max<int64_t>(q->counts.map_inflight_high_water, static_cast<int64_t>(job->InFlight()));
    consumer = q->entry.consumer;
  }
  Kick(consumer);
  return absl::OkStatus();
}

void TaskBroker::CancelMap(const std::shared_ptr<MapJob>& job) {
  std::weak_ptr<WorkConsumer> consumer;
  {
    absl::MutexLock lock(&mu_);
    job->Cancel();
    PoolQueue* q = FindQueueLocked(job->generation());
    if (q == nullptr) return;
    // Drop queued chunks now, so the pool's queued count is true at once.
    q->pending->RemoveIf([&](const PendingWork& w) {
      if (!w.chunk || w.chunk->job != job) return false;
      q->queued -= w.chunk->count;
      return true;
    });
    if (auto it = q->parked.find(job.get()); it != q->parked.end()) {
      for (const PendingWork& w : it->second) q->queued -= w.chunk->count;
      q->parked.erase(it);
    }
    consumer = q->entry.consumer;
  }
  // Running chunks are told to stop, without the broker's lock.
  if (std::shared_ptr<WorkConsumer> c = consumer.lock()) c->StopChunks(job);
}

}  // namespace forkpool
