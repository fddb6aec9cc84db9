// A task library that takes a second to load (its constructor sleeps), so that a test
// can kill the fork helper while it loads a pool.
#include <unistd.h>

#include <string>

#include "forkpool/task.h"

namespace {
[[maybe_unused]] const bool kSlowLoad = [] {
  ::sleep(1);
  return true;
}();
}  // namespace

FORKPOOL_TASK(slow_loaded, ctx, input) { return std::string("loaded"); }
