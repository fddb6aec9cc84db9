// Chunked control messages: see control_message.h.
#include "common/control_message.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace forkpool {
namespace {

constexpr char kMore = 1;
constexpr char kLast = 0;

}  // namespace

absl::Status SendControlMessage(int socket, std::string_view bytes, absl::Span<const int> fds) {
  std::string packet;
  packet.reserve(std::min(bytes.size(), kControlChunkBytes) + 1);
  size_t at = 0;
  do {
    const size_t n = std::min(bytes.size() - at, kControlChunkBytes);
    const bool last = at + n == bytes.size();
    packet.assign(1, last ? kLast : kMore);
    packet.append(bytes.data() + at, n);
    FORKPOOL_RETURN_IF_ERROR(SendPacket(socket, packet, last ? fds : absl::Span<const int>()));
    at += n;
  } while (at < bytes.size());
  return absl::OkStatus();
}

absl::StatusOr<Packet> ControlReader::Next(int socket) {
  while (true) {
    absl::StatusOr<Packet> packet = ReceivePacket(socket, buffer_.get(), kControlChunkBytes + 1);
    if (!packet.ok()) return packet.status();
    if (packet->bytes.empty()) {
      return absl::InvalidArgumentError("empty control packet (no chunk byte)");
    }
    const char flag = packet->bytes[0];
    if (flag != kMore && flag != kLast) {
      return absl::InvalidArgumentError(
          absl::StrCat("control packet with chunk byte ", static_cast<int>(flag)));
    }
    if (flag == kMore && !packet->fds.empty()) {
      return absl::InvalidArgumentError("fds on a control packet that is not a message's last");
    }
    if (partial_.size() + packet->bytes.size() - 1 > kMaxControlMessageBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("control message past ", kMaxControlMessageBytes, " bytes"));
    }
    partial_.append(packet->bytes, 1, std::string::npos);
    if (flag == kMore) {
      in_message_ = true;
      continue;
    }
    in_message_ = false;
    Packet whole;
    whole.bytes = std::move(partial_);
    whole.fds = std::move(packet->fds);
    partial_.clear();
    return whole;
  }
}

void ControlWriter::Queue(std::string_view bytes) {
  size_t at = 0;
  do {
    const size_t n = std::min(bytes.size() - at, kControlChunkBytes);
    const bool last = at + n == bytes.size();
    std::string packet(1, last ? kLast : kMore);
    packet.append(bytes.data() + at, n);
    queued_bytes_ += packet.size();
    packets_.push_back(std::move(packet));
    at += n;
  } while (at < bytes.size());
}

absl::StatusOr<bool> ControlWriter::Flush(int socket) {
  while (!packets_.empty()) {
    const std::string& p = packets_.front();
    const ssize_t n = RetryOnEintr(
        [&] { return ::send(socket, p.data(), p.size(), MSG_NOSIGNAL | MSG_DONTWAIT); });
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      return absl::ErrnoToStatus(errno, "send(control packet)");
    }
    queued_bytes_ -= p.size();
    packets_.pop_front();
  }
  return false;
}

}  // namespace forkpool
