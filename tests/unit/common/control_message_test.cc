// Tests for common/control_message.h: messages of any size over SOCK_SEQPACKET, sent
// blocking by a helper and queued without blocking by forkpoold.
#include "common/control_message.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "common/unique_fd.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/status_matchers.h"
#include "tests/unit/test_util.h"

namespace forkpool {
namespace {

using ::forkpool::testing::IsOk;
using ::forkpool::testing::MakePipe;
using ::forkpool::testing::MakeSocketPair;
using ::forkpool::testing::SetNonBlocking;
using ::forkpool::testing::StatusIs;
using ::testing::SizeIs;

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7) % 26);
  return s;
}

// 4 MiB: far past one SEQPACKET packet (the send buffer, about 208 KiB here), which
// used to kill the helper that tried to send it.
TEST(ControlMessageTest, MessageFarLargerThanAPacketArrivesWholeWithItsFds) {
  auto [a, b] = MakeSocketPair(SOCK_SEQPACKET);
  auto [r, w] = MakePipe();
  const std::string big = Pattern(4u << 20);
  std::thread sender([&, fd = a.get(), pipe_w = w.get()] {
    const int fds[] = {pipe_w};
    EXPECT_THAT(SendControlMessage(fd, big, fds), IsOk());
  });
  ControlReader reader;
  absl::StatusOr<Packet> got = reader.Next(b.get());
  sender.join();
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->bytes.size(), big.size());
  EXPECT_TRUE(got->bytes == big);
  ASSERT_THAT(got->fds, SizeIs(1));
  struct stat st1 {
  }, st2{};
  ASSERT_EQ(::fstat(got->fds[0].get(), &st1), 0);
  ASSERT_EQ(::fstat(w.get(), &st2), 0);
  EXPECT_EQ(st1.st_ino, st2.st_ino);
}

TEST(ControlMessageTest, EmptyMessageIsOnePacket) {
  auto [a, b] = MakeSocketPair(SOCK_SEQPACKET);
  ASSERT_THAT(SendControlMessage(a.get(), ""), IsOk());
  ControlReader reader;
  absl::StatusOr<Packet> got = reader.Next(b.get());
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->bytes, "");
}

// forkpoold's side never blocks: a full socket leaves packets queued, a partial
// message on a non-blocking reader says Unavailable and is finished by a later call.
TEST(ControlMessageTest, WriterQueuesWhatAFullSocketRefusesAndReaderResumes) {
  auto [a, b] = MakeSocketPair(SOCK_SEQPACKET);
  SetNonBlocking(a.get());
  SetNonBlocking(b.get());
  ControlWriter writer;
  const std::string big = Pattern(2u << 20);
  writer.Queue(big);
  writer.Queue("second");
  absl::StatusOr<bool> more = writer.Flush(a.get());
  ASSERT_THAT(more, IsOk());
  EXPECT_TRUE(*more) << "2 MiB fit a socket buffer at once?";
  EXPECT_GT(writer.queued_bytes(), 0u);
  ControlReader reader;
  std::vector<std::string> got;
  for (int rounds = 0; rounds < 10000 && got.size() < 2; ++rounds) {
    absl::StatusOr<Packet> p = reader.Next(b.get());
    if (p.ok()) {
      got.push_back(p->bytes);
      continue;
    }
    ASSERT_THAT(p.status(), StatusIs(absl::StatusCode::kUnavailable));
    ASSERT_THAT(writer.Flush(a.get()), IsOk());
  }
  ASSERT_THAT(got, SizeIs(2));
  EXPECT_TRUE(got[0] == big);
  EXPECT_EQ(got[1], "second");
  EXPECT_TRUE(writer.empty());
}

TEST(ControlMessageTest, PacketWithoutChunkByteIsAProtocolError) {
  auto [a, b] = MakeSocketPair(SOCK_SEQPACKET);
  ASSERT_THAT(SendPacket(a.get(), std::string("\x07hello", 6)), IsOk());
  ControlReader reader;
  EXPECT_THAT(reader.Next(b.get()), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ControlMessageTest, EofIsNotFound) {
  auto [a, b] = MakeSocketPair(SOCK_SEQPACKET);
  a.reset();
  ControlReader reader;
  EXPECT_THAT(reader.Next(b.get()), StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace forkpool
