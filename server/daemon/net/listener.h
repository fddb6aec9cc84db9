// Listener: forkpoold's own accept loop on its Unix socket. It admits connections by
// the caps of ConnectionLimits, holds each in a HandshakeGate until its HTTP/2
// preface has arrived, and then hands it to gRPC with AddInsecureChannelFromFd, so
// the peer's credentials are known and the socket mode is set without a umask race.
#ifndef FORKPOOL_SERVER_DAEMON_NET_LISTENER_H_
#define FORKPOOL_SERVER_DAEMON_NET_LISTENER_H_

#include <grpcpp/server.h>
#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "server/daemon/net/connection_limits.h"
#include "server/daemon/net/handshake_gate.h"
#include "server/daemon/net/io_loop.h"
#include "server/daemon/net/peer_connection.h"

namespace forkpool {

// How the Listener admits and times connections.
struct ListenerOptions {
  ConnectionLimits limits;
  // A connection that has not sent the HTTP/2 preface and its first SETTINGS frame
  // header by then is closed (--handshake_timeout); InfiniteDuration: never.
  absl::Duration handshake_timeout = absl::Seconds(5);
  // After accept4 fails for want of fds or memory (EMFILE, ENFILE, ENOBUFS,
  // ENOMEM), the listening socket is left alone this long instead of being retried
  // at once (the pending connection keeps it readable: a spin).
  absl::Duration accept_backoff = absl::Milliseconds(100);
};

// Thread-safe after Start. Accepts on the IoLoop's thread.
class Listener {
 public:
  // Binds and listens on `path` with `mode` (e.g. 0660). Removes a stale socket
  // file first: call only while holding the daemon's lock file. Call while the
  // process is single-threaded (it changes the umask around bind).
  static absl::StatusOr<std::unique_ptr<Listener>> Bind(const std::string& path, mode_t mode);
  ~Listener();

  // Starts accepting; each connection whose preface arrives goes to `server`. A
  // connection past a cap of options.limits is closed at once (and logged, at most
  // once a second). Each connection's SO_PEERCRED goes into `peers` at its accept;
  // the caps count every connection there, waiting for its preface or not.
  absl::Status Start(IoLoop* loop, grpc::Server* server, const ListenerOptions& options,
                     PeerRegistry* peers);
  // Stops accepting, closes the connections still waiting for their preface and
  // removes the socket file. Returns once no accept and no hand-over runs.
  void Stop();
  const std::string& path() const { return path_; }

 private:
  Listener(UniqueFd fd, std::string path) : path_(std::move(path)), fd_(std::move(fd)) {}
  void OnReadable();
  // Admits or refuses the connection just accepted on `conn`, which it takes.
  void AdmitLocked(UniqueFd conn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stops watching the listening socket for options_.accept_backoff.
  void BackOffLocked(int err) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Resume();
  // True (and notes the time) when a line of `kind` may be logged now: at most one
  // a second each.
  bool MayLogLocked(absl::Time* last) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  IoLoop* loop_ = nullptr;
  grpc::Server* server_ = nullptr;
  ListenerOptions options_;
  // Live connections: gRPC owns their fds once handed over and closes them when they
  // end, so an fd that no longer refers to the socket we accepted has ended.
  PeerRegistry* peers_ = nullptr;
  std::unique_ptr<HandshakeGate> gate_;

  absl::Mutex mu_;
  UniqueFd fd_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  // While backing off: the timer that resumes accepting.
  IoLoop::TimerId resume_timer_ ABSL_GUARDED_BY(mu_) = 0;
  // When the registry was last pruned for a connection that seemed past a cap, and
  // how long until the next prune may run (ten times what that one took).
  absl::Time last_prune_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Duration prune_gap_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  absl::Time last_refusal_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time last_accept_error_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int refused_unlogged_ ABSL_GUARDED_BY(mu_) = 0;
  int accept_errors_unlogged_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_NET_LISTENER_H_
