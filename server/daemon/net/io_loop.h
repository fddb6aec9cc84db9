// IoLoop: the daemon's one epoll loop. It reads every worker and helper socket,
// reaps workers through pidfds, accepts connections, and owns every timer.
#ifndef FORKPOOL_SERVER_DAEMON_NET_IO_LOOP_H_
#define FORKPOOL_SERVER_DAEMON_NET_IO_LOOP_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "server/daemon/net/clock.h"

namespace forkpool {

// Thread-safe: Watch, Unwatch, Post, AddTimer and CancelTimer may be called from any
// thread. Callbacks run on the loop's thread, with no IoLoop lock held, so they may
// call back into the loop.
class IoLoop : public Clock {
 public:
  using FdCallback = std::function<void(uint32_t events)>;
  using TimerId = Clock::TimerId;

  static absl::StatusOr<std::unique_ptr<IoLoop>> Create();
  ~IoLoop() override;

  // Starts the loop's thread. Returns at once.
  void Start();
  // Asks the loop to stop and joins its thread. Pending timers are dropped.
  void Stop();
  // True on the loop's own thread.
  bool InLoopThread() const;

  // Calls `cb` with the epoll events whenever `fd` is ready. The fd stays the
  // caller's; Unwatch it before closing it. Each watch has its own generation,
  // so an event collected for an earlier watch of the same fd number
  // (unwatched, closed and reused within one epoll_wait batch) never reaches
  // `cb`.
  absl::Status Watch(int fd, uint32_t events, FdCallback cb);
  // Changes the events watched for `fd`. NotFound if `fd` is not watched.
  absl::Status Modify(int fd, uint32_t events);
  // Stops watching `fd`. A callback already running, or already picked by the
  // loop thread, may still finish; called on the loop thread, no later event of
  // this watch is delivered, including events already collected in the current
  // batch.
  void Unwatch(int fd);
  // Runs `fn` soon on the loop's thread.
  void Post(std::function<void()> fn);
  // Runs `fn` on the loop's thread at `deadline` unless cancelled first. The
  // deadline is turned into a point on the monotonic clock now (the time left
  // until `deadline` by absl::Now()), so a later step of the wall clock moves
  // no timer. Never early by absl::Now(); late by up to 1 ms after a small step
  // forward of the wall clock. Timers with equal deadlines run in the order
  // they were added.
  TimerId AddTimer(absl::Time deadline, std::function<void()> fn);

  // Clock: timers run on the loop's thread.
  MonoTime Now() override { return MonotonicNow(); }
  absl::Time WallNow() override { return absl::Now(); }
  TimerId AddTimer(MonoTime deadline, std::function<void()> fn) override;
  void CancelTimer(TimerId id) override;

 private:
  // A watched fd: its callback and the generation its epoll events carry.
  struct WatchEntry {
    uint32_t generation;
    // Shared so that a callback can keep running while its fd is unwatched.
    std::shared_ptr<FdCallback> cb;
  };
  // Timer deadlines are durations on CLOCK_MONOTONIC (since its zero).
  using MonoDuration = absl::Duration;

  IoLoop(UniqueFd epoll, UniqueFd wake, UniqueFd timer);
  void Run();
  void Wake();
  void ArmTimerLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  TimerId AddMonoTimerLocked(MonoDuration when, std::function<void()> fn)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunDueTimers();
  static MonoDuration MonoNow();

  const UniqueFd epoll_;
  const UniqueFd wake_;   // eventfd
  const UniqueFd timer_;  // timerfd, armed for the earliest timer
  std::thread thread_;
  std::atomic<std::thread::id> thread_id_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::unordered_map<int, WatchEntry> watches_ ABSL_GUARDED_BY(mu_);
  // Generation 0 marks the loop's own eventfd and timerfd; watches start at 1.
  uint32_t next_generation_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<std::function<void()>> posted_ ABSL_GUARDED_BY(mu_);
  // (monotonic deadline, id) -> callback; id breaks ties in creation order.
  std::map<std::pair<MonoDuration, TimerId>, std::function<void()>> timers_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<TimerId, MonoDuration> timer_deadlines_ ABSL_GUARDED_BY(mu_);
  TimerId next_timer_ ABSL_GUARDED_BY(mu_) = 1;
  MonoDuration armed_for_ ABSL_GUARDED_BY(mu_) = absl::InfiniteDuration();
  // CLOCK_MONOTONIC minus absl::Now() (since the epoch), as AddTimer last used
  // it.
  absl::Duration wall_to_mono_ ABSL_GUARDED_BY(mu_) = -absl::InfiniteDuration();
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_NET_IO_LOOP_H_
