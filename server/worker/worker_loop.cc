// Native worker loop implementation.
#include "server/worker/worker_loop.h"

#include <poll.h>
#include <signal.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>

#include "absl/strings/str_cat.h"
#include "common/frame.h"
#include "common/packed_items.h"
#include "common/proto_status.h"
#include "common/status_macros.h"
#include "forkpool/internal/worker.pb.h"
#include "forkpool/v1/forkpool.pb.h"

namespace forkpool {
namespace {

using internal::FromWorker;
using internal::ToWorker;

// Results are flushed when this many bytes are buffered or this long has passed
// since the last flush, so a crash loses little and fast items still batch.
constexpr size_t kFlushBytes = 256 * 1024;
constexpr auto kFlushInterval = std::chrono::milliseconds(2);

// The coarse monotonic clock: about 9 ns a read on this kind of VM, where the precise
// one costs 44 ns, as much as a small task. Its tick (4 ms here) is fine for flushes
// and stop checks, and it is read after every item, so a slow item is never followed
// by more before a check.
std::chrono::nanoseconds CoarseNow() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// Resident set size from /proc/self/statm. Opened per batch: a worker holds no fds
// but 0-3 while its tasks run.
int64_t ReadRssBytes() {
  char buf[128];
  const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  long pages_total = 0, pages_resident = 0;
  if (std::sscanf(buf, "%ld %ld", &pages_total, &pages_resident) != 2) return 0;
  return static_cast<int64_t>(pages_resident) * ::sysconf(_SC_PAGESIZE);
}

// Raised by SIGALRM when an item runs past its soft time limit; the task reads it
// through its context.
volatile sig_atomic_t g_soft_limit_reached = 0;

void OnSoftLimit(int) { g_soft_limit_reached = 1; }

// Arms (or, with 0, disarms) the soft-limit alarm for the next item.
void ArmSoftLimit(int64_t ns) {
  itimerval t{};
  t.it_value.tv_sec = static_cast<time_t>(ns / 1000000000);
  t.it_value.tv_usec = static_cast<suseconds_t>((ns % 1000000000) / 1000);
  if (ns > 0 && t.it_value.tv_sec == 0 && t.it_value.tv_usec == 0) t.it_value.tv_usec = 1;
  ::setitimer(ITIMER_REAL, &t, nullptr);
}

void Die(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "forkpool worker %d: %s: %s\n", ::getpid(), what,
               std::string(status.message()).c_str());
  std::fflush(stderr);
}

class Worker {
 public:
  Worker(const WorkerIdentity& identity, const TaskRegistry& registry, int fd)
      : identity_(identity), registry_(registry), fd_(fd) {}

  int Run() {
    struct sigaction sa {};
    sa.sa_handler = OnSoftLimit;
    sa.sa_flags = SA_RESTART;  // a task's read() or sleep should not fail with EINTR
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGALRM, &sa, nullptr);
    absl::Status init = RunInitializer();
    FromWorker hello_msg;
    auto* hello = hello_msg.mutable_hello();
    hello->set_pid(::getpid());
    hello->set_protocol_version(internal::PROTOCOL_VERSION_1);
    hello->set_runtime("native");
    if (!init.ok()) StatusToProto(init, hello->mutable_init_error());
    std::string out;
    AppendFrame(hello_msg, &out);
    if (absl::Status s = WriteAll(fd_, out); !s.ok()) {
      Die("sending hello", s);
      return 1;
    }
    if (!init.ok()) return 1;

    ToWorker message;
    while (!shutdown_) {
      absl::Status s = ReadMessage(fd_, decoder_, &message);
      if (absl::IsNotFound(s)) return 0;  // the daemon closed our socket
      if (!s.ok()) {
        Die("reading from forkpoold", s);
        return 1;
      }
      switch (message.kind_case()) {
        case ToWorker::kRun:
          if (absl::Status r = RunBatch(message.run()); !r.ok()) {
            Die("answering forkpoold", r);
            return 1;
          }
          break;
        case ToWorker::kShutdown:
          return 0;
        case ToWorker::kStop:   // a stop for a batch already finished
        case ToWorker::kReply:  // a reply nobody waits for
          break;
        default:
          Die("reading from forkpoold",
              absl::InvalidArgumentError(absl::StrCat(
                  "unknown message kind ", static_cast<int>(message.kind_case()))));
          return 1;
      }
    }
    return 0;
  }

 private:
  absl::Status RunInitializer() {
    if (identity_.initializer.empty()) return absl::OkStatus();
    forkpool_task_fn_v1 fn = registry_.Find(identity_.initializer);
    if (fn == nullptr) {
      return absl::NotFoundError(absl::StrCat("pool '", identity_.pool,
                                              "': initializer '", identity_.initializer,
                                              "' not found"));
    }
    PackedWriter output;
    return Call(fn, "", 1, 0, identity_.initargs, &output);
  }

  // Calls one task function through the C ABI; appends its output, packed, to
  // `packed_outputs` (an empty item when it fails).
  absl::Status Call(forkpool_task_fn_v1 fn, const std::string& task_id, int attempt,
                    int64_t deadline_ns, std::string_view input, PackedWriter* packed_outputs) {
    forkpool_task_context_v1 ctx{};
    ctx.pid = pid_;
    ctx.worker_index = identity_.worker_index;
    ctx.pool = identity_.pool.c_str();
    ctx.task_id = task_id.c_str();
    ctx.attempt = attempt;
    ctx.deadline_unix_ns = deadline_ns;
    ctx.soft_limit_reached = reinterpret_cast<const volatile int*>(&g_soft_limit_reached);
    ctx.request = &Worker::RequestThunk;
    ctx.host = this;
    ctx.write_output = &Worker::WriteOutputThunk;
    forkpool_buffer out{nullptr, 0}, err{nullptr, 0};
    outputs_ = packed_outputs;
    output_start_ = packed_outputs->size();
    output_written_ = false;
    const int code = fn(&ctx, input.data(), input.size(), &out, &err);
    outputs_ = nullptr;
    absl::Status status;
    if (code == 0) {
      // Written through write_output (the SDK's way) or, from a library that fills
      // `output` itself, a malloc'd buffer.
      if (!output_written_) {
        packed_outputs->Add(std::string_view(out.data ? out.data : "", out.size));
      }
    } else {
      packed_outputs->Truncate(output_start_);  // whatever a failing task wrote
      packed_outputs->Add("");
      const auto c = (code > 0 && code <= 16) ? static_cast<absl::StatusCode>(code)
                                              : absl::StatusCode::kUnknown;
      status = absl::Status(c, std::string(err.data ? err.data : "", err.size));
    }
    std::free(out.data);
    std::free(err.data);
    return status;
  }

  // The context's write_output: the output goes straight into the packed results.
  // A second call replaces the first.
  static void WriteOutputThunk(void* host, const char* data, size_t size) {
    auto* self = static_cast<Worker*>(host);
    if (self->outputs_ == nullptr) return;  // not inside a call
    self->outputs_->Truncate(self->output_start_);
    self->outputs_->Add(std::string_view(data, size));
    self->output_written_ = true;
  }

  static int RequestThunk(void* host, const char* method, const char* body, size_t size,
                          forkpool_buffer* reply, forkpool_buffer* error) {
    absl::StatusOr<std::string> r =
        static_cast<Worker*>(host)->Request(method, std::string(body, size));
    auto fill = [](absl::string_view s, forkpool_buffer* out) {
      out->data = static_cast<char*>(std::malloc(s.empty() ? 1 : s.size()));
      out->size = out->data ? s.size() : 0;
      if (out->data) std::memcpy(out->data, s.data(), s.size());
    };
    if (!r.ok()) {
      fill(r.status().message(), error);
      return static_cast<int>(r.status().code());
    }
    fill(*r, reply);
    return 0;
  }

  // A task's request to the daemon: the SDK's queue bodies become forkpool.v1
  // messages; the call blocks until the daemon's reply arrives.
  absl::StatusOr<std::string> Request(const std::string& method, const std::string& body) {
    // SDK body: [u32 name length][name][i64 timeout ms, -1 = forever][data].
    if (body.size() < 12) return absl::InvalidArgumentError("malformed queue request");
    uint32_t n = 0;
    for (int i = 0; i < 4; ++i) n |= static_cast<uint32_t>(static_cast<unsigned char>(body[i])) << (8 * i);
    if (body.size() < 12 + static_cast<size_t>(n)) return absl::InvalidArgumentError("malformed queue request");
    const std::string queue = body.substr(4, n);
    uint64_t raw = 0;
    for (int i = 0; i < 8; ++i) raw |= static_cast<uint64_t>(static_cast<unsigned char>(body[4 + n + i])) << (8 * i);
    const int64_t timeout_ms = static_cast<int64_t>(raw);
    const std::string data = body.substr(12 + n);
    FromWorker m;
    internal::WorkerRequest* req = m.mutable_request();
    req->set_correlation_id(++next_request_);
    req->set_method(method);
    auto set_timeout = [&](google::protobuf::Duration* d) {
      d->set_seconds(timeout_ms / 1000);
      d->set_nanos(static_cast<int32_t>((timeout_ms % 1000) * 1000000));
    };
    if (method == "queue.put") {
      v1::PutRequest put;
      put.set_queue(queue);
      put.add_items()->set_data(data);
      if (timeout_ms >= 0) set_timeout(put.mutable_timeout());
      put.SerializeToString(req->mutable_body());
    } else if (method == "queue.get") {
      v1::QueueGetRequest get;
      get.set_queue(queue);
      get.set_max_items(1);
      if (timeout_ms >= 0) set_timeout(get.mutable_timeout());
      get.SerializeToString(req->mutable_body());
    } else {
      return absl::UnimplementedError(absl::StrCat("unknown daemon request '", method, "'"));
    }
    std::string out;
    AppendFrame(m, &out);
    FORKPOOL_RETURN_IF_ERROR(WriteAll(fd_, out));
    // Wait for our reply; other frames (a stop for this batch) are remembered.
    ToWorker in;
    while (true) {
      FORKPOOL_RETURN_IF_ERROR(ReadMessage(fd_, decoder_, &in));
      if (in.has_shutdown()) shutdown_ = true;
      if (in.has_stop()) stop_requested_ = true;
      if (in.has_reply() && in.reply().correlation_id() == req->correlation_id()) break;
    }
    absl::Status status = StatusFromProto(in.reply().status());
    if (!status.ok()) return status;
    if (method == "queue.put") {
      v1::PutResponse r;
      r.ParseFromString(in.reply().body());
      if (r.full()) return absl::DeadlineExceededError(absl::StrCat("queue '", queue, "' is full"));
      return std::string();
    }
    v1::QueueGetResponse r;
    r.ParseFromString(in.reply().body());
    if (r.empty() || r.items_size() == 0) {
      return absl::DeadlineExceededError(absl::StrCat("queue '", queue, "' is empty"));
    }
    return r.items(0).payload().data();
  }

  // Between items: reads, without blocking, what forkpoold sent meanwhile; true if it
  // asked to stop `batch_id`.
  bool StopRequested(uint64_t batch_id) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) {
      const bool stop = stop_requested_;
      stop_requested_ = false;
      return stop;
    }
    absl::StatusOr<size_t> n = decoder_.ReadFrom(fd_);
    if (!n.ok() || *n == 0) return true;  // the daemon is gone: stop now
    bool stop = stop_requested_;
    stop_requested_ = false;
    while (true) {
      auto frame = decoder_.Next();
      if (!frame.ok() || !frame->has_value()) break;
      ToWorker m;
      if (!m.ParseFromArray((*frame)->data(), static_cast<int>((*frame)->size()))) break;
      if (m.has_stop() && m.stop().batch_id() == batch_id) stop = true;
      if (m.has_shutdown()) shutdown_ = true;
    }
    return stop;
  }

  absl::Status RunBatch(const internal::RunBatch& batch) {
    forkpool_task_fn_v1 fn = registry_.Find(batch.function());
    FromWorker results_msg;
    auto* results = results_msg.mutable_results();
    results->set_batch_id(batch.batch_id());
    results->set_first_index(0);
    PackedWriter* outputs = &outputs_buffer_;
    outputs->Truncate(0);
    // The daemon's frame is trusted to be well-formed; a malformed one ends the batch
    // early, which the daemon reports for the items left.
    PackedItemReader inputs(batch.inputs());
    std::string out;
    auto last_flush = CoarseNow();
    auto last_check = last_flush;
    size_t error_bytes = 0;  // of the errors not yet flushed: they count like outputs
    uint32_t index = 0;
    std::string_view input;
    bool more = inputs.Next(&input);
    while (more) {
      absl::Status s;
      if (fn == nullptr) {
        s = absl::NotFoundError(absl::StrCat("pool '", identity_.pool, "' has no function '",
                                             batch.function(), "'"));
        outputs->Add("");
      } else {
        g_soft_limit_reached = 0;
        if (batch.soft_time_limit_ns() > 0) ArmSoftLimit(batch.soft_time_limit_ns());
        s = Call(fn, batch.task_id(), batch.attempt(), batch.deadline_unix_ns(), input, outputs);
        if (batch.soft_time_limit_ns() > 0) ArmSoftLimit(0);
      }
      if (!s.ok()) {
        internal::ItemError* error = results->add_errors();
        error->set_index(index);
        StatusToProto(s, error->mutable_status());
        error_bytes += error->status().message().size() + 16;
      }
      ++index;
      more = inputs.Next(&input);
      if (!more) break;
      const auto now = CoarseNow();
      if (now - last_check >= kFlushInterval) {
        last_check = now;
        if (StopRequested(batch.batch_id())) break;  // the rest stays unanswered
      }
      if (outputs->size() + error_bytes >= kFlushBytes || now - last_flush >= kFlushInterval) {
        results->set_outputs(outputs->Take());
        AppendFrame(results_msg, &out);
        FORKPOOL_RETURN_IF_ERROR(WriteAll(fd_, out));
        out.clear();
        outputs->Recycle(std::move(*results->mutable_outputs()));
        results->clear_errors();
        error_bytes = 0;
        results->set_first_index(index);
        last_flush = now;
      }
    }
    // The last results and BatchDone leave in one write.
    if (!outputs->empty()) {
      results->set_outputs(outputs->Take());
      AppendFrame(results_msg, &out);
      outputs->Recycle(std::move(*results->mutable_outputs()));
    }
    FromWorker done_msg;
    done_msg.mutable_done()->set_batch_id(batch.batch_id());
    done_msg.mutable_done()->set_rss_bytes(ReadRssBytes());
    AppendFrame(done_msg, &out);
    return WriteAll(fd_, out);
  }

  const WorkerIdentity& identity_;
  const TaskRegistry& registry_;
  const int fd_;
  const int pid_ = ::getpid();
  FrameDecoder decoder_;
  bool shutdown_ = false;
  bool stop_requested_ = false;  // a StopBatch read while a request waited
  // The running call's packed outputs and where its item starts (write_output).
  PackedWriter* outputs_ = nullptr;
  PackedWriter outputs_buffer_;  // a batch's results; its storage is reused
  size_t output_start_ = 0;
  bool output_written_ = false;
  uint64_t next_request_ = 0;
};

}  // namespace

int RunWorkerLoop(const WorkerIdentity& identity, const TaskRegistry& registry,
                  UniqueFd socket) {
  Worker worker(identity, registry, socket.get());
  return worker.Run();
}

}  // namespace forkpool
