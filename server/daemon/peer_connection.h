// The client connection behind a gRPC call: forkpoold accepts connections itself
// and hands gRPC the fd, so a call's peer() is "fd:N" and the fd can be asked whether
// the client has hung up.
#ifndef FORKPOOL_SERVER_DAEMON_PEER_CONNECTION_H_
#define FORKPOOL_SERVER_DAEMON_PEER_CONNECTION_H_

#include <string>

namespace forkpool {

// The connection fd behind a peer string "fd:N", or -1.
int PeerFd(const std::string& peer);

// True when the connection `fd` has hung up (the client died or closed); false for -1.
bool PeerHungUp(int fd);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_PEER_CONNECTION_H_
