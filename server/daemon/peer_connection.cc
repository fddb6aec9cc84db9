// Peer connection helpers.
#include "server/daemon/peer_connection.h"

#include <poll.h>

#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"

namespace forkpool {

int PeerFd(const std::string& peer) {
  int fd = -1;
  if (peer.rfind("fd:", 0) != 0 || !absl::SimpleAtoi(absl::string_view(peer).substr(3), &fd)) {
    return -1;
  }
  return fd;
}

bool PeerHungUp(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

}  // namespace forkpool
