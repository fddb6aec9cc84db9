// Fuzzes the fork-helper control protocol: packets of arbitrary bytes go through a
// SOCK_SEQPACKET socketpair (SendPacket on one end, ReceivePacket from
// common/fd_passing.h on the other, no fds attached) and each is parsed as a
// forkpool.internal.ToHelper (what the helper reads) and FromHelper (what the daemon
// reads), every field read and the status converted as the daemon does. The same
// packets also go, as raw chunks, through a ControlReader (common/control_message.h):
// whatever their chunk bytes say, it yields whole messages, waits for more, or refuses
// them, and never crashes. The helpers' own request handling is not reachable without
// forking (see fuzz/README.md).
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <fuzzer/FuzzedDataProvider.h>

#include "common/control_message.h"
#include "common/fd_passing.h"
#include "common/unique_fd.h"
#include "fuzz/fuzz_util.h"

namespace {

// Parse, serialise, parse again: the second serialisation must equal the first.
template <typename Message>
size_t ParseAndTouch(const std::string& bytes) {
  Message m;
  if (!m.ParseFromString(bytes)) return 0;
  size_t sum = forkpool::fuzz::Touch(m);
  const std::string once = m.SerializeAsString();
  Message again;
  FUZZ_CHECK(again.ParseFromString(once), "a re-serialised message does not parse");
  FUZZ_CHECK(again.SerializeAsString() == once, "serialisation is not stable");
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  forkpool::fuzz::QuietProtobuf();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  int sv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
  forkpool::UniqueFd sender(sv[0]), receiver(sv[1]);
  int cv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, cv) == 0,
             "socketpair");
  forkpool::UniqueFd chunk_sender(cv[0]), chunk_receiver(cv[1]);
  auto reader = std::make_unique<forkpool::ControlReader>();
  size_t checksum = 0;
  while (in.remaining_bytes() > 0) {
    const std::string bytes =
        in.ConsumeBytesAsString(in.ConsumeIntegralInRange<size_t>(1, 4096));
    FUZZ_CHECK(forkpool::SendPacket(sender.get(), bytes).ok(), "SendPacket");
    absl::StatusOr<forkpool::Packet> packet = forkpool::ReceivePacket(receiver.get());
    if (bytes.empty()) {
      // A zero-length packet reads like EOF (recvmsg returns 0): documented NotFound.
      FUZZ_CHECK(absl::IsNotFound(packet.status()), "an empty packet was not NotFound");
      continue;
    }
    FUZZ_CHECK(packet.ok(), "ReceivePacket failed on a packet SendPacket sent");
    FUZZ_CHECK(packet->fds.empty(), "fds arrived though none were sent");
    FUZZ_CHECK(packet->bytes == bytes, "the packet changed on the way");
    checksum += ParseAndTouch<forkpool::internal::ToHelper>(packet->bytes);
    checksum += ParseAndTouch<forkpool::internal::FromHelper>(packet->bytes);
    // The bytes as one chunk: the first byte is the chunk flag.
    FUZZ_CHECK(forkpool::SendPacket(chunk_sender.get(), bytes).ok(), "SendPacket(chunk)");
    absl::StatusOr<forkpool::Packet> message = reader->Next(chunk_receiver.get());
    if (message.ok()) {
      checksum += ParseAndTouch<forkpool::internal::FromHelper>(message->bytes);
    } else if (!absl::IsUnavailable(message.status())) {
      FUZZ_CHECK(absl::IsInvalidArgument(message.status()),
                 "a ControlReader error that is not InvalidArgument");
      reader = std::make_unique<forkpool::ControlReader>();  // the stream is unusable
    }
  }
  // The peer closes: NotFound, as the helper and the daemon expect.
  sender.reset();
  FUZZ_CHECK(absl::IsNotFound(forkpool::ReceivePacket(receiver.get()).status()),
             "EOF was not NotFound");
  forkpool::fuzz::Sink(checksum);
  return 0;
}
