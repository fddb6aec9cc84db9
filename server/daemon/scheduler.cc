// Scheduler implementation: task intake, dispatch to idle workers, worker events.
#include "server/daemon/scheduler.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/proto_status.h"
#include "google/protobuf/util/time_util.h"
#include "server/daemon/log.h"
#include "server/daemon/pool_settings.h"
#include "server/daemon/process_util.h"

namespace forkpool {
namespace {

using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp NowProto() {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
}

uint64_t SpecHash(const std::string& pool, const std::string& function,
                  const std::string& input, const std::string& codec,
                  const v1::TaskOptions& options) {
  return absl::HashOf(pool, function, input, codec, options.SerializeAsString());
}

std::string CodecOrText(const std::string& codec) {
  return codec.empty() ? "text" : codec;
}

absl::Duration ToDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// The task's own options over the pool's defaults, field by field.
v1::TaskOptions EffectiveOptions(const Pool& pool, const v1::TaskOptions& own) {
  v1::TaskOptions o = pool.settings.task_defaults();
  if (own.has_time_limit()) *o.mutable_time_limit() = own.time_limit();
  if (own.has_soft_time_limit()) *o.mutable_soft_time_limit() = own.soft_time_limit();
  if (own.has_queue_deadline()) *o.mutable_queue_deadline() = own.queue_deadline();
  if (own.max_retries() != 0) o.set_max_retries(own.max_retries());
  if (own.retry_on_error()) o.set_retry_on_error(true);
  return o;
}

absl::Status ValidateOptions(const v1::TaskOptions& o) {
  for (const auto& [name, d] :
       {std::pair<const char*, const google::protobuf::Duration*>{"time_limit", &o.time_limit()},
        {"soft_time_limit", &o.soft_time_limit()},
        {"queue_deadline", &o.queue_deadline()}}) {
    if (d->seconds() < 0 || d->nanos() < 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must not be negative"));
    }
  }
  if (o.max_retries() < 0 || o.max_retries() > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_retries must be 0 to 100, not ", o.max_retries()));
  }
  return absl::OkStatus();
}

}  // namespace

Scheduler::Scheduler(IoLoop* loop, SchedulerOptions options)
    : loop_(loop), options_(options) {
  absl::MutexLock lock(&mu_);
  sweep_timer_ = loop_->AddTimer(absl::Now() + absl::Seconds(1), [this] { SweepResults(); });
}

Scheduler::~Scheduler() {
  absl::MutexLock lock(&mu_);
  loop_->CancelTimer(sweep_timer_);
}

void Scheduler::AttachHelper(ForkHelperClient* helper) { helper_ = helper; }

void Scheduler::RunNotify(Notify& notify) {
  for (auto& fn : notify) fn();
  notify.clear();
}

void Scheduler::SweepResults() {
  absl::MutexLock lock(&mu_);
  tasks_.SweepExpired(absl::Now(), options_.result_ttl);
  sweep_timer_ = loop_->AddTimer(absl::Now() + absl::Seconds(1), [this] { SweepResults(); });
}

Pool* Scheduler::FindPoolLocked(const std::string& name) {
  auto it = pools_.find(name.empty() ? std::string(kDefaultPoolName) : name);
  return it == pools_.end() || it->second->deleting ? nullptr : it->second.get();
}

// ---------------------------------------------------------------------------
// Pools.

void Scheduler::CreatePool(v1::PoolSettings settings,
                           std::function<void(absl::StatusOr<v1::PoolInfo>)> done) {
  if (settings.libraries().empty()) {
    for (const auto& lib : options_.default_libraries) settings.add_libraries(lib);
  }
  absl::Status valid = NormalizePoolSettings(&settings);
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
  auto pool = std::make_unique<Pool>();
  pool->settings = settings;
  pool->created_at = absl::Now();
  Pool& p = *pool;
  pools_.emplace(settings.name(), std::move(pool));
  const std::string name = settings.name();
  LoadPoolLocked(p, [this, name, done = std::move(done)](absl::Status s) {
    absl::StatusOr<v1::PoolInfo> result;
    {
      absl::MutexLock lock(&mu_);
      Pool* pool = FindPoolLocked(name);
      if (pool == nullptr) {
        result = absl::NotFoundError(absl::StrCat("pool '", name, "' was deleted while loading"));
      } else if (!s.ok()) {
        pools_.erase(name);
        result = s;
      } else {
        for (int i = 0; i < pool->settings.processes(); ++i) StartWorkerLocked(*pool, i);
        result = InfoLocked(*pool);
      }
    }
    done(std::move(result));
  });
}

void Scheduler::LoadPoolLocked(Pool& pool, std::function<void(absl::Status)> done) {
  internal::ToHelper request;
  auto* load = request.mutable_load_pool();
  load->set_pool(pool.settings.name());
  for (const auto& lib : pool.settings.libraries()) load->add_libraries(lib);
  load->set_start_method(StartMethodName(pool.settings.start_method()));
  load->set_initializer(pool.settings.initializer());
  load->set_initargs(pool.settings.initargs().data());
  load->set_memory_limit_bytes(pool.settings.memory_limit_bytes());
  const std::string name = pool.settings.name();
  absl::Status sent = helper_->Request(
      request, [this, name, done](const internal::FromHelper& reply, std::vector<UniqueFd>) {
        absl::Status s = StatusFromProto(reply.status());
        if (s.ok()) {
          absl::MutexLock lock(&mu_);
          if (Pool* pool = FindPoolLocked(name)) {
            pool->functions.clear();
            for (const auto& f : reply.pool_loaded().functions()) pool->functions.insert(f);
            pool->loaded = true;
          }
        }
        done(s);
      });
  if (!sent.ok()) {
    // Called under mu_: hand the failure to the loop thread.
    loop_->Post([done, sent] { done(sent); });
  }
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

void Scheduler::TerminateLocked(Pool& pool, const std::string& why, Notify* notify) {
  pool.closed = true;
  for (const PendingWork& work : pool.pending) {
    if (work.chunk) {
      if (!work.chunk->job->cancelled()) {
        FailChunkItemsLocked(*work.chunk, 0, v1::TASK_STATE_CANCELLED, why, nullptr);
      }
      continue;
    }
    Task* task = tasks_.Find(work.task_id);
    if (task == nullptr || task->result.state() != v1::TASK_STATE_PENDING) continue;
    task->result.set_error(why);
    FinishLocked(&pool, *task, v1::TASK_STATE_CANCELLED, notify);
  }
  pool.pending.clear();
  pool.queued = 0;
  for (auto& [key, w] : pool.workers) {
    if (w.state == v1::WORKER_STATE_BUSY) {
      if (w.chunk) {
        if (!w.chunk->job->cancelled()) {
          FailChunkItemsLocked(*w.chunk, w.chunk_results, v1::TASK_STATE_CANCELLED, why, nullptr);
        }
        w.chunk.reset();
      } else if (Task* task = tasks_.Find(w.task_id);
                 task && !IsTerminal(task->result.state())) {
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
    // Workers still starting are dropped with their slot: the fds the helper passes
    // up for them close unused and the worker exits on EOF.
    for (auto it = pool->workers.begin(); it != pool->workers.end();) {
      it = it->second.conn ? std::next(it) : pool->workers.erase(it);
    }
    pool->deleting = true;
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
      if (w.state == v1::WORKER_STATE_IDLE && w.conn) {
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
    if (!pool->deleting) out.push_back(InfoLocked(*pool));
  }
  return out;
}

absl::StatusOr<v1::PoolInfo> Scheduler::DescribePool(const std::string& name) {
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(name);
  if (pool == nullptr) return absl::NotFoundError(absl::StrCat("unknown pool '", name, "'"));
  return InfoLocked(*pool);
}

// ---------------------------------------------------------------------------
// Workers.

void Scheduler::StartWorkerLocked(Pool& pool, int index) {
  if (draining_ || pool.closed) return;
  WorkerSlot slot;
  slot.key = next_worker_key_++;
  slot.index = index;
  slot.state = v1::WORKER_STATE_STARTING;
  slot.requested_at = absl::Now();
  const uint64_t key = slot.key;
  pool.workers.emplace(key, std::move(slot));
  internal::ToHelper request;
  request.mutable_fork_worker()->set_pool(pool.settings.name());
  request.mutable_fork_worker()->set_worker_index(index);
  const std::string name = pool.settings.name();
  absl::Status sent = helper_->Request(
      request, [this, name, key](const internal::FromHelper& reply, std::vector<UniqueFd> fds) {
        OnWorkerForked(name, key, reply, std::move(fds));
      });
  if (!sent.ok()) {
    // The helper is gone; OnHelperLost starts a new one and this start is retried.
    pool.last_error = std::string(sent.message());
    pool.workers.erase(key);
    ++pool.failed_starts;  // never zero here: a retry at once would recurse
    ScheduleRestartLocked(pool, index);
  }
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
                               const internal::FromHelper& reply, std::vector<UniqueFd> fds) {
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(name);
  auto it = pool != nullptr ? pool->workers.find(key) : decltype(pool->workers.end())();
  if (pool == nullptr || it == pool->workers.end()) {
    // Nobody wants this worker any more (its pool was deleted): its socket closes
    // here, it exits on EOF, and as our child it must still be reaped.
    if (StatusFromProto(reply.status()).ok() && fds.size() == 3) ReapLaterLocked(std::move(fds[1]));
    return;
  }
  WorkerSlot& w = it->second;
  absl::Status s = StatusFromProto(reply.status());
  if (s.ok() && fds.size() != 3) {
    s = absl::InternalError(
        absl::StrCat("fork helper passed ", fds.size(), " fds for a worker; expected 3"));
  }
  absl::StatusOr<std::unique_ptr<WorkerConnection>> conn =
      s.ok() ? WorkerConnection::Create(reply.worker_forked().pid(), std::move(fds[0]),
                                        std::move(fds[1]), std::move(fds[2]),
                                        options_.max_frame_bytes)
             : absl::StatusOr<std::unique_ptr<WorkerConnection>>(s);
  if (!conn.ok()) {
    const int index = w.index;
    pool->last_error = absl::StrCat("starting worker ", index, ": ", conn.status().message());
    Log("pool '", name, "': ", pool->last_error);
    pool->workers.erase(it);
    ++pool->failed_starts;
    ScheduleRestartLocked(*pool, index);
    return;
  }
  w.conn = std::move(*conn);
  ++pool->workers_started;
  ++live_workers_;
  const int sock = w.conn->socket_fd();
  const int pidfd = w.conn->pidfd();
  const int err = w.conn->stderr_fd();
  absl::Status watched = loop_->Watch(
      pidfd, EPOLLIN, [this, name, key](uint32_t) { OnWorkerExit(name, key); });
  if (watched.ok()) {
    watched = loop_->Watch(sock, EPOLLIN, [this, name, key](uint32_t events) {
      OnWorkerSocket(name, key, events);
    });
  }
  if (watched.ok()) {
    watched = loop_->Watch(err, EPOLLIN, [this, name, key](uint32_t) { OnWorkerStderr(name, key); });
  }
  if (!watched.ok()) {
    Log("pool '", name, "': cannot watch worker ", w.conn->pid(), ": ", watched.message());
    w.conn->Kill();  // its exit is still seen through the pidfd if that was watched
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

void Scheduler::OnWorkerStderr(const std::string& name, uint64_t key) {
  absl::MutexLock lock(&mu_);
  auto pit = pools_.find(name);
    Pool* pool = pit == pools_.end() ? nullptr : pit->second.get();
  if (pool == nullptr) return;
  auto it = pool->workers.find(key);
  if (it == pool->workers.end() || !it->second.conn) return;
  WorkerConnection& conn = *it->second.conn;
  const std::string lines = conn.DrainStderr();
  if (!lines.empty()) {
    std::string prefixed;
    for (absl::string_view line : absl::StrSplit(absl::string_view(lines).substr(
                                                     0, lines.size() - 1),
                                                 '\n')) {
      absl::StrAppend(&prefixed, "forkpoold: [", name, "/", it->second.index, " pid ",
                      conn.pid(), "] ", line, "\n");
    }
    std::fwrite(prefixed.data(), 1, prefixed.size(), stderr);
  }
  if (conn.stderr_eof()) loop_->Unwatch(conn.stderr_fd());
}

void Scheduler::OnWorkerSocket(const std::string& name, uint64_t key, uint32_t events) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    auto pit = pools_.find(name);
    Pool* pool = pit == pools_.end() ? nullptr : pit->second.get();
    if (pool == nullptr) return;
    auto it = pool->workers.find(key);
    if (it == pool->workers.end() || !it->second.conn) return;
    WorkerSlot& w = it->second;
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
      // The pool and worker stay valid during Read: only this thread erases them.
      absl::StatusOr<bool> open = w.conn->Read([&](const internal::FromWorker& m)
                                                   ABSL_NO_THREAD_SAFETY_ANALYSIS {
        OnWorkerMessage(*pool, w, m, &notify);
      });
      if (!open.ok()) {
        ProtocolErrorLocked(w, std::string(open.status().message()));
      } else if (!*open) {
        // EOF: the worker is leaving; its pidfd says how. Kill it in case it lingers.
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
  auto pit = pools_.find(name);
  if (pit == pools_.end()) return false;
  auto it = pit->second->workers.find(key);
  if (it == pit->second->workers.end() || !it->second.conn ||
      !it->second.protocol_error.empty() || it->second.state != v1::WORKER_STATE_BUSY) {
    return false;
  }
  internal::ToWorker message;
  internal::WorkerReply* reply = message.mutable_reply();
  reply->set_correlation_id(correlation_id);
  StatusToProto(status, reply->mutable_status());
  reply->set_body(std::move(body));
  return SendLocked(it->second, message);
}

void Scheduler::ProtocolErrorLocked(WorkerSlot& w, const std::string& what) {
  if (w.protocol_error.empty()) {
    w.protocol_error = what;
    Log("worker ", w.conn->pid(), " broke the worker protocol: ", what, "; killing it");
  }
  loop_->Unwatch(w.conn->socket_fd());
  w.conn->Kill();
}

void Scheduler::OnWorkerMessage(Pool& pool, WorkerSlot& w, const internal::FromWorker& m,
                                Notify* notify) {
  if (!w.protocol_error.empty()) return;
  switch (m.kind_case()) {
    case internal::FromWorker::kHello: {
      if (w.state != v1::WORKER_STATE_STARTING) {
        ProtocolErrorLocked(w, "hello sent twice");
        return;
      }
      if (m.hello().protocol_version() != internal::PROTOCOL_VERSION_1) {
        ProtocolErrorLocked(w, absl::StrCat("unsupported protocol version ",
                                            m.hello().protocol_version()));
        return;
      }
      if (m.hello().has_init_error() && m.hello().init_error().code() != 0) {
        pool.last_error = absl::StrCat("initializer failed in worker ", w.conn->pid(), ": ",
                                       m.hello().init_error().message());
        Log("pool '", pool.settings.name(), "': ", pool.last_error);
        w.state = v1::WORKER_STATE_STOPPING;  // it exits; the restart backs off
        ++pool.failed_starts;
        return;
      }
      pool.failed_starts = 0;
      w.state = v1::WORKER_STATE_IDLE;
      pool.idle.push_back(w.key);
      if (!pool.reported_ready) {
        int ready = 0;
        for (const auto& [k, other] : pool.workers) {
          if (other.state == v1::WORKER_STATE_IDLE || other.state == v1::WORKER_STATE_BUSY) ++ready;
        }
        if (ready >= pool.settings.processes()) {
          pool.reported_ready = true;
          Log("pool '", pool.settings.name(), "': ", ready, " workers ready in ",
              absl::FormatDuration(absl::Now() - pool.created_at));
        }
      }
      return;
    }
    case internal::FromWorker::kResults: {
      const auto& r = m.results();
      if (w.state != v1::WORKER_STATE_BUSY || r.batch_id() != w.batch_id) {
        // A cancelled task's worker may still have answered; anything else is wrong.
        if (w.state == v1::WORKER_STATE_STOPPING) return;
        ProtocolErrorLocked(w, absl::StrCat("results for batch ", r.batch_id(),
                                            " that is not running"));
        return;
      }
      const int expected = w.chunk ? w.chunk->count : 1;
      if (static_cast<int>(r.first_index()) != w.chunk_results ||
          w.chunk_results + r.results_size() > expected) {
        ProtocolErrorLocked(w, absl::StrCat("batch ", r.batch_id(), " has ", expected,
                                            " items; got results ", r.first_index(), "..",
                                            r.first_index() + r.results_size(), " after ",
                                            w.chunk_results));
        return;
      }
      if (w.chunk) {
        const MapChunk& chunk = *w.chunk;
        for (int k = 0; k < r.results_size(); ++k) {
          const internal::ItemResult& item = r.results(k);
          MapItemResult out;
          out.index = chunk.first_index + static_cast<uint64_t>(w.chunk_results + k);
          out.ok = item.status().code() == 0;
          if (out.ok) {
            out.output = item.output();
            ++pool.tasks_done;
          } else {
            out.error.set_index(out.index);
            out.error.set_state(v1::TASK_STATE_FAILED);
            out.error.set_error(item.status().message());
            ++pool.tasks_failed;
          }
          chunk.job->AddResult(std::move(out));
        }
        w.chunk_results += r.results_size();
        return;
      }
      w.chunk_results += r.results_size();
      Task* task = tasks_.Find(w.task_id);
      if (task == nullptr || IsTerminal(task->result.state())) return;
      const internal::ItemResult& item = r.results(0);
      if (item.status().code() == 0) {
        task->result.mutable_output()->set_data(item.output());
        task->result.mutable_output()->set_codec(CodecOrText(task->codec));
        task->result.clear_error();  // from an earlier attempt
        task->result.clear_worker_loss();
        FinishLocked(&pool, *task, v1::TASK_STATE_SUCCEEDED, notify);
      } else {
        task->result.set_error(item.status().message());
        RetryOrFinishLocked(pool, *task, v1::TASK_STATE_FAILED, notify);
      }
      return;
    }
    case internal::FromWorker::kDone: {
      if (w.state == v1::WORKER_STATE_STOPPING) return;
      if (w.state != v1::WORKER_STATE_BUSY || m.done().batch_id() != w.batch_id) {
        ProtocolErrorLocked(w, absl::StrCat("batch ", m.done().batch_id(),
                                            " done but it is not running"));
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
      } else if (Task* task = tasks_.Find(w.task_id);
                 w.chunk_results < 1 && task && task->worker_key == w.key &&
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
      if ((max_tasks > 0 && w.tasks_done >= max_tasks) ||
          (max_rss > 0 && w.rss_bytes > max_rss)) {
        internal::ToWorker shutdown;
        shutdown.mutable_shutdown();
        (void)w.conn->Send(shutdown);
        w.state = v1::WORKER_STATE_STOPPING;
      } else {
        w.state = v1::WORKER_STATE_IDLE;
        pool.idle.push_back(w.key);
      }
      return;
    }
    case internal::FromWorker::kRequest: {
      if (w.state != v1::WORKER_STATE_BUSY || !request_handler_) {
        ProtocolErrorLocked(w, absl::StrCat("worker request '", m.request().method(),
                                            "' outside a task"));
        return;
      }
      // Handled after the lock is released: the answer may come at once.
      const std::string name = pool.settings.name();
      const uint64_t key = w.key, corr = m.request().correlation_id();
      notify->push_back([this, name, key, corr, method = m.request().method(),
                         body = m.request().body()] {
        request_handler_(method, body, [this, name, key, corr](absl::Status s, std::string b) {
          return ReplyToWorker(name, key, corr, s, std::move(b));
        });
      });
      return;
    }
    default:
      ProtocolErrorLocked(w, absl::StrCat("unknown message kind ", static_cast<int>(m.kind_case())));
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
  w.limit_timer = loop_->AddTimer(absl::Now() + limit, [this, name, key, batch] {
    OnTimeLimit(name, key, batch);
  });
}

void Scheduler::OnTimeLimit(const std::string& name, uint64_t key, uint64_t batch) {
  absl::MutexLock lock(&mu_);
  auto pit = pools_.find(name);
  if (pit == pools_.end()) return;
  auto it = pit->second->workers.find(key);
  if (it == pit->second->workers.end()) return;
  WorkerSlot& w = it->second;
  w.limit_timer = 0;
  if (w.state != v1::WORKER_STATE_BUSY || w.batch_id != batch || !w.conn) return;
  // The hard limit: the worker's process group is killed; its exit ends the work.
  w.timed_out = true;
  w.conn->Kill();
}

void Scheduler::OnQueueDeadline(const std::string& task_id) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    Task* task = tasks_.Find(task_id);
    if (task == nullptr || task->result.state() != v1::TASK_STATE_PENDING) return;
    task->queue_timer = 0;
    Pool* pool = FindPoolLocked(task->result.pool());
    if (pool != nullptr) --pool->queued;
    task->result.set_error("expired: it did not start before its queue deadline");
    FinishLocked(pool, *task, v1::TASK_STATE_EXPIRED, &notify);
  }
  RunNotify(notify);
}

void Scheduler::RetryOrFinishLocked(Pool& pool, Task& task, v1::TaskState state,
                                    Notify* notify) {
  const v1::TaskOptions eff = EffectiveOptions(pool, task.options);
  if (state == v1::TASK_STATE_WORKER_LOST) ++task.losses;
  const bool may_retry = state == v1::TASK_STATE_WORKER_LOST ||
                         state == v1::TASK_STATE_TIMED_OUT ||
                         (state == v1::TASK_STATE_FAILED && eff.retry_on_error());
  if (task.losses >= options_.poison_threshold) {
    task.result.set_error(absl::StrCat("poison task: it killed ", task.losses,
                                       " workers; the last one: ", task.result.error()));
    FinishLocked(&pool, task, v1::TASK_STATE_FAILED, notify);
    return;
  }
  if (may_retry && task.result.attempts() <= eff.max_retries() && !draining_ && !pool.closed) {
    task.result.set_state(v1::TASK_STATE_PENDING);
    task.worker_key = 0;
    pool.pending.push_front(PendingWork{task.result.task_id(), nullptr});
    ++pool.queued;
    return;
  }
  FinishLocked(&pool, task, state, notify);
}

void Scheduler::OnWorkerExit(const std::string& name, uint64_t key) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    auto pit = pools_.find(name);  // deleting pools too: their workers must be reaped
    if (pit == pools_.end()) return;
    Pool* pool = pit->second.get();
    auto it = pool->workers.find(key);
    if (it == pool->workers.end() || !it->second.conn) return;
    WorkerSlot& w = it->second;
    WorkerConnection& conn = *w.conn;
    // Frames the worker sent before it died still count (results, a Hello that
    // reports a failed initializer): read them before judging the exit.
    if (w.protocol_error.empty()) {
      (void)conn.Read([&](const internal::FromWorker& m) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        OnWorkerMessage(*pool, w, m, &notify);
      });
    }
    // Everything the worker wrote is in the pipe now; keep it for the report.
    const std::string lines = conn.DrainStderr();
    if (!lines.empty()) std::fwrite(lines.data(), 1, lines.size(), stderr);
    const ExitInfo exit = ReapPidfd(conn.pidfd());
    loop_->Unwatch(conn.pidfd());
    loop_->Unwatch(conn.socket_fd());
    loop_->Unwatch(conn.stderr_fd());
    --live_workers_;
    const bool expected =
        (w.state == v1::WORKER_STATE_STOPPING && w.protocol_error.empty()) || w.timed_out;
    if (w.limit_timer != 0) loop_->CancelTimer(w.limit_timer);
    w.limit_timer = 0;
    // Why the work on this worker ended: its own death, our time limit, or a broken
    // protocol.
    v1::WorkerLoss loss;
    loss.set_pid(conn.pid());
    loss.set_signal(exit.signal);
    if (exit.signal != 0) loss.set_signal_name(SignalName(exit.signal));
    loss.set_exit_code(exit.exit_code);
    loss.set_stderr_tail(conn.stderr_tail());
    v1::TaskState state = v1::TASK_STATE_WORKER_LOST;
    std::string error = absl::StrCat("worker lost: ", DescribeExit(exit));
    if (!w.protocol_error.empty()) {
      state = v1::TASK_STATE_FAILED;
      error = absl::StrCat("protocol error: ", w.protocol_error);
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
        if (state != v1::TASK_STATE_FAILED && chunk.attempt <= eff.max_retries() &&
            !draining_ && !pool->closed) {
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
    pool->workers.erase(it);
    if (pool->deleting && pool->workers.empty()) {
      Log("pool '", name, "' deleted");
      pools_.erase(pit);
    } else {
      ScheduleRestartLocked(*pool, index);
      DispatchLocked(*pool);
      WindDownLocked(*pool, &notify);
    }
  }
  RunNotify(notify);
}

// ---------------------------------------------------------------------------
// Tasks.

absl::Status Scheduler::CheckAcceptsLocked(const std::string& pool_name, const Pool* pool,
                                           const std::string& function, int64_t count) {
  if (draining_) return absl::UnavailableError("forkpoold is shutting down; no new work is accepted");
  if (pool == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("unknown pool '", pool_name.empty() ? kDefaultPoolName : pool_name, "'"));
  }
  if (pool->closed) {
    return absl::FailedPreconditionError(
        absl::StrCat("pool '", pool->settings.name(), "' is closed to new work"));
  }
  if (function.empty()) return absl::InvalidArgumentError("no function named");
  if (!pool->functions.count(function)) {
    return absl::NotFoundError(
        absl::StrCat("pool '", pool->settings.name(), "' has no function '", function, "'"));
  }
  const int64_t limit =
      pool->settings.max_queued() > 0 ? pool->settings.max_queued() : options_.max_queued_per_pool;
  if (pool->queued + count > limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "pool '", pool->settings.name(), "' has ", pool->queued, " queued tasks; the limit is ",
        limit));
  }
  return absl::OkStatus();
}

Task& Scheduler::AddTaskLocked(Pool& pool, const std::string& function, std::string input,
                               std::string codec, const v1::TaskOptions& options,
                               std::string request_id, uint64_t spec_hash) {
  Task task;
  task.result.set_task_id(tasks_.NewId());
  task.result.set_state(v1::TASK_STATE_PENDING);
  task.result.set_pool(pool.settings.name());
  task.result.set_function(function);
  *task.result.mutable_submitted_at() = NowProto();
  task.input = std::move(input);
  task.codec = std::move(codec);
  task.options = options;
  task.request_id = std::move(request_id);
  task.spec_hash = spec_hash;
  Task& t = tasks_.Insert(std::move(task));
  pool.pending.push_back(PendingWork{t.result.task_id(), nullptr});
  ++pool.queued;
  const v1::TaskOptions eff = EffectiveOptions(pool, t.options);
  if (eff.has_queue_deadline()) {
    const std::string id = t.result.task_id();
    t.queue_timer = loop_->AddTimer(absl::Now() + ToDuration(eff.queue_deadline()),
                                    [this, id] { OnQueueDeadline(id); });
  }
  return t;
}

absl::StatusOr<SubmitOutcome> Scheduler::Submit(const v1::TaskSpec& spec) {
  FORKPOOL_RETURN_IF_ERROR(ValidateOptions(spec.options()));
  if (spec.input().data().size() > options_.max_input_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "task input of ", spec.input().data().size(), " bytes exceeds the limit of ",
        options_.max_input_bytes, " bytes"));
  }
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(spec.pool());
  FORKPOOL_RETURN_IF_ERROR(CheckAcceptsLocked(spec.pool(), pool, spec.function(), 1));
  const uint64_t hash = SpecHash(pool->settings.name(), spec.function(), spec.input().data(),
                                 spec.input().codec(), spec.options());
  if (!spec.request_id().empty()) {
    if (Task* existing = tasks_.FindByRequestId(spec.request_id())) {
      if (existing->spec_hash != hash) {
        return absl::InvalidArgumentError(absl::StrCat(
            "request id '", spec.request_id(), "' was already used for a different task (",
            existing->result.task_id(), ")"));
      }
      return SubmitOutcome{existing->result.task_id(), true};
    }
  }
  Task& task = AddTaskLocked(*pool, spec.function(), spec.input().data(), spec.input().codec(),
                             spec.options(), spec.request_id(), hash);
  SubmitOutcome out{task.result.task_id(), false};
  DispatchLocked(*pool);
  return out;
}

absl::StatusOr<std::vector<std::string>> Scheduler::SubmitMany(
    const v1::SubmitManyRequest& request) {
  FORKPOOL_RETURN_IF_ERROR(ValidateOptions(request.options()));
  if (request.request_ids_size() != 0 && request.request_ids_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request_ids has ", request.request_ids_size(), " entries for ", request.inputs_size(),
        " inputs; give none or one per input"));
  }
  for (const std::string& input : request.inputs()) {
    if (input.size() > options_.max_input_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "task input of ", input.size(), " bytes exceeds the limit of ",
          options_.max_input_bytes, " bytes"));
    }
  }
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(request.pool());
  FORKPOOL_RETURN_IF_ERROR(
      CheckAcceptsLocked(request.pool(), pool, request.function(), request.inputs_size()));
  std::vector<uint64_t> hashes(request.inputs_size());
  std::vector<Task*> existing(request.inputs_size(), nullptr);
  for (int i = 0; i < request.request_ids_size(); ++i) {
    hashes[i] = SpecHash(pool->settings.name(), request.function(), request.inputs(i),
                         request.codec(), request.options());
    const std::string& rid = request.request_ids(i);
    if (rid.empty()) continue;
    if (Task* t = tasks_.FindByRequestId(rid)) {
      if (t->spec_hash != hashes[i]) {
        return absl::InvalidArgumentError(absl::StrCat(
            "request id '", rid, "' was already used for a different task (",
            t->result.task_id(), ")"));
      }
      existing[i] = t;
    }
  }
  std::vector<std::string> ids;
  ids.reserve(request.inputs_size());
  for (int i = 0; i < request.inputs_size(); ++i) {
    if (existing[i] != nullptr) {
      ids.push_back(existing[i]->result.task_id());
      continue;
    }
    Task& t = AddTaskLocked(*pool, request.function(), request.inputs(i), request.codec(),
                            request.options(),
                            request.request_ids_size() ? request.request_ids(i) : "", hashes[i]);
    ids.push_back(t.result.task_id());
  }
  DispatchLocked(*pool);
  return ids;
}

bool Scheduler::SendLocked(WorkerSlot& w, const internal::ToWorker& message) {
  absl::StatusOr<bool> more = w.conn->Send(message);
  if (!more.ok()) {
    ProtocolErrorLocked(w, std::string(more.status().message()));
    return false;
  }
  if (*more && !w.writing) {
    w.writing = true;
    (void)loop_->Modify(w.conn->socket_fd(), EPOLLIN | EPOLLOUT);
  }
  return true;
}

bool Scheduler::SendTaskLocked(Pool& pool, WorkerSlot& w, Task& task) {
  internal::ToWorker message;
  internal::RunBatch* run = message.mutable_run();
  const uint64_t batch = next_batch_++;
  run->set_batch_id(batch);
  run->set_function(task.result.function());
  run->add_inputs(task.input);
  run->set_task_id(task.result.task_id());
  run->set_attempt(task.result.attempts() + 1);
  run->set_codec(CodecOrText(task.codec));
  const v1::TaskOptions eff = EffectiveOptions(pool, task.options);
  const absl::Duration limit = ToDuration(eff.time_limit());
  if (limit > absl::ZeroDuration()) {
    run->set_deadline_unix_ns(absl::ToUnixNanos(absl::Now() + limit));
  }
  run->set_soft_time_limit_ns(absl::ToInt64Nanoseconds(ToDuration(eff.soft_time_limit())));
  if (!SendLocked(w, message)) return false;
  if (task.queue_timer != 0) {
    loop_->CancelTimer(task.queue_timer);
    task.queue_timer = 0;
  }
  --pool.queued;
  ++running_;
  w.state = v1::WORKER_STATE_BUSY;
  w.task_id = task.result.task_id();
  w.batch_id = batch;
  task.worker_key = w.key;
  task.result.set_state(v1::TASK_STATE_RUNNING);
  task.result.set_attempts(task.result.attempts() + 1);
  task.result.set_worker_pid(w.conn->pid());
  *task.result.mutable_started_at() = NowProto();
  ArmTimeLimitLocked(pool, w, limit);
  return true;
}

bool Scheduler::SendChunkLocked(Pool& pool, WorkerSlot& w, std::shared_ptr<MapChunk> chunk) {
  internal::ToWorker message;
  internal::RunBatch* run = message.mutable_run();
  const uint64_t batch = next_batch_++;
  run->set_batch_id(batch);
  run->set_function(chunk->job->function());
  run->mutable_inputs()->Reserve(chunk->count);
  for (int i = 0; i < chunk->count; ++i) run->add_inputs(chunk->input(i));
  run->set_task_id(chunk->job->id());
  run->set_attempt(chunk->attempt);
  run->set_codec(CodecOrText(chunk->job->codec()));
  // For a chunk the hard limit covers the whole chunk: the per-item limit times its
  // items; the soft limit is per item (the worker times each one).
  const v1::TaskOptions eff = EffectiveOptions(pool, chunk->job->options());
  const absl::Duration limit = ToDuration(eff.time_limit()) * chunk->count;
  if (limit > absl::ZeroDuration()) {
    run->set_deadline_unix_ns(absl::ToUnixNanos(absl::Now() + limit));
  }
  run->set_soft_time_limit_ns(absl::ToInt64Nanoseconds(ToDuration(eff.soft_time_limit())));
  if (!SendLocked(w, message)) return false;
  pool.queued -= chunk->count;
  ++running_;
  w.state = v1::WORKER_STATE_BUSY;
  w.chunk = std::move(chunk);
  w.chunk_results = 0;
  w.batch_id = batch;
  ArmTimeLimitLocked(pool, w, limit);
  return true;
}

void Scheduler::DispatchLocked(Pool& pool) {
  while (!pool.idle.empty() && !pool.pending.empty()) {
    PendingWork work = std::move(pool.pending.front());
    pool.pending.pop_front();
    Task* task = nullptr;
    if (work.chunk) {
      // A cancelled map's chunk: its inputs may already be gone; drop it unread.
      if (work.chunk->job->cancelled()) {
        pool.queued -= work.chunk->count;
        continue;
      }
    } else {
      task = tasks_.Find(work.task_id);
      if (task == nullptr || task->result.state() != v1::TASK_STATE_PENDING) continue;
    }
    const uint64_t key = pool.idle.back();
    pool.idle.pop_back();
    auto it = pool.workers.find(key);
    if (it == pool.workers.end() || it->second.state != v1::WORKER_STATE_IDLE) {
      pool.pending.push_front(std::move(work));
      continue;
    }
    const bool sent = work.chunk ? SendChunkLocked(pool, it->second, work.chunk)
                                 : SendTaskLocked(pool, it->second, *task);
    if (!sent) pool.pending.push_front(std::move(work));
  }
}

void Scheduler::QueueChunksLocked(Pool& pool, const std::shared_ptr<MapJob>& job,
                                  uint64_t first_index, std::vector<std::string>* owned,
                                  const google::protobuf::RepeatedPtrField<std::string>* source,
                                  int count, uint32_t chunksize) {
  const int size = std::max<int>(1, static_cast<int>(std::min<uint32_t>(
                                        chunksize, static_cast<uint32_t>(count))));
  for (int begin = 0; begin < count; begin += size) {
    auto chunk = std::make_shared<MapChunk>();
    chunk->job = job;
    chunk->first_index = first_index + static_cast<uint64_t>(begin);
    chunk->count = std::min(size, count - begin);
    if (source != nullptr) {
      chunk->source = source;
      chunk->source_offset = begin;
    } else {
      chunk->owned.reserve(static_cast<size_t>(chunk->count));
      for (int i = 0; i < chunk->count; ++i) {
        chunk->owned.push_back(std::move((*owned)[static_cast<size_t>(begin + i)]));
      }
    }
    pool.queued += chunk->count;
    pool.pending.push_back(PendingWork{std::string(), std::move(chunk)});
  }
}

absl::Status Scheduler::StartMap(const std::shared_ptr<MapJob>& job,
                                 const google::protobuf::RepeatedPtrField<std::string>* inputs,
                                 uint32_t chunksize) {
  for (const std::string& input : *inputs) {
    if (input.size() > options_.max_input_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "map input of ", input.size(), " bytes exceeds the limit of ",
          options_.max_input_bytes, " bytes"));
    }
  }
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(job->pool());
  FORKPOOL_RETURN_IF_ERROR(CheckAcceptsLocked(job->pool(), pool, job->function(), 0));
  const int n = inputs->size();
  if (chunksize == 0) {
    // multiprocessing's rule: about four chunks per worker.
    const int per = 4 * std::max(1, pool->settings.processes());
    chunksize = static_cast<uint32_t>(std::max(1, (n + per - 1) / per));
  }
  job->AddAccepted(static_cast<uint64_t>(n), /*end=*/true);
  QueueChunksLocked(*pool, job, 0, nullptr, inputs, n, chunksize);
  DispatchLocked(*pool);
  return absl::OkStatus();
}

absl::Status Scheduler::OpenMap(const std::shared_ptr<MapJob>& job) {
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(job->pool());
  return CheckAcceptsLocked(job->pool(), pool, job->function(), 0);
}

absl::Status Scheduler::AddMapInputs(const std::shared_ptr<MapJob>& job,
                                     std::vector<std::string> inputs, uint32_t chunksize) {
  for (const std::string& input : inputs) {
    if (input.size() > options_.max_input_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "map input of ", input.size(), " bytes exceeds the limit of ",
          options_.max_input_bytes, " bytes"));
    }
  }
  absl::MutexLock lock(&mu_);
  Pool* pool = FindPoolLocked(job->pool());
  FORKPOOL_RETURN_IF_ERROR(CheckAcceptsLocked(job->pool(), pool, job->function(),
                                              static_cast<int64_t>(inputs.size())));
  if (job->cancelled()) return absl::CancelledError("the map was cancelled");
  const int n = static_cast<int>(inputs.size());
  if (n == 0) return absl::OkStatus();
  if (chunksize == 0) {
    // Chunks from what has arrived: about one per worker, at most 4096 items.
    const int workers = std::max(1, pool->settings.processes());
    chunksize = static_cast<uint32_t>(std::clamp((n + workers - 1) / workers, 1, 4096));
  }
  const uint64_t first = job->accepted();
  job->AddAccepted(static_cast<uint64_t>(n), /*end=*/false);
  QueueChunksLocked(*pool, job, first, &inputs, nullptr, n, chunksize);
  pool->map_inflight_high_water =
      std::max<int64_t>(pool->map_inflight_high_water, static_cast<int64_t>(job->InFlight()));
  DispatchLocked(*pool);
  return absl::OkStatus();
}

void Scheduler::CancelMap(const std::shared_ptr<MapJob>& job) {
  absl::MutexLock lock(&mu_);
  job->Cancel();
  Pool* pool = FindPoolLocked(job->pool());
  if (pool == nullptr) return;
  // Queued chunks are skipped (and uncounted) at dispatch; running ones are stopped.
  for (auto& [key, w] : pool->workers) {
    if (w.chunk && w.chunk->job == job && w.conn) {
      internal::ToWorker stop;
      stop.mutable_stop()->set_batch_id(w.batch_id);
      (void)SendLocked(w, stop);
    }
  }
  // Drop queued chunks now, so the pool's queued count is true at once.
  std::deque<PendingWork> kept;
  for (PendingWork& work : pool->pending) {
    if (work.chunk && work.chunk->job == job) {
      pool->queued -= work.chunk->count;
    } else {
      kept.push_back(std::move(work));
    }
  }
  pool->pending.swap(kept);
}

void Scheduler::FailChunkItemsLocked(const MapChunk& chunk, int from, v1::TaskState state,
                                     const std::string& error, const v1::WorkerLoss* loss) {
  for (int i = from; i < chunk.count; ++i) {
    MapItemResult r;
    r.index = chunk.first_index + static_cast<uint64_t>(i);
    r.ok = false;
    r.error.set_index(r.index);
    r.error.set_state(state);
    r.error.set_error(error);
    if (loss != nullptr) *r.error.mutable_worker_loss() = *loss;
    chunk.job->AddResult(std::move(r));
  }
}

void Scheduler::RequeueChunkRestLocked(Pool& pool, const MapChunk& chunk, int from) {
  if (from >= chunk.count || chunk.job->cancelled()) return;
  auto rest = std::make_shared<MapChunk>();
  rest->job = chunk.job;
  rest->first_index = chunk.first_index + static_cast<uint64_t>(from);
  rest->count = chunk.count - from;
  rest->attempt = chunk.attempt;
  if (chunk.source != nullptr) {
    rest->source = chunk.source;
    rest->source_offset = chunk.source_offset + from;
  } else {
    rest->owned.assign(chunk.owned.begin() + from, chunk.owned.end());
  }
  pool.queued += rest->count;
  // To the front: these items were already due.
  pool.pending.push_front(PendingWork{std::string(), std::move(rest)});
}

void Scheduler::FinishLocked(Pool* pool, Task& task, v1::TaskState state, Notify* notify) {
  if (IsTerminal(task.result.state())) return;
  if (pool != nullptr) {
    if (state == v1::TASK_STATE_SUCCEEDED) {
      ++pool->tasks_done;
    } else {
      ++pool->tasks_failed;
    }
  }
  tasks_.Finish(task, state, notify);
}

absl::StatusOr<v1::TaskResult> Scheduler::GetResult(const std::string& task_id) {
  absl::MutexLock lock(&mu_);
  Task* task = tasks_.Find(task_id);
  if (task == nullptr) return tasks_.Missing(task_id);
  return task->result;
}

absl::StatusOr<std::optional<v1::TaskResult>> Scheduler::Watch(const std::string& task_id,
                                                               TaskWaiter waiter,
                                                               uint64_t* waiter_id) {
  absl::MutexLock lock(&mu_);
  Task* task = tasks_.Find(task_id);
  if (task == nullptr) return tasks_.Missing(task_id);
  if (IsTerminal(task->result.state())) return std::optional<v1::TaskResult>(task->result);
  *waiter_id = tasks_.AddWaiter(*task, std::move(waiter));
  return std::optional<v1::TaskResult>();
}

void Scheduler::Unwatch(const std::string& task_id, uint64_t waiter_id) {
  absl::MutexLock lock(&mu_);
  tasks_.RemoveWaiter(task_id, waiter_id);
}

absl::StatusOr<v1::CancelResponse> Scheduler::Cancel(const std::string& task_id,
                                                     const std::string& why) {
  Notify notify;
  v1::CancelResponse response;
  {
    absl::MutexLock lock(&mu_);
    Task* task = tasks_.Find(task_id);
    if (task == nullptr) return tasks_.Missing(task_id);
    Pool* pool = FindPoolLocked(task->result.pool());
    if (IsTerminal(task->result.state())) {
      response.set_cancelled(false);
      response.set_state(task->result.state());
      return response;
    }
    if (task->result.state() == v1::TASK_STATE_PENDING) {
      if (pool != nullptr) --pool->queued;
    } else if (task->result.state() == v1::TASK_STATE_RUNNING && pool != nullptr) {
      auto it = pool->workers.find(task->worker_key);
      if (it != pool->workers.end() && it->second.conn) {
        WorkerSlot& w = it->second;
        // Killed, not asked: a running native function cannot be interrupted safely.
        w.conn->Kill();
        w.state = v1::WORKER_STATE_STOPPING;
        w.task_id.clear();
        --running_;
      }
    }
    task->result.set_error(why);
    FinishLocked(pool, *task, v1::TASK_STATE_CANCELLED, &notify);
    response.set_cancelled(true);
    response.set_state(v1::TASK_STATE_CANCELLED);
  }
  RunNotify(notify);
  return response;
}

// ---------------------------------------------------------------------------
// Shutdown.

void Scheduler::BeginDrain() {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    for (auto& [name, pool] : pools_) {
      for (const PendingWork& work : pool->pending) {
        if (work.chunk) {
          FailChunkItemsLocked(*work.chunk, 0, v1::TASK_STATE_CANCELLED,
                               "cancelled: forkpoold is shutting down", nullptr);
          continue;
        }
        Task* task = tasks_.Find(work.task_id);
        if (task == nullptr || task->result.state() != v1::TASK_STATE_PENDING) continue;
        task->result.set_error("cancelled: forkpoold is shutting down");
        FinishLocked(pool.get(), *task, v1::TASK_STATE_CANCELLED, &notify);
      }
      pool->pending.clear();
      pool->queued = 0;
    }
  }
  RunNotify(notify);
}

bool Scheduler::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

bool Scheduler::AwaitRunning(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
  return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

void Scheduler::KillAll(absl::Time deadline) {
  Notify notify;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    for (auto& [name, pool] : pools_) {
      for (auto& [key, w] : pool->workers) {
        if (!w.conn) continue;
        if (w.state == v1::WORKER_STATE_BUSY && w.chunk) {
          FailChunkItemsLocked(*w.chunk, w.chunk_results, v1::TASK_STATE_CANCELLED,
                               "cancelled: forkpoold shut down before the item finished",
                               nullptr);
          w.chunk.reset();
          --running_;
        } else if (w.state == v1::WORKER_STATE_BUSY) {
          if (Task* task = tasks_.Find(w.task_id); task && !IsTerminal(task->result.state())) {
            task->result.set_error("cancelled: forkpoold shut down before the task finished");
            FinishLocked(pool.get(), *task, v1::TASK_STATE_CANCELLED, &notify);
          }
          --running_;
          w.task_id.clear();
        }
        w.state = v1::WORKER_STATE_STOPPING;
        w.conn->Kill();
      }
    }
  }
  RunNotify(notify);
  absl::MutexLock lock(&mu_);
  auto reaped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return live_workers_ == 0; };
  if (!mu_.AwaitWithDeadline(absl::Condition(&reaped), deadline)) {
    Log("shutdown: ", live_workers_, " workers not reaped in time");
  }
}

void Scheduler::OnHelperLost(const std::string& why) {
  Log(why, "; starting a new fork helper");
  absl::Status s = helper_->Respawn();
  if (!s.ok()) {
    Log("cannot start a new fork helper: ", s.message());
    // Try again shortly; workers already running are unaffected.
    loop_->AddTimer(absl::Now() + absl::Seconds(1), [this] { OnHelperLost("fork helper missing"); });
    return;
  }
  absl::MutexLock lock(&mu_);
  for (auto& [name, pool] : pools_) {
    LoadPoolLocked(*pool, [name = name](absl::Status s) {
      if (!s.ok()) Log("pool '", name, "': reloading in the new fork helper: ", s.message());
    });
  }
}

}  // namespace forkpool
