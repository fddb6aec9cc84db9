// Native task SDK: register named functions that forkpool workers run.
//
//   #include "forkpool/task.h"
//   FORKPOOL_TASK(square, ctx, input) {
//     int64_t n;
//     if (!absl::SimpleAtoi(input, &n)) return absl::InvalidArgumentError("...");
//     return std::to_string(n * n);
//   }
//
// Build the library as a shared object linked with Abseil's status. Across the
// dlopen boundary only the C ABI of task_abi.h is used.
#ifndef FORKPOOL_SDK_TASK_H_
#define FORKPOOL_SDK_TASK_H_

#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "forkpool/task_abi.h"

namespace forkpool {

// What multiprocessing.current_process() tells a Python task, and the way to the
// daemon's services. Valid only during the task call; not thread-safe.
class TaskContext {
 public:
  explicit TaskContext(const forkpool_task_context_v1* c) : c_(c) {}

  // This worker's process id.
  int pid() const { return c_->pid; }
  // The worker's index within its pool (stable across replacements).
  int worker_index() const { return c_->worker_index; }
  // The pool's name.
  std::string_view pool() const { return c_->pool; }
  // The task's id (the map's id for a map item).
  std::string_view task_id() const { return c_->task_id; }
  // 1 for the first attempt, 2 for the first retry, ...
  int attempt() const { return c_->attempt; }
  // The hard deadline, or absl::InfiniteFuture().
  absl::Time deadline() const {
    return c_->deadline_unix_ns == 0 ? absl::InfiniteFuture()
                                     : absl::FromUnixNanos(c_->deadline_unix_ns);
  }
  // True once the soft time limit has passed: the task should wrap up.
  bool soft_limit_reached() const {
    return c_->soft_limit_reached != nullptr && *c_->soft_limit_reached != 0;
  }
  // Puts `data` (codec "text" unless given) into the daemon's shared queue `queue`,
  // waiting up to `timeout` for room (nullopt: forever; zero: not at all).
  // DeadlineExceeded "queue '...' is full" when there was no room; NotFound for an
  // unknown queue.
  absl::Status QueuePut(std::string_view queue, std::string_view data,
                        std::optional<absl::Duration> timeout = std::nullopt) const {
    absl::StatusOr<std::string> r = Request("queue.put", QueueBody(queue, timeout, data));
    return r.status();
  }
  // Takes one item from the shared queue `queue`, waiting up to `timeout` for one.
  // DeadlineExceeded "queue '...' is empty" when none came.
  absl::StatusOr<std::string> QueueGet(std::string_view queue,
                                       std::optional<absl::Duration> timeout = std::nullopt) const {
    return Request("queue.get", QueueBody(queue, timeout, ""));
  }

  // Sends a request to the daemon and blocks for the reply body.
  absl::StatusOr<std::string> Request(std::string_view method,
                                      std::string_view body) const {
    if (c_->request == nullptr) {
      return absl::UnimplementedError("this worker offers no daemon requests");
    }
    forkpool_buffer reply{nullptr, 0}, error{nullptr, 0};
    const std::string m(method);
    const int code = c_->request(c_->host, m.c_str(), body.data(), body.size(),
                                 &reply, &error);
    std::string r(reply.data ? reply.data : "", reply.size);
    std::string e(error.data ? error.data : "", error.size);
    std::free(reply.data);
    std::free(error.data);
    if (code != 0) return absl::Status(static_cast<absl::StatusCode>(code), e);
    return r;
  }

 private:
  // [u32 LE name length][name][i64 LE timeout in ms, -1 = forever][data]: the SDK's
  // queue request body, which the worker turns into forkpool.v1 messages.
  static std::string QueueBody(std::string_view queue, std::optional<absl::Duration> timeout,
                               std::string_view data) {
    std::string body;
    const uint32_t n = static_cast<uint32_t>(queue.size());
    for (int i = 0; i < 4; ++i) body.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    body.append(queue.data(), queue.size());
    const int64_t ms = timeout ? absl::ToInt64Milliseconds(*timeout) : -1;
    for (int i = 0; i < 8; ++i) {
      body.push_back(static_cast<char>((static_cast<uint64_t>(ms) >> (8 * i)) & 0xff));
    }
    body.append(data.data(), data.size());
    return body;
  }

  const forkpool_task_context_v1* c_;
};

// The signature of a task.
using TaskFunction = absl::StatusOr<std::string> (*)(TaskContext&, std::string_view);

namespace sdk_internal {

// The library's registry. Hidden, so that each library has its own.
__attribute__((visibility("hidden"))) inline std::vector<forkpool_task_entry_v1>&
Registry() {
  static std::vector<forkpool_task_entry_v1> entries;
  return entries;
}

__attribute__((visibility("hidden"))) inline bool Register(const char* name,
                                                           forkpool_task_fn_v1 fn) {
  Registry().push_back({name, fn});
  return true;
}

inline void FillBuffer(std::string_view s, forkpool_buffer* out) {
  out->data = static_cast<char*>(std::malloc(s.size() == 0 ? 1 : s.size()));
  if (out->data == nullptr) {
    out->size = 0;
    return;
  }
  std::memcpy(out->data, s.data(), s.size());
  out->size = s.size();
}

// Adapts a TaskFunction to the C ABI; exceptions become statuses.
template <TaskFunction F>
int Trampoline(const forkpool_task_context_v1* c, const char* input, size_t size,
               forkpool_buffer* output, forkpool_buffer* error) {
  try {
    TaskContext ctx(c);
    absl::StatusOr<std::string> r = F(ctx, std::string_view(input, size));
    if (r.ok()) {
      if (c->write_output != nullptr) {
        c->write_output(c->host, r->data(), r->size());
      } else {
        FillBuffer(*r, output);
      }
      return 0;
    }
    // Debian's Abseil has its own string_view type, distinct from std::string_view.
    const auto message = r.status().message();
    FillBuffer(std::string_view(message.data(), message.size()), error);
    const int code = static_cast<int>(r.status().code());
    return code == 0 ? static_cast<int>(absl::StatusCode::kUnknown) : code;
  } catch (const std::bad_alloc&) {
    FillBuffer("out of memory", error);
    return static_cast<int>(absl::StatusCode::kResourceExhausted);
  } catch (const std::exception& e) {
    FillBuffer(std::string("uncaught exception: ") + e.what(), error);
    return static_cast<int>(absl::StatusCode::kInternal);
  } catch (...) {
    FillBuffer("uncaught exception of unknown type", error);
    return static_cast<int>(absl::StatusCode::kInternal);
  }
}

}  // namespace sdk_internal
}  // namespace forkpool

// The library's entry point. Weak, so that every translation unit may define it and
// the library keeps one.
extern "C" __attribute__((visibility("default"), weak)) const forkpool_task_table_v1*
forkpool_get_task_table_v1(void) {
  static forkpool_task_table_v1 table;
  table.abi_version = FORKPOOL_TASK_ABI_VERSION;
  table.count = static_cast<uint32_t>(forkpool::sdk_internal::Registry().size());
  table.entries = forkpool::sdk_internal::Registry().data();
  return &table;
}

// Defines and registers the task `name`, whose parameters are named `ctx`
// (forkpool::TaskContext&) and `input` (std::string_view); the body returns
// absl::StatusOr<std::string>.
#define FORKPOOL_TASK(name, ctx, input)                                          \
  static absl::StatusOr<std::string> name(::forkpool::TaskContext&,             \
                                          std::string_view);                    \
  [[maybe_unused]] static const bool forkpool_task_registered_##name =          \
      ::forkpool::sdk_internal::Register(                                       \
          #name, &::forkpool::sdk_internal::Trampoline<&name>);                 \
  static absl::StatusOr<std::string> name(::forkpool::TaskContext& ctx,         \
                                          std::string_view input)

#endif  // FORKPOOL_SDK_TASK_H_
