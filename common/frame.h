// Length-prefixed frames: a 4-byte little-endian length, then that many bytes.
// The worker protocol travels in these over a stream socket.
#ifndef FORKPOOL_COMMON_FRAME_H_
#define FORKPOOL_COMMON_FRAME_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace google::protobuf {
class MessageLite;
}

namespace forkpool {

// Frames larger than this are refused unless a decoder is told otherwise.
inline constexpr size_t kDefaultMaxFrameBytes = 64u << 20;
inline constexpr size_t kFrameHeaderBytes = 4;

// Appends one frame holding `message` serialised to `out`.
void AppendFrame(const google::protobuf::MessageLite& message, std::string* out);

// Splits a byte stream into frames, however the bytes arrive (short reads, several
// frames per read). Thread-compatible.
class FrameDecoder {
 public:
  explicit FrameDecoder(size_t max_frame_bytes = kDefaultMaxFrameBytes)
      : max_frame_bytes_(max_frame_bytes) {}

  // Adds bytes read from the stream.
  void Append(std::string_view bytes);
  // Reads once from `fd` into the buffer. Returns the byte count (0 at EOF), or
  // EAGAIN as UnavailableError for a non-blocking fd with nothing to read.
  absl::StatusOr<size_t> ReadFrom(int fd);
  // The next complete frame's body, valid until the next call on this decoder;
  // nullopt when more bytes are needed; InvalidArgument (naming the length and the
  // limit) for a frame over the limit. After an error the stream is unusable.
  absl::StatusOr<std::optional<std::string_view>> Next();
  // Bytes held that do not yet form a complete frame.
  size_t pending_bytes() const { return end_ - start_; }

 private:
  // Makes room for at least `n` more bytes after end_, keeping [start_, end_).
  void Reserve(size_t n);

  size_t max_frame_bytes_;
  // Bytes [start_, end_) of buffer_ are held; the rest is not initialised (a
  // std::string would zero what each read is about to overwrite).
  std::unique_ptr<char[]> buffer_;
  size_t capacity_ = 0;
  size_t start_ = 0;
  size_t end_ = 0;
};

// Blocking helpers for a process that owns its socket alone (the worker).
// Writes all of `bytes`, retrying short writes and EINTR; MSG_NOSIGNAL.
absl::Status WriteAll(int fd, std::string_view bytes);
// Reads the next frame and parses it into `message`. NotFound at a clean EOF
// between frames; DataLoss for EOF inside a frame; InvalidArgument for an oversized
// or unparsable frame.
absl::Status ReadMessage(int fd, FrameDecoder& decoder,
                         google::protobuf::MessageLite* message);

}  // namespace forkpool

#endif  // FORKPOOL_COMMON_FRAME_H_
