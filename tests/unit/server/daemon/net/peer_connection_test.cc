// Tests for server/daemon/net/peer_connection.h: the registry's counts and prune, and
// ClientGone when the daemon is out of fds.
#include "server/daemon/net/peer_connection.h"

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace forkpool {
namespace {

using ::forkpool::testing::MakeSocketPair;

PeerRegistry::Peer PeerOn(int fd, uid_t uid, bool admin) {
  struct stat st;
  EXPECT_EQ(::fstat(fd, &st), 0);
  PeerRegistry::Peer peer;
  peer.inode = st.st_ino;
  peer.pid = ::getpid();
  peer.uid = uid;
  peer.admin = admin;
  return peer;
}

TEST(PeerRegistryTest, CountsByUidAndAdminUntilPrunedOrForgotten) {
  PeerRegistry registry;
  std::vector<std::pair<UniqueFd, UniqueFd>> pairs;
  for (int i = 0; i < 4; ++i) pairs.push_back(MakeSocketPair(SOCK_STREAM));
  registry.Record(pairs[0].first.get(), PeerOn(pairs[0].first.get(), 1000, false));
  registry.Record(pairs[1].first.get(), PeerOn(pairs[1].first.get(), 1000, false));
  registry.Record(pairs[2].first.get(), PeerOn(pairs[2].first.get(), 1001, false));
  registry.Record(pairs[3].first.get(), PeerOn(pairs[3].first.get(), 0, true));
  ConnectionCounts c = registry.Counts(1000);
  EXPECT_EQ(c.total, 4);
  EXPECT_EQ(c.non_admin, 3);
  EXPECT_EQ(c.same_uid, 2);
  EXPECT_EQ(registry.Counts(4242).same_uid, 0);

  // Closed behind the registry's back (as gRPC does): counted until a prune.
  pairs[0].first.reset();
  EXPECT_EQ(registry.Counts(1000).same_uid, 2);
  EXPECT_EQ(registry.Prune(), 3);
  c = registry.Counts(1000);
  EXPECT_EQ(c.total, 3);
  EXPECT_EQ(c.non_admin, 2);
  EXPECT_EQ(c.same_uid, 1);

  registry.Forget(pairs[3].first.get());
  EXPECT_EQ(registry.Counts(0).total, 2);
  EXPECT_EQ(registry.Counts(0).same_uid, 0);
  EXPECT_EQ(registry.Counts(0).non_admin, 2);
}

TEST(PeerRegistryTest, ARecordOnAReusedFdReplacesTheOldEntry) {
  PeerRegistry registry;
  auto [a, a_peer] = MakeSocketPair(SOCK_STREAM);
  const int fd = a.get();
  registry.Record(fd, PeerOn(fd, 1000, false));
  a.reset();
  auto [b, b_peer] = MakeSocketPair(SOCK_STREAM);
  ASSERT_EQ(::dup2(b.get(), fd), fd);  // the same number, another socket
  registry.Record(fd, PeerOn(fd, 2000, false));
  EXPECT_EQ(registry.Counts(1000).same_uid, 0);
  EXPECT_EQ(registry.Counts(2000).same_uid, 1);
  EXPECT_EQ(registry.Counts(2000).total, 1);
  ASSERT_TRUE(registry.Find(fd).has_value());
  EXPECT_EQ(registry.Find(fd)->uid, 2000u);
  ::close(fd);
}

// Out of fds, /proc cannot be read: that must not make a live client look gone (a
// waiting queue get would be given up). In a child, so the test's own fds stay.
TEST(ClientGoneTest, ALiveClientIsNotGoneWhenNoFdIsLeft) {
  auto [conn, client] = MakeSocketPair(SOCK_STREAM);
  PeerRegistry registry;
  PeerRegistry::Peer peer = PeerOn(conn.get(), 1000, false);
  peer.pid = ::getpid();  // the parent: alive while the child checks
  registry.Record(conn.get(), peer);
  const std::string name = absl::StrCat("fd:", conn.get());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    rlimit lim{64, 64};
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) ::_exit(2);
    while (::dup(0) >= 0) {
    }
    if (errno != EMFILE) ::_exit(3);
    ::_exit(ClientGone(name, &registry) ? 1 : 0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the live client was taken for gone";
  // And a process that has really gone is still gone.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(dead, &status, 0), dead);
  PeerRegistry::Peer gone = PeerOn(conn.get(), 1000, false);
  gone.pid = dead;
  registry.Record(conn.get(), gone);
  EXPECT_TRUE(ClientGone(name, &registry));
}

}  // namespace
}  // namespace forkpool
