// A task library whose static initializer calls abort(): loading it kills the
// process that loads it with SIGABRT (for tests of a bad library's CreatePool).
#include <cstdlib>
#include <string>

#include "forkpool/task.h"

namespace {
[[maybe_unused]] const bool kAbortWhileLoading = [] {
  std::abort();
  return true;
}();
}  // namespace

FORKPOOL_TASK(bad_load_abort_never_runs, ctx, input) { return std::string("unreachable"); }
