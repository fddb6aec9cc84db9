// Scheduler, worker frames: what a worker says (hello, results, batch done, requests
// from its tasks) and what a broken frame costs it. Called under the lock, on the loop
// thread.
#include "absl/strings/str_cat.h"
#include "common/packed_items.h"
#include "common/proto_status.h"
#include "common/utf8.h"
#include "server/daemon/log.h"
#include "server/daemon/scheduler.h"
#include "server/daemon/scheduler_internal.h"

namespace forkpool {

using internal_scheduler::CodecOrText;

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

}  // namespace forkpool
