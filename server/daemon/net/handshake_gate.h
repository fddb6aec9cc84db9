// HandshakeGate: holds each accepted client connection, still owned by forkpoold,
// until its HTTP/2 client preface and the header of its first SETTINGS frame have
// arrived, then hands it to gRPC. gRPC's own handshake timeout does not apply to fds
// given to AddInsecureChannelFromFd, so this is what closes connections that send
// nothing.
#ifndef FORKPOOL_SERVER_DAEMON_NET_HANDSHAKE_GATE_H_
#define FORKPOOL_SERVER_DAEMON_NET_HANDSHAKE_GATE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "server/daemon/net/io_loop.h"

namespace forkpool {

// The bytes a client sends first (RFC 9113 §3.4): the 24-byte preface, then a
// SETTINGS frame, whose 9-byte header the gate waits for too.
inline constexpr absl::string_view kHttp2ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
inline constexpr size_t kHandshakePeekBytes = 24 + 9;

// What the first bytes of a connection say.
enum class PrefaceState {
  kIncomplete,  // a prefix of a valid start: wait for more
  kComplete,    // the preface and a SETTINGS frame header (stream 0, no ACK flag)
  kNotHttp2,    // anything else: gRPC would close it too
};
PrefaceState ClassifyPreface(absl::string_view first_bytes);

// Thread-safe. Connections are watched and timed on the IoLoop's thread, and are
// read only with MSG_PEEK: every byte is still there for gRPC.
class HandshakeGate {
 public:
  // Why a connection was closed without being handed on.
  enum class Drop { kTimedOut, kHungUp, kNotHttp2, kError, kClosing };
  // Takes a connection whose preface has arrived.
  using ReadyFn = std::function<void(UniqueFd fd)>;
  // Told of a connection the gate is about to close (`fd` is still open).
  using DroppedFn = std::function<void(int fd, Drop why)>;

  // Both callbacks run on the loop's thread (or, for kClosing, on CloseAll's), with
  // the gate's lock held: they must not call into the gate. `timeout` may be
  // absl::InfiniteDuration() (no deadline).
  HandshakeGate(IoLoop* loop, absl::Duration timeout, ReadyFn ready, DroppedFn dropped);
  // Closes what still waits. Destroy it only once no loop callback can still reach
  // it (CloseAll called and the loop stopped, or the loop never started).
  ~HandshakeGate();

  // Call on the loop's thread. Takes ownership of `fd` (a non-blocking stream
  // socket) and waits for its preface: hands it on at once if it has arrived.
  void Add(UniqueFd fd);
  // Closes every connection still waiting (DroppedFn with kClosing); an Add after it
  // closes its fd at once. Any thread; no ReadyFn runs once it has returned.
  void CloseAll();
  // Connections waiting now.
  int waiting() const;

 private:
  struct Waiting {
    uint64_t id;
    UniqueFd fd;
    IoLoop::TimerId timer = 0;
  };
  // Looks at what connection `fd` (if it is still `id`) has sent so far; `events`
  // are epoll's (0 when called from Add).
  void Check(int fd, uint64_t id, uint32_t events);
  void TimedOut(int fd, uint64_t id);
  // Removes `fd` from waiting_, unwatches it and cancels its timer; returns its fd.
  UniqueFd TakeLocked(std::map<int, Waiting>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropLocked(std::map<int, Waiting>::iterator it, Drop why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Logs how many connections missed the deadline since the last such line.
  void LogTimedOutLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  IoLoop* const loop_;
  const absl::Duration timeout_;
  const ReadyFn ready_;
  const DroppedFn dropped_;

  mutable absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<int, Waiting> waiting_ ABSL_GUARDED_BY(mu_);
  // Connections closed for missing the deadline since the last log line about it,
  // when that line was written (at most one a second), and the timer that writes
  // the next one (0: none).
  int timed_out_unlogged_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time timed_out_logged_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  IoLoop::TimerId log_timer_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_NET_HANDSHAKE_GATE_H_
