// Scheduler, pool helpers: each pool's own fork helper, asked of the root
// helper, loading the pool's libraries within --load_timeout, and replaced with
// back-off when lost. A helper that fails to load is discarded, never reused.
#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/proto_status.h"
#include "server/daemon/log.h"
#include "server/daemon/pool_settings.h"
#include "server/daemon/process_util.h"
#include "server/daemon/scheduler.h"

namespace forkpool {

void Scheduler::AttachHelpers(RootHelperClient* root, ChildRegistry* children) {
  root_ = root;
  children_ = children;
}

void Scheduler::StartPoolHelperLocked(Pool& pool) {
  const std::string name = pool.settings.name();
  // Unique in the daemon, not per pool: a pool deleted and created again under the
  // same name must not take the answers meant for its predecessor.
  const uint64_t attempt = pool.load_attempt = next_load_attempt_++;
  pool.loading_library.clear();
  root_->StartPoolHelper([this, name, attempt](absl::StatusOr<HelperProcess> p) {
    OnPoolHelperStarted(name, attempt, std::move(p), /*root_tries=*/3);
  });
}

void Scheduler::OnPoolHelperStarted(const std::string& name, uint64_t attempt,
                                    absl::StatusOr<HelperProcess> process, int root_tries) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    auto it = pools_.find(name);
    Pool* pool = it == pools_.end() ? nullptr : it->second.get();
    const bool wanted = pool != nullptr && !pool->deleting && pool->load_attempt == attempt;
    if (!process.ok()) {
      if (!wanted) return;
      if (absl::IsUnavailable(process.status()) && root_tries > 0 && !draining_) {
        // The root helper was lost; a new one is on its way.
        loop_->AddTimer(absl::Now() + absl::Milliseconds(200), [this, name, attempt, root_tries] {
          absl::MutexLock lock(&mu_);
          Pool* pool = FindPoolLocked(name);
          if (pool == nullptr || pool->load_attempt != attempt) return;
          root_->StartPoolHelper(
              [this, name, attempt, root_tries](absl::StatusOr<HelperProcess> p) {
                OnPoolHelperStarted(name, attempt, std::move(p), root_tries - 1);
              });
        });
        return;
      }
      LoadFailedLocked(*pool, process.status(), &notify);
    } else {
      const pid_t pid = process->pid;
      HelperChannel::Callbacks callbacks;
      callbacks.on_progress = [this, name, attempt](const internal::LoadProgress& p) {
        absl::MutexLock lock(&mu_);
        Pool* pool = FindPoolLocked(name);
        if (pool != nullptr && pool->load_attempt == attempt) pool->loading_library = p.library();
      };
      callbacks.on_exit = [this, name, attempt](const std::string& why) {
        OnPoolHelperExit(name, attempt, why);
      };
      absl::StatusOr<std::shared_ptr<HelperChannel>> channel =
          HelperChannel::Start(loop_, children_, absl::StrCat("pool helper '", name, "'"),
                               *std::move(process), std::move(callbacks));
      if (!channel.ok()) {
        Log("pool '", name, "': cannot watch its helper (pid ", pid,
            "): ", channel.status().message());
        if (wanted) LoadFailedLocked(*pool, channel.status(), &notify);
      } else if (!wanted || draining_) {
        (*channel)->Close();  // nobody wants it any more; it leaves and is reaped
        if (wanted)
          LoadFailedLocked(*pool, absl::UnavailableError("forkpoold is shutting down"), &notify);
      } else {
        if (pool->helper) pool->helper->Close();  // never two helpers for one pool
        pool->helper = *channel;
        if (!pool->loaded) pool->helper_started_at = absl::Now();
        internal::ToHelper request;
        internal::LoadPool* load = request.mutable_load_pool();
        load->set_pool(name);
        for (const auto& lib : pool->settings.libraries()) load->add_libraries(lib);
        load->set_start_method(StartMethodName(pool->settings.start_method()));
        load->set_initializer(pool->settings.initializer());
        load->set_initargs(pool->settings.initargs().data());
        load->set_memory_limit_bytes(pool->settings.memory_limit_bytes());
        for (const auto& arg : pool->settings.worker_command()) load->add_worker_command(arg);
        if (pool->settings.worker_command().empty()) {
          load->add_worker_command(options_.worker_program);
        }
        load->set_nofile_soft_limit(options_.nofile_soft_limit);
        absl::Status sent =
            pool->helper->Request(request, options_.load_timeout,
                                  [this, name, attempt](absl::StatusOr<internal::FromHelper> reply,
                                                        std::vector<UniqueFd>) {
                                    OnPoolLoaded(name, attempt, std::move(reply));
                                  });
        if (!sent.ok()) {
          pool->helper.reset();
          LoadFailedLocked(*pool, sent, &notify);
        }
      }
    }
  }
  RunNotify(notify);
}

void Scheduler::OnPoolLoaded(const std::string& name, uint64_t attempt,
                             absl::StatusOr<internal::FromHelper> reply) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    Pool* pool = FindPoolLocked(name);
    if (pool == nullptr || pool->load_attempt != attempt) return;
    absl::Status s = reply.ok() ? StatusFromProto(reply->status()) : reply.status();
    if (!reply.ok()) {
      // The helper died or hung inside a library (or before it said which).
      const std::string what = pool->loading_library.empty()
                                   ? absl::StrCat("pool '", name, "': its fork helper")
                                   : pool->loading_library;
      if (absl::IsDeadlineExceeded(s)) {
        s = absl::FailedPreconditionError(absl::StrCat(what, ": did not finish loading within ",
                                                       absl::FormatDuration(options_.load_timeout),
                                                       " (--load_timeout); its helper was killed"));
      } else {
        s = absl::FailedPreconditionError(absl::StrCat(what, ": ", s.message(), " while loading"));
      }
    }
    if (!s.ok()) {
      // Never reused: whatever broke the load (a thread, a half-run
      // constructor) is still in it.
      if (pool->helper) pool->helper->Kill("its load failed");
      pool->helper.reset();
      LoadFailedLocked(*pool, s, &notify);
    } else {
      pool->functions.clear();
      for (const auto& f : reply->pool_loaded().functions()) pool->functions.insert(f);
      const bool first = !pool->loaded;
      pool->loaded = true;
      if (first) pool->loaded_at = absl::Now();
      if (pool->state != v1::POOL_STATE_READY && !first) {
        Log("pool '", name, "': loaded again by a new helper (pid ", pool->helper->pid(), ")");
      }
      pool->state = v1::POOL_STATE_READY;
      pool->helper_since = absl::Now();
      if (!first) pool->last_error.clear();
      StartMissingWorkersLocked(*pool);
      if (pool->create_done) {
        auto done = std::move(pool->create_done);
        pool->create_done = nullptr;
        v1::PoolInfo info = InfoLocked(*pool);
        notify.push_back([done, info] { done(info); });
      }
    }
  }
  RunNotify(notify);
}

void Scheduler::LoadFailedLocked(Pool& pool, const absl::Status& status, Notify* notify) {
  const std::string name = pool.settings.name();
  if (!pool.loaded) {
    // A new pool: CreatePool fails and leaves nothing behind.
    if (absl::StartsWith(status.message(), "pool '")) {
      Log(status.message());
    } else {
      Log("pool '", name, "': ", status.message());
    }
    auto done = std::move(pool.create_done);
    for (auto& [key, w] : pool.workers) {
      if (w.conn) w.conn->Kill();
    }
    if (pool.workers.empty()) {
      pools_.erase(name);
    } else {
      pool.deleting = true;
    }
    if (done) notify->push_back([done, status] { done(status); });
    return;
  }
  ++pool.helper_failures;
  pool.last_error = std::string(status.message());
  if (pool.helper_failures >= kGiveUpAfter && pool.state != v1::POOL_STATE_FAILED) {
    Log("pool '", name, "': ", pool.helper_failures, " loads in a row failed; the pool is failed (",
        status.message(), "); still retrying now and then");
    pool.state = v1::POOL_STATE_FAILED;
    FailStrandedWorkLocked(pool, notify);
  } else {
    Log("pool '", name, "': loading again failed: ", status.message());
  }
  ScheduleReloadLocked(pool);
}

void Scheduler::ScheduleReloadLocked(Pool& pool) {
  if (draining_ || pool.deleting) return;
  // 0.1 s, 0.2 s, ... up to 30 s between tries.
  const int k = std::min(pool.helper_failures, 9);
  const absl::Duration delay =
      std::min(absl::Milliseconds(100) * (1 << std::max(0, k - 1)), absl::Seconds(30));
  const std::string name = pool.settings.name();
  const uint64_t attempt = pool.load_attempt;
  loop_->AddTimer(
      absl::Now() + (pool.helper_failures == 0 ? absl::ZeroDuration() : delay),
      [this, name, attempt] {
        absl::MutexLock lock(&mu_);
        Pool* pool = FindPoolLocked(name);
        if (pool == nullptr || pool->load_attempt != attempt || pool->helper || draining_) {
          return;
        }
        StartPoolHelperLocked(*pool);
      });
}

void Scheduler::OnPoolHelperExit(const std::string& name, uint64_t attempt,
                                 const std::string& why) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    Pool* pool = FindPoolLocked(name);
    if (pool == nullptr || pool->load_attempt != attempt) return;
    const pid_t pid = pool->helper ? pool->helper->pid() : 0;
    pool->helper.reset();
    // A load in flight has been answered already (OnPoolLoaded handled it).
    if (pool->state != v1::POOL_STATE_READY || draining_) return;
    // A helper that served a good while has proved itself; losses close
    // together count towards giving up.
    if (absl::Now() - pool->helper_since > absl::Seconds(60)) pool->helper_failures = 0;
    ++pool->helper_failures;
    pool->state = v1::POOL_STATE_RECOVERING;
    pool->last_error = absl::StrCat("pool helper (pid ", pid, ") ", why);
    Log("pool '", name, "': ", pool->last_error, "; its workers go on; loading it again");
    if (pool->helper_failures >= kGiveUpAfter) {
      pool->state = v1::POOL_STATE_FAILED;
      FailStrandedWorkLocked(*pool, &notify);
    }
    ScheduleReloadLocked(*pool);
  }
  RunNotify(notify);
}

int Scheduler::LiveWorkersLocked(const Pool& pool) const {
  int n = 0;
  for (const auto& [key, w] : pool.workers) {
    if (w.conn && w.state != v1::WORKER_STATE_STOPPING) ++n;
  }
  return n;
}

void Scheduler::FailStrandedWorkLocked(Pool& pool, Notify* notify) {
  if (pool.state != v1::POOL_STATE_FAILED || LiveWorkersLocked(pool) > 0) return;
  const std::string why =
      absl::StrCat("pool '", pool.settings.name(), "' failed: ", pool.last_error);
  EndPendingLocked(pool, v1::TASK_STATE_FAILED, why, notify);
}

void Scheduler::StartMissingWorkersLocked(Pool& pool) {
  std::set<int> have;
  for (const auto& [key, w] : pool.workers) have.insert(w.index);
  for (int i = 0; i < pool.settings.processes(); ++i) {
    if (!have.count(i)) StartWorkerLocked(pool, i);
  }
}

void Scheduler::CloseHelpers() {
  absl::MutexLock lock(&mu_);
  for (auto& [name, pool] : pools_) {
    if (pool->helper) pool->helper->Close();
    pool->helper.reset();
  }
}

}  // namespace forkpool
