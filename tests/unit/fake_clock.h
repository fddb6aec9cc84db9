// FakeClock: a Clock whose time moves only when a test says, running due timers
// on the test's thread; its wall clock can be stepped on its own.
#ifndef FORKPOOL_TESTS_UNIT_FAKE_CLOCK_H_
#define FORKPOOL_TESTS_UNIT_FAKE_CLOCK_H_

#include <functional>
#include <map>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "server/daemon/net/clock.h"

namespace forkpool::testing {

// Thread-safe; timers run in Advance, without the clock's lock.
class FakeClock : public Clock {
 public:
  MonoTime Now() override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  absl::Time WallNow() override {
    absl::MutexLock lock(&mu_);
    return wall_start_ + (now_ - MonoTime()) + wall_step_;
  }
  TimerId AddTimer(MonoTime deadline, std::function<void()> fn) override {
    absl::MutexLock lock(&mu_);
    const TimerId id = next_++;
    timers_.emplace(std::make_pair(deadline, id), std::move(fn));
    return id;
  }
  void CancelTimer(TimerId id) override {
    absl::MutexLock lock(&mu_);
    for (auto it = timers_.begin(); it != timers_.end(); ++it) {
      if (it->first.second == id) {
        timers_.erase(it);
        return;
      }
    }
  }

  // Moves the monotonic clock (and with it the wall clock) forward by `d`,
  // running each timer that falls due, in order, at its own time.
  void Advance(absl::Duration d) {
    MonoTime target;
    {
      absl::MutexLock lock(&mu_);
      target = now_ + d;
    }
    while (true) {
      std::function<void()> fn;
      {
        absl::MutexLock lock(&mu_);
        if (timers_.empty() || timers_.begin()->first.first > target) break;
        auto node = timers_.extract(timers_.begin());
        now_ = std::max(now_, node.key().first);
        fn = std::move(node.mapped());
      }
      fn();
    }
    absl::MutexLock lock(&mu_);
    now_ = target;
  }
  // Steps only the wall clock (an NTP step, a manual date change).
  void StepWall(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    wall_step_ += d;
  }
  size_t pending_timers() {
    absl::MutexLock lock(&mu_);
    return timers_.size();
  }

 private:
  absl::Mutex mu_;
  MonoTime now_ ABSL_GUARDED_BY(mu_) = MonoTime::FromSinceZero(absl::Hours(1));
  const absl::Time wall_start_ = absl::FromUnixSeconds(1'800'000'000);
  absl::Duration wall_step_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<MonoTime, TimerId>, std::function<void()>> timers_ ABSL_GUARDED_BY(mu_);
  TimerId next_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace forkpool::testing

#endif  // FORKPOOL_TESTS_UNIT_FAKE_CLOCK_H_
