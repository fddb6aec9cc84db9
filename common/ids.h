// Ids unique across daemons: a random per-daemon prefix plus a counter.
#ifndef FORKPOOL_COMMON_IDS_H_
#define FORKPOOL_COMMON_IDS_H_

#include <atomic>
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

namespace forkpool {

// Makes ids "<kind>-<16 hex digits of this generator's random instance>-<n>".
// Never repeats within a generator; collides across daemons with probability
// 2^-64 per pair. Thread-safe.
class IdGenerator {
 public:
  // Draws the instance part from getrandom(2).
  IdGenerator();
  // The next id of `kind` ("t" for tasks, "m" for maps, "l" for leases).
  std::string Next(absl::string_view kind);
  // The random instance part, as in ids.
  const std::string& instance() const { return instance_; }

 private:
  std::string instance_;
  std::atomic<uint64_t> counter_{0};
};

}  // namespace forkpool

#endif  // FORKPOOL_COMMON_IDS_H_
