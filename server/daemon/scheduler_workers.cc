// Scheduler, workers: starting and replacing them, their frames, stderr, time
// limits and exits.
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
  orphans_.emplace(fd, std::move(pidfd));
  absl::Status s = loop_->Watch(fd, EPOLLIN, [this, fd](uint32_t) {
    absl::MutexLock lock(&mu_);
    auto it = orphans_.find(fd);
    if (it == orphans_.end()) return;
    ReapPidfd(fd);
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

bool Scheduler::ReplyToWorker(const std::string& name, uint64_t key, uint64_t correlation_id,
                              const absl::Status& status, std::string body) {
  absl::MutexLock lock(&mu_);
  WorkerSlot* w = FindWorkerLocked(name, key).second;
  if (w == nullptr || !w->conn || !w->protocol_error.empty() || w->state != v1::WORKER_STATE_BUSY) {
    return false;
  }
  internal::ToWorker message;
  internal::WorkerReply* reply = message.mutable_reply();
  reply->set_correlation_id(correlation_id);
  StatusToProto(status, reply->mutable_status());
  reply->set_body(std::move(body));
  return SendLocked(*w, message);
}

void Scheduler::ProtocolErrorLocked(WorkerSlot& w, const std::string& what) {
  if (w.protocol_error.empty()) {
    w.protocol_error = what;
    Log("worker ", w.conn->pid(), " broke the worker protocol: ", what, "; killing it");
  }
  loop_->Unwatch(w.conn->socket_fd());
  w.conn->Kill();
}

void Scheduler::OnWorkerMessage(Pool& pool, WorkerSlot& w, internal::FromWorker& m,
                                Notify* notify) {
  if (!w.protocol_error.empty()) return;
  switch (m.kind_case()) {
    case internal::FromWorker::kHello: {
      // A worker stopped while it started (its pool terminated) may still say hello.
      if (w.state == v1::WORKER_STATE_STOPPING) return;
      if (w.state != v1::WORKER_STATE_STARTING) {
        ProtocolErrorLocked(w, "hello sent twice");
        return;
      }
      if (m.hello().protocol_version() != internal::PROTOCOL_VERSION_1) {
        ProtocolErrorLocked(
            w, absl::StrCat("unsupported protocol version ", m.hello().protocol_version()));
        return;
      }
      if (m.hello().has_init_error() && m.hello().init_error().code() != 0) {
        pool.last_error = absl::StrCat("initializer failed in worker ", w.conn->pid(), ": ",
                                       ValidUtf8(m.hello().init_error().message()));
        Log("pool '", pool.settings.name(), "': ", pool.last_error);
        w.state = v1::WORKER_STATE_STOPPING;  // it exits; the restart backs off
        ++pool.failed_starts;
        return;
      }
      pool.failed_starts = 0;
      if (w.start_timer != 0) loop_->CancelTimer(w.start_timer);
      w.start_timer = 0;
      w.last_active = absl::Now();
      w.state = v1::WORKER_STATE_IDLE;
      pool.idle.push_back(w.key);
      if (!pool.reported_ready) {
        int ready = 0;
        for (const auto& [k, other] : pool.workers) {
          if (other.state == v1::WORKER_STATE_IDLE || other.state == v1::WORKER_STATE_BUSY) ++ready;
        }
        if (ready >= pool.settings.processes()) {
          pool.reported_ready = true;
          const absl::Time now = absl::Now();
          Log("pool '", pool.settings.name(), "': ", ready, " workers ready in ",
              absl::FormatDuration(now - pool.created_at), " (its helper started in ",
              absl::FormatDuration(pool.helper_started_at - pool.created_at), ", loaded in ",
              absl::FormatDuration(pool.loaded_at - pool.helper_started_at),
              ", workers started in ", absl::FormatDuration(now - pool.loaded_at), ")");
        }
      }
      return;
    }
    case internal::FromWorker::kResults: {
      const auto& r = m.results();
      if (w.state != v1::WORKER_STATE_BUSY || r.batch_id() != w.batch_id) {
        // A cancelled task's worker may still have answered; anything else is
        // wrong.
        if (w.state == v1::WORKER_STATE_STOPPING) return;
        ProtocolErrorLocked(
            w, absl::StrCat("results for batch ", r.batch_id(), " that is not running"));
        return;
      }
      const int expected = w.chunk ? w.chunk->count : 1;
      const int room = expected - w.chunk_results;
      // The outputs are checked before anything is taken from them: a worker's
      // frame is not trusted.
      absl::StatusOr<size_t> n = CountPackedItems(r.outputs(), ~size_t{0}, "outputs");
      if (!n.ok() || *n == 0 || static_cast<int>(r.first_index()) != w.chunk_results ||
          *n > static_cast<size_t>(room)) {
        ProtocolErrorLocked(
            w, n.ok()
                   ? absl::StrCat("batch ", r.batch_id(), " has ", expected, " items; got results ",
                                  r.first_index(), "..", r.first_index() + *n, " after ",
                                  w.chunk_results)
                   : absl::StrCat("results for batch ", r.batch_id(), ": ", n.status().message()));
        return;
      }
      const int count = static_cast<int>(*n);
      for (int e = 0; e < r.errors_size(); ++e) {
        const internal::ItemError& error = r.errors(e);
        if (error.index() < r.first_index() || error.index() - r.first_index() >= *n ||
            (e > 0 && error.index() <= r.errors(e - 1).index()) || error.status().code() == 0) {
          ProtocolErrorLocked(
              w, absl::StrCat("results for batch ", r.batch_id(), ": error for item ",
                              error.index(), " is out of order, outside ", r.first_index(), "..",
                              r.first_index() + *n, " or OK"));
          return;
        }
      }
      if (w.chunk) {
        const MapChunk& chunk = *w.chunk;
        MapRun run;
        run.first_index = chunk.first_index + static_cast<uint64_t>(w.chunk_results);
        run.count = *n;
        run.input_bytes =
            chunk.inputs->RangeBytes(chunk.begin + static_cast<size_t>(w.chunk_results),
                                     chunk.begin + static_cast<size_t>(w.chunk_results + count));
        // The frame is ours to consume: the outputs move instead of being
        // copied.
        run.outputs = std::move(*m.mutable_results()->mutable_outputs());
        run.errors.reserve(static_cast<size_t>(r.errors_size()));
        for (const internal::ItemError& error : r.errors()) {
          v1::MapItemError& e = run.errors.emplace_back();
          e.set_index(chunk.first_index + error.index());
          e.set_state(v1::TASK_STATE_FAILED);
          e.set_error(ValidUtf8(error.status().message()));
        }
        pool.tasks_done += count - r.errors_size();
        pool.tasks_failed += r.errors_size();
        chunk.job->AddRun(std::move(run));
        w.chunk_results += count;
        return;
      }
      w.chunk_results += count;
      Task* task = tasks_.Find(w.task_id);
      if (task == nullptr || IsTerminal(task->result.state())) return;
      if (r.errors_size() == 0) {
        PackedItemReader reader(r.outputs());
        std::string_view output;
        reader.Next(&output);  // counted above: there is one
        task->result.mutable_output()->set_data(output.data(), output.size());
        task->result.mutable_output()->set_codec(CodecOrText(task->codec));
        task->result.clear_error();  // from an earlier attempt
        task->result.clear_worker_loss();
        FinishLocked(&pool, *task, v1::TASK_STATE_SUCCEEDED, notify);
      } else {
        task->result.set_error(ValidUtf8(r.errors(0).status().message()));
        RetryOrFinishLocked(pool, *task, v1::TASK_STATE_FAILED, notify);
      }
      return;
    }
    case internal::FromWorker::kDone: {
      if (w.state == v1::WORKER_STATE_STOPPING) return;
      if (w.state != v1::WORKER_STATE_BUSY || m.done().batch_id() != w.batch_id) {
        ProtocolErrorLocked(
            w, absl::StrCat("batch ", m.done().batch_id(), " done but it is not running"));
        return;
      }
      if (w.chunk) {
        // Items left unanswered were stopped (StopBatch) or skipped.
        if (w.chunk_results < w.chunk->count) {
          if (w.chunk->job->cancelled()) {
            // Nobody listens any more.
          } else {
            FailChunkItemsLocked(*w.chunk, w.chunk_results, v1::TASK_STATE_FAILED,
                                 "protocol error: the worker finished the batch without a "
                                 "result for this item",
                                 nullptr);
          }
        }
        w.chunk.reset();
      } else if (Task* task = tasks_.Find(w.task_id); w.chunk_results < 1 && task &&
                                                      task->worker_key == w.key &&
                                                      !IsTerminal(task->result.state())) {
        // Done without a result for its item.
        task->result.set_error("protocol error: the worker finished the batch without a result");
        FinishLocked(&pool, *task, v1::TASK_STATE_FAILED, notify);
      }
      --running_;
      if (w.limit_timer != 0) loop_->CancelTimer(w.limit_timer);
      w.limit_timer = 0;
      w.chunk_results = 0;
      w.task_id.clear();
      w.batch_id = 0;
      ++w.tasks_done;
      w.rss_bytes = m.done().rss_bytes();
      const int max_tasks = pool.settings.max_tasks_per_child();
      const int64_t max_rss = pool.settings.max_memory_per_child_bytes();
      if ((max_tasks > 0 && w.tasks_done >= max_tasks) || (max_rss > 0 && w.rss_bytes > max_rss)) {
        internal::ToWorker shutdown;
        shutdown.mutable_shutdown();
        w.state = v1::WORKER_STATE_STOPPING;
        (void)SendLocked(w, shutdown);
      } else {
        w.state = v1::WORKER_STATE_IDLE;
        w.last_active = absl::Now();
        if (!w.stopped) pool.idle.push_back(w.key);
      }
      return;
    }
    case internal::FromWorker::kRequest: {
      if (w.state != v1::WORKER_STATE_BUSY || !request_handler_) {
        ProtocolErrorLocked(
            w, absl::StrCat("worker request '", m.request().method(), "' outside a task"));
        return;
      }
      // Handled after the lock is released: the answer may come at once.
      const std::string name = pool.settings.name();
      const uint64_t key = w.key, corr = m.request().correlation_id();
      notify->push_back(
          [this, name, key, corr, method = m.request().method(), body = m.request().body()] {
            request_handler_(method, body, [this, name, key, corr](absl::Status s, std::string b) {
              return ReplyToWorker(name, key, corr, s, std::move(b));
            });
          });
      return;
    }
    default:
      ProtocolErrorLocked(w,
                          absl::StrCat("unknown message kind ", static_cast<int>(m.kind_case())));
      return;
  }
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
