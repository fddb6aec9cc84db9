// Clock: the daemon's sense of time. Every timer and deadline is a point on
// CLOCK_MONOTONIC (MonoTime), so a step of the wall clock moves none of them;
// wall time is read only for the timestamps replies carry.
#ifndef FORKPOOL_SERVER_DAEMON_NET_CLOCK_H_
#define FORKPOOL_SERVER_DAEMON_NET_CLOCK_H_

#include <cstdint>
#include <functional>

#include "absl/time/time.h"

namespace forkpool {

// A point on CLOCK_MONOTONIC: the time since that clock's zero. Infinite
// durations stay infinite (absl::Duration arithmetic saturates).
class MonoTime {
 public:
  constexpr MonoTime() = default;
  static constexpr MonoTime FromSinceZero(absl::Duration d) { return MonoTime(d); }
  static constexpr MonoTime Infinite() { return MonoTime(absl::InfiniteDuration()); }
  constexpr absl::Duration since_zero() const { return d_; }

  friend MonoTime operator+(MonoTime t, absl::Duration d) { return MonoTime(t.d_ + d); }
  friend MonoTime operator-(MonoTime t, absl::Duration d) { return MonoTime(t.d_ - d); }
  friend absl::Duration operator-(MonoTime a, MonoTime b) { return a.d_ - b.d_; }
  friend bool operator<(MonoTime a, MonoTime b) { return a.d_ < b.d_; }
  friend bool operator<=(MonoTime a, MonoTime b) { return a.d_ <= b.d_; }
  friend bool operator>(MonoTime a, MonoTime b) { return a.d_ > b.d_; }
  friend bool operator>=(MonoTime a, MonoTime b) { return a.d_ >= b.d_; }
  friend bool operator==(MonoTime a, MonoTime b) { return a.d_ == b.d_; }
  friend bool operator!=(MonoTime a, MonoTime b) { return a.d_ != b.d_; }

 private:
  constexpr explicit MonoTime(absl::Duration d) : d_(d) {}
  absl::Duration d_;
};

// Reads CLOCK_MONOTONIC.
MonoTime MonotonicNow();

// Time and timers. Implementations say which thread runs timer callbacks
// (IoLoop: its own; FakeClock: whoever advances it). Thread-safe.
class Clock {
 public:
  using TimerId = uint64_t;
  virtual ~Clock() = default;

  // Now, on the monotonic clock: for every deadline and duration.
  virtual MonoTime Now() = 0;
  // Now, on the wall clock: only for timestamps shown to people.
  virtual absl::Time WallNow() = 0;
  // Runs `fn` once at `deadline` unless cancelled first; timers with equal
  // deadlines run in the order they were added. Never returns 0.
  virtual TimerId AddTimer(MonoTime deadline, std::function<void()> fn) = 0;
  // Cancels a timer; harmless if it has fired or was cancelled (or is 0).
  virtual void CancelTimer(TimerId id) = 0;

  TimerId AddTimerAfter(absl::Duration delay, std::function<void()> fn) {
    return AddTimer(Now() + delay, std::move(fn));
  }
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_NET_CLOCK_H_
