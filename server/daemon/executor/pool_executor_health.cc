// PoolExecutor, health: the hard time limit, the start deadline, stopped
// (SIGSTOP) workers and a cancelled map item's grace. Timers on the clock's
// thread.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/daemon/executor/pool_executor.h"
#include "server/daemon/log.h"

namespace forkpool {

void PoolExecutor::ArmTimeLimitLocked(WorkerSlot& w, absl::Duration limit) {
  clock_->CancelTimer(w.limit_timer);
  w.limit_timer = 0;
  w.time_limit = limit;
  if (limit <= absl::ZeroDuration()) return;
  std::weak_ptr<PoolExecutor> weak = weak_from_this();
  const uint64_t key = w.key, batch = w.batch_id;
  w.limit_timer = clock_->AddTimerAfter(limit, [weak, key, batch] {
    if (auto self = weak.lock()) self->OnTimeLimit(key, batch);
  });
}

void PoolExecutor::OnTimeLimit(uint64_t key, uint64_t batch) {
  absl::MutexLock lock(&mu_);
  WorkerSlot* w = FindLocked(key);
  if (w == nullptr) return;
  w->limit_timer = 0;
  // A batch that already ended (its result came first) kills nothing.
  if (!w->busy() || w->batch_id != batch || !w->process) return;
  // The hard limit: the worker's process group is killed; its exit ends the
  // work as TIMED_OUT.
  w->timed_out = true;
  w->process->Kill();
}

void PoolExecutor::OnStartTimeout(uint64_t key) {
  absl::MutexLock lock(&mu_);
  WorkerSlot* w = FindLocked(key);
  if (w == nullptr) return;
  w->start_timer = 0;
  if (w->state != v1::WORKER_STATE_STARTING) return;
  w->start_timed_out = true;
  last_error_ = absl::StrCat(
      "worker ", w->index, w->process ? absl::StrCat(" (pid ", w->process->pid(), ")") : "",
      " did not start within ", absl::FormatDuration(options_.start_timeout), " (--start_timeout)",
      settings_.initializer().empty()
          ? ""
          : absl::StrCat("; its initializer '", settings_.initializer(), "' was still running"),
      "; killed");
  Log("pool '", settings_.name(), "': ", last_error_);
  if (w->process) {
    w->process->Kill();  // its exit replaces it, with back-off
    return;
  }
  // The helper never answered the fork; its own deadline handles the helper.
  const int index = w->index;
  workers_.erase(key);
  ++failed_starts_;
  ScheduleRestartLocked(index);
}

bool PoolExecutor::StoppedLocked(WorkerSlot& w) {
  if (!w.process) return false;
  const StopChange::Kind change = w.process->PollStop();
  if (change == StopChange::Kind::kStopped && !w.stopped) {
    w.stopped = true;
    w.stopped_since = clock_->Now();
    Log("pool '", settings_.name(), "': worker ", w.index, " (pid ", w.process->pid(),
        ") is stopped; it gets no work until it continues");
  } else if (change == StopChange::Kind::kContinued && w.stopped) {
    w.stopped = false;
    w.last_active = clock_->Now();
    if (w.state == v1::WORKER_STATE_IDLE &&
        std::find(idle_.begin(), idle_.end(), w.key) == idle_.end()) {
      idle_.push_back(w.key);
    }
    Log("pool '", settings_.name(), "': worker ", w.index, " (pid ", w.process->pid(),
        ") continued");
  }
  if (w.stopped) idle_.erase(std::remove(idle_.begin(), idle_.end(), w.key), idle_.end());
  return w.stopped;
}

void PoolExecutor::CheckStoppedWorkers() {
  absl::MutexLock lock(&mu_);
  const MonoTime now = clock_->Now();
  bool changed = false;
  for (auto& [key, w] : workers_) {
    if (!w.process || w.state == v1::WORKER_STATE_STOPPING) continue;
    const bool was = w.stopped;
    const bool stopped = StoppedLocked(w);
    changed |= was != stopped;
    if (stopped && !w.stopped_killed && now - w.stopped_since > options_.stopped_grace) {
      // Stopped too long: its work is handled by the retry rules, as a lost
      // worker's.
      w.stopped_killed = true;
      Log("pool '", settings_.name(), "': worker ", w.index, " (pid ", w.process->pid(),
          ") stayed stopped longer than ", absl::FormatDuration(options_.stopped_grace),
          "; killing it");
      w.process->Kill();
    }
  }
  if (changed) DispatchLocked();
  std::weak_ptr<PoolExecutor> weak = weak_from_this();
  stop_check_timer_ = clock_->AddTimerAfter(options_.stop_check_interval, [weak] {
    if (auto self = weak.lock()) self->CheckStoppedWorkers();
  });
}

void PoolExecutor::OnStopGrace(uint64_t key, uint64_t batch) {
  absl::MutexLock lock(&mu_);
  WorkerSlot* w = FindLocked(key);
  if (w == nullptr || !w->process || !w->busy() || w->batch_id != batch) return;
  Log("pool '", settings_.name(), "': worker ", w->index, " (pid ", w->process->pid(),
      ") did not stop its cancelled map item within ", absl::FormatDuration(options_.cancel_grace),
      "; killing it");
  w->process->Kill();
}

}  // namespace forkpool
