// A test task library that defines `square` again (as the example library does), so
// that loading both must be refused as a duplicate definition.
#include <string>
#include <string_view>

#include "forkpool/task.h"

FORKPOOL_TASK(square, ctx, input) { return std::string("not the example square"); }

FORKPOOL_TASK(dup_only, ctx, input) { return std::string(input); }
