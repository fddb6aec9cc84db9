// IdGenerator implementation.
#include "common/ids.h"

#include <sys/random.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace forkpool {

IdGenerator::IdGenerator() {
  uint64_t r = 0;
  if (::getrandom(&r, sizeof(r), 0) != sizeof(r)) {
    // getrandom cannot fail for 8 bytes after boot; the clock is a fallback only.
    r = static_cast<uint64_t>(
        std::chrono::steady_clock::now().time_since_epoch().count());
  }
  instance_ = absl::StrFormat("%016x", r);
}

std::string IdGenerator::Next(absl::string_view kind) {
  return absl::StrCat(kind, "-", instance_, "-", ++counter_);
}

}  // namespace forkpool
