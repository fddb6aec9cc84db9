// Listener: forkpoold's own accept loop on its Unix socket. Each connection is
// handed to gRPC with AddInsecureChannelFromFd, so the peer's credentials are known
// and the socket mode is set without a umask race.
#ifndef FORKPOOL_SERVER_DAEMON_LISTENER_H_
#define FORKPOOL_SERVER_DAEMON_LISTENER_H_

#include <grpcpp/server.h>

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "server/daemon/io_loop.h"
#include "server/daemon/peer_connection.h"

namespace forkpool {

// Thread-safe after Start. Accepts on the IoLoop's thread.
class Listener {
 public:
  // Binds and listens on `path` with `mode` (e.g. 0660). Removes a stale socket
  // file first: call only while holding the daemon's lock file. Call while the
  // process is single-threaded (it changes the umask around bind).
  static absl::StatusOr<std::unique_ptr<Listener>> Bind(const std::string& path,
                                                         mode_t mode);
  ~Listener();

  // Starts accepting; each connection goes to `server`. Past `max_connections` live
  // connections, new ones are closed at once (and logged, at most once a second).
  // Each connection's SO_PEERCRED goes into `peers`.
  absl::Status Start(IoLoop* loop, grpc::Server* server, int max_connections,
                     PeerRegistry* peers);
  // Stops accepting and removes the socket file.
  void Stop();
  const std::string& path() const { return path_; }

 private:
  Listener(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  void OnReadable();

  UniqueFd fd_;
  const std::string path_;
  IoLoop* loop_ = nullptr;
  grpc::Server* server_ = nullptr;
  int max_connections_ = 0;
  // Live connections: gRPC owns their fds and closes them when they end, so an fd
  // that no longer refers to the socket we accepted has ended.
  PeerRegistry* peers_ = nullptr;
  absl::Time last_refusal_log_ = absl::InfinitePast();
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_LISTENER_H_
