// A task library whose static initializer calls _exit(3): loading it ends the process
// that loads it with exit code 3 (for tests of a bad library's CreatePool).
#include <unistd.h>

#include <string>

#include "forkpool/task.h"

namespace {
[[maybe_unused]] const bool kExitWhileLoading = [] {
  ::_exit(3);
  return true;
}();
}  // namespace

FORKPOOL_TASK(bad_load_exit_never_runs, ctx, input) { return std::string("unreachable"); }
