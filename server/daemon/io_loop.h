// IoLoop: the daemon's one epoll loop. It reads every worker and helper socket,
// reaps workers through pidfds, accepts connections, and owns every timer.
#ifndef FORKPOOL_SERVER_DAEMON_IO_LOOP_H_
#define FORKPOOL_SERVER_DAEMON_IO_LOOP_H_

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

namespace forkpool {

// Thread-safe: Watch, Unwatch, Post, AddTimer and CancelTimer may be called from any
// thread. Callbacks run on the loop's thread, with no IoLoop lock held, so they may
// call back into the loop.
class IoLoop {
 public:
  using FdCallback = std::function<void(uint32_t events)>;
  using TimerId = uint64_t;

  static absl::StatusOr<std::unique_ptr<IoLoop>> Create();
  ~IoLoop();

  // Starts the loop's thread. Returns at once.
  void Start();
  // Asks the loop to stop and joins its thread. Pending timers are dropped.
  void Stop();
  // True on the loop's own thread.
  bool InLoopThread() const;

  // Calls `cb` with the epoll events whenever `fd` is ready. The fd stays the
  // caller's; Unwatch it before closing it.
  absl::Status Watch(int fd, uint32_t events, FdCallback cb);
  // Changes the events watched for `fd`.
  absl::Status Modify(int fd, uint32_t events);
  // Stops watching `fd`; a callback already running may still finish.
  void Unwatch(int fd);
  // Runs `fn` soon on the loop's thread.
  void Post(std::function<void()> fn);
  // Runs `fn` on the loop's thread at `deadline` unless cancelled first.
  TimerId AddTimer(absl::Time deadline, std::function<void()> fn);
  // Cancels a timer; harmless if it has fired or was cancelled.
  void CancelTimer(TimerId id);

 private:
  IoLoop(UniqueFd epoll, UniqueFd wake, UniqueFd timer);
  void Run();
  void Wake();
  void ArmTimerLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunDueTimers();

  const UniqueFd epoll_;
  const UniqueFd wake_;   // eventfd
  const UniqueFd timer_;  // timerfd, armed for the earliest timer
  std::thread thread_;
  std::atomic<std::thread::id> thread_id_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Callbacks are shared so that one can run while its fd is unwatched.
  std::unordered_map<int, std::shared_ptr<FdCallback>> watches_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> posted_ ABSL_GUARDED_BY(mu_);
  // (deadline, id) -> callback; id breaks ties in creation order.
  std::map<std::pair<absl::Time, TimerId>, std::function<void()>> timers_
      ABSL_GUARDED_BY(mu_);
  std::unordered_map<TimerId, absl::Time> timer_deadlines_ ABSL_GUARDED_BY(mu_);
  TimerId next_timer_ ABSL_GUARDED_BY(mu_) = 1;
  absl::Time armed_for_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_IO_LOOP_H_
