// PoolExecutor, workers: starting and replacing them (with back-off after
// failed starts), their readiness and their exits.
#include <set>

#include "absl/strings/str_cat.h"
#include "server/daemon/executor/pool_executor.h"
#include "server/daemon/launch/process_util.h"
#include "server/daemon/log.h"

namespace forkpool {

void PoolExecutor::KillLocked(WorkerSlot& w) {
  w.state = v1::WORKER_STATE_STOPPING;
  if (w.process) w.process->Kill();
}

void PoolExecutor::StartMissingWorkersLocked() {
  std::set<int> have;
  for (const auto& [key, w] : workers_) have.insert(w.index);
  for (int i = 0; i < settings_.processes(); ++i) {
    if (!have.count(i)) StartWorkerLocked(i);
  }
}

void PoolExecutor::StartWorkerLocked(int index) {
  if (draining_ || closed_ || deleting_) return;
  // Without a helper the index stays empty; the reload starts it.
  if (!has_helper_) return;
  const uint64_t key = next_key_++;
  std::weak_ptr<PoolExecutor> weak = weak_from_this();
  WorkerEvents events;
  events.on_io = [weak, key](uint32_t ev) {
    if (auto self = weak.lock()) self->OnWorkerIo(key, ev);
  };
  events.on_exit = [weak, key] {
    if (auto self = weak.lock()) self->OnWorkerExit(key);
  };
  absl::Status asked = deps_.launcher->StartWorker(
      index, std::move(events),
      [weak, key](absl::StatusOr<std::unique_ptr<WorkerProcess>> process) {
        if (auto self = weak.lock()) self->OnWorkerStarted(key, std::move(process));
      });
  if (!asked.ok()) return;  // the helper is gone; its loss brings a reload
  WorkerSlot& slot = workers_[key];
  slot.key = key;
  slot.index = index;
  slot.state = v1::WORKER_STATE_STARTING;
  slot.start_timer = clock_->AddTimerAfter(options_.start_timeout, [weak, key] {
    if (auto self = weak.lock()) self->OnStartTimeout(key);
  });
}

void PoolExecutor::ScheduleRestartLocked(int index) {
  if (draining_ || closed_ || deleting_) return;
  // Back off after consecutive failures so a broken initializer cannot spin.
  const int failures = std::min(failed_starts_, 6);
  if (failures == 0) {
    StartWorkerLocked(index);
    return;
  }
  std::weak_ptr<PoolExecutor> weak = weak_from_this();
  clock_->AddTimerAfter(absl::Milliseconds(100) * (1 << (failures - 1)), [weak, index] {
    auto self = weak.lock();
    if (!self) return;
    absl::MutexLock lock(&self->mu_);
    for (const auto& [key, w] : self->workers_) {
      if (w.index == index) return;  // already replaced
    }
    self->StartWorkerLocked(index);
  });
}

void PoolExecutor::OnWorkerStarted(uint64_t key,
                                   absl::StatusOr<std::unique_ptr<WorkerProcess>> process) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    WorkerSlot* slot = FindLocked(key);
    if (slot == nullptr) return;  // unwanted now: dropping `process` ends and reaps it
    WorkerSlot& w = *slot;
    if (!process.ok()) {
      const int index = w.index;
      clock_->CancelTimer(w.start_timer);
      workers_.erase(key);
      // An unavailable helper is lost: its loss brings a reload, which starts
      // this index.
      if (absl::IsUnavailable(process.status()) || absl::IsDeadlineExceeded(process.status())) {
        return;
      }
      last_error_ = absl::StrCat("starting worker ", index, ": ", process.status().message());
      Log("pool '", settings_.name(), "': ", last_error_);
      ++failed_starts_;
      ScheduleRestartLocked(index);
      return;
    }
    w.process = *std::move(process);
    ++workers_started_;
    deps_.census->AddLive(1);
    if (settings_.start_method() == v1::START_METHOD_SPAWN) {
      // A spawned program learns what it serves from its first frame, never
      // from its command line (world-readable in /proc).
      internal::ToWorker init_msg;
      internal::Init* init = init_msg.mutable_init();
      init->set_pool(settings_.name());
      init->set_worker_index(w.index);
      for (const auto& lib : settings_.libraries()) init->add_libraries(lib);
      init->set_initializer(settings_.initializer());
      init->set_initargs(settings_.initargs().data());
      (void)SendLocked(w, init_msg);
    }
    SetStateLocked(state_, &notify);
  }
  RunNotify(notify);
}

void PoolExecutor::OnWorkerIo(uint64_t key, uint32_t events) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    WorkerSlot* slot = FindLocked(key);
    if (slot == nullptr || !slot->process) return;
    WorkerSlot& w = *slot;
    absl::StatusOr<bool> open =
        w.process->OnReady(events, [&](internal::FromWorker& m) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          OnFrameLocked(w, m, &notify);
        });
    if (!open.ok() && w.state == v1::WORKER_STATE_STOPPING) {
      // One we killed (cancelled, terminated): its socket breaks as it dies;
      // that is no protocol error.
      w.process->StopReading();
    } else if (!open.ok()) {
      ProtocolErrorLocked(w, std::string(open.status().message()));
    } else if (!*open && w.state != v1::WORKER_STATE_STOPPING) {
      // EOF: the worker is leaving; its exit says how. Killed in case it
      // lingers.
      w.process->Kill();
    }
    DispatchLocked();
    WindDownLocked(&notify);
  }
  RunNotify(notify);
}

void PoolExecutor::EndLostWorkLocked(WorkerSlot& w, v1::TaskState state, const std::string& error,
                                     const v1::WorkerLoss& loss, Notify* notify) {
  deps_.census->AddRunning(-1);
  Dispatch work = *std::move(w.work);
  w.work.reset();
  const bool may_retry = !closed_ && !draining_ && state != v1::TASK_STATE_FAILED;
  if (work.chunk) {
    broker_->ChunkInterrupted(generation_, *work.chunk, w.chunk_results, state, error, &loss,
                              may_retry);
    return;
  }
  broker_->TaskFailed(work.task_id, w.key, state, error,
                      state == v1::TASK_STATE_WORKER_LOST ? &loss : nullptr, may_retry, notify);
}

void PoolExecutor::OnWorkerExit(uint64_t key) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    WorkerSlot* slot = FindLocked(key);
    if (slot == nullptr || !slot->process) return;
    WorkerSlot& w = *slot;
    WorkerProcess& proc = *w.process;
    const ExitInfo exit =
        proc.Collect([&](internal::FromWorker& m)
                         ABSL_NO_THREAD_SAFETY_ANALYSIS { OnFrameLocked(w, m, &notify); },
                     /*read_frames=*/w.protocol_error.empty());
    const pid_t pid = proc.pid();
    clock_->CancelTimer(w.start_timer);
    w.start_timer = 0;
    clock_->CancelTimer(w.limit_timer);
    w.limit_timer = 0;
    deps_.census->AddLive(-1);
    const bool expected =
        (w.state == v1::WORKER_STATE_STOPPING && w.protocol_error.empty()) || w.timed_out;
    if (w.state == v1::WORKER_STATE_STARTING && !w.start_timed_out) {
      // How it died before its hello says what went wrong with its start.
      last_error_ = settings_.initializer().empty()
                        ? absl::StrCat("worker ", w.index, " (pid ", pid, ") ", DescribeExit(exit),
                                       " before it was ready")
                        : absl::StrCat("worker ", w.index, " (pid ", pid, "): initializer '",
                                       settings_.initializer(), "' ", DescribeExit(exit));
    }
    // Why its work ended: its own death, our time limit, a broken protocol.
    v1::WorkerLoss loss;
    loss.set_pid(pid);
    loss.set_signal(exit.signal);
    if (exit.signal != 0) loss.set_signal_name(SignalName(exit.signal));
    loss.set_exit_code(exit.exit_code);
    loss.set_stderr_tail(proc.OutputTail());
    v1::TaskState state = v1::TASK_STATE_WORKER_LOST;
    std::string error = absl::StrCat("worker lost: ", DescribeExit(exit));
    if (!w.protocol_error.empty()) {
      state = v1::TASK_STATE_FAILED;
      error = absl::StrCat("protocol error: ", w.protocol_error);
    } else if (w.stopped_killed) {
      error = absl::StrCat("worker lost: it stayed stopped (SIGSTOP) longer than ",
                           absl::FormatDuration(options_.stopped_grace),
                           " (--stopped_grace) and was killed");
    } else if (w.timed_out) {
      state = v1::TASK_STATE_TIMED_OUT;
      error = absl::StrCat("timed out: ran past its hard time limit of ",
                           absl::FormatDuration(w.time_limit), "; its worker was killed");
    }
    if (w.busy()) EndLostWorkLocked(w, state, error, loss, &notify);
    if (!expected) {
      ++workers_lost_;
      if (w.state == v1::WORKER_STATE_STARTING) ++failed_starts_;
      Log("pool '", settings_.name(), "': worker ", w.index, " (pid ", pid, ") ",
          DescribeExit(exit), w.state == v1::WORKER_STATE_STARTING ? " before it was ready" : "");
    }
    idle_.erase(std::remove(idle_.begin(), idle_.end(), key), idle_.end());
    const int index = w.index;
    workers_.erase(key);
    ScheduleRestartLocked(index);
    SetStateLocked(state_, &notify);
    DispatchLocked();
    WindDownLocked(&notify);
  }
  RunNotify(notify);
}

}  // namespace forkpool
