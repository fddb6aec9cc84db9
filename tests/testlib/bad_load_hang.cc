// A task library whose static initializer never returns (it pauses forever): loading
// it hangs the process that loads it (for tests of a load time-out).
#include <unistd.h>

#include <string>

#include "forkpool/task.h"

namespace {
[[maybe_unused]] const bool kHangWhileLoading = [] {
  while (true) ::pause();
  return true;
}();
}  // namespace

FORKPOOL_TASK(bad_load_hang_never_runs, ctx, input) { return std::string("unreachable"); }
