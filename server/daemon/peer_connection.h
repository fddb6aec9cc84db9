// The client connection behind a gRPC call: forkpoold accepts connections itself
// and hands gRPC the fd, so a call's peer() is "fd:N" and the fd can be asked whether
// the client has hung up.
#ifndef FORKPOOL_SERVER_DAEMON_PEER_CONNECTION_H_
#define FORKPOOL_SERVER_DAEMON_PEER_CONNECTION_H_

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace forkpool {

// What forkpoold's own accept loop learnt of each client connection (SO_PEERCRED).
// Thread-safe: the listener records on the loop thread, services look up from gRPC
// threads.
class PeerRegistry {
 public:
  struct Peer {
    ino_t inode = 0;  // the socket accepted on that fd
    pid_t pid = 0;    // the connecting process
    uid_t uid = 0;
  };
  // Records the connection accepted on `fd`.
  void Record(int fd, const Peer& peer);
  // The peer of the connection on `fd`, if `fd` still refers to it.
  std::optional<Peer> Find(int fd) const;
  // Drops entries whose fd no longer refers to the socket accepted on it; returns how
  // many connections are live.
  int Prune();

 private:
  mutable absl::Mutex mu_;
  std::map<int, Peer> peers_ ABSL_GUARDED_BY(mu_);
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

#endif  // FORKPOOL_SERVER_DAEMON_PEER_CONNECTION_H_
