// TaskBroker: task intake (validation, deduplication, admission, queueing),
// the end of a task, queue deadlines and the result sweep. (Pools are in
// task_broker_pools.cc, results and cancellation in task_broker_results.cc,
// dispatch and what comes back from workers in task_broker_work.cc, maps in
// task_broker_maps.cc.)
#include "server/daemon/broker/task_broker.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/stable_hash.h"
#include "common/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "server/daemon/broker/task_options.h"
#include "server/daemon/executor/pool_settings.h"

namespace forkpool {
namespace {

uint64_t SpecHash(const std::string& pool, const std::string& function, std::string_view input,
                  const std::string& codec, const v1::TaskOptions& options) {
  return StableHash::Of({pool, function, input, codec, options.SerializeAsString()});
}

// What every task of a request must pass before anything else (its key is
// looked up after this: the lookup's error echoes it).
absl::Status ValidateRequest(const v1::TaskOptions& options, absl::string_view codec,
                             absl::string_view where) {
  FORKPOOL_RETURN_IF_ERROR(ValidateTaskOptions(options, where));
  return ValidateCodec(codec, where);
}

absl::Status CheckInputSize(size_t size, size_t limit) {
  if (size <= limit) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrCat("task input of ", size, " bytes exceeds the limit of ", limit, " bytes"));
}

google::protobuf::Timestamp ToProto(absl::Time t) {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

}  // namespace

TaskBroker::TaskBroker(Clock* clock, BrokerOptions options, std::unique_ptr<TaskStore> store,
                       MemoryBudget* budget)
    : clock_(clock),
      options_(options),
      budget_(budget != nullptr ? budget : &own_budget_),
      store_(std::move(store)) {
  absl::MutexLock lock(&mu_);
  sweep_timer_ = clock_->AddTimerAfter(absl::Seconds(1), [this] { Sweep(); });
}

TaskBroker::~TaskBroker() {
  absl::MutexLock lock(&mu_);
  clock_->CancelTimer(sweep_timer_);
}

void TaskBroker::RunNotify(Notify& notify) {
  for (auto& fn : notify) fn();
  notify.clear();
}

void TaskBroker::Kick(const std::weak_ptr<WorkConsumer>& consumer) {
  if (std::shared_ptr<WorkConsumer> c = consumer.lock()) c->WorkAdded();
}

void TaskBroker::SweepStoreLocked() {
  const size_t before = store_->kept_bytes();
  store_->Sweep(clock_->Now(), options_.result_ttl, options_.max_result_bytes,
                options_.max_results);
  budget_->Release(before - std::min(before, store_->kept_bytes()));
}

void TaskBroker::Sweep() {
  absl::MutexLock lock(&mu_);
  SweepStoreLocked();
  sweep_timer_ = clock_->AddTimerAfter(absl::Seconds(1), [this] { Sweep(); });
}

// --- Tasks ---

absl::StatusOr<Task*> TaskBroker::FindByKeyLocked(const std::string& key, uint64_t hash) {
  if (key.empty()) return nullptr;
  Task* t = store_->FindByKey(key);
  if (t == nullptr) return nullptr;
  if (t->spec_hash != hash) {
    return absl::InvalidArgumentError(absl::StrCat("request id '", key,
                                                   "' was already used for a different task (",
                                                   t->result.task_id(), ")"));
  }
  return t;
}

void TaskBroker::JoinLocked(Task& task, SubmitMode mode) {
  if (IsTerminal(task.result.state())) return;
  if (mode == SubmitMode::kTied) {
    ++task.callers;
  } else {
    task.detached = true;
  }
}

Task& TaskBroker::AddTaskLocked(uint64_t gen, PoolQueue& q, const std::string& function,
                                std::shared_ptr<const std::string> input, const std::string& codec,
                                const v1::TaskOptions& options, const std::string& request_id,
                                uint64_t hash, SubmitMode mode) {
  Task task;
  task.result.set_task_id(store_->NewId());
  task.result.set_state(v1::TASK_STATE_PENDING);
  task.result.set_pool(q.entry.name);
  task.result.set_function(function);
  *task.result.mutable_submitted_at() = ToProto(clock_->WallNow());
  task.input = std::move(input);
  task.codec = codec;
  task.options = options;
  task.request_id = request_id;
  task.spec_hash = hash;
  task.pool_generation = gen;
  JoinLocked(task, mode);
  Task& t = store_->Insert(std::move(task));
  q.pending->PushBack(PendingWork{t.result.task_id(), nullptr});
  ++q.queued;
  const v1::TaskOptions eff = EffectiveLocked(q, t.options);
  if (eff.has_queue_deadline()) {
    const std::string id = t.result.task_id();
    t.queue_timer = clock_->AddTimerAfter(absl::Seconds(eff.queue_deadline().seconds()) +
                                              absl::Nanoseconds(eff.queue_deadline().nanos()),
                                          [this, id] { OnQueueDeadline(id); });
  }
  return t;
}

absl::StatusOr<SubmitOutcome> TaskBroker::Submit(const v1::TaskSpec& spec, SubmitMode mode) {
  FORKPOOL_RETURN_IF_ERROR(ValidateRequest(spec.options(), spec.input().codec(), "task"));
  FORKPOOL_RETURN_IF_ERROR(ValidateRequestId(spec.request_id(), "task"));
  FORKPOOL_RETURN_IF_ERROR(CheckInputSize(spec.input().data().size(), options_.max_input_bytes));
  std::weak_ptr<WorkConsumer> consumer;
  SubmitOutcome out;
  {
    absl::MutexLock lock(&mu_);
    // The key first: a retry of an accepted Submit gets its task whatever the
    // pool's state now.
    const std::string pool_name = spec.pool().empty() ? kDefaultPoolName : spec.pool();
    const uint64_t hash = spec.request_id().empty()
                              ? 0
                              : SpecHash(pool_name, spec.function(), spec.input().data(),
                                         spec.input().codec(), spec.options());
    FORKPOOL_ASSIGN_OR_RETURN(Task * existing, FindByKeyLocked(spec.request_id(), hash));
    if (existing != nullptr) {
      JoinLocked(*existing, mode);
      return SubmitOutcome{existing->result.task_id(), true};
    }
    uint64_t gen = 0;
    FORKPOOL_ASSIGN_OR_RETURN(PoolQueue * q, AdmitLocked(spec.pool(), spec.function(), 1, &gen));
    FORKPOOL_RETURN_IF_ERROR(budget_->Reserve(spec.input().data().size(), "a task input"));
    Task& task = AddTaskLocked(gen, *q, spec.function(),
                               std::make_shared<const std::string>(spec.input().data()),
                               spec.input().codec(), spec.options(), spec.request_id(), hash, mode);
    out.task_id = task.result.task_id();
    consumer = q->entry.consumer;
  }
  Kick(consumer);
  return out;
}

absl::StatusOr<std::vector<std::string>> TaskBroker::SubmitMany(
    const v1::SubmitManyRequest& request) {
  FORKPOOL_RETURN_IF_ERROR(ValidateRequest(request.options(), request.codec(), "SubmitMany"));
  const int n = request.inputs_size();
  if (request.request_ids_size() != 0 && request.request_ids_size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("request_ids has ", request.request_ids_size(),
                                                   " entries for ", n,
                                                   " inputs; give none or one per input"));
  }
  for (const std::string& input : request.inputs()) {
    FORKPOOL_RETURN_IF_ERROR(CheckInputSize(input.size(), options_.max_input_bytes));
  }
  for (const std::string& rid : request.request_ids()) {
    FORKPOOL_RETURN_IF_ERROR(ValidateRequestId(rid, "SubmitMany"));
  }
  const std::string pool_name = request.pool().empty() ? kDefaultPoolName : request.pool();
  std::vector<uint64_t> hashes(n, 0);
  for (int i = 0; i < request.request_ids_size(); ++i) {
    if (request.request_ids(i).empty()) continue;
    hashes[i] = SpecHash(pool_name, request.function(), request.inputs(i), request.codec(),
                         request.options());
  }
  std::weak_ptr<WorkConsumer> consumer;
  std::vector<std::string> ids(n);
  {
    absl::MutexLock lock(&mu_);
    // Keys first (known ones answer their task), then one task per new key:
    // the same key twice in the request is one task.
    std::vector<Task*> existing(n, nullptr);
    std::map<std::string, int> first_of_key;
    std::vector<int> same_as(n, -1);
    int64_t fresh = 0;
    for (int i = 0; i < n; ++i) {
      const std::string rid = request.request_ids_size() ? request.request_ids(i) : "";
      if (!rid.empty()) {
        FORKPOOL_ASSIGN_OR_RETURN(existing[i], FindByKeyLocked(rid, hashes[i]));
        if (existing[i] != nullptr) continue;
        auto [it, added] = first_of_key.emplace(rid, i);
        if (!added) {
          if (hashes[it->second] != hashes[i]) {
            return absl::InvalidArgumentError(absl::StrCat("request id '", rid,
                                                           "' is given for two different inputs (",
                                                           it->second, " and ", i, ")"));
          }
          same_as[i] = it->second;
          continue;
        }
      }
      ++fresh;
    }
    uint64_t gen = 0;
    PoolQueue* q = nullptr;
    if (fresh > 0) {
      FORKPOOL_ASSIGN_OR_RETURN(q, AdmitLocked(request.pool(), request.function(), fresh, &gen));
      uint64_t bytes = 0;
      for (int i = 0; i < n; ++i) {
        if (existing[i] == nullptr && same_as[i] < 0) bytes += request.inputs(i).size();
      }
      FORKPOOL_RETURN_IF_ERROR(budget_->Reserve(bytes, absl::StrCat(fresh, " task inputs")));
    }
    for (int i = 0; i < n; ++i) {
      if (existing[i] != nullptr) {
        JoinLocked(*existing[i], SubmitMode::kDetached);
        ids[i] = existing[i]->result.task_id();
      } else if (same_as[i] >= 0) {
        ids[i] = ids[same_as[i]];
      } else {
        Task& t = AddTaskLocked(gen, *q, request.function(),
                                std::make_shared<const std::string>(request.inputs(i)),
                                request.codec(), request.options(),
                                request.request_ids_size() ? request.request_ids(i) : "", hashes[i],
                                SubmitMode::kDetached);
        ids[i] = t.result.task_id();
      }
    }
    if (q != nullptr) consumer = q->entry.consumer;
  }
  Kick(consumer);
  return ids;
}

void TaskBroker::UnqueueLocked(Task& task) {
  if (task.queue_timer != 0) clock_->CancelTimer(task.queue_timer);
  task.queue_timer = 0;
  PoolQueue* q = FindQueueLocked(task.pool_generation);
  if (q == nullptr) return;
  --q->queued;
  // Its entry stays in the queue, skipped at dispatch; many such (a client
  // that submits and cancels while no worker is free) are compacted.
  if (++q->dead > q->queued + 1024) {
    q->pending->RemoveIf([this](const PendingWork& w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      if (w.chunk) return false;
      Task* t = store_->Find(w.task_id);
      return t == nullptr || t->result.state() != v1::TASK_STATE_PENDING;
    });
    q->dead = 0;
  }
}

void TaskBroker::FinishLocked(Task& task, v1::TaskState state, Notify* notify) {
  if (IsTerminal(task.result.state())) return;
  if (PoolQueue* q = FindQueueLocked(task.pool_generation)) {
    if (state == v1::TASK_STATE_SUCCEEDED) {
      ++q->counts.done;
    } else {
      ++q->counts.failed;
    }
  }
  if (task.queue_timer != 0) clock_->CancelTimer(task.queue_timer);
  task.queue_timer = 0;
  task.result.set_state(state);
  *task.result.mutable_finished_at() = ToProto(clock_->WallNow());
  task.worker_key = 0;
  // Its input goes, its result stays (until the TTL).
  if (task.input) budget_->Release(task.input->size());
  store_->Finished(task, clock_->Now());
  budget_->Force(task.kept_bytes);
  // One copy from now on, shared by every reader; the task keeps its id and
  // state.
  task.final_result = std::make_shared<const v1::TaskResult>(std::move(task.result));
  task.result = v1::TaskResult();
  task.result.set_task_id(task.final_result->task_id());
  task.result.set_state(state);
  for (auto& [id, waiter] : task.waiters) {
    notify->push_back([snapshot = task.final_result, w = std::move(waiter)] { w(snapshot); });
  }
  task.waiters.clear();
  store_->Updated(task);
  if (store_->kept_bytes() > options_.max_result_bytes ||
      store_->kept_count() > options_.max_results) {
    SweepStoreLocked();
  }
}

void TaskBroker::OnQueueDeadline(const std::string& task_id) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    Task* task = store_->Find(task_id);
    if (task == nullptr || task->result.state() != v1::TASK_STATE_PENDING) return;
    task->queue_timer = 0;
    UnqueueLocked(*task);
    task->result.set_error("expired: it did not start before its queue deadline");
    FinishLocked(*task, v1::TASK_STATE_EXPIRED, &notify);
  }
  RunNotify(notify);
}

}  // namespace forkpool
