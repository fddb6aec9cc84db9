// Scheduler, pools: creation, loading into the fork helper,
// close/join/terminate/delete, descriptions, and reloading after a helper
// crash.
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/proto_status.h"
#include "server/daemon/log.h"
#include "server/daemon/pool_settings.h"
#include "server/daemon/process_util.h"
#include "server/daemon/scheduler.h"
#include "server/daemon/scheduler_internal.h"

namespace forkpool {

using internal_scheduler::CodecOrText;
using internal_scheduler::EffectiveOptions;
using internal_scheduler::NowProto;
using internal_scheduler::ToDuration;

void Scheduler::CreatePool(v1::PoolSettings settings,
                           std::function<void(absl::StatusOr<v1::PoolInfo>)> done) {
  if (settings.libraries().empty()) {
    for (const auto& lib : options_.default_libraries) settings.add_libraries(lib);
  }
  absl::Status valid = NormalizePoolSettings(&settings, options_.max_initargs_bytes);
  if (!valid.ok()) {
    done(valid);
    return;
  }
  absl::MutexLock lock(&mu_);
  if (draining_) {
    done(absl::UnavailableError("forkpoold is shutting down"));
    return;
  }
  if (auto it = pools_.find(settings.name()); it != pools_.end()) {
    done(absl::AlreadyExistsError(absl::StrCat(
        "pool '", settings.name(), "' already exists",
        it->second->deleting ? " (it is being deleted; try again when it is gone)" : "")));
    return;
  }
  // The cap counts the workers every pool asks for, so that one CreatePool
  // cannot take the machine and a thousand at once are refused, not
  // half-started.
  int64_t in_use = 0;
  for (const auto& [name, other] : pools_) {
    if (!other->deleting) in_use += other->settings.processes();
  }
  if (in_use + settings.processes() > options_.max_workers) {
    done(absl::ResourceExhaustedError(
        absl::StrCat("pool '", settings.name(), "' asks for ", settings.processes(),
                     " workers; forkpoold runs at most ", options_.max_workers,
                     " (--max_workers) and ", in_use, " are taken by other pools")));
    return;
  }
  auto pool = std::make_unique<Pool>();
  pool->settings = settings;
  pool->created_at = absl::Now();
  pool->create_done = std::move(done);
  Pool& p = *pool;
  pools_.emplace(settings.name(), std::move(pool));
  StartPoolHelperLocked(p);
}

bool Scheduler::AwaitWorkersReady(const std::string& name, int count, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Pool* pool = FindPoolLocked(name);
    if (pool == nullptr) return true;
    int n = 0;
    for (const auto& [key, w] : pool->workers) {
      if (w.state == v1::WORKER_STATE_IDLE || w.state == v1::WORKER_STATE_BUSY) ++n;
    }
    return n >= count;
  };
  return mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
}

v1::PoolInfo Scheduler::InfoLocked(const Pool& pool) const {
  v1::PoolInfo info;
  *info.mutable_settings() = pool.settings;
  for (const auto& [key, w] : pool.workers) {
    auto* wi = info.add_workers();
    wi->set_index(w.index);
    wi->set_pid(w.conn ? w.conn->pid() : 0);
    wi->set_state(w.state);
    wi->set_task_id(w.task_id);
    wi->set_tasks_done(w.tasks_done);
    wi->set_rss_bytes(w.rss_bytes);
    if (w.state == v1::WORKER_STATE_IDLE) info.set_idle(info.idle() + 1);
    if (w.state == v1::WORKER_STATE_BUSY) info.set_busy(info.busy() + 1);
  }
  std::sort(info.mutable_workers()->begin(), info.mutable_workers()->end(),
            [](const v1::WorkerInfo& a, const v1::WorkerInfo& b) { return a.index() < b.index(); });
  info.set_queued(pool.queued);
  info.set_tasks_done(pool.tasks_done);
  info.set_tasks_failed(pool.tasks_failed);
  info.set_workers_started(pool.workers_started);
  info.set_workers_lost(pool.workers_lost);
  info.set_closed(pool.closed);
  info.set_last_error(pool.last_error);
  info.set_map_inflight_high_water(pool.map_inflight_high_water);
  info.set_state(pool.state);
  info.set_helper_pid(pool.helper ? pool.helper->pid() : 0);
  return info;
}

absl::StatusOr<v1::PoolInfo> Scheduler::ClosePool(const std::string& name) {
  Notify notify;
  absl::StatusOr<v1::PoolInfo> info;
  {
    absl::MutexLock lock(&mu_);
    Pool* pool = FindPoolLocked(name);
    if (pool == nullptr) return absl::NotFoundError(absl::StrCat("unknown pool '", name, "'"));
    pool->closed = true;
    WindDownLocked(*pool, &notify);
    info = InfoLocked(*pool);
  }
  RunNotify(notify);
  return info;
}

void Scheduler::EndPendingLocked(Pool& pool, v1::TaskState state, const std::string& why,
                                 Notify* notify) {
  for (const PendingWork& work : pool.pending) {
    if (work.chunk) {
      if (!work.chunk->job->cancelled()) {
        FailChunkItemsLocked(*work.chunk, 0, state, why, nullptr);
      }
      continue;
    }
    Task* task = tasks_.Find(work.task_id);
    if (task == nullptr || task->result.state() != v1::TASK_STATE_PENDING) continue;
    task->result.set_error(why);
    FinishLocked(&pool, *task, state, notify);
  }
  pool.pending.clear();
  pool.queued = 0;
}

void Scheduler::TerminateLocked(Pool& pool, const std::string& why, Notify* notify) {
  pool.closed = true;
  EndPendingLocked(pool, v1::TASK_STATE_CANCELLED, why, notify);
  for (auto& [key, w] : pool.workers) {
    if (w.state == v1::WORKER_STATE_BUSY) {
      if (w.chunk) {
        if (!w.chunk->job->cancelled()) {
          FailChunkItemsLocked(*w.chunk, w.chunk_results, v1::TASK_STATE_CANCELLED, why, nullptr);
        }
        w.chunk.reset();
      } else if (Task* task = tasks_.Find(w.task_id); task && !IsTerminal(task->result.state())) {
        task->result.set_error(why);
        FinishLocked(&pool, *task, v1::TASK_STATE_CANCELLED, notify);
      }
      --running_;
      w.task_id.clear();
    }
    w.state = v1::WORKER_STATE_STOPPING;
    if (w.conn) w.conn->Kill();
  }
  pool.idle.clear();
}

absl::StatusOr<v1::PoolInfo> Scheduler::TerminatePool(const std::string& name) {
  Notify notify;
  absl::StatusOr<v1::PoolInfo> info;
  {
    absl::MutexLock lock(&mu_);
    Pool* pool = FindPoolLocked(name);
    if (pool == nullptr) return absl::NotFoundError(absl::StrCat("unknown pool '", name, "'"));
    TerminateLocked(*pool, absl::StrCat("cancelled: pool '", name, "' was terminated"), &notify);
    WindDownLocked(*pool, &notify);
    info = InfoLocked(*pool);
  }
  RunNotify(notify);
  return info;
}

absl::Status Scheduler::DeletePool(const std::string& name) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    Pool* pool = FindPoolLocked(name);
    if (pool == nullptr) return absl::NotFoundError(absl::StrCat("unknown pool '", name, "'"));
    TerminateLocked(*pool, absl::StrCat("cancelled: pool '", name, "' was deleted"), &notify);
    WindDownLocked(*pool, &notify);
    // Workers still starting are dropped with their slot: the fds the helper
    // passes up for them close unused and the worker exits on EOF.
    for (auto it = pool->workers.begin(); it != pool->workers.end();) {
      it = it->second.conn ? std::next(it) : pool->workers.erase(it);
    }
    pool->deleting = true;
    // Its helper leaves (EOF) and is reaped by its channel; so are the
    // processes the pool's libraries started in it, which forkpoold then adopts
    // and ends.
    if (pool->helper) pool->helper->Close();
    pool->helper.reset();
    if (pool->create_done) {
      auto done = std::move(pool->create_done);
      pool->create_done = nullptr;
      notify.push_back([done, name] {
        done(absl::NotFoundError(absl::StrCat("pool '", name, "' was deleted while loading")));
      });
    }
    if (pool->workers.empty()) {
      pools_.erase(name);
    }
  }
  RunNotify(notify);
  return absl::OkStatus();
}

absl::Status Scheduler::JoinPool(const std::string& name, std::function<void()> done) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    Pool* pool = FindPoolLocked(name);
    if (pool == nullptr) return absl::NotFoundError(absl::StrCat("unknown pool '", name, "'"));
    if (!pool->closed) {
      return absl::FailedPreconditionError(
          absl::StrCat("pool '", name, "' is still running: close or terminate it before join"));
    }
    pool->join_waiters.push_back(std::move(done));
    WindDownLocked(*pool, &notify);
  }
  RunNotify(notify);
  return absl::OkStatus();
}

void Scheduler::WindDownLocked(Pool& pool, Notify* notify) {
  if (!pool.closed) return;
  if (pool.queued == 0 && pool.pending.empty()) {
    for (auto& [key, w] : pool.workers) {
      if (w.state == v1::WORKER_STATE_IDLE && w.conn && w.protocol_error.empty()) {
        internal::ToWorker shutdown;
        shutdown.mutable_shutdown();
        (void)SendLocked(w, shutdown);
        w.state = v1::WORKER_STATE_STOPPING;
      }
    }
    pool.idle.clear();
  }
  if (pool.workers.empty() && !pool.join_waiters.empty()) {
    for (auto& fn : pool.join_waiters) notify->push_back(std::move(fn));
    pool.join_waiters.clear();
  }
}

std::vector<v1::PoolInfo> Scheduler::ListPools() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::PoolInfo> out;
  for (const auto& [name, pool] : pools_) {
    if (pool->deleting) continue;
    out.push_back(InfoLocked(*pool));
    // The list stays small whatever the pools hold; DescribePool shows initargs.
    out.back().mutable_settings()->mutable_initargs()->clear_data();
  }
  return out;
}

absl::StatusOr<v1::PoolInfo> Scheduler::DescribePool(const std::string& name) {
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(name);
  if (pool == nullptr) return absl::NotFoundError(absl::StrCat("unknown pool '", name, "'"));
  return InfoLocked(*pool);
}

}  // namespace forkpool
