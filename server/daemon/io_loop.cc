// IoLoop implementation: epoll + eventfd (wake-ups) + timerfd (one timer heap).
#include "server/daemon/io_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace forkpool {

absl::StatusOr<std::unique_ptr<IoLoop>> IoLoop::Create() {
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll.valid()) return absl::ErrnoToStatus(errno, "epoll_create1(io loop)");
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return absl::ErrnoToStatus(errno, "eventfd(io loop wake)");
  UniqueFd timer(::timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer.valid()) return absl::ErrnoToStatus(errno, "timerfd_create(io loop)");
  for (int fd : {wake.get(), timer.get()}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return absl::ErrnoToStatus(errno, "epoll_ctl(io loop internal fd)");
    }
  }
  return std::unique_ptr<IoLoop>(
      new IoLoop(std::move(epoll), std::move(wake), std::move(timer)));
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
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("epoll_ctl(ADD fd ", fd, ")"));
  }
  watches_[fd] = std::make_shared<FdCallback>(std::move(cb));
  return absl::OkStatus();
}

absl::Status IoLoop::Modify(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
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

IoLoop::TimerId IoLoop::AddTimer(absl::Time deadline, std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  const TimerId id = next_timer_++;
  timers_.emplace(std::make_pair(deadline, id), std::move(fn));
  timer_deadlines_.emplace(id, deadline);
  if (deadline < armed_for_) ArmTimerLocked();
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
  itimerspec spec{};
  if (timers_.empty()) {
    armed_for_ = absl::InfiniteFuture();
  } else {
    armed_for_ = timers_.begin()->first.first;
    // A deadline at or before the epoch (InfinitePast) cannot be given to timerfd;
    // any past time fires at once, and 0 would disarm.
    timespec ts = absl::ToTimespec(std::max(armed_for_, absl::UnixEpoch() + absl::Nanoseconds(1)));
    spec.it_value = ts;
  }
  if (::timerfd_settime(timer_.get(), TFD_TIMER_ABSTIME, &spec, nullptr) != 0) {
    std::fprintf(stderr, "forkpoold: timerfd_settime: %s\n", std::strerror(errno));
  }
}

void IoLoop::RunDueTimers() {
  std::vector<std::function<void()>> due;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
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
      const int fd = events[i].data.fd;
      if (fd == wake_.get()) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(wake_.get(), &v, sizeof(v));
        continue;
      }
      if (fd == timer_.get()) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(timer_.get(), &v, sizeof(v));
        RunDueTimers();
        continue;
      }
      std::shared_ptr<FdCallback> cb;
      {
        absl::MutexLock lock(&mu_);
        auto it = watches_.find(fd);
        if (it != watches_.end()) cb = it->second;
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
      due = !timers_.empty() && timers_.begin()->first.first <= absl::Now();
    }
    if (due) RunDueTimers();
  }
}

}  // namespace forkpool
