// PoolExecutor: starting, loading the pool (and again after a helper is lost,
// with back-off) and its state. (Pool operations are in pool_executor_ops.cc,
// workers in pool_executor_workers.cc, dispatch and frames in
// pool_executor_dispatch.cc, time limits and stops in pool_executor_health.cc.)
#include "server/daemon/executor/pool_executor.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/daemon/log.h"

namespace forkpool {

std::shared_ptr<PoolExecutor> PoolExecutor::Create(uint64_t generation, v1::PoolSettings settings,
                                                   ExecutorDeps deps, ExecutorOptions options) {
  return std::shared_ptr<PoolExecutor>(
      new PoolExecutor(generation, std::move(settings), std::move(deps), options));
}

PoolExecutor::PoolExecutor(uint64_t generation, v1::PoolSettings settings, ExecutorDeps deps,
                           ExecutorOptions options)
    : generation_(generation),
      settings_(std::move(settings)),
      deps_(std::move(deps)),
      options_(options),
      clock_(deps_.clock),
      broker_(deps_.broker) {}

PoolExecutor::~PoolExecutor() {
  absl::MutexLock lock(&mu_);
  clock_->CancelTimer(stop_check_timer_);
}

void PoolExecutor::RunNotify(Notify& notify) {
  for (auto& fn : notify) fn();
  notify.clear();
}

WorkerSlot* PoolExecutor::FindLocked(uint64_t key) {
  auto it = workers_.find(key);
  return it == workers_.end() ? nullptr : &it->second;
}

void PoolExecutor::Start(CreateDone done, std::function<void()> gone) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    create_done_ = std::move(done);
    gone_ = std::move(gone);
    created_at_ = clock_->Now();
    if (deleting_) {
      // Deleted between its registration and now: nothing was loaded, and the
      // name is freed at once.
      notify.push_back([done = std::move(create_done_), name = settings_.name()] {
        done(absl::NotFoundError(absl::StrCat("pool '", name, "' was deleted while loading")));
      });
      create_done_ = nullptr;
      WindDownLocked(&notify);
    } else {
      StartLocked();
    }
  }
  RunNotify(notify);
}

void PoolExecutor::StartLocked() {
  std::weak_ptr<PoolExecutor> weak = weak_from_this();
  stop_check_timer_ = clock_->AddTimerAfter(options_.stop_check_interval, [weak] {
    if (auto self = weak.lock()) self->CheckStoppedWorkers();
  });
  LoadLocked();
}

// --- Loading ---

void PoolExecutor::LoadLocked() {
  const uint64_t attempt = ++load_attempt_;
  has_helper_ = false;
  std::weak_ptr<PoolExecutor> weak = weak_from_this();
  WorkerLauncher::HelperEvents events;
  events.on_lost = [weak, attempt](const std::string& why) {
    if (auto self = weak.lock()) self->OnHelperLost(attempt, why);
  };
  deps_.launcher->Load(std::move(events), [weak, attempt](absl::StatusOr<LoadResult> result) {
    if (auto self = weak.lock()) self->OnLoaded(attempt, std::move(result));
  });
}

void PoolExecutor::OnLoaded(uint64_t attempt, absl::StatusOr<LoadResult> result) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    if (attempt != load_attempt_ || deleting_) return;
    if (!result.ok()) {
      LoadFailedLocked(result.status(), &notify);
    } else if (draining_) {
      deps_.launcher->DropHelper(/*kill=*/false, "forkpoold is shutting down");
      LoadFailedLocked(absl::UnavailableError("forkpoold is shutting down"), &notify);
    } else {
      const bool first = !loaded_;
      loaded_ = true;
      has_helper_ = true;
      if (first) loaded_at_ = clock_->Now();
      if (state_ != v1::POOL_STATE_READY && !first) {
        Log("pool '", settings_.name(), "': loaded again by a new helper (pid ",
            deps_.launcher->helper_pid(), ")");
      }
      broker_->SetFunctions(generation_, std::move(result->functions));
      helper_since_ = clock_->Now();
      if (!first) last_error_.clear();
      SetStateLocked(v1::POOL_STATE_READY, &notify);
      StartMissingWorkersLocked();
      if (create_done_) {
        notify.push_back([done = std::move(create_done_), info = InfoLocked()] { done(info); });
        create_done_ = nullptr;
      }
    }
  }
  RunNotify(notify);
}

void PoolExecutor::LoadFailedLocked(const absl::Status& status, Notify* notify) {
  const std::string& name = settings_.name();
  if (!loaded_) {
    // A new pool: CreatePool fails and leaves nothing behind.
    if (absl::StartsWith(status.message(), "pool '")) {
      Log(status.message());
    } else {
      Log("pool '", name, "': ", status.message());
    }
    if (create_done_) {
      notify->push_back([done = std::move(create_done_), status] { done(status); });
      create_done_ = nullptr;
    }
    deleting_ = true;
    for (auto& [key, w] : workers_) KillLocked(w);
    WindDownLocked(notify);
    return;
  }
  ++helper_failures_;
  last_error_ = std::string(status.message());
  if (helper_failures_ >= options_.give_up_after && state_ != v1::POOL_STATE_FAILED) {
    Log("pool '", name, "': ", helper_failures_, " loads in a row failed; the pool is failed (",
        status.message(), "); still retrying now and then");
    SetStateLocked(v1::POOL_STATE_FAILED, notify);
  } else {
    Log("pool '", name, "': loading again failed: ", status.message());
  }
  ScheduleReloadLocked();
}

void PoolExecutor::ScheduleReloadLocked() {
  if (draining_ || deleting_) return;
  // 0.1 s, 0.2 s, ... up to 30 s between tries.
  const int k = std::min(helper_failures_, 9);
  const absl::Duration delay =
      helper_failures_ == 0
          ? absl::ZeroDuration()
          : std::min(absl::Milliseconds(100) * (1 << std::max(0, k - 1)), absl::Seconds(30));
  std::weak_ptr<PoolExecutor> weak = weak_from_this();
  const uint64_t attempt = load_attempt_;
  clock_->AddTimerAfter(delay, [weak, attempt] {
    auto self = weak.lock();
    if (!self) return;
    absl::MutexLock lock(&self->mu_);
    if (self->load_attempt_ != attempt || self->has_helper_ || self->draining_ || self->deleting_) {
      return;
    }
    self->LoadLocked();
  });
}

void PoolExecutor::OnHelperLost(uint64_t attempt, const std::string& why) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    if (attempt != load_attempt_ || !has_helper_) return;
    has_helper_ = false;
    if (state_ != v1::POOL_STATE_READY || draining_ || deleting_) return;
    // A helper that served a good while has proved itself; losses close
    // together count towards giving up.
    if (clock_->Now() - helper_since_ > absl::Seconds(60)) helper_failures_ = 0;
    ++helper_failures_;
    last_error_ = absl::StrCat("pool helper ", why);
    Log("pool '", settings_.name(), "': ", last_error_, "; its workers go on; loading it again");
    SetStateLocked(helper_failures_ >= options_.give_up_after ? v1::POOL_STATE_FAILED
                                                              : v1::POOL_STATE_RECOVERING,
                   &notify);
    ScheduleReloadLocked();
  }
  RunNotify(notify);
}

void PoolExecutor::SetStateLocked(v1::PoolState state, Notify* notify) {
  state_ = state;
  // What the broker refuses new work with: a closed pool, or a failed one with
  // no worker left to run it (waiting would be for nothing).
  absl::Status refusal;
  if (closed_) {
    refusal = absl::FailedPreconditionError(
        absl::StrCat("pool '", settings_.name(), "' is closed to new work"));
  } else if (state_ == v1::POOL_STATE_FAILED && LiveWorkersLocked() == 0) {
    refusal = absl::FailedPreconditionError(
        absl::StrCat("pool '", settings_.name(), "' failed: ", last_error_));
  }
  const bool stranded = state_ == v1::POOL_STATE_FAILED && LiveWorkersLocked() == 0;
  broker_->SetRefusal(generation_, refusal);
  if (stranded) {
    broker_->EndPending(generation_, v1::TASK_STATE_FAILED,
                        absl::StrCat("pool '", settings_.name(), "' failed: ", last_error_),
                        notify);
  }
}

int PoolExecutor::LiveWorkersLocked() const {
  int n = 0;
  for (const auto& [key, w] : workers_) {
    if (w.process && w.state != v1::WORKER_STATE_STOPPING) ++n;
  }
  return n;
}

}  // namespace forkpool
