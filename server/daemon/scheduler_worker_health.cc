// Scheduler, worker health: the start deadline, stopped (SIGSTOP) workers, the hard
// time limit, and a cancelled map item's grace. Timers and sweeps on the loop thread.
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/daemon/log.h"
#include "server/daemon/process_util.h"
#include "server/daemon/scheduler.h"

namespace forkpool {

void Scheduler::OnStartTimeout(const std::string& name, uint64_t key) {
  absl::MutexLock lock(&mu_);
  auto [pool, w] = FindWorkerLocked(name, key);
  if (w == nullptr) return;
  w->start_timer = 0;
  if (w->state != v1::WORKER_STATE_STARTING) return;
  w->start_timed_out = true;
  pool->last_error = absl::StrCat(
      "worker ", w->index, w->conn ? absl::StrCat(" (pid ", w->conn->pid(), ")") : "",
      " did not start within ", absl::FormatDuration(options_.start_timeout), " (--start_timeout)",
      pool->settings.initializer().empty()
          ? ""
          : absl::StrCat("; its initializer '", pool->settings.initializer(),
                         "' was still running"),
      "; killed");
  Log("pool '", name, "': ", pool->last_error);
  if (w->conn) {
    w->conn->Kill();  // its exit replaces it, with back-off
    return;
  }
  // The helper never answered the fork; the helper's own deadline handles it.
  const int index = w->index;
  pool->workers.erase(key);
  ++pool->failed_starts;
  ScheduleRestartLocked(*pool, index);
}

bool Scheduler::StoppedLocked(Pool& pool, WorkerSlot& w) {
  if (!w.conn) return false;
  absl::StatusOr<StopChange> polled = PollStopState(w.conn->pidfd());
  const StopChange::Kind change = polled.ok() ? polled->kind : StopChange::Kind::kNone;
  if (change == StopChange::Kind::kStopped && !w.stopped) {
    w.stopped = true;
    w.stopped_since = absl::Now();
    pool.idle.erase(std::remove(pool.idle.begin(), pool.idle.end(), w.key), pool.idle.end());
    Log("pool '", pool.settings.name(), "': worker ", w.index, " (pid ", w.conn->pid(),
        ") is stopped; it gets no work until it continues");
  } else if (change == StopChange::Kind::kContinued && w.stopped) {
    w.stopped = false;
    w.last_active = absl::Now();
    if (w.state == v1::WORKER_STATE_IDLE &&
        std::find(pool.idle.begin(), pool.idle.end(), w.key) == pool.idle.end()) {
      pool.idle.push_back(w.key);
    }
    Log("pool '", pool.settings.name(), "': worker ", w.index, " (pid ", w.conn->pid(),
        ") continued");
  }
  return w.stopped;
}

void Scheduler::CheckStoppedWorkers() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  for (auto& [name, pool] : pools_) {
    bool changed = false;
    for (auto& [key, w] : pool->workers) {
      if (!w.conn || w.state == v1::WORKER_STATE_STOPPING) continue;
      const bool was = w.stopped;
      const bool stopped = StoppedLocked(*pool, w);
      changed |= was != stopped;
      if (stopped && !w.stopped_killed && now - w.stopped_since > options_.stopped_grace) {
        // Stopped too long: its task is handled by the retry rules, as a lost
        // worker's.
        w.stopped_killed = true;
        Log("pool '", name, "': worker ", w.index, " (pid ", w.conn->pid(),
            ") stayed stopped longer than ", absl::FormatDuration(options_.stopped_grace),
            "; killing it");
        w.conn->Kill();
      }
    }
    if (changed) DispatchLocked(*pool);
  }
  stop_check_timer_ =
      loop_->AddTimer(absl::Now() + kStopCheckInterval, [this] { CheckStoppedWorkers(); });
}

void Scheduler::OnStopGrace(const std::string& name, uint64_t key, uint64_t batch) {
  absl::MutexLock lock(&mu_);
  WorkerSlot* w = FindWorkerLocked(name, key).second;
  if (w == nullptr || !w->conn || w->state != v1::WORKER_STATE_BUSY || w->batch_id != batch) {
    return;
  }
  Log("pool '", name, "': worker ", w->index, " (pid ", w->conn->pid(),
      ") did not stop its cancelled map item within ", absl::FormatDuration(options_.cancel_grace),
      "; killing it");
  w->conn->Kill();
}

void Scheduler::ArmTimeLimitLocked(Pool& pool, WorkerSlot& w, absl::Duration limit) {
  if (w.limit_timer != 0) loop_->CancelTimer(w.limit_timer);
  w.limit_timer = 0;
  w.time_limit = limit;
  if (limit <= absl::ZeroDuration()) return;
  const std::string name = pool.settings.name();
  const uint64_t key = w.key, batch = w.batch_id;
  w.limit_timer = loop_->AddTimer(absl::Now() + limit,
                                  [this, name, key, batch] { OnTimeLimit(name, key, batch); });
}

void Scheduler::OnTimeLimit(const std::string& name, uint64_t key, uint64_t batch) {
  absl::MutexLock lock(&mu_);
  WorkerSlot* slot = FindWorkerLocked(name, key).second;
  if (slot == nullptr) return;
  WorkerSlot& w = *slot;
  w.limit_timer = 0;
  if (w.state != v1::WORKER_STATE_BUSY || w.batch_id != batch || !w.conn) return;
  // The hard limit: the worker's process group is killed; its exit ends the
  // work.
  w.timed_out = true;
  w.conn->Kill();
}

}  // namespace forkpool
