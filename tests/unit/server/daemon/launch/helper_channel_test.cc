// Tests for HelperChannel: forkpoold's end of a fork helper, against real forked
// processes that play a helper (well or badly) on a real SOCK_SEQPACKET socket.
#include "server/daemon/launch/helper_channel.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/control_message.h"
#include "common/proto_status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/daemon/launch/process_util.h"
#include "tests/unit/status_matchers.h"

namespace forkpool {
namespace {

using ::forkpool::testing::IsOk;
using ::forkpool::testing::StatusIs;
using ::testing::HasSubstr;

void SendOrDie(int fd, const internal::FromHelper& m) {
  std::string bytes;
  m.SerializeToString(&bytes);
  if (!SendControlMessage(fd, bytes).ok()) ::_exit(3);
}

void Hello(int fd, int version = internal::CONTROL_VERSION_2) {
  internal::FromHelper hello;
  hello.mutable_hello()->set_version(static_cast<internal::ControlVersion>(version));
  hello.mutable_hello()->set_pid(::getpid());
  SendOrDie(fd, hello);
}

// The next request, or exit when forkpoold's side closed.
internal::ToHelper NextRequest(int fd) {
  static ControlReader* reader = new ControlReader();
  absl::StatusOr<Packet> p = reader->Next(fd);
  if (!p.ok()) ::_exit(0);
  internal::ToHelper request;
  if (!request.ParseFromString(p->bytes)) ::_exit(4);
  return request;
}

// Forks a process that runs `body` on its end of a control socket, then exits 0.
HelperProcess ForkFakeHelper(const std::function<void(int)>& body) {
  int sv[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(sv[0]);
    body(sv[1]);
    ::_exit(0);
  }
  ::close(sv[1]);
  HelperProcess p;
  p.pid = pid;
  p.control = UniqueFd(sv[0]);
  absl::StatusOr<UniqueFd> pidfd = PidfdOpen(pid);
  EXPECT_THAT(pidfd, IsOk());
  p.pidfd = *std::move(pidfd);
  return p;
}

// Polls until `pid` no longer exists (reaped by the channel); false after 10 s.
bool PollUntilGone(pid_t pid) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return false;
}

class HelperChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<IoLoop>> loop = IoLoop::Create();
    ASSERT_THAT(loop, IsOk());
    loop_ = *std::move(loop);
  }
  // Started only after the fake helpers are forked (fork with one thread).
  void StartLoop() { loop_->Start(); }
  void TearDown() override { loop_->Stop(); }

  std::unique_ptr<IoLoop> loop_;
  ChildRegistry children_;
};

internal::ToHelper LoadRequest() {
  internal::ToHelper r;
  r.mutable_load_pool()->set_pool("p");
  return r;
}

// 20,000 function names (about 400 KiB) in one reply: past one packet's limit.
TEST_F(HelperChannelTest, LargeReplyArrivesWhole) {
  HelperProcess fake = ForkFakeHelper([](int fd) {
    Hello(fd);
    const internal::ToHelper request = NextRequest(fd);
    internal::FromHelper reply;
    reply.set_request_id(request.request_id());
    for (int i = 0; i < 20000; ++i) {
      reply.mutable_pool_loaded()->add_functions(absl::StrCat("function_number_", i));
    }
    SendOrDie(fd, reply);
    NextRequest(fd);  // until closed
  });
  const pid_t pid = fake.pid;
  StartLoop();
  absl::StatusOr<std::shared_ptr<HelperChannel>> channel =
      HelperChannel::Start(loop_.get(), &children_, "fake", std::move(fake), {});
  ASSERT_THAT(channel, IsOk());
  EXPECT_TRUE(children_.Contains(pid));
  absl::Notification done;
  absl::StatusOr<internal::FromHelper> got = absl::UnknownError("no reply");
  ASSERT_THAT(
      (*channel)->Request(LoadRequest(), absl::Seconds(10),
                          [&](absl::StatusOr<internal::FromHelper> r, std::vector<UniqueFd>) {
                            got = std::move(r);
                            done.Notify();
                          }),
      IsOk());
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_THAT(got, IsOk());
  ASSERT_EQ(got->pool_loaded().functions_size(), 20000);
  EXPECT_EQ(got->pool_loaded().functions(19999), "function_number_19999");
  // Close: the helper sees EOF and leaves; the channel still reaps it.
  (*channel)->Close();
  channel->reset();
  ASSERT_TRUE(PollUntilGone(pid));
}

// A helper that never answers is killed at the request's deadline, and the request
// fails with DeadlineExceeded (never a hang).
TEST_F(HelperChannelTest, SilentHelperIsKilledAtTheDeadline) {
  HelperProcess fake = ForkFakeHelper([](int fd) {
    Hello(fd);
    NextRequest(fd);
    for (;;) ::pause();
  });
  const pid_t pid = fake.pid;
  StartLoop();
  absl::Notification exited;
  std::string why;
  HelperChannel::Callbacks callbacks;
  callbacks.on_exit = [&](const std::string& w) {
    why = w;
    exited.Notify();
  };
  absl::StatusOr<std::shared_ptr<HelperChannel>> channel =
      HelperChannel::Start(loop_.get(), &children_, "fake", std::move(fake), callbacks);
  ASSERT_THAT(channel, IsOk());
  absl::Notification answered;
  absl::Status status;
  const absl::Time start = absl::Now();
  ASSERT_THAT(
      (*channel)->Request(LoadRequest(), absl::Milliseconds(300),
                          [&](absl::StatusOr<internal::FromHelper> r, std::vector<UniqueFd>) {
                            status = r.status();
                            answered.Notify();
                          }),
      IsOk());
  ASSERT_TRUE(answered.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  ASSERT_TRUE(exited.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_THAT(why, HasSubstr("did not answer"));
  EXPECT_FALSE(children_.Contains(pid)) << "reaped children leave the registry";
  EXPECT_TRUE(PollUntilGone(pid));
}

// A helper that dies with a request pending fails it with how it died, after the
// messages it sent first (the library it was opening).
TEST_F(HelperChannelTest, HelperDyingFailsPendingWithItsSignalAfterItsLastMessages) {
  HelperProcess fake = ForkFakeHelper([](int fd) {
    Hello(fd);
    NextRequest(fd);
    internal::FromHelper progress;
    progress.mutable_progress()->set_library("/x/libbad.so");
    SendOrDie(fd, progress);
    ::signal(SIGABRT, SIG_DFL);
    ::abort();
  });
  StartLoop();
  std::string library;
  HelperChannel::Callbacks callbacks;
  callbacks.on_progress = [&](const internal::LoadProgress& p) { library = p.library(); };
  absl::StatusOr<std::shared_ptr<HelperChannel>> channel =
      HelperChannel::Start(loop_.get(), &children_, "fake", std::move(fake), callbacks);
  ASSERT_THAT(channel, IsOk());
  absl::Notification answered;
  absl::Status status;
  std::string library_then;
  ASSERT_THAT(
      (*channel)->Request(LoadRequest(), absl::Seconds(10),
                          [&](absl::StatusOr<internal::FromHelper> r, std::vector<UniqueFd>) {
                            status = r.status();
                            library_then = library;
                            answered.Notify();
                          }),
      IsOk());
  ASSERT_TRUE(answered.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("SIGABRT")));
  EXPECT_EQ(library_then, "/x/libbad.so");
  EXPECT_FALSE((*channel)->alive());
  EXPECT_THAT((*channel)->Request(LoadRequest(), absl::Seconds(1), nullptr),
              StatusIs(absl::StatusCode::kUnavailable));
}

// A helper speaking another control version is not used.
TEST_F(HelperChannelTest, WrongVersionIsKilled) {
  HelperProcess fake = ForkFakeHelper([](int fd) {
    Hello(fd, 7);
    NextRequest(fd);
    for (;;) ::pause();
  });
  StartLoop();
  absl::Notification exited;
  std::string why;
  HelperChannel::Callbacks callbacks;
  callbacks.on_exit = [&](const std::string& w) {
    why = w;
    exited.Notify();
  };
  absl::StatusOr<std::shared_ptr<HelperChannel>> channel =
      HelperChannel::Start(loop_.get(), &children_, "fake", std::move(fake), callbacks);
  ASSERT_THAT(channel, IsOk());
  ASSERT_TRUE(exited.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_THAT(why, HasSubstr("control version 7"));
}

}  // namespace
}  // namespace forkpool
