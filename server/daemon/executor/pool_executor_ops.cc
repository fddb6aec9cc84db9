// PoolExecutor, pool operations: its description, close/terminate/delete/join,
// winding down, and shutdown.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/daemon/executor/pool_executor.h"
#include "server/daemon/log.h"

namespace forkpool {

v1::PoolInfo PoolExecutor::Info() {
  absl::MutexLock lock(&mu_);
  return InfoLocked();
}

v1::PoolInfo PoolExecutor::InfoLocked() const {
  v1::PoolInfo info;
  *info.mutable_settings() = settings_;
  for (const auto& [key, w] : workers_) {
    auto* wi = info.add_workers();
    wi->set_index(w.index);
    wi->set_pid(w.process ? w.process->pid() : 0);
    wi->set_state(w.state);
    if (w.busy() && !w.work->chunk) wi->set_task_id(w.work->task_id);
    wi->set_tasks_done(w.tasks_done);
    wi->set_rss_bytes(w.rss_bytes);
    if (w.state == v1::WORKER_STATE_IDLE) info.set_idle(info.idle() + 1);
    if (w.state == v1::WORKER_STATE_BUSY) info.set_busy(info.busy() + 1);
  }
  std::sort(info.mutable_workers()->begin(), info.mutable_workers()->end(),
            [](const v1::WorkerInfo& a, const v1::WorkerInfo& b) { return a.index() < b.index(); });
  const PoolCounts counts = broker_->Counts(generation_);
  info.set_queued(counts.queued);
  info.set_tasks_done(counts.done + map_items_done_);
  info.set_tasks_failed(counts.failed + map_items_failed_);
  info.set_map_inflight_high_water(counts.map_inflight_high_water);
  info.set_workers_started(workers_started_);
  info.set_workers_lost(workers_lost_);
  info.set_closed(closed_);
  info.set_last_error(last_error_);
  info.set_state(state_);
  // While loading too: a load that hangs shows whose it is.
  info.set_helper_pid(deps_.launcher->helper_pid());
  return info;
}

v1::PoolInfo PoolExecutor::Close() {
  Notify notify;
  v1::PoolInfo info;
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    SetStateLocked(state_, &notify);
    WindDownLocked(&notify);
    info = InfoLocked();
  }
  RunNotify(notify);
  return info;
}

void PoolExecutor::TerminateLocked(const std::string& why, Notify* notify) {
  closed_ = true;
  SetStateLocked(state_, notify);
  broker_->EndPending(generation_, v1::TASK_STATE_CANCELLED, why, notify);
  for (auto& [key, w] : workers_) {
    if (w.busy()) {
      if (w.work->chunk) {
        if (!w.work->chunk->job->cancelled()) {
          TaskBroker::FailChunkItems(*w.work->chunk, w.chunk_results, v1::TASK_STATE_CANCELLED, why,
                                     nullptr);
        }
      } else {
        // Cancel rather than fail: whoever waits sees why.
        broker_->TaskFailed(w.work->task_id, w.key, v1::TASK_STATE_CANCELLED, why, nullptr,
                            /*may_retry=*/false, notify);
      }
      deps_.census->AddRunning(-1);
      w.work.reset();
    }
    KillLocked(w);
  }
  idle_.clear();
}

v1::PoolInfo PoolExecutor::Terminate(const std::string& why) {
  Notify notify;
  v1::PoolInfo info;
  {
    absl::MutexLock lock(&mu_);
    TerminateLocked(why, &notify);
    WindDownLocked(&notify);
    info = InfoLocked();
  }
  RunNotify(notify);
  return info;
}

void PoolExecutor::Delete() {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    TerminateLocked(absl::StrCat("cancelled: pool '", settings_.name(), "' was deleted"), &notify);
    deleting_ = true;
    ++load_attempt_;  // whatever a load in flight says is stale
    // Workers still starting are dropped with their slot: the fds the helper
    // passes up for them are ended and reaped.
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (it->second.process) {
        ++it;
      } else {
        clock_->CancelTimer(it->second.start_timer);
        it = workers_.erase(it);
      }
    }
    // Its helper leaves (EOF) and is reaped by its channel.
    deps_.launcher->DropHelper(/*kill=*/false, "its pool was deleted");
    has_helper_ = false;
    if (create_done_) {
      notify.push_back([done = std::move(create_done_), name = settings_.name()] {
        done(absl::NotFoundError(absl::StrCat("pool '", name, "' was deleted while loading")));
      });
      create_done_ = nullptr;
    }
    WindDownLocked(&notify);
  }
  RunNotify(notify);
}

absl::Status PoolExecutor::Join(std::function<void()> done) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    if (!closed_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "pool '", settings_.name(), "' is still running: close or terminate it before join"));
    }
    join_waiters_.push_back(std::move(done));
    WindDownLocked(&notify);
  }
  RunNotify(notify);
  return absl::OkStatus();
}

void PoolExecutor::WindDownLocked(Notify* notify) {
  if (!closed_ && !deleting_) return;
  if (broker_->Idle(generation_)) {
    for (auto& [key, w] : workers_) {
      if (w.state == v1::WORKER_STATE_IDLE && w.process && w.protocol_error.empty()) {
        internal::ToWorker shutdown;
        shutdown.mutable_shutdown();
        (void)SendLocked(w, shutdown);
        w.state = v1::WORKER_STATE_STOPPING;
      }
    }
    idle_.clear();
  }
  if (!workers_.empty()) return;
  for (auto& fn : join_waiters_) notify->push_back(std::move(fn));
  join_waiters_.clear();
  if (deleting_ && gone_) {
    broker_->RemovePool(generation_);
    notify->push_back(std::move(gone_));
    gone_ = nullptr;
  }
}

bool PoolExecutor::AwaitReady(int count, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (deleting_) return true;
    int n = 0;
    for (const auto& [key, w] : workers_) {
      if (w.state == v1::WORKER_STATE_IDLE || w.state == v1::WORKER_STATE_BUSY) ++n;
    }
    return n >= count;
  };
  return mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
}

// --- Shutdown ---

void PoolExecutor::BeginDrain() {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    // A CreatePool still loading is answered now: the server's shutdown waits
    // for every call, and a hanging library would hold it for --load_timeout.
    if (create_done_) {
      deps_.launcher->DropHelper(/*kill=*/true, "forkpoold is shutting down");
      ++load_attempt_;
      LoadFailedLocked(absl::UnavailableError("forkpoold is shutting down; the load was abandoned"),
                       &notify);
    }
  }
  RunNotify(notify);
}

void PoolExecutor::KillAll() {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    for (auto& [key, w] : workers_) {
      if (!w.process) continue;
      if (w.busy()) {
        if (w.work->chunk) {
          TaskBroker::FailChunkItems(*w.work->chunk, w.chunk_results, v1::TASK_STATE_CANCELLED,
                                     "cancelled: forkpoold shut down before the item finished",
                                     nullptr);
        } else {
          broker_->TaskFailed(w.work->task_id, w.key, v1::TASK_STATE_CANCELLED,
                              "cancelled: forkpoold shut down before the task finished", nullptr,
                              /*may_retry=*/false, &notify);
        }
        deps_.census->AddRunning(-1);
        w.work.reset();
      }
      KillLocked(w);
    }
  }
  RunNotify(notify);
}

void PoolExecutor::CloseHelper() {
  absl::MutexLock lock(&mu_);
  deps_.launcher->DropHelper(/*kill=*/false, "forkpoold is shutting down");
  has_helper_ = false;
}

}  // namespace forkpool
