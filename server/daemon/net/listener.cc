// Listener implementation.
#include "server/daemon/net/listener.h"

#include <grpcpp/server_posix.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/daemon/log.h"

namespace forkpool {

absl::StatusOr<std::unique_ptr<Listener>> Listener::Bind(const std::string& path, mode_t mode) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path '", path, "' is ", path.size(),
                                                   " bytes; the limit is ",
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

absl::Status Listener::Start(IoLoop* loop, grpc::Server* server, const ListenerOptions& options,
                             PeerRegistry* peers) {
  loop_ = loop;
  server_ = server;
  options_ = options;
  peers_ = peers;
  gate_ = std::make_unique<HandshakeGate>(
      loop_, options_.handshake_timeout,
      [this](UniqueFd fd) {
        // The preface is there: gRPC takes the connection over, and ends it.
        grpc::AddInsecureChannelFromFd(server_, fd.release());
      },
      [this](int fd, HandshakeGate::Drop) { peers_->Forget(fd); });
  absl::MutexLock lock(&mu_);
  return loop_->Watch(fd_.get(), EPOLLIN, [this](uint32_t) { OnReadable(); });
}

void Listener::OnReadable() {
  absl::MutexLock lock(&mu_);
  while (!stopped_ && resume_timer_ == 0) {
    // Non-blocking: a blocking fd makes every RPC on it hang (field notes).
    UniqueFd conn(RetryOnEintr(
        [&] { return ::accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC); }));
    if (conn.valid()) {
      AdmitLocked(std::move(conn));
      continue;
    }
    switch (errno) {
      case EAGAIN:
#if EAGAIN != EWOULDBLOCK
      case EWOULDBLOCK:
#endif
        return;
      case ECONNABORTED:
      case EPROTO:
        continue;  // that connection is gone; the next may be fine
      default:
        // EMFILE, ENFILE, ENOBUFS, ENOMEM, or what should not happen: the
        // connection stays queued and the socket readable, so retrying now would
        // spin.
        BackOffLocked(errno);
        return;
    }
  }
}

void Listener::AdmitLocked(UniqueFd conn) {
  struct stat st;
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::fstat(conn.get(), &st) != 0 ||
      ::getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    // Without credentials the connection cannot be counted against its uid (and
    // must not pass for root's).
    const int err = errno;
    if (MayLogLocked(&last_accept_error_log_)) {
      Log("closing a connection whose credentials cannot be read: ", std::strerror(err));
    }
    return;
  }
  PeerRegistry::Peer peer;
  peer.inode = st.st_ino;
  peer.pid = cred.pid;
  peer.uid = cred.uid;
  peer.admin = options_.limits.IsAdmin(cred.uid);
  Refusal refusal = CheckAdmission(options_.limits, peers_->Counts(peer.uid), peer.admin);
  // The counts include connections gRPC has closed since the last prune. Pruning
  // stats every connection: so that a flood of refused connections cannot keep the
  // loop thread busy with it, the time since the last prune must be ten times what
  // that prune took (some 3 ms at 1,024 connections, next to nothing at a few).
  if (refusal != Refusal::kNone && absl::Now() - last_prune_ >= prune_gap_) {
    const absl::Time start = absl::Now();
    peers_->Prune();
    last_prune_ = absl::Now();
    prune_gap_ = (last_prune_ - start) * 10;
    refusal = CheckAdmission(options_.limits, peers_->Counts(peer.uid), peer.admin);
  }
  if (refusal != Refusal::kNone) {
    ++refused_unlogged_;
    if (MayLogLocked(&last_refusal_log_)) {
      Log("refused a connection of pid ", peer.pid,
          refused_unlogged_ == 1
              ? ""
              : absl::StrCat(" (and ", refused_unlogged_ - 1, " more since the last such line)"),
          ": ", RefusalReason(options_.limits, refusal, peer.uid));
      refused_unlogged_ = 0;
    }
    return;  // closed at once: the client sees UNAVAILABLE
  }
  peers_->Record(conn.get(), peer);
  gate_->Add(std::move(conn));
}

void Listener::BackOffLocked(int err) {
  ++accept_errors_unlogged_;
  if (MayLogLocked(&last_accept_error_log_)) {
    Log("accept4(", path_, "): ", std::strerror(err), "; not accepting for ",
        absl::FormatDuration(options_.accept_backoff),
        accept_errors_unlogged_ > 1
            ? absl::StrCat(" (", accept_errors_unlogged_, " failures since the last such line)")
            : "");
    accept_errors_unlogged_ = 0;
  }
  loop_->Unwatch(fd_.get());
  resume_timer_ = loop_->AddTimer(absl::Now() + options_.accept_backoff, [this] { Resume(); });
}

void Listener::Resume() {
  absl::MutexLock lock(&mu_);
  resume_timer_ = 0;
  if (stopped_) return;
  if (absl::Status s = loop_->Watch(fd_.get(), EPOLLIN, [this](uint32_t) { OnReadable(); });
      !s.ok()) {
    // Not expected (epoll has room for the fd it just had); try again later.
    Log("resuming accept: ", s.message());
    resume_timer_ = loop_->AddTimer(absl::Now() + options_.accept_backoff, [this] { Resume(); });
  }
}

bool Listener::MayLogLocked(absl::Time* last) {
  const absl::Time now = absl::Now();
  if (now - *last < absl::Seconds(1)) return false;
  *last = now;
  return true;
}

void Listener::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
    if (resume_timer_ != 0) {
      loop_->CancelTimer(resume_timer_);
      resume_timer_ = 0;
    } else if (loop_ != nullptr) {
      loop_->Unwatch(fd_.get());
    }
    fd_.reset();
    ::unlink(path_.c_str());
  }
  if (gate_) gate_->CloseAll();
}

}  // namespace forkpool
