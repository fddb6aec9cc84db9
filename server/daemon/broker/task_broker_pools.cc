// TaskBroker, pools: each pool generation's queue, what it accepts, its
// counts, and admission of new work.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/daemon/broker/task_broker.h"
#include "server/daemon/executor/pool_settings.h"

namespace forkpool {

void TaskBroker::AddPool(uint64_t gen, PoolEntry entry) {
  absl::MutexLock lock(&mu_);
  PoolQueue& q = pools_[gen];
  by_name_[entry.name] = gen;
  q.entry = std::move(entry);
  q.pending = std::make_unique<MemoryPendingQueue>();
}

void TaskBroker::SetFunctions(uint64_t gen, std::set<std::string> functions) {
  absl::MutexLock lock(&mu_);
  if (PoolQueue* q = FindQueueLocked(gen)) {
    q->functions = std::move(functions);
    q->loaded = true;
  }
}

void TaskBroker::SetRefusal(uint64_t gen, absl::Status why) {
  absl::MutexLock lock(&mu_);
  if (PoolQueue* q = FindQueueLocked(gen)) q->refusal = std::move(why);
}

void TaskBroker::EndPending(uint64_t gen, v1::TaskState state, const std::string& why,
                            Notify* notify) {
  absl::MutexLock lock(&mu_);
  PoolQueue* q = FindQueueLocked(gen);
  if (q == nullptr) return;
  for (const PendingWork& work : q->pending->TakeAll()) {
    if (work.chunk) {
      if (!work.chunk->job->cancelled()) FailChunkItems(*work.chunk, 0, state, why, nullptr);
      continue;
    }
    Task* task = store_->Find(work.task_id);
    if (task == nullptr || task->result.state() != v1::TASK_STATE_PENDING) continue;
    task->result.set_error(why);
    FinishLocked(*task, state, notify);
  }
  for (auto& [job, chunks] : q->parked) {
    for (const PendingWork& work : chunks) {
      if (!work.chunk->job->cancelled()) FailChunkItems(*work.chunk, 0, state, why, nullptr);
    }
  }
  q->parked.clear();
  q->queued = 0;
  q->dead = 0;
}

void TaskBroker::RemovePool(uint64_t gen) {
  absl::MutexLock lock(&mu_);
  auto it = pools_.find(gen);
  if (it == pools_.end()) return;
  auto name = by_name_.find(it->second.entry.name);
  if (name != by_name_.end() && name->second == gen) by_name_.erase(name);
  pools_.erase(it);
}

PoolCounts TaskBroker::Counts(uint64_t gen) const {
  absl::MutexLock lock(&mu_);
  auto it = pools_.find(gen);
  if (it == pools_.end()) return {};
  PoolCounts c = it->second.counts;
  c.queued = it->second.queued;
  return c;
}

bool TaskBroker::Idle(uint64_t gen) const {
  absl::MutexLock lock(&mu_);
  auto it = pools_.find(gen);
  return it == pools_.end() ||
         (it->second.queued == 0 && it->second.pending->empty() && it->second.parked.empty());
}

TaskBroker::PoolQueue* TaskBroker::FindQueueLocked(uint64_t gen) {
  auto it = pools_.find(gen);
  return it == pools_.end() ? nullptr : &it->second;
}

TaskBroker::PoolQueue* TaskBroker::FindByNameLocked(const std::string& name, uint64_t* gen) {
  auto it = by_name_.find(name.empty() ? std::string(kDefaultPoolName) : name);
  if (it == by_name_.end()) return nullptr;
  *gen = it->second;
  return FindQueueLocked(it->second);
}

absl::StatusOr<TaskBroker::PoolQueue*> TaskBroker::AdmitLocked(const std::string& name,
                                                               const std::string& function,
                                                               int64_t count, uint64_t* gen) {
  if (draining_) {
    return absl::UnavailableError("forkpoold is shutting down; no new work is accepted");
  }
  PoolQueue* q = FindByNameLocked(name, gen);
  if (q == nullptr || !q->loaded) {
    return absl::NotFoundError(
        absl::StrCat("unknown pool '", name.empty() ? kDefaultPoolName : name, "'"));
  }
  if (!q->refusal.ok()) return q->refusal;
  if (function.empty()) return absl::InvalidArgumentError("no function named");
  if (!q->functions.count(function)) {
    return absl::NotFoundError(
        absl::StrCat("pool '", q->entry.name, "' has no function '", function, "'"));
  }
  const int64_t limit =
      q->entry.max_queued > 0 ? q->entry.max_queued : options_.max_queued_per_pool;
  if (q->queued + count > limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat("pool '", q->entry.name, "' has ", q->queued, " queued items; the limit is ",
                     limit, count > 1 ? absl::StrCat(" and ", count, " more were asked") : ""));
  }
  return q;
}

v1::TaskOptions TaskBroker::EffectiveLocked(const PoolQueue& q, const v1::TaskOptions& own) const {
  v1::TaskOptions o = q.entry.task_defaults;
  if (own.has_time_limit()) *o.mutable_time_limit() = own.time_limit();
  if (own.has_soft_time_limit()) *o.mutable_soft_time_limit() = own.soft_time_limit();
  if (own.has_queue_deadline()) *o.mutable_queue_deadline() = own.queue_deadline();
  if (own.max_retries() != 0) o.set_max_retries(own.max_retries());
  if (own.retry_on_error()) o.set_retry_on_error(true);
  return o;
}

}  // namespace forkpool
