// A task library whose static initializer starts a detached thread that sleeps
// forever (as OpenBLAS starts threads in its constructors): the process that loads it
// is no longer single-threaded. Otherwise a valid library with one task.
#include <unistd.h>

#include <string>
#include <thread>

#include "forkpool/task.h"

namespace {
[[maybe_unused]] const bool kThreadWhileLoading = [] {
  std::thread([] {
    while (true) ::pause();
  }).detach();
  return true;
}();
}  // namespace

FORKPOOL_TASK(bad_load_thread_task, ctx, input) { return std::string("ran"); }
