// Control messages over SOCK_SEQPACKET of any size: a message is cut into
// packets of at most kControlChunkBytes, each led by one byte (1: more follow,
// 0: the last), and fds ride its last packet. A single packet is limited by the
// socket's send buffer (about 208 KiB here); a message is not.
#ifndef FORKPOOL_COMMON_CONTROL_MESSAGE_H_
#define FORKPOOL_COMMON_CONTROL_MESSAGE_H_

#include <cstddef>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/fd_passing.h"
#include "common/unique_fd.h"

namespace forkpool {

// Payload bytes per packet.
inline constexpr size_t kControlChunkBytes = 32 * 1024;
// Largest message either side accepts.
inline constexpr size_t kMaxControlMessageBytes = 64u << 20;

// Sends `bytes` as one message with `fds` attached to its last packet (the fds
// stay the caller's). Blocks until every packet is sent: for helpers, which
// only ever block on forkpoold, never the other way round.
absl::Status SendControlMessage(int socket, std::string_view bytes, absl::Span<const int> fds = {});

// Reassembles messages from packets. Thread-compatible; one per socket.
class ControlReader {
 public:
  // Reads packets until a whole message has arrived and returns it. Errors:
  // Unavailable when a non-blocking socket has nothing more now (a partial
  // message is kept for the next call), NotFound at EOF, DataLoss /
  // InvalidArgument for a broken packet or a message past
  // kMaxControlMessageBytes.
  absl::StatusOr<Packet> Next(int socket);

 private:
  std::unique_ptr<char[]> buffer_{new char[kControlChunkBytes + 1]};
  std::string partial_;
  bool in_message_ = false;
};

// forkpoold's side: queues messages and sends what a non-blocking socket takes,
// so that no thread ever blocks on a helper. Thread-compatible. Sends no fds
// (only helpers pass fds, upwards).
class ControlWriter {
 public:
  // Queues `bytes` as its packets.
  void Queue(std::string_view bytes);
  // Sends queued packets until the socket is full. Returns true while packets
  // remain (watch for EPOLLOUT); an error when the peer is gone.
  absl::StatusOr<bool> Flush(int socket);
  bool empty() const { return packets_.empty(); }
  // Bytes queued, for bounds.
  size_t queued_bytes() const { return queued_bytes_; }

 private:
  std::deque<std::string> packets_;
  size_t queued_bytes_ = 0;
};

}  // namespace forkpool

#endif  // FORKPOOL_COMMON_CONTROL_MESSAGE_H_
