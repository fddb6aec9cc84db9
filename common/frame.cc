// Length-prefixed frame encoding and decoding.
#include "common/frame.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/unique_fd.h"
#include "google/protobuf/message_lite.h"

namespace forkpool {

void AppendFrame(const google::protobuf::MessageLite& message, std::string* out) {
  const size_t size = message.ByteSizeLong();
  const size_t old = out->size();
  out->resize(old + kFrameHeaderBytes + size);
  char* p = out->data() + old;
  p[0] = static_cast<char>(size & 0xff);
  p[1] = static_cast<char>((size >> 8) & 0xff);
  p[2] = static_cast<char>((size >> 16) & 0xff);
  p[3] = static_cast<char>((size >> 24) & 0xff);
  message.SerializeWithCachedSizesToArray(
      reinterpret_cast<uint8_t*>(p + kFrameHeaderBytes));
}

absl::StatusOr<size_t> FrameDecoder::ReadFrom(int fd) {
  // Compact once the consumed prefix dominates, so the buffer does not grow forever.
  if (start_ > 0 && start_ * 2 >= buffer_.size()) {
    buffer_.erase(0, start_);
    start_ = 0;
  }
  constexpr size_t kChunk = 64 * 1024;
  const size_t old = buffer_.size();
  buffer_.resize(old + kChunk);
  const ssize_t n =
      RetryOnEintr([&] { return ::read(fd, buffer_.data() + old, kChunk); });
  if (n < 0) {
    const int err = errno;
    buffer_.resize(old);
    if (err == EAGAIN || err == EWOULDBLOCK) {
      return absl::UnavailableError("no data yet");
    }
    return absl::ErrnoToStatus(err, "read(frame stream)");
  }
  buffer_.resize(old + static_cast<size_t>(n));
  return static_cast<size_t>(n);
}

absl::StatusOr<std::optional<std::string_view>> FrameDecoder::Next() {
  const size_t avail = buffer_.size() - start_;
  if (avail < kFrameHeaderBytes) return std::nullopt;
  const auto* p = reinterpret_cast<const unsigned char*>(buffer_.data() + start_);
  const size_t size = static_cast<size_t>(p[0]) | (static_cast<size_t>(p[1]) << 8) |
                      (static_cast<size_t>(p[2]) << 16) |
                      (static_cast<size_t>(p[3]) << 24);
  if (size > max_frame_bytes_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame of ", size, " bytes exceeds the limit of ", max_frame_bytes_,
        " bytes"));
  }
  if (avail < kFrameHeaderBytes + size) return std::nullopt;
  std::string_view body(buffer_.data() + start_ + kFrameHeaderBytes, size);
  start_ += kFrameHeaderBytes + size;
  if (start_ == buffer_.size()) {
    // Everything consumed: the view stays valid because clear() keeps the storage
    // and nothing is written before the next call.
    buffer_.clear();
    start_ = 0;
  }
  return body;
}

absl::Status WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = RetryOnEintr(
        [&] { return ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL); });
    if (n < 0) return absl::ErrnoToStatus(errno, "send(frame)");
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status ReadMessage(int fd, FrameDecoder& decoder,
                         google::protobuf::MessageLite* message) {
  while (true) {
    auto frame = decoder.Next();
    if (!frame.ok()) return frame.status();
    if (frame->has_value()) {
      if (!message->ParseFromArray((*frame)->data(),
                                   static_cast<int>((*frame)->size()))) {
        return absl::InvalidArgumentError(
            absl::StrCat("unparsable frame of ", (*frame)->size(), " bytes"));
      }
      return absl::OkStatus();
    }
    auto n = decoder.ReadFrom(fd);
    if (!n.ok()) return n.status();
    if (*n == 0) {
      if (decoder.pending_bytes() == 0) return absl::NotFoundError("end of stream");
      return absl::DataLossError(absl::StrCat("end of stream inside a frame (",
                                              decoder.pending_bytes(),
                                              " bytes pending)"));
    }
  }
}

}  // namespace forkpool
