// TaskBroker, results: reading and waiting for them, cancelling, tied callers
// leaving, and the drain at shutdown.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/daemon/broker/task_broker.h"
#include "server/daemon/executor/pool_settings.h"

namespace forkpool {

absl::StatusOr<std::shared_ptr<const v1::TaskResult>> TaskBroker::GetResult(
    const std::string& task_id) {
  absl::MutexLock lock(&mu_);
  Task* task = store_->Find(task_id);
  if (task == nullptr) return store_->Missing(task_id);
  if (task->final_result) return task->final_result;
  return std::make_shared<const v1::TaskResult>(task->result);
}

absl::StatusOr<std::shared_ptr<const v1::TaskResult>> TaskBroker::Watch(const std::string& task_id,
                                                                        TaskWaiter waiter,
                                                                        uint64_t* waiter_id) {
  absl::MutexLock lock(&mu_);
  Task* task = store_->Find(task_id);
  if (task == nullptr) return store_->Missing(task_id);
  if (task->final_result) return task->final_result;
  *waiter_id = next_waiter_++;
  task->waiters.emplace_back(*waiter_id, std::move(waiter));
  return std::shared_ptr<const v1::TaskResult>();
}

void TaskBroker::Unwatch(const std::string& task_id, uint64_t waiter_id) {
  absl::MutexLock lock(&mu_);
  Task* task = store_->Find(task_id);
  if (task == nullptr) return;
  auto& w = task->waiters;
  w.erase(std::remove_if(w.begin(), w.end(), [&](const auto& e) { return e.first == waiter_id; }),
          w.end());
}

absl::StatusOr<v1::CancelResponse> TaskBroker::Cancel(const std::string& task_id,
                                                      const std::string& why) {
  Notify notify;
  v1::CancelResponse response;
  std::weak_ptr<WorkConsumer> consumer;
  uint64_t worker_key = 0;
  {
    absl::MutexLock lock(&mu_);
    Task* task = store_->Find(task_id);
    if (task == nullptr) return store_->Missing(task_id);
    if (IsTerminal(task->result.state())) {
      response.set_cancelled(false);
      response.set_state(task->result.state());
      return response;
    }
    if (task->result.state() == v1::TASK_STATE_PENDING) {
      UnqueueLocked(*task);
    } else if (PoolQueue* q = FindQueueLocked(task->pool_generation)) {
      consumer = q->entry.consumer;
      worker_key = task->worker_key;
    }
    task->result.set_error(why);
    FinishLocked(*task, v1::TASK_STATE_CANCELLED, &notify);
    response.set_cancelled(true);
    response.set_state(v1::TASK_STATE_CANCELLED);
  }
  // Killed, not asked: a running native function cannot be interrupted safely.
  if (worker_key != 0) {
    if (std::shared_ptr<WorkConsumer> c = consumer.lock()) c->AbandonRunning(task_id, worker_key);
  }
  RunNotify(notify);
  return response;
}

void TaskBroker::CallerLeft(const std::string& task_id) {
  bool cancel = false;
  {
    absl::MutexLock lock(&mu_);
    Task* task = store_->Find(task_id);
    if (task == nullptr || IsTerminal(task->result.state())) return;
    if (task->callers > 0) --task->callers;
    cancel = task->callers == 0 && !task->detached;
    // Whoever retries with this key wants a run of their own, not this
    // cancelled one.
    if (cancel) store_->ForgetKey(*task);
  }
  if (cancel) (void)Cancel(task_id, "cancelled: the client of Apply went away");
}

void TaskBroker::BeginDrain() {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
  }
  std::vector<uint64_t> gens;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [gen, q] : pools_) gens.push_back(gen);
  }
  for (uint64_t gen : gens) {
    EndPending(gen, v1::TASK_STATE_CANCELLED, "cancelled: forkpoold is shutting down", &notify);
  }
  RunNotify(notify);
}

bool TaskBroker::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

}  // namespace forkpool
