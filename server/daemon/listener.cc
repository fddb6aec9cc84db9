// Listener implementation.
#include "server/daemon/listener.h"

#include <grpcpp/server_posix.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/daemon/log.h"

namespace forkpool {

absl::StatusOr<std::unique_ptr<Listener>> Listener::Bind(const std::string& path,
                                                         mode_t mode) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "socket path '", path, "' is ", path.size(), " bytes; the limit is ",
        sizeof(addr.sun_path) - 1));
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, "socket(listen)");
  // We hold the lock, so a socket file left here belongs to a dead daemon.
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::ErrnoToStatus(errno, absl::StrCat("unlink(stale socket ", path, ")"));
  }
  const mode_t old = ::umask(static_cast<mode_t>(~mode & 0777));
  const int r = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const int err = errno;
  ::umask(old);
  if (r != 0) return absl::ErrnoToStatus(err, absl::StrCat("bind(", path, ")"));
  if (::listen(fd.get(), 512) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("listen(", path, ")"));
  }
  return std::unique_ptr<Listener>(new Listener(std::move(fd), path));
}

Listener::~Listener() { Stop(); }

absl::Status Listener::Start(IoLoop* loop, grpc::Server* server, int max_connections,
                             PeerRegistry* peers) {
  loop_ = loop;
  server_ = server;
  max_connections_ = max_connections;
  peers_ = peers;
  return loop_->Watch(fd_.get(), EPOLLIN, [this](uint32_t) { OnReadable(); });
}

void Listener::OnReadable() {
  while (true) {
    // Non-blocking: a blocking fd makes every RPC on it hang (field notes).
    const int conn = RetryOnEintr(
        [&] { return ::accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC); });
    if (conn < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        Log("accept4(", path_, "): ", std::strerror(errno));
      }
      return;
    }
    struct stat st;
    if (::fstat(conn, &st) != 0) {
      ::close(conn);
      continue;
    }
    if (max_connections_ > 0 && peers_->Prune() >= max_connections_) {
      ::close(conn);
      if (absl::Now() - last_refusal_log_ > absl::Seconds(1)) {
        last_refusal_log_ = absl::Now();
        Log("refusing a connection: ", max_connections_,
            " connections are open (--max_connections)");
      }
      continue;
    }
    PeerRegistry::Peer peer;
    peer.inode = st.st_ino;
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (::getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
      peer.pid = cred.pid;
      peer.uid = cred.uid;
    }
    peers_->Record(conn, peer);
    grpc::AddInsecureChannelFromFd(server_, conn);  // takes ownership
  }
}

void Listener::Stop() {
  if (!fd_.valid()) return;
  if (loop_ != nullptr) loop_->Unwatch(fd_.get());
  fd_.reset();
  ::unlink(path_.c_str());
}

}  // namespace forkpool
