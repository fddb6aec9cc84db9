// Tests for common/fd_passing.h: packets with SCM_RIGHTS fds over SOCK_SEQPACKET.
#include "common/fd_passing.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
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
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::SizeIs;

// The inode behind `fd`, to tell which object a received fd refers to.
ino_t InodeOf(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return st.st_ino;
}

TEST(FdPassingTest, PacketWithThreeFdsArrivesWithThreeWorkingFds) {
  auto [a, b] = MakeSocketPair(SOCK_SEQPACKET);
  std::vector<UniqueFd> read_ends;
  std::vector<ino_t> inodes;
  {
    std::vector<UniqueFd> write_ends;
    std::vector<int> raw;
    for (int i = 0; i < 3; ++i) {
      auto [r, w] = MakePipe();
      inodes.push_back(InodeOf(w.get()));
      raw.push_back(w.get());
      read_ends.push_back(std::move(r));
      write_ends.push_back(std::move(w));
    }
    ASSERT_THAT(SendPacket(a.get(), "three pipes", raw), IsOk());
    // The sender's copies close here: only the passed copies keep the pipes open.
  }

  auto packet = ReceivePacket(b.get());
  ASSERT_THAT(packet, IsOk());
  EXPECT_EQ(packet->bytes, "three pipes");
  ASSERT_THAT(packet->fds, SizeIs(3));
  for (int i = 0; i < 3; ++i) {
    const int fd = packet->fds[i].get();
    ASSERT_GE(fd, 0);
    // Same pipe, in the order sent.
    EXPECT_EQ(InodeOf(fd), inodes[i]) << "fd " << i;
    // MSG_CMSG_CLOEXEC: a passed fd must not leak into a later exec.
    const int flags = ::fcntl(fd, F_GETFD);
    ASSERT_GE(flags, 0);
    EXPECT_TRUE(flags & FD_CLOEXEC) << "fd " << i << " lacks FD_CLOEXEC";
    // It works: bytes written through it come out of the pipe's read end.
    const std::string msg = absl::StrCat("through pipe ", i);
    ASSERT_EQ(::write(fd, msg.data(), msg.size()), static_cast<ssize_t>(msg.size()));
    char buf[64];
    const ssize_t n = ::read(read_ends[i].get(), buf, sizeof(buf));
    ASSERT_EQ(n, static_cast<ssize_t>(msg.size()));
    EXPECT_EQ(std::string(buf, n), msg);
  }
  // Closing the passed write ends is the pipes' EOF: no other copy survived.
  packet->fds.clear();
  for (int i = 0; i < 3; ++i) {
    char c;
    EXPECT_EQ(::read(read_ends[i].get(), &c, 1), 0) << "pipe " << i << " still open";
  }
}

TEST(FdPassingTest, MessageBoundariesAreKept) {
  auto [a, b] = MakeSocketPair(SOCK_SEQPACKET);
  const std::vector<std::string> sent = {"first", "second, longer", "3",
                                         std::string(100000, 'z')};
  for (const auto& s : sent) ASSERT_THAT(SendPacket(a.get(), s), IsOk());
  for (const auto& s : sent) {
    auto packet = ReceivePacket(b.get());
    ASSERT_THAT(packet, IsOk());
    EXPECT_EQ(packet->bytes.size(), s.size());
    EXPECT_TRUE(packet->bytes == s);
    EXPECT_TRUE(packet->fds.empty());
  }
}

TEST(FdPassingTest, FdsStayWithTheirOwnPacket) {
  auto [a, b] = MakeSocketPair(SOCK_SEQPACKET);
  auto [r1, w1] = MakePipe();
  auto [r2, w2] = MakePipe();
  const int first[] = {r1.get()};
  const int second[] = {r2.get(), w2.get()};
  ASSERT_THAT(SendPacket(a.get(), "one", first), IsOk());
  ASSERT_THAT(SendPacket(a.get(), "none"), IsOk());
  ASSERT_THAT(SendPacket(a.get(), "two", second), IsOk());

  auto p1 = ReceivePacket(b.get());
  ASSERT_THAT(p1, IsOk());
  EXPECT_EQ(p1->bytes, "one");
  ASSERT_THAT(p1->fds, SizeIs(1));
  EXPECT_EQ(InodeOf(p1->fds[0].get()), InodeOf(r1.get()));
  auto p2 = ReceivePacket(b.get());
  ASSERT_THAT(p2, IsOk());
  EXPECT_EQ(p2->bytes, "none");
  EXPECT_THAT(p2->fds, SizeIs(0));
  auto p3 = ReceivePacket(b.get());
  ASSERT_THAT(p3, IsOk());
  EXPECT_EQ(p3->bytes, "two");
  ASSERT_THAT(p3->fds, SizeIs(2));
  EXPECT_EQ(InodeOf(p3->fds[0].get()), InodeOf(r2.get()));
  EXPECT_EQ(InodeOf(p3->fds[1].get()), InodeOf(w2.get()));
}

TEST(FdPassingTest, EmptyBytesWithAnFdIsAPacketNotEof) {
  auto [a, b] = MakeSocketPair(SOCK_SEQPACKET);
  auto [r, w] = MakePipe();
  const int fds[] = {w.get()};
  ASSERT_THAT(SendPacket(a.get(), "", fds), IsOk());
  auto packet = ReceivePacket(b.get());
  ASSERT_THAT(packet, IsOk());
  EXPECT_EQ(packet->bytes, "");
  EXPECT_THAT(packet->fds, SizeIs(1));
}

TEST(FdPassingTest, EofIsNotFound) {
  auto [a, b] = MakeSocketPair(SOCK_SEQPACKET);
  ASSERT_THAT(SendPacket(a.get(), "last"), IsOk());
  a.reset();
  auto packet = ReceivePacket(b.get());
  ASSERT_THAT(packet, IsOk());
  EXPECT_EQ(packet->bytes, "last");
  EXPECT_THAT(ReceivePacket(b.get()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("closed")));
}

TEST(FdPassingTest, NonBlockingSocketWithNothingIsUnavailable) {
  auto [a, b] = MakeSocketPair(SOCK_SEQPACKET);
  SetNonBlocking(b.get());
  EXPECT_THAT(ReceivePacket(b.get()), StatusIs(absl::StatusCode::kUnavailable));
}

TEST(FdPassingTest, ExactlyMaxFdsIsAccepted) {
  auto [a, b] = MakeSocketPair(SOCK_SEQPACKET);
  auto [r, w] = MakePipe();
  const std::vector<int> fds(kMaxPassedFds, w.get());
  ASSERT_THAT(SendPacket(a.get(), "max", fds), IsOk());
  auto packet = ReceivePacket(b.get());
  ASSERT_THAT(packet, IsOk());
  EXPECT_THAT(packet->fds, SizeIs(kMaxPassedFds));
}

TEST(FdPassingTest, MoreThanMaxFdsIsRejectedAtSendAndNothingIsSent) {
  auto [a, b] = MakeSocketPair(SOCK_SEQPACKET);
  auto [r, w] = MakePipe();
  const std::vector<int> fds(kMaxPassedFds + 1, w.get());
  EXPECT_THAT(SendPacket(a.get(), "too many", fds),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(absl::StrCat("cannot pass ", kMaxPassedFds + 1)),
                             HasSubstr(absl::StrCat("limit is ", kMaxPassedFds)))));
  SetNonBlocking(b.get());
  EXPECT_THAT(ReceivePacket(b.get()), StatusIs(absl::StatusCode::kUnavailable));
}

TEST(FdPassingTest, SendToAClosedPeerIsAnErrorNotSigpipe) {
  auto [a, b] = MakeSocketPair(SOCK_SEQPACKET);
  b.reset();
  EXPECT_THAT(SendPacket(a.get(), "nobody listens"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("sendmsg(control packet)")));
}

}  // namespace
}  // namespace forkpool
