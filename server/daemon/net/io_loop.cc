// IoLoop implementation: epoll + eventfd (wake-ups) + timerfd (one timer heap).
#include "server/daemon/net/io_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace forkpool {
namespace {

// epoll_event.data.u64 carries (generation << 32 | fd), so an event names the
// watch it was collected for, not just an fd number that may have been reused
// since.
uint64_t EventToken(uint32_t generation, int fd) {
  return (static_cast<uint64_t>(generation) << 32) | static_cast<uint32_t>(fd);
}
int TokenFd(uint64_t token) { return static_cast<int>(token & 0xffffffffu); }
uint32_t TokenGeneration(uint64_t token) { return static_cast<uint32_t>(token >> 32); }

}  // namespace

absl::StatusOr<std::unique_ptr<IoLoop>> IoLoop::Create() {
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll.valid()) return absl::ErrnoToStatus(errno, "epoll_create1(io loop)");
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return absl::ErrnoToStatus(errno, "eventfd(io loop wake)");
  // Monotonic: a step of the wall clock (NTP, an administrator) must not fire
  // timers early or hold them back.
  UniqueFd timer(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer.valid()) return absl::ErrnoToStatus(errno, "timerfd_create(io loop)");
  for (int fd : {wake.get(), timer.get()}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = EventToken(0, fd);
    if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return absl::ErrnoToStatus(errno, "epoll_ctl(io loop internal fd)");
    }
  }
  return std::unique_ptr<IoLoop>(new IoLoop(std::move(epoll), std::move(wake), std::move(timer)));
}

IoLoop::IoLoop(UniqueFd epoll, UniqueFd wake, UniqueFd timer)
    : epoll_(std::move(epoll)), wake_(std::move(wake)), timer_(std::move(timer)) {}

IoLoop::~IoLoop() { Stop(); }

void IoLoop::Start() {
  thread_ = std::thread([this] {
    thread_id_.store(std::this_thread::get_id());
    Run();
  });
}

void IoLoop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  Wake();
  if (thread_.joinable()) thread_.join();
}

bool IoLoop::InLoopThread() const { return std::this_thread::get_id() == thread_id_.load(); }

absl::Status IoLoop::Watch(int fd, uint32_t events, FdCallback cb) {
  absl::MutexLock lock(&mu_);
  // Generation 0 belongs to the loop's own fds; after 2^32 watches the counter
  // wraps, which could only confuse a batch that still holds an event from four
  // billion watches ago.
  if (next_generation_ == 0) next_generation_ = 1;
  const uint32_t generation = next_generation_;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = EventToken(generation, fd);
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("epoll_ctl(ADD fd ", fd, ")"));
  }
  ++next_generation_;
  // An entry left by an fd closed without Unwatch is replaced. If that file is
  // still open elsewhere (a dup, a child), epoll keeps its registration, and
  // its events, carrying the old generation, are dropped.
  watches_[fd] = WatchEntry{generation, std::make_shared<FdCallback>(std::move(cb))};
  return absl::OkStatus();
}

absl::Status IoLoop::Modify(int fd, uint32_t events) {
  absl::MutexLock lock(&mu_);
  auto it = watches_.find(fd);
  if (it == watches_.end()) {
    return absl::NotFoundError(absl::StrCat("epoll_ctl(MOD fd ", fd, "): not watched"));
  }
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = EventToken(it->second.generation, fd);
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("epoll_ctl(MOD fd ", fd, ")"));
  }
  return absl::OkStatus();
}

void IoLoop::Unwatch(int fd) {
  absl::MutexLock lock(&mu_);
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  watches_.erase(fd);
}

void IoLoop::Post(std::function<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    posted_.push_back(std::move(fn));
  }
  Wake();
}

MonoTime MonotonicNow() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return MonoTime::FromSinceZero(absl::DurationFromTimespec(ts));
}

IoLoop::MonoDuration IoLoop::MonoNow() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return absl::DurationFromTimespec(ts);
}

IoLoop::TimerId IoLoop::AddTimer(absl::Time deadline, std::function<void()> fn) {
  // The wall clock is read before the monotonic one, so the offset between them
  // is over-estimated by the time between the reads: timers can be late by
  // that, never early.
  const absl::Time wall = absl::Now();
  const MonoDuration mono = MonoNow();
  absl::Duration offset = mono - (wall - absl::UnixEpoch());
  absl::MutexLock lock(&mu_);
  // That read-to-read time varies by some 100 ns from call to call; taken as it
  // is, equal deadlines added one after another would come out in any order. So
  // the offset in use only goes up, unless it has fallen by more than
  // kOffsetSlack (the wall clock was stepped forward): a timer is then at most
  // kOffsetSlack late.
  constexpr absl::Duration kOffsetSlack = absl::Milliseconds(1);
  if (offset < wall_to_mono_ && offset >= wall_to_mono_ - kOffsetSlack) {
    offset = wall_to_mono_;
  }
  wall_to_mono_ = offset;
  // Infinite deadlines stay infinite (Duration arithmetic saturates).
  return AddMonoTimerLocked((deadline - absl::UnixEpoch()) + offset, std::move(fn));
}

IoLoop::TimerId IoLoop::AddTimer(MonoTime deadline, std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  return AddMonoTimerLocked(deadline.since_zero(), std::move(fn));
}

IoLoop::TimerId IoLoop::AddMonoTimerLocked(MonoDuration when, std::function<void()> fn) {
  const TimerId id = next_timer_++;
  timers_.emplace(std::make_pair(when, id), std::move(fn));
  timer_deadlines_.emplace(id, when);
  if (when < armed_for_) ArmTimerLocked();
  return id;
}

void IoLoop::CancelTimer(TimerId id) {
  absl::MutexLock lock(&mu_);
  auto it = timer_deadlines_.find(id);
  if (it == timer_deadlines_.end()) return;
  timers_.erase(std::make_pair(it->second, id));
  timer_deadlines_.erase(it);
  // The timerfd may fire early for a cancelled timer; RunDueTimers re-arms.
}

void IoLoop::Wake() {
  const uint64_t one = 1;
  // A full eventfd counter still wakes the loop, so a failed write is harmless.
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof(one));
}

void IoLoop::ArmTimerLocked() {
  itimerspec spec{};  // all zero: disarmed
  armed_for_ = timers_.empty() ? absl::InfiniteDuration() : timers_.begin()->first.first;
  if (armed_for_ != absl::InfiniteDuration()) {
    // A deadline at or before the clock's zero (from InfinitePast, or a
    // long-past wall time) cannot be given to timerfd: any past time fires at
    // once, and 0 would disarm.
    spec.it_value = absl::ToTimespec(std::max(armed_for_, absl::Nanoseconds(1)));
  }
  if (::timerfd_settime(timer_.get(), TFD_TIMER_ABSTIME, &spec, nullptr) != 0) {
    std::fprintf(stderr, "forkpoold: timerfd_settime: %s\n", std::strerror(errno));
  }
}

void IoLoop::RunDueTimers() {
  std::vector<std::function<void()>> due;
  {
    absl::MutexLock lock(&mu_);
    const MonoDuration now = MonoNow();
    while (!timers_.empty() && timers_.begin()->first.first <= now) {
      auto node = timers_.extract(timers_.begin());
      timer_deadlines_.erase(node.key().second);
      due.push_back(std::move(node.mapped()));
    }
    ArmTimerLocked();
  }
  for (auto& fn : due) fn();
}

void IoLoop::Run() {
  constexpr int kMaxEvents = 64;
  epoll_event events[kMaxEvents];
  while (true) {
    const int n = ::epoll_wait(epoll_.get(), events, kMaxEvents, -1);
    if (n < 0 && errno != EINTR) {
      std::fprintf(stderr, "forkpoold: epoll_wait: %s\n", std::strerror(errno));
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t token = events[i].data.u64;
      const int fd = TokenFd(token);
      const uint32_t generation = TokenGeneration(token);
      if (generation == 0 && fd == wake_.get()) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(wake_.get(), &v, sizeof(v));
        continue;
      }
      if (generation == 0 && fd == timer_.get()) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(timer_.get(), &v, sizeof(v));
        RunDueTimers();
        continue;
      }
      std::shared_ptr<FdCallback> cb;
      {
        absl::MutexLock lock(&mu_);
        auto it = watches_.find(fd);
        // An earlier callback of this batch may have unwatched this fd, closed
        // it and watched a new file under the same number: that event is not
        // the new watch's.
        if (it != watches_.end() && it->second.generation == generation) {
          cb = it->second.cb;
        }
      }
      if (cb) (*cb)(events[i].events);
    }
    std::vector<std::function<void()>> posted;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      posted.swap(posted_);
    }
    for (auto& fn : posted) fn();
    // Timers may be due without the timerfd having been read yet in this round.
    bool due;
    {
      absl::MutexLock lock(&mu_);
      due = !timers_.empty() && timers_.begin()->first.first <= MonoNow();
    }
    if (due) RunDueTimers();
  }
}

}  // namespace forkpool
