// Length-prefixed frame encoding and decoding.
#include "common/frame.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/unique_fd.h"
#include "google/protobuf/message_lite.h"

namespace forkpool {
namespace {

// The body length a frame header at `header` announces.
size_t BodyLength(const char* header) {
  const auto* p = reinterpret_cast<const unsigned char*>(header);
  return static_cast<size_t>(p[0]) | (static_cast<size_t>(p[1]) << 8) |
         (static_cast<size_t>(p[2]) << 16) | (static_cast<size_t>(p[3]) << 24);
}

}  // namespace

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

void FrameDecoder::Reserve(size_t n) {
  if (capacity_ - end_ >= n) return;
  const size_t held = end_ - start_;
  if (start_ > 0 && capacity_ - held >= n && start_ >= held) {
    // Enough room once the consumed prefix is dropped, and the move is cheap.
    std::memmove(buffer_.get(), buffer_.get() + start_, held);
  } else {
    const size_t capacity = std::max(held + n, capacity_ * 2);
    std::unique_ptr<char[]> grown(new char[capacity]);
    if (held > 0) std::memcpy(grown.get(), buffer_.get() + start_, held);
    buffer_ = std::move(grown);
    capacity_ = capacity;
  }
  start_ = 0;
  end_ = held;
}

void FrameDecoder::Append(std::string_view bytes) {
  Reserve(bytes.size());
  if (!bytes.empty()) std::memcpy(buffer_.get() + end_, bytes.data(), bytes.size());
  end_ += bytes.size();
}

absl::StatusOr<size_t> FrameDecoder::ReadFrom(int fd) {
  constexpr size_t kChunk = 64 * 1024;
  // A large frame whose header is in is read in as few reads as the socket allows
  // (room for up to 4 MiB of it at a time, so a frame that only claims to be large
  // costs no more than that).
  constexpr size_t kMaxAhead = 4u << 20;
  size_t want = kChunk;
  if (end_ - start_ >= kFrameHeaderBytes) {
    const size_t size = BodyLength(buffer_.get() + start_);
    if (size <= max_frame_bytes_) {
      want = std::clamp(kFrameHeaderBytes + size - (end_ - start_), kChunk, kMaxAhead);
    }
  }
  Reserve(want);
  const ssize_t n =
      RetryOnEintr([&] { return ::read(fd, buffer_.get() + end_, capacity_ - end_); });
  if (n < 0) {
    const int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      return absl::UnavailableError("no data yet");
    }
    return absl::ErrnoToStatus(err, "read(frame stream)");
  }
  end_ += static_cast<size_t>(n);
  return static_cast<size_t>(n);
}

absl::StatusOr<std::optional<std::string_view>> FrameDecoder::Next() {
  const size_t avail = end_ - start_;
  if (avail < kFrameHeaderBytes) return std::nullopt;
  const size_t size = BodyLength(buffer_.get() + start_);
  if (size > max_frame_bytes_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame of ", size, " bytes exceeds the limit of ", max_frame_bytes_,
        " bytes"));
  }
  if (avail < kFrameHeaderBytes + size) return std::nullopt;
  std::string_view body(buffer_.get() + start_ + kFrameHeaderBytes, size);
  start_ += kFrameHeaderBytes + size;
  if (start_ == end_) {
    // Everything consumed: the view stays valid, as nothing is written before the
    // next call.
    start_ = 0;
    end_ = 0;
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
