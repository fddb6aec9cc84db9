// Fuzzes FrameDecoder (common/frame.h): arbitrary bytes in arbitrary splits, fed by
// Append or read from a pipe with ReadFrom, then Next() until it needs more bytes or
// fails. Checks the decoder against a reference model of the stream: every frame it
// returns is exactly the next length-prefixed body, never over the limit, and the
// bytes it holds back are exactly the unconsumed rest. Each frame is parsed as a
// FromWorker, as the daemon does.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <fuzzer/FuzzedDataProvider.h>

#include "common/frame.h"
#include "common/unique_fd.h"
#include "fuzz/fuzz_util.h"

namespace {

using forkpool::FrameDecoder;
using forkpool::kFrameHeaderBytes;

size_t HeaderLength(std::string_view stream, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(stream.data() + at);
  return static_cast<size_t>(p[0]) | (static_cast<size_t>(p[1]) << 8) |
         (static_cast<size_t>(p[2]) << 16) | (static_cast<size_t>(p[3]) << 24);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  forkpool::fuzz::QuietProtobuf();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  // Small limits make the limit check reachable with small inputs.
  static constexpr size_t kLimits[] = {0, 1, 7, 64, 1000, forkpool::kDefaultMaxFrameBytes};
  const size_t limit = in.PickValueInArray(kLimits);
  const bool use_pipe = in.ConsumeBool();
  FrameDecoder decoder(limit);

  forkpool::UniqueFd read_end, write_end;
  if (use_pipe) {
    int p[2];
    FUZZ_CHECK(::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0, "pipe2");
    read_end.reset(p[0]);
    write_end.reset(p[1]);
  }

  std::string stream;   // every byte fed so far
  size_t consumed = 0;  // bytes of `stream` returned as frames (with headers)
  size_t checksum = 0;
  while (in.remaining_bytes() > 0) {
    const size_t chunk_len = in.ConsumeIntegralInRange<size_t>(0, 4096);
    const std::string chunk = in.ConsumeBytesAsString(chunk_len);
    stream += chunk;
    if (use_pipe) {
      if (!chunk.empty()) {
        const ssize_t n = ::write(write_end.get(), chunk.data(), chunk.size());
        FUZZ_CHECK(n == static_cast<ssize_t>(chunk.size()), "short write to the pipe");
      }
      while (true) {
        absl::StatusOr<size_t> n = decoder.ReadFrom(read_end.get());
        if (!n.ok()) {
          FUZZ_CHECK(absl::IsUnavailable(n.status()), "ReadFrom error other than EAGAIN");
          break;
        }
        FUZZ_CHECK(*n > 0, "EOF from a pipe whose write end is open");
      }
    } else {
      decoder.Append(chunk);
    }
    while (true) {
      absl::StatusOr<std::optional<std::string_view>> frame = decoder.Next();
      const size_t avail = stream.size() - consumed;
      if (!frame.ok()) {
        // Only an oversized header may fail, and the stream is then unusable.
        FUZZ_CHECK(absl::IsInvalidArgument(frame.status()), "unexpected error code");
        FUZZ_CHECK(avail >= kFrameHeaderBytes, "error before a whole header arrived");
        FUZZ_CHECK(HeaderLength(stream, consumed) > limit, "error for a frame within limit");
        forkpool::fuzz::Sink(checksum);
        return 0;
      }
      if (!frame->has_value()) {
        FUZZ_CHECK(decoder.pending_bytes() == avail, "pending bytes disagree with the model");
        FUZZ_CHECK(avail < kFrameHeaderBytes ||
                       kFrameHeaderBytes + HeaderLength(stream, consumed) > avail,
                   "a complete frame was held back");
        break;
      }
      const std::string_view body = **frame;
      FUZZ_CHECK(avail >= kFrameHeaderBytes, "frame without a header");
      const size_t len = HeaderLength(stream, consumed);
      FUZZ_CHECK(len <= limit, "frame larger than the limit");
      FUZZ_CHECK(body.size() == len, "frame length differs from its header");
      FUZZ_CHECK(body == std::string_view(stream).substr(consumed + kFrameHeaderBytes, len),
                 "frame bytes differ from the stream");
      consumed += kFrameHeaderBytes + len;
      forkpool::internal::FromWorker message;
      if (message.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
        checksum += forkpool::fuzz::Touch(message);
      }
    }
  }
  forkpool::fuzz::Sink(checksum);
  return 0;
}
