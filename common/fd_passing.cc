// SCM_RIGHTS packet transfer. Always recvmsg: read() would silently drop passed
// fds.
#include "common/fd_passing.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"

namespace forkpool {

absl::Status SendPacket(int socket, std::string_view bytes, absl::Span<const int> fds) {
  if (fds.size() > static_cast<size_t>(kMaxPassedFds)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot pass ", fds.size(), " fds; the limit is ", kMaxPassedFds));
  }
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)];
  if (!fds.empty()) {
    const size_t len = sizeof(int) * fds.size();
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(len);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(len);
    std::memcpy(CMSG_DATA(c), fds.data(), len);
  }
  const ssize_t n = RetryOnEintr([&] { return ::sendmsg(socket, &msg, MSG_NOSIGNAL); });
  if (n < 0) return absl::ErrnoToStatus(errno, "sendmsg(control packet)");
  if (static_cast<size_t>(n) != bytes.size()) {
    return absl::DataLossError(absl::StrCat("sendmsg sent ", n, " of ", bytes.size(), " bytes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Packet> ReceivePacket(int socket) {
  // Not zero-filled: most packets are a few bytes.
  std::unique_ptr<char[]> buffer(new char[kMaxPacketBytes]);
  return ReceivePacket(socket, buffer.get(), kMaxPacketBytes);
}

absl::StatusOr<Packet> ReceivePacket(int socket, char* buffer, size_t size) {
  Packet packet;
  iovec iov{buffer, size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  const ssize_t n = RetryOnEintr([&] { return ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC); });
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return absl::UnavailableError("no packet yet");
    }
    return absl::ErrnoToStatus(errno, "recvmsg(control packet)");
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      packet.fds.emplace_back(fd);
    }
  }
  if (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) {
    return absl::DataLossError(absl::StrCat("control packet truncated (",
                                            (msg.msg_flags & MSG_CTRUNC) ? "fds" : "bytes", "); ",
                                            packet.fds.size(), " fds received and closed"));
  }
  if (n == 0 && packet.fds.empty()) return absl::NotFoundError("control socket closed");
  packet.bytes.assign(buffer, static_cast<size_t>(n));
  return packet;
}

}  // namespace forkpool
