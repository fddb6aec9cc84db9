// Tests for server/daemon/net/handshake_gate.h: the preface check, and connections held,
// handed on or closed over real socketpairs and a real IoLoop.
#include "server/daemon/net/handshake_gate.h"

#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/status_matchers.h"
#include "tests/unit/test_util.h"

namespace forkpool {
namespace {

using ::forkpool::testing::IsOk;
using ::forkpool::testing::MakeSocketPair;

constexpr absl::Duration kPatience = absl::Seconds(10);

// The preface and an empty SETTINGS frame, as a gRPC client starts.
std::string ClientStart() {
  std::string s(kHttp2ClientPreface);
  s.append("\x00\x00\x00\x04\x00\x00\x00\x00\x00", 9);
  return s;
}

TEST(ClassifyPrefaceTest, PrefixesWaitAndTheFullStartIsComplete) {
  const std::string start = ClientStart();
  for (size_t n = 0; n < start.size(); ++n) {
    EXPECT_EQ(ClassifyPreface(absl::string_view(start).substr(0, n)), PrefaceState::kIncomplete)
        << n;
  }
  EXPECT_EQ(ClassifyPreface(start), PrefaceState::kComplete);
  // A SETTINGS frame with two settings (12 bytes of payload) is fine too.
  std::string two = std::string(kHttp2ClientPreface) + std::string("\x00\x00\x0c\x04\x00", 5) +
                    std::string(4, '\0');
  EXPECT_EQ(ClassifyPreface(two), PrefaceState::kComplete);
}

TEST(ClassifyPrefaceTest, AnythingElseIsNotHttp2) {
  EXPECT_EQ(ClassifyPreface("GET / HTTP/1.1\r\n"), PrefaceState::kNotHttp2);
  EXPECT_EQ(ClassifyPreface("PRI * HTTP/1.1"), PrefaceState::kNotHttp2);
  std::string start = ClientStart();
  start[24 + 3] = 0x1;  // HEADERS, not SETTINGS
  EXPECT_EQ(ClassifyPreface(start), PrefaceState::kNotHttp2);
  start = ClientStart();
  start[24 + 4] = 0x1;  // a SETTINGS ACK
  EXPECT_EQ(ClassifyPreface(start), PrefaceState::kNotHttp2);
  start = ClientStart();
  start[24 + 8] = 0x1;  // on stream 1
  EXPECT_EQ(ClassifyPreface(start), PrefaceState::kNotHttp2);
  start = ClientStart();
  start[24 + 2] = 0x5;  // a length that is no whole number of settings
  EXPECT_EQ(ClassifyPreface(start), PrefaceState::kNotHttp2);
}

// What the gate did with each connection.
struct Outcomes {
  absl::Mutex mu;
  std::vector<UniqueFd> ready ABSL_GUARDED_BY(mu);
  std::vector<HandshakeGate::Drop> dropped ABSL_GUARDED_BY(mu);
};

class HandshakeGateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loop = IoLoop::Create();
    ASSERT_THAT(loop, IsOk());
    loop_ = std::move(*loop);
    loop_->Start();
  }
  void TearDown() override {
    if (gate_) gate_->CloseAll();
    loop_->Stop();
    gate_.reset();
  }

  void MakeGate(absl::Duration timeout) {
    gate_ = std::make_unique<HandshakeGate>(
        loop_.get(), timeout,
        [this](UniqueFd fd) {
          absl::MutexLock lock(&out_.mu);
          out_.ready.push_back(std::move(fd));
        },
        [this](int, HandshakeGate::Drop why) {
          absl::MutexLock lock(&out_.mu);
          out_.dropped.push_back(why);
        });
  }

  // Gives the server end of a new socketpair to the gate (on the loop thread, as the
  // listener does); returns the client end.
  UniqueFd Connect() {
    auto [server, client] = MakeSocketPair(SOCK_STREAM | SOCK_NONBLOCK);
    absl::Notification added;
    loop_->Post([&, fd = std::make_shared<UniqueFd>(std::move(server))] {
      gate_->Add(std::move(*fd));
      added.Notify();
    });
    EXPECT_TRUE(added.WaitForNotificationWithTimeout(kPatience));
    return std::move(client);
  }

  bool AwaitOutcomes(size_t n) {
    struct Arg {
      Outcomes* out;
      size_t n;
    } arg{&out_, n};
    absl::MutexLock lock(&out_.mu);
    return out_.mu.AwaitWithTimeout(absl::Condition(
                                        +[](Arg* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                          return a->out->ready.size() + a->out->dropped.size() >=
                                                 a->n;
                                        },
                                        &arg),
                                    kPatience);
  }

  size_t ReadyCount() {
    absl::MutexLock lock(&out_.mu);
    return out_.ready.size();
  }

  // True when `client` sees its connection closed within kPatience: EOF, or
  // ECONNRESET when the server end closed with bytes unread (man 7 unix).
  static bool SeesEof(int client) {
    pollfd p{client, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(kPatience))) != 1) return false;
    char c;
    const ssize_t n = ::recv(client, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

  std::unique_ptr<IoLoop> loop_;
  std::unique_ptr<HandshakeGate> gate_;
  Outcomes out_;
};

TEST_F(HandshakeGateTest, AStartSentBeforeTheAcceptIsHandedOnWithEveryByte) {
  MakeGate(kPatience);
  auto [server, client] = MakeSocketPair(SOCK_STREAM | SOCK_NONBLOCK);
  const std::string start = ClientStart() + "more";
  ASSERT_EQ(::send(client.get(), start.data(), start.size(), 0),
            static_cast<ssize_t>(start.size()));
  absl::Notification added;
  loop_->Post([&] {
    gate_->Add(std::move(server));
    added.Notify();
  });
  ASSERT_TRUE(added.WaitForNotificationWithTimeout(kPatience));
  ASSERT_TRUE(AwaitOutcomes(1));
  EXPECT_EQ(gate_->waiting(), 0);
  absl::MutexLock lock(&out_.mu);
  ASSERT_EQ(out_.ready.size(), 1u);
  // Peeked, not read: gRPC gets all of it.
  char buf[64];
  ASSERT_EQ(::recv(out_.ready[0].get(), buf, sizeof(buf), MSG_DONTWAIT),
            static_cast<ssize_t>(start.size()));
  EXPECT_EQ(std::string(buf, start.size()), start);
}

// Byte by byte: each arrival is a new edge, the connection waits until the last one,
// and half a preface does not make the loop spin (a level-triggered watch of a
// peeked fd would).
TEST_F(HandshakeGateTest, AStartArrivingByteByByteWaitsWithoutSpinning) {
  MakeGate(kPatience);
  UniqueFd client = Connect();
  const std::string start = ClientStart();
  rusage before{};
  ::getrusage(RUSAGE_SELF, &before);
  const absl::Time began = absl::Now();
  for (size_t i = 0; i + 1 < start.size(); ++i) {
    ASSERT_EQ(::send(client.get(), &start[i], 1, 0), 1);
    if (i == 10) absl::SleepFor(absl::Milliseconds(300));  // half a preface, waiting
  }
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(ReadyCount(), 0u);
  EXPECT_EQ(gate_->waiting(), 1);
  rusage after{};
  ::getrusage(RUSAGE_SELF, &after);
  const absl::Duration wall = absl::Now() - began;
  const absl::Duration cpu =
      absl::DurationFromTimeval(after.ru_utime) - absl::DurationFromTimeval(before.ru_utime) +
      absl::DurationFromTimeval(after.ru_stime) - absl::DurationFromTimeval(before.ru_stime);
  EXPECT_LT(cpu, wall / 2) << "the loop spun on a half-sent preface";
  ASSERT_EQ(::send(client.get(), &start.back(), 1, 0), 1);
  ASSERT_TRUE(AwaitOutcomes(1));
  EXPECT_EQ(ReadyCount(), 1u);
}

TEST_F(HandshakeGateTest, ASilentConnectionIsClosedAtTheDeadlineNotBefore) {
  const absl::Duration timeout = absl::Milliseconds(300);
  MakeGate(timeout);
  const absl::Time start = absl::Now();
  UniqueFd client = Connect();
  // Half a preface does not count.
  ASSERT_EQ(::send(client.get(), "PRI * HTTP", 10, 0), 10);
  ASSERT_TRUE(SeesEof(client.get()));
  EXPECT_GE(absl::Now() - start, timeout);
  ASSERT_TRUE(AwaitOutcomes(1));
  absl::MutexLock lock(&out_.mu);
  EXPECT_THAT(out_.dropped, ::testing::ElementsAre(HandshakeGate::Drop::kTimedOut));
  EXPECT_TRUE(out_.ready.empty());
}

TEST_F(HandshakeGateTest, NotHttp2AndHangUpsAreClosedAtOnce) {
  MakeGate(kPatience);
  UniqueFd http1 = Connect();
  ASSERT_EQ(::send(http1.get(), "GET / HTTP/1.1\r\n", 16, 0), 16);
  ASSERT_TRUE(SeesEof(http1.get()));
  UniqueFd quitter = Connect();
  ASSERT_EQ(::send(quitter.get(), "PRI * ", 6, 0), 6);
  ASSERT_EQ(::shutdown(quitter.get(), SHUT_WR), 0);
  ASSERT_TRUE(SeesEof(quitter.get()));
  ASSERT_TRUE(AwaitOutcomes(2));
  absl::MutexLock lock(&out_.mu);
  EXPECT_THAT(out_.dropped,
              ::testing::ElementsAre(HandshakeGate::Drop::kNotHttp2, HandshakeGate::Drop::kHungUp));
}

TEST_F(HandshakeGateTest, CloseAllClosesWhatWaitsAndLaterAdds) {
  MakeGate(kPatience);
  UniqueFd a = Connect();
  UniqueFd b = Connect();
  EXPECT_EQ(gate_->waiting(), 2);
  gate_->CloseAll();
  EXPECT_EQ(gate_->waiting(), 0);
  EXPECT_TRUE(SeesEof(a.get()));
  EXPECT_TRUE(SeesEof(b.get()));
  UniqueFd c = Connect();
  EXPECT_TRUE(SeesEof(c.get()));
  absl::MutexLock lock(&out_.mu);
  EXPECT_EQ(out_.dropped.size(), 3u);
  EXPECT_TRUE(out_.ready.empty());
}

}  // namespace
}  // namespace forkpool
