// PoolExecutor, dispatch and frames: work from the broker to idle workers, and
// what a worker says (hello, results, batch done, requests from its tasks) and
// what a broken frame costs it.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/packed_items.h"
#include "common/proto_status.h"
#include "common/text_limit.h"
#include "server/daemon/executor/pool_executor.h"
#include "server/daemon/log.h"

namespace forkpool {

void PoolExecutor::WorkAdded() {
  absl::MutexLock lock(&mu_);
  DispatchLocked();
}

void PoolExecutor::AbandonRunning(const std::string& task_id, uint64_t worker_key) {
  absl::MutexLock lock(&mu_);
  WorkerSlot* w = FindLocked(worker_key);
  if (w == nullptr || !w->busy() || w->work->chunk || w->work->task_id != task_id) return;
  // Its task has ended (cancelled): the worker is killed and replaced; what it
  // still sends is ignored.
  deps_.census->AddRunning(-1);
  w->work.reset();
  KillLocked(*w);
}

void PoolExecutor::StopChunks(const std::shared_ptr<MapJob>& job) {
  absl::MutexLock lock(&mu_);
  for (auto& [key, w] : workers_) {
    if (!w.running_chunk() || w.work->chunk->job != job) continue;
    internal::ToWorker stop;
    stop.mutable_stop()->set_batch_id(w.batch_id);
    (void)SendLocked(w, stop);
    // An item that does not stop (a task that never returns to the loop) would
    // hold the worker for nobody: its worker is killed after a grace.
    std::weak_ptr<PoolExecutor> weak = weak_from_this();
    const uint64_t k = w.key, batch = w.batch_id;
    clock_->AddTimerAfter(options_.cancel_grace, [weak, k, batch] {
      if (auto self = weak.lock()) self->OnStopGrace(k, batch);
    });
  }
}

void PoolExecutor::DispatchLocked() {
  while (!idle_.empty()) {
    const uint64_t key = idle_.back();
    WorkerSlot* w = FindLocked(key);
    if (w == nullptr || w->state != v1::WORKER_STATE_IDLE || !w->process) {
      idle_.pop_back();
      continue;
    }
    // The worker may have been stopped (SIGSTOP) since the last sweep: ask the
    // kernel before handing it work (one waitid, under a microsecond).
    if (StoppedLocked(*w)) continue;  // it is off idle_ now
    std::optional<Dispatch> work = broker_->TakeWork(generation_, key, w->process->pid());
    if (!work) return;
    idle_.pop_back();
    if (!SendWorkLocked(*w, *std::move(work))) continue;
  }
}

bool PoolExecutor::SendWorkLocked(WorkerSlot& w, Dispatch work) {
  internal::ToWorker message;
  internal::RunBatch* run = message.mutable_run();
  const uint64_t batch = next_batch_++;
  run->set_batch_id(batch);
  run->set_function(work.function);
  absl::Duration limit = work.time_limit;
  if (work.chunk) {
    const std::string_view packed = work.chunk->packed();
    run->set_inputs(packed.data(), packed.size());
    // For a chunk the hard limit covers the whole chunk (the per-item limit
    // times its items); the soft limit is per item (the worker times each).
    limit = limit * work.chunk->count;
  } else {
    AppendPackedItem(*work.input, run->mutable_inputs());
  }
  run->set_task_id(work.task_id);
  run->set_attempt(work.attempt);
  run->set_codec(work.codec);
  if (limit > absl::ZeroDuration()) {
    // The worker's own clock (for the SDK's deadline) is the wall clock.
    run->set_deadline_unix_ns(absl::ToUnixNanos(clock_->WallNow() + limit));
  }
  run->set_soft_time_limit_ns(absl::ToInt64Nanoseconds(work.soft_time_limit));
  if (!SendLocked(w, message)) {
    broker_->ReturnWork(generation_, std::move(work));
    return false;
  }
  deps_.census->AddRunning(1);
  w.state = v1::WORKER_STATE_BUSY;
  w.work = std::move(work);
  w.chunk_results = 0;
  w.batch_id = batch;
  w.last_active = clock_->Now();
  ArmTimeLimitLocked(w, limit);
  return true;
}

bool PoolExecutor::SendLocked(WorkerSlot& w, const internal::ToWorker& message) {
  absl::Status sent = w.process->Send(message);
  if (!sent.ok()) {
    ProtocolErrorLocked(w, std::string(sent.message()));
    return false;
  }
  return true;
}

bool PoolExecutor::ReplyToWorker(uint64_t key, uint64_t correlation_id, const absl::Status& status,
                                 std::string body) {
  absl::MutexLock lock(&mu_);
  WorkerSlot* w = FindLocked(key);
  if (w == nullptr || !w->process || !w->protocol_error.empty() || !w->busy()) return false;
  internal::ToWorker message;
  internal::WorkerReply* reply = message.mutable_reply();
  reply->set_correlation_id(correlation_id);
  StatusToProto(status, reply->mutable_status());
  reply->set_body(std::move(body));
  return SendLocked(*w, message);
}

void PoolExecutor::ProtocolErrorLocked(WorkerSlot& w, const std::string& what) {
  if (w.protocol_error.empty()) {
    w.protocol_error = what;
    Log("worker ", w.process->pid(), " broke the worker protocol: ", what, "; killing it");
  }
  w.process->StopReading();
  w.process->Kill();
}

void PoolExecutor::BatchOverLocked(WorkerSlot& w) {
  deps_.census->AddRunning(-1);
  clock_->CancelTimer(w.limit_timer);
  w.limit_timer = 0;
  w.work.reset();
  w.chunk_results = 0;
  w.batch_id = 0;
  ++w.tasks_done;
  const int max_tasks = settings_.max_tasks_per_child();
  const int64_t max_rss = settings_.max_memory_per_child_bytes();
  if ((max_tasks > 0 && w.tasks_done >= max_tasks) || (max_rss > 0 && w.rss_bytes > max_rss)) {
    internal::ToWorker shutdown;
    shutdown.mutable_shutdown();
    w.state = v1::WORKER_STATE_STOPPING;
    (void)SendLocked(w, shutdown);
  } else {
    w.state = v1::WORKER_STATE_IDLE;
    w.last_active = clock_->Now();
    if (!w.stopped) idle_.push_back(w.key);
  }
}

void PoolExecutor::OnFrameLocked(WorkerSlot& w, internal::FromWorker& m, Notify* notify) {
  if (!w.protocol_error.empty()) return;
  switch (m.kind_case()) {
    case internal::FromWorker::kHello:
      OnHelloLocked(w, m.hello());
      return;
    case internal::FromWorker::kResults:
      OnResultsLocked(w, m, notify);
      return;
    case internal::FromWorker::kDone:
      OnDoneLocked(w, m.done(), notify);
      return;
    case internal::FromWorker::kRequest: {
      if (!w.busy() || !deps_.request_handler) {
        ProtocolErrorLocked(
            w, absl::StrCat("worker request '", m.request().method(), "' outside a task"));
        return;
      }
      // Handled after the lock is released: the answer may come at once.
      std::weak_ptr<PoolExecutor> weak = weak_from_this();
      const uint64_t key = w.key, corr = m.request().correlation_id();
      notify->push_back([handler = deps_.request_handler, weak, key, corr,
                         method = m.request().method(), body = m.request().body()] {
        handler(method, body, [weak, key, corr](absl::Status s, std::string b) {
          auto self = weak.lock();
          return self != nullptr && self->ReplyToWorker(key, corr, s, std::move(b));
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

void PoolExecutor::OnHelloLocked(WorkerSlot& w, const internal::Hello& hello) {
  // A worker stopped while it started (its pool terminated) may still say hello.
  if (w.state == v1::WORKER_STATE_STOPPING) return;
  if (w.state != v1::WORKER_STATE_STARTING) {
    ProtocolErrorLocked(w, "hello sent twice");
    return;
  }
  if (hello.protocol_version() != internal::PROTOCOL_VERSION_1) {
    ProtocolErrorLocked(w, absl::StrCat("unsupported protocol version ", hello.protocol_version()));
    return;
  }
  if (hello.has_init_error() && hello.init_error().code() != 0) {
    last_error_ = absl::StrCat("initializer failed in worker ", w.process->pid(), ": ",
                               CapText(hello.init_error().message(), options_.max_error_bytes));
    Log("pool '", settings_.name(), "': ", last_error_);
    w.state = v1::WORKER_STATE_STOPPING;  // it exits; the restart backs off
    ++failed_starts_;
    return;
  }
  failed_starts_ = 0;
  clock_->CancelTimer(w.start_timer);
  w.start_timer = 0;
  w.last_active = clock_->Now();
  w.state = v1::WORKER_STATE_IDLE;
  idle_.push_back(w.key);
  if (reported_ready_) return;
  int ready = 0;
  for (const auto& [k, other] : workers_) {
    if (other.state == v1::WORKER_STATE_IDLE || other.state == v1::WORKER_STATE_BUSY) ++ready;
  }
  if (ready >= settings_.processes()) {
    reported_ready_ = true;
    const MonoTime now = clock_->Now();
    Log("pool '", settings_.name(), "': ", ready, " workers ready in ",
        absl::FormatDuration(now - created_at_), " (loaded in ",
        absl::FormatDuration(loaded_at_ - created_at_), ", workers started in ",
        absl::FormatDuration(now - loaded_at_), ")");
  }
}

void PoolExecutor::OnResultsLocked(WorkerSlot& w, internal::FromWorker& m, Notify* notify) {
  const auto& r = m.results();
  if (!w.busy() || r.batch_id() != w.batch_id) {
    // A cancelled task's worker may still have answered; anything else is
    // wrong.
    if (w.state == v1::WORKER_STATE_STOPPING) return;
    ProtocolErrorLocked(w,
                        absl::StrCat("results for batch ", r.batch_id(), " that is not running"));
    return;
  }
  const int expected = w.work->chunk ? w.work->chunk->count : 1;
  const int room = expected - w.chunk_results;
  // The outputs are checked before anything is taken from them: a worker's
  // frame is not trusted.
  absl::StatusOr<size_t> n = CountPackedItems(r.outputs(), ~size_t{0}, "outputs");
  if (!n.ok() || *n == 0 || static_cast<int>(r.first_index()) != w.chunk_results ||
      *n > static_cast<size_t>(room)) {
    ProtocolErrorLocked(
        w, n.ok() ? absl::StrCat("batch ", r.batch_id(), " has ", expected, " items; got results ",
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
      ProtocolErrorLocked(w, absl::StrCat("results for batch ", r.batch_id(), ": error for item ",
                                          error.index(), " is out of order, outside ",
                                          r.first_index(), "..", r.first_index() + *n, " or OK"));
      return;
    }
  }
  if (w.work->chunk) {
    const MapChunk& chunk = *w.work->chunk;
    MapRun run;
    run.first_index = chunk.first_index + static_cast<uint64_t>(w.chunk_results);
    run.count = *n;
    run.input_bytes =
        chunk.inputs->RangeBytes(chunk.begin + static_cast<size_t>(w.chunk_results),
                                 chunk.begin + static_cast<size_t>(w.chunk_results + count));
    // The frame is ours to consume: the outputs move instead of being copied.
    run.outputs = std::move(*m.mutable_results()->mutable_outputs());
    run.errors.reserve(static_cast<size_t>(r.errors_size()));
    for (const internal::ItemError& error : r.errors()) {
      v1::MapItemError& e = run.errors.emplace_back();
      e.set_index(chunk.first_index + error.index());
      e.set_state(v1::TASK_STATE_FAILED);
      e.set_error(CapText(error.status().message(), options_.max_error_bytes));
    }
    // Counted here, not in the broker: a lock less per results frame.
    map_items_done_ += count - r.errors_size();
    map_items_failed_ += r.errors_size();
    chunk.job->AddRun(std::move(run));
    w.chunk_results += count;
    return;
  }
  w.chunk_results += count;
  if (r.errors_size() == 0) {
    PackedItemReader reader(r.outputs());
    std::string_view output;
    reader.Next(&output);  // counted above: there is one
    broker_->TaskSucceeded(w.work->task_id, w.key, output, notify);
  } else {
    broker_->TaskFailed(w.work->task_id, w.key, v1::TASK_STATE_FAILED,
                        std::string(r.errors(0).status().message()), nullptr,
                        /*may_retry=*/!closed_ && !draining_, notify);
  }
}

void PoolExecutor::OnDoneLocked(WorkerSlot& w, const internal::BatchDone& done, Notify* notify) {
  if (w.state == v1::WORKER_STATE_STOPPING) return;
  if (!w.busy() || done.batch_id() != w.batch_id) {
    ProtocolErrorLocked(w, absl::StrCat("batch ", done.batch_id(), " done but it is not running"));
    return;
  }
  if (w.work->chunk) {
    // Items left unanswered were stopped (StopBatch) or skipped.
    if (w.chunk_results < w.work->chunk->count && !w.work->chunk->job->cancelled()) {
      TaskBroker::FailChunkItems(*w.work->chunk, w.chunk_results, v1::TASK_STATE_FAILED,
                                 "protocol error: the worker finished the batch without a result "
                                 "for this item",
                                 nullptr);
    }
  } else if (w.chunk_results < 1) {
    broker_->TaskFailed(w.work->task_id, w.key, v1::TASK_STATE_FAILED,
                        "protocol error: the worker finished the batch without a result", nullptr,
                        /*may_retry=*/false, notify);
  }
  w.rss_bytes = done.rss_bytes();
  BatchOverLocked(w);
}

}  // namespace forkpool
