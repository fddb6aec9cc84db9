// A task library that aborts while loading when the file named by the environment
// variable FORKPOOL_TEST_CRASH_MARKER exists, and otherwise registers "marker_ok":
// a pool that loads fine once and then crashes every process that reloads it.
#include <sys/stat.h>

#include <cstdlib>
#include <string>

#include "forkpool/task.h"

namespace {
[[maybe_unused]] const bool kCrashIfMarked = [] {
  const char* marker = std::getenv("FORKPOOL_TEST_CRASH_MARKER");
  struct stat st;
  if (marker != nullptr && *marker != '\0' && ::stat(marker, &st) == 0) std::abort();
  return true;
}();
}  // namespace

FORKPOOL_TASK(marker_ok, ctx, input) { return std::string("ok"); }
