// One message plus file descriptors over a SOCK_SEQPACKET socket (SCM_RIGHTS).
#ifndef FORKPOOL_COMMON_FD_PASSING_H_
#define FORKPOOL_COMMON_FD_PASSING_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/unique_fd.h"

namespace forkpool {

// Most fds one control message may carry; a packet with more is a protocol
// error.
inline constexpr int kMaxPassedFds = 8;
// Largest control packet.
inline constexpr size_t kMaxPacketBytes = 1 << 20;

struct Packet {
  std::string bytes;
  std::vector<UniqueFd> fds;
};

// Sends `bytes` as one packet with `fds` attached (the fds stay the caller's).
// Blocks until sent; EINTR retried; MSG_NOSIGNAL.
absl::Status SendPacket(int socket, std::string_view bytes, absl::Span<const int> fds = {});

// Receives one packet with its fds (MSG_CMSG_CLOEXEC). NotFound at EOF;
// DataLoss when the packet or its fds were truncated (the fds that did arrive
// are closed); UnavailableError for EAGAIN on a non-blocking socket.
absl::StatusOr<Packet> ReceivePacket(int socket);
// The same into the caller's `buffer` of `size` bytes (a longer packet is
// DataLoss).
absl::StatusOr<Packet> ReceivePacket(int socket, char* buffer, size_t size);

}  // namespace forkpool

#endif  // FORKPOOL_COMMON_FD_PASSING_H_
