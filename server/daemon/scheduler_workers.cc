// Scheduler, workers: starting and replacing them, their sockets and exits.
// (Their frames are in scheduler_worker_frames.cc, their health in
// scheduler_worker_health.cc.)
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/packed_items.h"
#include "common/proto_status.h"
#include "common/utf8.h"
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

void Scheduler::StartWorkerLocked(Pool& pool, int index) {
  if (draining_ || pool.closed || pool.deleting) return;
  // Without a helper the index stays empty; the reload starts it.
  if (!pool.helper || pool.state == v1::POOL_STATE_LOADING) return;
  WorkerSlot slot;
  slot.key = next_worker_key_++;
  slot.index = index;
  slot.state = v1::WORKER_STATE_STARTING;
  slot.requested_at = absl::Now();
  const uint64_t key = slot.key;
  const std::string name = pool.settings.name();
  internal::ToHelper request;
  request.mutable_fork_worker()->set_worker_index(index);
  absl::Status sent = pool.helper->Request(
      request, kForkTimeout,
      [this, name, key](absl::StatusOr<internal::FromHelper> reply, std::vector<UniqueFd> fds) {
        OnWorkerForked(name, key, std::move(reply), std::move(fds));
      });
  if (!sent.ok()) return;  // the helper is gone; its exit brings a reload
  slot.start_timer = loop_->AddTimer(absl::Now() + options_.start_timeout,
                                     [this, name, key] { OnStartTimeout(name, key); });
  pool.workers.emplace(key, std::move(slot));
}

void Scheduler::ScheduleRestartLocked(Pool& pool, int index) {
  if (draining_ || pool.closed) return;
  // Back off after consecutive failures so a broken initializer cannot spin.
  const int failures = std::min(pool.failed_starts, 6);
  const absl::Duration delay =
      failures == 0 ? absl::ZeroDuration() : absl::Milliseconds(100) * (1 << (failures - 1));
  const std::string name = pool.settings.name();
  auto restart = [this, name, index] {
    absl::MutexLock lock(&mu_);
    Pool* pool = FindPoolLocked(name);
    if (pool == nullptr) return;
    for (const auto& [key, w] : pool->workers) {
      if (w.index == index) return;  // already replaced
    }
    StartWorkerLocked(*pool, index);
  };
  if (delay == absl::ZeroDuration()) {
    StartWorkerLocked(pool, index);
  } else {
    loop_->AddTimer(absl::Now() + delay, restart);
  }
}

void Scheduler::OnWorkerForked(const std::string& name, uint64_t key,
                               absl::StatusOr<internal::FromHelper> reply,
                               std::vector<UniqueFd> fds) {
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(name);
  auto it = pool != nullptr ? pool->workers.find(key) : decltype(pool->workers.end())();
  const bool forked = reply.ok() && StatusFromProto(reply->status()).ok() && fds.size() == 3;
  if (pool == nullptr || it == pool->workers.end()) {
    // Nobody wants this worker any more (its pool was deleted, its start timed
    // out): its socket closes here, it exits on EOF, and as our child it must
    // be reaped.
    if (forked) ReapLaterLocked(std::move(fds[1]));
    return;
  }
  WorkerSlot& w = it->second;
  if (!reply.ok()) {
    // The helper died or hung: its exit brings a reload, which starts this
    // index.
    if (w.start_timer != 0) loop_->CancelTimer(w.start_timer);
    pool->workers.erase(it);
    return;
  }
  absl::Status s = StatusFromProto(reply->status());
  if (s.ok() && fds.size() != 3) {
    s = absl::InternalError(
        absl::StrCat("pool helper passed ", fds.size(), " fds for a worker; expected 3"));
  }
  UniqueFd pidfd_copy;
  absl::StatusOr<std::unique_ptr<WorkerConnection>> conn =
      s.ok()
          ? WorkerConnection::Create(
                reply->worker_forked().pid(), std::move(fds[0]), std::move(fds[1]),
                std::move(fds[2]), options_.max_frame_bytes,
                absl::StrCat("[", name, "/", w.index, " pid ", reply->worker_forked().pid(), "]"))
          : absl::StatusOr<std::unique_ptr<WorkerConnection>>(s);
  if (!conn.ok()) {
    const int index = w.index;
    pool->last_error = absl::StrCat("starting worker ", index, ": ", conn.status().message());
    Log("pool '", name, "': ", pool->last_error);
    // A worker that was made but cannot be served is still our child: end and
    // reap it.
    if (forked && fds[1].valid()) {
      (void)PidfdSignal(fds[1].get(), SIGKILL);
      ReapLaterLocked(std::move(fds[1]));
    }
    if (w.start_timer != 0) loop_->CancelTimer(w.start_timer);
    pool->workers.erase(it);
    ++pool->failed_starts;
    ScheduleRestartLocked(*pool, index);
    return;
  }
  w.conn = std::move(*conn);
  children_->Add(w.conn->pid());
  ++pool->workers_started;
  ++live_workers_;
  const int sock = w.conn->socket_fd();
  const int pidfd = w.conn->pidfd();
  const int err = w.conn->stderr_fd();
  absl::Status watched =
      loop_->Watch(pidfd, EPOLLIN, [this, name, key](uint32_t) { OnWorkerExit(name, key); });
  if (watched.ok()) {
    watched = loop_->Watch(
        sock, EPOLLIN, [this, name, key](uint32_t events) { OnWorkerSocket(name, key, events); });
  }
  if (watched.ok()) {
    // The worker's output is read and logged without the scheduler's lock: a
    // chatty task never holds up dispatch, and the log write may block.
    watched = loop_->Watch(err, EPOLLIN, [this, output = w.conn->output()](uint32_t) {
      (void)output->Drain();
      if (output->eof()) loop_->Unwatch(output->fd());
    });
  }
  if (!watched.ok()) {
    Log("pool '", name, "': cannot watch worker ", w.conn->pid(), ": ", watched.message());
    w.conn->Kill();  // its exit is still seen through the pidfd if that was
                     // watched
    return;
  }
  if (pool->settings.start_method() == v1::START_METHOD_SPAWN) {
    // A spawned program learns what it serves from its first frame, never from
    // its command line (world-readable in /proc).
    internal::ToWorker init_msg;
    internal::Init* init = init_msg.mutable_init();
    init->set_pool(name);
    init->set_worker_index(w.index);
    for (const auto& lib : pool->settings.libraries()) init->add_libraries(lib);
    init->set_initializer(pool->settings.initializer());
    init->set_initargs(pool->settings.initargs().data());
    (void)SendLocked(w, init_msg);
  }
}

void Scheduler::ReapLaterLocked(UniqueFd pidfd) {
  const int fd = pidfd.get();
  // Owned, so that the OrphanReaper does not take (and reap) it too.
  const pid_t pid = PidfdPid(fd).value_or(0);
  if (pid > 0) children_->Add(pid);
  orphans_.emplace(fd, std::move(pidfd));
  absl::Status s = loop_->Watch(fd, EPOLLIN, [this, fd, pid](uint32_t) {
    absl::MutexLock lock(&mu_);
    auto it = orphans_.find(fd);
    if (it == orphans_.end()) return;
    ReapPidfd(fd);
    if (pid > 0) children_->Remove(pid);
    loop_->Unwatch(fd);
    orphans_.erase(it);
  });
  if (!s.ok()) Log("cannot watch an orphaned worker: ", s.message());
}

void Scheduler::OnWorkerSocket(const std::string& name, uint64_t key, uint32_t events) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    auto [pool, slot] = FindWorkerLocked(name, key);
    if (slot == nullptr || !slot->conn) return;
    WorkerSlot& w = *slot;
    if (events & EPOLLOUT) {
      absl::StatusOr<bool> more = w.conn->Flush();
      if (!more.ok()) {
        ProtocolErrorLocked(w, std::string(more.status().message()));
      } else if (!*more && w.writing) {
        w.writing = false;
        (void)loop_->Modify(w.conn->socket_fd(), EPOLLIN);
      }
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
      // The pool and worker stay valid during Read: only this thread erases
      // them.
      absl::StatusOr<bool> open =
          w.conn->Read([&](internal::FromWorker& m) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            OnWorkerMessage(*pool, w, m, &notify);
          });
      if (!open.ok()) {
        ProtocolErrorLocked(w, std::string(open.status().message()));
      } else if (!*open) {
        // EOF: the worker is leaving; its pidfd says how. Kill it in case it
        // lingers.
        loop_->Unwatch(w.conn->socket_fd());
        if (w.state != v1::WORKER_STATE_STOPPING) w.conn->Kill();
      }
    }
    DispatchLocked(*pool);
    WindDownLocked(*pool, &notify);
  }
  RunNotify(notify);
}

void Scheduler::OnWorkerExit(const std::string& name, uint64_t key) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    auto [pool, slot] = FindWorkerLocked(name, key);
    if (slot == nullptr || !slot->conn) return;
    WorkerSlot& w = *slot;
    WorkerConnection& conn = *w.conn;
    // Frames the worker sent before it died still count (results, a Hello that
    // reports a failed initializer): read them before judging the exit.
    if (w.protocol_error.empty()) {
      (void)conn.Read([&](internal::FromWorker& m) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        OnWorkerMessage(*pool, w, m, &notify);
      });
    }
    // Everything the worker wrote is in the pipe now; keep it for the report.
    (void)conn.output()->Drain();
    const ExitInfo exit = ReapPidfd(conn.pidfd());
    children_->Remove(conn.pid());
    if (w.start_timer != 0) loop_->CancelTimer(w.start_timer);
    w.start_timer = 0;
    loop_->Unwatch(conn.pidfd());
    loop_->Unwatch(conn.socket_fd());
    loop_->Unwatch(conn.stderr_fd());
    --live_workers_;
    const bool expected =
        (w.state == v1::WORKER_STATE_STOPPING && w.protocol_error.empty()) || w.timed_out;
    if (w.state == v1::WORKER_STATE_STARTING && !w.start_timed_out) {
      // How it died before its hello says what went wrong with its start.
      pool->last_error =
          pool->settings.initializer().empty()
              ? absl::StrCat("worker ", w.index, " (pid ", conn.pid(), ") ", DescribeExit(exit),
                             " before it was ready")
              : absl::StrCat("worker ", w.index, " (pid ", conn.pid(), "): initializer '",
                             pool->settings.initializer(), "' ", DescribeExit(exit));
    }
    if (w.limit_timer != 0) loop_->CancelTimer(w.limit_timer);
    w.limit_timer = 0;
    // Why the work on this worker ended: its own death, our time limit, or a
    // broken protocol.
    v1::WorkerLoss loss;
    loss.set_pid(conn.pid());
    loss.set_signal(exit.signal);
    if (exit.signal != 0) loss.set_signal_name(SignalName(exit.signal));
    loss.set_exit_code(exit.exit_code);
    loss.set_stderr_tail(ValidUtf8(conn.output()->Tail()));
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
    if (w.state == v1::WORKER_STATE_BUSY && w.chunk) {
      --running_;
      const MapChunk& chunk = *w.chunk;
      const int at = w.chunk_results;  // the item that was running
      if (at < chunk.count && !chunk.job->cancelled()) {
        const v1::TaskOptions eff = EffectiveOptions(*pool, chunk.job->options());
        if (state != v1::TASK_STATE_FAILED && chunk.attempt <= eff.max_retries() && !draining_ &&
            !pool->closed) {
          // Retry the running item (and the rest) as a new attempt.
          MapChunk again = chunk;
          again.attempt = chunk.attempt + 1;
          RequeueChunkRestLocked(*pool, again, at);
        } else {
          MapChunk blamed = chunk;
          blamed.count = at + 1;
          FailChunkItemsLocked(blamed, at, state, error,
                               state == v1::TASK_STATE_WORKER_LOST ? &loss : nullptr);
          ++pool->tasks_failed;
          RequeueChunkRestLocked(*pool, chunk, at + 1);
        }
      }
      w.chunk.reset();
    } else if (w.state == v1::WORKER_STATE_BUSY) {
      --running_;
      if (Task* task = tasks_.Find(w.task_id); task && !IsTerminal(task->result.state())) {
        if (state == v1::TASK_STATE_WORKER_LOST) *task->result.mutable_worker_loss() = loss;
        task->result.set_error(error);
        if (state == v1::TASK_STATE_FAILED) {
          FinishLocked(pool, *task, state, &notify);
        } else {
          RetryOrFinishLocked(*pool, *task, state, &notify);
        }
      }
    }
    if (!expected) {
      ++pool->workers_lost;
      if (w.state == v1::WORKER_STATE_STARTING) ++pool->failed_starts;
      Log("pool '", name, "': worker ", w.index, " (pid ", conn.pid(), ") ", DescribeExit(exit),
          w.state == v1::WORKER_STATE_STARTING ? " before it was ready" : "");
    }
    pool->idle.erase(std::remove(pool->idle.begin(), pool->idle.end(), key), pool->idle.end());
    const int index = w.index;
    pool->workers.erase(key);
    if (pool->deleting && pool->workers.empty()) {
      Log("pool '", name, "' deleted");
      pools_.erase(name);
    } else {
      ScheduleRestartLocked(*pool, index);
      DispatchLocked(*pool);
      FailStrandedWorkLocked(*pool, &notify);
      WindDownLocked(*pool, &notify);
    }
  }
  RunNotify(notify);
}

}  // namespace forkpool
