// Scheduler: task intake, dispatch to idle workers, results, retries, shutdown.
// (Pools, workers and maps are in scheduler_{pools,workers,maps}.cc.)
#include "server/daemon/scheduler.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/packed_items.h"
#include "common/proto_status.h"
#include "google/protobuf/util/time_util.h"
#include "server/daemon/log.h"
#include "server/daemon/pool_settings.h"
#include "server/daemon/process_util.h"
#include "server/daemon/scheduler_internal.h"

namespace forkpool {
namespace {

using internal_scheduler::CodecOrText;
using internal_scheduler::EffectiveOptions;
using internal_scheduler::NowProto;
using internal_scheduler::ToDuration;

uint64_t SpecHash(const std::string& pool, const std::string& function, const std::string& input,
                  const std::string& codec, const v1::TaskOptions& options) {
  return absl::HashOf(pool, function, input, codec, options.SerializeAsString());
}

absl::Status ValidateOptions(const v1::TaskOptions& o) {
  for (const auto& [name, d] :
       {std::pair<const char*, const google::protobuf::Duration*>{"time_limit", &o.time_limit()},
        {"soft_time_limit", &o.soft_time_limit()},
        {"queue_deadline", &o.queue_deadline()}}) {
    if (d->seconds() < 0 || d->nanos() < 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must not be negative"));
    }
  }
  if (o.max_retries() < 0 || o.max_retries() > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_retries must be 0 to 100, not ", o.max_retries()));
  }
  return absl::OkStatus();
}

}  // namespace

Scheduler::Scheduler(IoLoop* loop, SchedulerOptions options) : loop_(loop), options_(options) {
  absl::MutexLock lock(&mu_);
  sweep_timer_ = loop_->AddTimer(absl::Now() + absl::Seconds(1), [this] { SweepResults(); });
  stop_check_timer_ =
      loop_->AddTimer(absl::Now() + kStopCheckInterval, [this] { CheckStoppedWorkers(); });
}

Scheduler::~Scheduler() {
  absl::MutexLock lock(&mu_);
  loop_->CancelTimer(sweep_timer_);
  loop_->CancelTimer(stop_check_timer_);
}

void Scheduler::RunNotify(Notify& notify) {
  for (auto& fn : notify) fn();
  notify.clear();
}

void Scheduler::SweepResults() {
  absl::MutexLock lock(&mu_);
  tasks_.SweepExpired(absl::Now(), options_.result_ttl, options_.max_result_bytes);
  sweep_timer_ = loop_->AddTimer(absl::Now() + absl::Seconds(1), [this] { SweepResults(); });
}

Pool* Scheduler::FindPoolLocked(const std::string& name) {
  auto it = pools_.find(name.empty() ? std::string(kDefaultPoolName) : name);
  return it == pools_.end() || it->second->deleting ? nullptr : it->second.get();
}

std::pair<Pool*, WorkerSlot*> Scheduler::FindWorkerLocked(const std::string& name, uint64_t key) {
  auto pit = pools_.find(name);
  if (pit == pools_.end()) return {nullptr, nullptr};
  Pool* pool = pit->second.get();
  auto it = pool->workers.find(key);
  return {pool, it == pool->workers.end() ? nullptr : &it->second};
}

void Scheduler::OnQueueDeadline(const std::string& task_id) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    Task* task = tasks_.Find(task_id);
    if (task == nullptr || task->result.state() != v1::TASK_STATE_PENDING) return;
    task->queue_timer = 0;
    Pool* pool = FindPoolLocked(task->result.pool());
    if (pool != nullptr) --pool->queued;
    task->result.set_error("expired: it did not start before its queue deadline");
    FinishLocked(pool, *task, v1::TASK_STATE_EXPIRED, &notify);
  }
  RunNotify(notify);
}

void Scheduler::RetryOrFinishLocked(Pool& pool, Task& task, v1::TaskState state, Notify* notify) {
  const v1::TaskOptions eff = EffectiveOptions(pool, task.options);
  if (state == v1::TASK_STATE_WORKER_LOST) ++task.losses;
  const bool may_retry = state == v1::TASK_STATE_WORKER_LOST || state == v1::TASK_STATE_TIMED_OUT ||
                         (state == v1::TASK_STATE_FAILED && eff.retry_on_error());
  if (task.losses >= options_.poison_threshold) {
    task.result.set_error(absl::StrCat("poison task: it killed ", task.losses,
                                       " workers; the last one: ", task.result.error()));
    FinishLocked(&pool, task, v1::TASK_STATE_FAILED, notify);
    return;
  }
  if (may_retry && task.result.attempts() <= eff.max_retries() && !draining_ && !pool.closed) {
    task.result.set_state(v1::TASK_STATE_PENDING);
    task.worker_key = 0;
    pool.pending.push_front(PendingWork{task.result.task_id(), nullptr});
    ++pool.queued;
    return;
  }
  FinishLocked(&pool, task, state, notify);
}

absl::Status Scheduler::CheckAcceptsLocked(const std::string& pool_name, const Pool* pool,
                                           const std::string& function, int64_t count) {
  if (draining_)
    return absl::UnavailableError("forkpoold is shutting down; no new work is accepted");
  if (pool == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("unknown pool '", pool_name.empty() ? kDefaultPoolName : pool_name, "'"));
  }
  if (pool->closed) {
    return absl::FailedPreconditionError(
        absl::StrCat("pool '", pool->settings.name(), "' is closed to new work"));
  }
  if (pool->state == v1::POOL_STATE_FAILED && LiveWorkersLocked(*pool) == 0) {
    // No worker runs and none can start: waiting would be for nothing.
    return absl::FailedPreconditionError(
        absl::StrCat("pool '", pool->settings.name(), "' failed: ", pool->last_error));
  }
  if (function.empty()) return absl::InvalidArgumentError("no function named");
  if (!pool->functions.count(function)) {
    return absl::NotFoundError(
        absl::StrCat("pool '", pool->settings.name(), "' has no function '", function, "'"));
  }
  const int64_t limit =
      pool->settings.max_queued() > 0 ? pool->settings.max_queued() : options_.max_queued_per_pool;
  if (pool->queued + count > limit) {
    return absl::ResourceExhaustedError(absl::StrCat("pool '", pool->settings.name(), "' has ",
                                                     pool->queued, " queued tasks; the limit is ",
                                                     limit));
  }
  return absl::OkStatus();
}

Task& Scheduler::AddTaskLocked(Pool& pool, const std::string& function, std::string input,
                               std::string codec, const v1::TaskOptions& options,
                               std::string request_id, uint64_t spec_hash) {
  Task task;
  task.result.set_task_id(tasks_.NewId());
  task.result.set_state(v1::TASK_STATE_PENDING);
  task.result.set_pool(pool.settings.name());
  task.result.set_function(function);
  *task.result.mutable_submitted_at() = NowProto();
  task.input = std::move(input);
  task.codec = std::move(codec);
  task.options = options;
  task.request_id = std::move(request_id);
  task.spec_hash = spec_hash;
  Task& t = tasks_.Insert(std::move(task));
  pool.pending.push_back(PendingWork{t.result.task_id(), nullptr});
  ++pool.queued;
  const v1::TaskOptions eff = EffectiveOptions(pool, t.options);
  if (eff.has_queue_deadline()) {
    const std::string id = t.result.task_id();
    t.queue_timer = loop_->AddTimer(absl::Now() + ToDuration(eff.queue_deadline()),
                                    [this, id] { OnQueueDeadline(id); });
  }
  return t;
}

absl::StatusOr<SubmitOutcome> Scheduler::Submit(const v1::TaskSpec& spec) {
  FORKPOOL_RETURN_IF_ERROR(ValidateOptions(spec.options()));
  if (spec.input().data().size() > options_.max_input_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("task input of ", spec.input().data().size(),
                                                     " bytes exceeds the limit of ",
                                                     options_.max_input_bytes, " bytes"));
  }
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(spec.pool());
  FORKPOOL_RETURN_IF_ERROR(CheckAcceptsLocked(spec.pool(), pool, spec.function(), 1));
  const uint64_t hash = SpecHash(pool->settings.name(), spec.function(), spec.input().data(),
                                 spec.input().codec(), spec.options());
  if (!spec.request_id().empty()) {
    if (Task* existing = tasks_.FindByRequestId(spec.request_id())) {
      if (existing->spec_hash != hash) {
        return absl::InvalidArgumentError(absl::StrCat("request id '", spec.request_id(),
                                                       "' was already used for a different task (",
                                                       existing->result.task_id(), ")"));
      }
      return SubmitOutcome{existing->result.task_id(), true};
    }
  }
  Task& task = AddTaskLocked(*pool, spec.function(), spec.input().data(), spec.input().codec(),
                             spec.options(), spec.request_id(), hash);
  SubmitOutcome out{task.result.task_id(), false};
  DispatchLocked(*pool);
  return out;
}

absl::StatusOr<std::vector<std::string>> Scheduler::SubmitMany(
    const v1::SubmitManyRequest& request) {
  FORKPOOL_RETURN_IF_ERROR(ValidateOptions(request.options()));
  if (request.request_ids_size() != 0 && request.request_ids_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(absl::StrCat("request_ids has ", request.request_ids_size(),
                                                   " entries for ", request.inputs_size(),
                                                   " inputs; give none or one per input"));
  }
  for (const std::string& input : request.inputs()) {
    if (input.size() > options_.max_input_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat("task input of ", input.size(),
                                                       " bytes exceeds the limit of ",
                                                       options_.max_input_bytes, " bytes"));
    }
  }
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(request.pool());
  FORKPOOL_RETURN_IF_ERROR(
      CheckAcceptsLocked(request.pool(), pool, request.function(), request.inputs_size()));
  std::vector<uint64_t> hashes(request.inputs_size());
  std::vector<Task*> existing(request.inputs_size(), nullptr);
  for (int i = 0; i < request.request_ids_size(); ++i) {
    hashes[i] = SpecHash(pool->settings.name(), request.function(), request.inputs(i),
                         request.codec(), request.options());
    const std::string& rid = request.request_ids(i);
    if (rid.empty()) continue;
    if (Task* t = tasks_.FindByRequestId(rid)) {
      if (t->spec_hash != hashes[i]) {
        return absl::InvalidArgumentError(absl::StrCat("request id '", rid,
                                                       "' was already used for a different task (",
                                                       t->result.task_id(), ")"));
      }
      existing[i] = t;
    }
  }
  std::vector<std::string> ids;
  ids.reserve(request.inputs_size());
  for (int i = 0; i < request.inputs_size(); ++i) {
    if (existing[i] != nullptr) {
      ids.push_back(existing[i]->result.task_id());
      continue;
    }
    Task& t = AddTaskLocked(*pool, request.function(), request.inputs(i), request.codec(),
                            request.options(),
                            request.request_ids_size() ? request.request_ids(i) : "", hashes[i]);
    ids.push_back(t.result.task_id());
  }
  DispatchLocked(*pool);
  return ids;
}

bool Scheduler::SendLocked(WorkerSlot& w, const internal::ToWorker& message) {
  absl::StatusOr<bool> more = w.conn->Send(message);
  if (!more.ok()) {
    ProtocolErrorLocked(w, std::string(more.status().message()));
    return false;
  }
  if (*more && !w.writing) {
    w.writing = true;
    (void)loop_->Modify(w.conn->socket_fd(), EPOLLIN | EPOLLOUT);
  }
  return true;
}

bool Scheduler::SendTaskLocked(Pool& pool, WorkerSlot& w, Task& task) {
  internal::ToWorker message;
  internal::RunBatch* run = message.mutable_run();
  const uint64_t batch = next_batch_++;
  run->set_batch_id(batch);
  run->set_function(task.result.function());
  AppendPackedItem(task.input, run->mutable_inputs());
  run->set_task_id(task.result.task_id());
  run->set_attempt(task.result.attempts() + 1);
  run->set_codec(CodecOrText(task.codec));
  const v1::TaskOptions eff = EffectiveOptions(pool, task.options);
  const absl::Duration limit = ToDuration(eff.time_limit());
  if (limit > absl::ZeroDuration()) {
    run->set_deadline_unix_ns(absl::ToUnixNanos(absl::Now() + limit));
  }
  run->set_soft_time_limit_ns(absl::ToInt64Nanoseconds(ToDuration(eff.soft_time_limit())));
  if (!SendLocked(w, message)) return false;
  if (task.queue_timer != 0) {
    loop_->CancelTimer(task.queue_timer);
    task.queue_timer = 0;
  }
  --pool.queued;
  ++running_;
  w.state = v1::WORKER_STATE_BUSY;
  w.task_id = task.result.task_id();
  w.batch_id = batch;
  task.worker_key = w.key;
  task.result.set_state(v1::TASK_STATE_RUNNING);
  task.result.set_attempts(task.result.attempts() + 1);
  task.result.set_worker_pid(w.conn->pid());
  *task.result.mutable_started_at() = NowProto();
  ArmTimeLimitLocked(pool, w, limit);
  return true;
}

void Scheduler::DispatchLocked(Pool& pool) {
  while (!pool.idle.empty() && !pool.pending.empty()) {
    PendingWork work = std::move(pool.pending.front());
    pool.pending.pop_front();
    Task* task = nullptr;
    if (work.chunk) {
      // A cancelled map's chunk: its inputs may already be gone; drop it
      // unread.
      if (work.chunk->job->cancelled()) {
        pool.queued -= work.chunk->count;
        continue;
      }
    } else {
      task = tasks_.Find(work.task_id);
      if (task == nullptr || task->result.state() != v1::TASK_STATE_PENDING) continue;
    }
    const uint64_t key = pool.idle.back();
    pool.idle.pop_back();
    auto it = pool.workers.find(key);
    if (it == pool.workers.end() || it->second.state != v1::WORKER_STATE_IDLE) {
      pool.pending.push_front(std::move(work));
      continue;
    }
    // The worker may have been stopped (SIGSTOP) since the last sweep: ask the
    // kernel before handing it work (one waitid, under a microsecond).
    if (StoppedLocked(pool, it->second)) {
      pool.pending.push_front(std::move(work));
      continue;
    }
    const bool sent = work.chunk ? SendChunkLocked(pool, it->second, work.chunk)
                                 : SendTaskLocked(pool, it->second, *task);
    if (!sent) pool.pending.push_front(std::move(work));
  }
}

void Scheduler::FinishLocked(Pool* pool, Task& task, v1::TaskState state, Notify* notify) {
  if (IsTerminal(task.result.state())) return;
  if (pool != nullptr) {
    if (state == v1::TASK_STATE_SUCCEEDED) {
      ++pool->tasks_done;
    } else {
      ++pool->tasks_failed;
    }
  }
  tasks_.Finish(task, state, notify);
  if (tasks_.result_bytes() > options_.max_result_bytes) {
    tasks_.SweepExpired(absl::Now(), options_.result_ttl, options_.max_result_bytes);
  }
}

absl::StatusOr<v1::TaskResult> Scheduler::GetResult(const std::string& task_id) {
  absl::MutexLock lock(&mu_);
  Task* task = tasks_.Find(task_id);
  if (task == nullptr) return tasks_.Missing(task_id);
  return task->result;
}

absl::StatusOr<std::optional<v1::TaskResult>> Scheduler::Watch(const std::string& task_id,
                                                               TaskWaiter waiter,
                                                               uint64_t* waiter_id) {
  absl::MutexLock lock(&mu_);
  Task* task = tasks_.Find(task_id);
  if (task == nullptr) return tasks_.Missing(task_id);
  if (IsTerminal(task->result.state())) return std::optional<v1::TaskResult>(task->result);
  *waiter_id = tasks_.AddWaiter(*task, std::move(waiter));
  return std::optional<v1::TaskResult>();
}

void Scheduler::Unwatch(const std::string& task_id, uint64_t waiter_id) {
  absl::MutexLock lock(&mu_);
  tasks_.RemoveWaiter(task_id, waiter_id);
}

absl::StatusOr<v1::CancelResponse> Scheduler::Cancel(const std::string& task_id,
                                                     const std::string& why) {
  Notify notify;
  v1::CancelResponse response;
  {
    absl::MutexLock lock(&mu_);
    Task* task = tasks_.Find(task_id);
    if (task == nullptr) return tasks_.Missing(task_id);
    Pool* pool = FindPoolLocked(task->result.pool());
    if (IsTerminal(task->result.state())) {
      response.set_cancelled(false);
      response.set_state(task->result.state());
      return response;
    }
    if (task->result.state() == v1::TASK_STATE_PENDING) {
      if (pool != nullptr) --pool->queued;
    } else if (task->result.state() == v1::TASK_STATE_RUNNING && pool != nullptr) {
      auto it = pool->workers.find(task->worker_key);
      if (it != pool->workers.end() && it->second.conn) {
        WorkerSlot& w = it->second;
        // Killed, not asked: a running native function cannot be interrupted
        // safely.
        w.conn->Kill();
        w.state = v1::WORKER_STATE_STOPPING;
        w.task_id.clear();
        --running_;
      }
    }
    task->result.set_error(why);
    FinishLocked(pool, *task, v1::TASK_STATE_CANCELLED, &notify);
    response.set_cancelled(true);
    response.set_state(v1::TASK_STATE_CANCELLED);
  }
  RunNotify(notify);
  return response;
}

void Scheduler::BeginDrain() {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    for (auto& [name, pool] : pools_) {
      EndPendingLocked(*pool, v1::TASK_STATE_CANCELLED, "cancelled: forkpoold is shutting down",
                       &notify);
    }
    // A CreatePool still loading is answered now: the server's shutdown waits for
    // every call, and a hanging library would hold it for the whole --load_timeout.
    std::vector<std::string> loading;
    for (auto& [name, pool] : pools_) {
      if (pool->create_done) loading.push_back(name);
    }
    for (const std::string& name : loading) {
      Pool& pool = *pools_[name];
      if (pool.helper) pool.helper->Kill("forkpoold is shutting down");
      pool.helper.reset();
      pool.load_attempt = next_load_attempt_++;  // whatever the old helper says is stale
      LoadFailedLocked(pool,
                       absl::UnavailableError("forkpoold is shutting down; the load was abandoned"),
                       &notify);
    }
  }
  RunNotify(notify);
}

bool Scheduler::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

bool Scheduler::AwaitRunning(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
  return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

void Scheduler::KillAll(absl::Time deadline) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    for (auto& [name, pool] : pools_) {
      for (auto& [key, w] : pool->workers) {
        if (!w.conn) continue;
        if (w.state == v1::WORKER_STATE_BUSY && w.chunk) {
          FailChunkItemsLocked(*w.chunk, w.chunk_results, v1::TASK_STATE_CANCELLED,
                               "cancelled: forkpoold shut down before the item finished", nullptr);
          w.chunk.reset();
          --running_;
        } else if (w.state == v1::WORKER_STATE_BUSY) {
          if (Task* task = tasks_.Find(w.task_id); task && !IsTerminal(task->result.state())) {
            task->result.set_error("cancelled: forkpoold shut down before the task finished");
            FinishLocked(pool.get(), *task, v1::TASK_STATE_CANCELLED, &notify);
          }
          --running_;
          w.task_id.clear();
        }
        w.state = v1::WORKER_STATE_STOPPING;
        w.conn->Kill();
      }
    }
  }
  RunNotify(notify);
  absl::MutexLock lock(&mu_);
  auto reaped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return live_workers_ == 0; };
  if (!mu_.AwaitWithDeadline(absl::Condition(&reaped), deadline)) {
    Log("shutdown: ", live_workers_, " workers not reaped in time");
  }
}

}  // namespace forkpool
