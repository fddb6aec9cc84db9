// MemoryBudget: one daemon-wide bound on the bytes clients can make forkpoold
// hold (queued task inputs, kept results, map inputs and unsent results, queue
// items). Past it new work is refused with RESOURCE_EXHAUSTED naming the flag;
// what is already accepted is never dropped for it.
#ifndef FORKPOOL_SERVER_DAEMON_BROKER_MEMORY_BUDGET_H_
#define FORKPOOL_SERVER_DAEMON_BROKER_MEMORY_BUDGET_H_

#include <atomic>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace forkpool {

// Thread-safe (one atomic counter); callers may hold any lock.
class MemoryBudget {
 public:
  // `limit` 0: no bound (the count is still kept).
  explicit MemoryBudget(uint64_t limit) : limit_(limit) {}

  // Takes `bytes` for `what` if they fit; RESOURCE_EXHAUSTED otherwise.
  absl::Status Reserve(uint64_t bytes, absl::string_view what) {
    uint64_t used = used_.load(std::memory_order_relaxed);
    do {
      if (limit_ != 0 && used + bytes > limit_) {
        return absl::ResourceExhaustedError(
            absl::StrCat(what, " of ", bytes, " bytes does not fit: forkpoold holds ", used,
                         " bytes for clients and --max_client_bytes is ", limit_));
      }
    } while (!used_.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed));
    return absl::OkStatus();
  }
  // Whether `bytes` more would fit now (for work whose holder counts itself).
  absl::Status Check(uint64_t bytes, absl::string_view what) const {
    const uint64_t used = used_.load(std::memory_order_relaxed);
    if (limit_ == 0 || used + bytes <= limit_) return absl::OkStatus();
    return absl::ResourceExhaustedError(
        absl::StrCat(what, " of ", bytes, " bytes does not fit: forkpoold holds ", used,
                     " bytes for clients and --max_client_bytes is ", limit_));
  }
  // Counts bytes that cannot be refused (a worker's result): they make later
  // reservations fail instead.
  void Force(uint64_t bytes) { used_.fetch_add(bytes, std::memory_order_relaxed); }
  void Release(uint64_t bytes) {
    uint64_t used = used_.load(std::memory_order_relaxed);
    while (!used_.compare_exchange_weak(used, used >= bytes ? used - bytes : 0,
                                        std::memory_order_relaxed)) {
    }
  }
  // Adds `delta` (which may be negative).
  void Adjust(int64_t delta) {
    if (delta >= 0) {
      Force(static_cast<uint64_t>(delta));
    } else {
      Release(static_cast<uint64_t>(-delta));
    }
  }
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  uint64_t limit() const { return limit_; }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_BROKER_MEMORY_BUDGET_H_
