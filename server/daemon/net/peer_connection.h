// The client connection behind a gRPC call: forkpoold accepts connections itself
// and hands gRPC the fd, so a call's peer() is "fd:N" and the fd can be asked whether
// the client has hung up.
#ifndef FORKPOOL_SERVER_DAEMON_NET_PEER_CONNECTION_H_
#define FORKPOOL_SERVER_DAEMON_NET_PEER_CONNECTION_H_

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/daemon/net/connection_limits.h"

namespace forkpool {

// What forkpoold's own accept loop learnt of each client connection (SO_PEERCRED),
// from its accept (while it waits for its HTTP/2 preface too) until it ends.
// Thread-safe: the listener records on the loop thread, services look up from gRPC
// threads.
class PeerRegistry {
 public:
  struct Peer {
    ino_t inode = 0;  // the socket accepted on that fd
    pid_t pid = 0;    // the connecting process
    uid_t uid = 0;
    bool admin = false;  // uid is root or forkpoold's own (ConnectionLimits::IsAdmin)
  };
  // Records the connection accepted on `fd` (replacing what an earlier connection on
  // that fd number left).
  void Record(int fd, const Peer& peer);
  // Forgets the connection on `fd`: call before closing an fd the listener still owns.
  void Forget(int fd);
  // The peer of the connection on `fd`, if `fd` still refers to it.
  std::optional<Peer> Find(int fd) const;
  // Drops entries whose fd no longer refers to the socket accepted on it (gRPC closes
  // the fds it owns without telling us); returns how many connections are live.
  int Prune();
  // The connections recorded, as seen by a new connection of `uid`. Without a Prune
  // first, ended connections gRPC closed since the last Prune are still counted: the
  // counts are never too low.
  ConnectionCounts Counts(uid_t uid) const;

 private:
  void EraseLocked(std::map<int, Peer>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<int, Peer> peers_ ABSL_GUARDED_BY(mu_);
  std::map<uid_t, int> per_uid_ ABSL_GUARDED_BY(mu_);
  int non_admin_ ABSL_GUARDED_BY(mu_) = 0;
};

// The connection fd behind a peer string "fd:N", or -1.
int PeerFd(const std::string& peer);

// True when the connection `fd` has hung up (the client died or closed); false for -1.
bool PeerHungUp(int fd);

// True when the client behind a call is gone or going: its connection has hung up, or
// its process no longer runs or has a SIGKILL pending (kill() queues the signal at
// once; the process may take a moment to die). `registry` may be null.
bool ClientGone(const std::string& peer, const PeerRegistry* registry);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_NET_PEER_CONNECTION_H_
