// HandshakeGate implementation.
#include "server/daemon/net/handshake_gate.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "server/daemon/log.h"

namespace forkpool {

PrefaceState ClassifyPreface(absl::string_view first_bytes) {
  const absl::string_view magic = first_bytes.substr(0, kHttp2ClientPreface.size());
  if (magic != kHttp2ClientPreface.substr(0, magic.size())) return PrefaceState::kNotHttp2;
  if (first_bytes.size() < kHandshakePeekBytes) return PrefaceState::kIncomplete;
  // Frame header: length (24 bits), type, flags, R + stream id (31 bits).
  const auto byte = [&](size_t i) {
    return static_cast<uint32_t>(static_cast<unsigned char>(first_bytes[24 + i]));
  };
  const uint32_t length = byte(0) << 16 | byte(1) << 8 | byte(2);
  const uint32_t type = byte(3);
  const uint32_t flags = byte(4);
  const uint32_t stream = (byte(5) << 24 | byte(6) << 16 | byte(7) << 8 | byte(8)) & 0x7fffffffu;
  constexpr uint32_t kSettings = 0x4;
  constexpr uint32_t kAck = 0x1;
  if (type != kSettings || (flags & kAck) != 0 || stream != 0 || length % 6 != 0) {
    return PrefaceState::kNotHttp2;
  }
  return PrefaceState::kComplete;
}

HandshakeGate::HandshakeGate(IoLoop* loop, absl::Duration timeout, ReadyFn ready, DroppedFn dropped)
    : loop_(loop), timeout_(timeout), ready_(std::move(ready)), dropped_(std::move(dropped)) {}

HandshakeGate::~HandshakeGate() { CloseAll(); }

void HandshakeGate::Add(UniqueFd fd) {
  const int raw = fd.get();
  uint64_t id = 0;
  {
    absl::MutexLock lock(&mu_);
    if (closed_) {
      if (dropped_) dropped_(raw, Drop::kClosing);
      return;  // fd closes here
    }
    id = next_id_++;
    Waiting w{id, std::move(fd)};
    // Edge-triggered: peeking consumes nothing, so a level-triggered watch of a
    // connection that sent half a preface would fire without end. Each arrival of
    // more bytes (or the hang-up) is a new edge.
    const absl::Status watched =
        loop_->Watch(raw, EPOLLIN | EPOLLRDHUP | EPOLLET,
                     [this, raw, id](uint32_t events) { Check(raw, id, events); });
    if (!watched.ok()) {
      Log("cannot watch a new connection: ", watched.message());
      if (dropped_) dropped_(raw, Drop::kError);
      return;
    }
    if (timeout_ != absl::InfiniteDuration()) {
      w.timer = loop_->AddTimer(absl::Now() + timeout_, [this, raw, id] { TimedOut(raw, id); });
    }
    waiting_.emplace(raw, std::move(w));
  }
  // Most clients have sent their preface before the accept: no need to wait for
  // the loop to report it.
  Check(raw, id, 0);
}

void HandshakeGate::Check(int fd, uint64_t id, uint32_t events) {
  absl::MutexLock lock(&mu_);
  auto it = waiting_.find(fd);
  if (it == waiting_.end() || it->second.id != id) return;
  char buf[kHandshakePeekBytes];
  const ssize_t n =
      RetryOnEintr([&] { return ::recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT); });
  const bool hung_up = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
  if (n > 0) {
    switch (ClassifyPreface(absl::string_view(buf, static_cast<size_t>(n)))) {
      case PrefaceState::kComplete: {
        UniqueFd ready = TakeLocked(it);
        ready_(std::move(ready));
        return;
      }
      case PrefaceState::kNotHttp2:
        DropLocked(it, Drop::kNotHttp2);
        return;
      case PrefaceState::kIncomplete:
        // More may come, unless the client has shut down its side.
        if (hung_up) DropLocked(it, Drop::kHungUp);
        return;
    }
  }
  if (n == 0) {
    DropLocked(it, Drop::kHungUp);
  } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
    DropLocked(it, Drop::kError);
  } else if (hung_up) {
    DropLocked(it, Drop::kHungUp);
  }
}

void HandshakeGate::TimedOut(int fd, uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = waiting_.find(fd);
  if (it == waiting_.end() || it->second.id != id) return;
  it->second.timer = 0;  // it has fired
  DropLocked(it, Drop::kTimedOut);
  ++timed_out_unlogged_;
  // One line a second at most: the first at once, the rest when a second has passed.
  if (log_timer_ != 0) return;
  const absl::Time next = timed_out_logged_ + absl::Seconds(1);
  if (absl::Now() >= next) {
    LogTimedOutLocked();
  } else {
    log_timer_ = loop_->AddTimer(next, [this] {
      absl::MutexLock lock(&mu_);
      log_timer_ = 0;
      LogTimedOutLocked();
    });
  }
}

void HandshakeGate::LogTimedOutLocked() {
  if (timed_out_unlogged_ == 0) return;
  Log("closed ", timed_out_unlogged_, timed_out_unlogged_ == 1 ? " connection" : " connections",
      " that had not sent the HTTP/2 preface and SETTINGS within ", absl::FormatDuration(timeout_),
      " (--handshake_timeout)");
  timed_out_unlogged_ = 0;
  timed_out_logged_ = absl::Now();
}

UniqueFd HandshakeGate::TakeLocked(std::map<int, Waiting>::iterator it) {
  loop_->Unwatch(it->first);
  if (it->second.timer != 0) loop_->CancelTimer(it->second.timer);
  UniqueFd fd = std::move(it->second.fd);
  waiting_.erase(it);
  return fd;
}

void HandshakeGate::DropLocked(std::map<int, Waiting>::iterator it, Drop why) {
  const int raw = it->first;
  UniqueFd fd = TakeLocked(it);
  if (dropped_) dropped_(raw, why);
  // fd closes here.
}

void HandshakeGate::CloseAll() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
  if (log_timer_ != 0) loop_->CancelTimer(log_timer_);
  log_timer_ = 0;
  LogTimedOutLocked();
  while (!waiting_.empty()) DropLocked(waiting_.begin(), Drop::kClosing);
}

int HandshakeGate::waiting() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(waiting_.size());
}

}  // namespace forkpool
