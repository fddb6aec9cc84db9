// Example task library loaded by the default pool. UTF-8 text in and out, so every
// client and the CLI can call these.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "forkpool/task.h"

namespace {

// Debian's Abseil has its own string_view type, distinct from std::string_view.
absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }
absl::string_view Trim(std::string_view s) { return absl::StripAsciiWhitespace(Absl(s)); }

}  // namespace

// Decimal integer in, its square out.
FORKPOOL_TASK(square, ctx, input) {
  int64_t n = 0;
  if (!absl::SimpleAtoi(Trim(input), &n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("square: input '", Absl(input), "' is not a decimal integer"));
  }
  return absl::StrCat(n * n);
}

// Returns its input unchanged.
FORKPOOL_TASK(echo, ctx, input) { return std::string(input); }

// The worker's pid, in decimal.
FORKPOOL_TASK(getpid, ctx, input) { return absl::StrCat(::getpid()); }

// Sleeps for the given seconds (e.g. "0.5"), then returns its input.
FORKPOOL_TASK(sleep, ctx, input) {
  double seconds = 0;
  if (!absl::SimpleAtod(Trim(input), &seconds) || !(seconds >= 0) ||
      seconds > 86400 * 365) {
    return absl::InvalidArgumentError(
        absl::StrCat("sleep: input '", Absl(input), "' is not a number of seconds"));
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  return std::string(input);
}

// Fails with its input as the message.
FORKPOOL_TASK(fail, ctx, input) {
  return absl::UnknownError(input.empty() ? "fail" : std::string(input));
}

// Kills the worker: "segv", "abort" or "exit" (exit code 3).
FORKPOOL_TASK(crash, ctx, input) {
  const absl::string_view how = Trim(input);
  if (how == "segv") {
    std::fprintf(stderr, "crash: raising SIGSEGV as asked\n");
    std::raise(SIGSEGV);
  } else if (how == "abort") {
    std::fprintf(stderr, "crash: aborting as asked\n");
    std::abort();
  } else if (how == "exit") {
    std::fprintf(stderr, "crash: exiting with code 3 as asked\n");
    std::_Exit(3);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("crash: input '", Absl(input), "' is not one of segv, abort, exit"));
}

// Allocates and touches the given MiB, then frees them; returns "ok".
FORKPOOL_TASK(alloc, ctx, input) {
  int64_t mib = 0;
  if (!absl::SimpleAtoi(Trim(input), &mib) || mib < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("alloc: input '", Absl(input), "' is not a whole number of MiB"));
  }
  const size_t bytes = static_cast<size_t>(mib) << 20;
  std::unique_ptr<char[]> p(new char[bytes]);  // std::bad_alloc under a cap
  for (size_t i = 0; i < bytes; i += 4096) p[i] = static_cast<char>(i);
  return std::string("ok");
}

// Describes the task context: what multiprocessing.current_process() would say.
FORKPOOL_TASK(whoami, ctx, input) {
  return absl::StrCat("pid=", ctx.pid(), " worker=", ctx.worker_index(),
                      " pool=", Absl(ctx.pool()), " task=", Absl(ctx.task_id()),
                      " attempt=", ctx.attempt());
}

// Puts a text into a shared queue, as multiprocessing's Manager example does. Input:
// "QUEUE TEXT [N]" puts TEXT N times (default once) into QUEUE; returns the count.
FORKPOOL_TASK(produce, ctx, input) {
  std::vector<absl::string_view> parts = absl::StrSplit(Absl(input), absl::MaxSplits(' ', 2));
  if (parts.size() < 2) {
    return absl::InvalidArgumentError("produce: input must be 'QUEUE TEXT [N]'");
  }
  int64_t n = 1;
  if (parts.size() == 3 && !absl::SimpleAtoi(parts[2], &n)) {
    return absl::InvalidArgumentError(absl::StrCat("produce: '", parts[2], "' is not a count"));
  }
  for (int64_t i = 0; i < n; ++i) {
    absl::Status s = ctx.QueuePut(std::string_view(parts[0].data(), parts[0].size()),
                                  std::string_view(parts[1].data(), parts[1].size()));
    if (!s.ok()) return s;
  }
  return absl::StrCat(n);
}

// Takes one item from the shared queue named by its input (waits up to 10 s).
FORKPOOL_TASK(consume, ctx, input) {
  return ctx.QueueGet(input, absl::Seconds(10));
}
