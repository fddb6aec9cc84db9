// Tests for server/daemon/launch/process_util.h on real child processes: reaping
// without blocking, the pid check, and stop/continue reports that never reap.
#include "server/daemon/launch/process_util.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/status_matchers.h"

namespace forkpool {
namespace {

using ::forkpool::testing::IsOk;
using ::forkpool::testing::StatusIs;

constexpr absl::Duration kPatience = absl::Seconds(10);

// The state letter of /proc/PID/stat (R, S, T, Z, ...), or '\0' once the
// process is gone (reaped).
char ProcState(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat;
  if (!std::getline(in, stat)) return '\0';
  // "pid (comm) S ...": comm may hold spaces and parentheses, so take the last
  // ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return '\0';
  return stat[close + 2];
}

// Polls until ProcState(pid) satisfies `pred`, up to kPatience; the last state
// seen.
template <typename Pred>
char AwaitState(pid_t pid, Pred pred) {
  const absl::Time deadline = absl::Now() + kPatience;
  char state = ProcState(pid);
  while (!pred(state) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
    state = ProcState(pid);
  }
  return state;
}

// A child of this test process: forked, with a pidfd. Killed and reaped on
// destruction if the test has not done so.
class Child {
 public:
  // A child that waits in pause() until it is killed, or exits with `exit_code`
  // at once if one is given.
  static Child Start(std::optional<int> exit_code = std::nullopt) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (exit_code.has_value()) ::_exit(*exit_code);
      while (true) ::pause();
    }
    EXPECT_GT(pid, 0) << "fork failed";
    Child child;
    child.pid_ = pid;
    auto fd = PidfdOpen(pid);
    EXPECT_THAT(fd, IsOk());
    if (fd.ok()) child.pidfd_ = std::move(*fd);
    return child;
  }

  Child() = default;
  Child(Child&&) = default;
  Child& operator=(Child&&) = default;
  ~Child() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    // ECHILD if the test reaped it already.
    ::waitpid(pid_, nullptr, 0);
  }

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }

 private:
  pid_t pid_ = -1;
  UniqueFd pidfd_;
};

// Polls PollStopState until it reports something other than kNone.
absl::StatusOr<StopChange> AwaitStopChange(int pidfd) {
  const absl::Time deadline = absl::Now() + kPatience;
  while (true) {
    absl::StatusOr<StopChange> change = PollStopState(pidfd);
    if (!change.ok() || change->kind != StopChange::Kind::kNone || absl::Now() >= deadline) {
      return change;
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
}

TEST(TryReapPidfdTest, RunningChildIsNulloptAndStaysAlive) {
  Child child = Child::Start();
  // Let it get into pause(); a fresh child is R or S either way.
  EXPECT_EQ(AwaitState(child.pid(), [](char s) { return s == 'S'; }), 'S');
  const absl::Time start = absl::Now();
  EXPECT_EQ(TryReapPidfd(child.pidfd(), child.pid()), std::nullopt);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2)) << "TryReapPidfd blocked";
  EXPECT_EQ(ProcState(child.pid()), 'S');
}

TEST(TryReapPidfdTest, KilledChildIsReapedWithItsSignal) {
  Child child = Child::Start();
  ASSERT_EQ(::kill(child.pid(), SIGKILL), 0);
  ASSERT_TRUE(WaitPidfd(child.pidfd(), kPatience));
  // Exited but not reaped: a zombie until TryReapPidfd.
  EXPECT_EQ(ProcState(child.pid()), 'Z');
  const std::optional<ExitInfo> exit = TryReapPidfd(child.pidfd(), child.pid());
  ASSERT_TRUE(exit.has_value());
  EXPECT_TRUE(exit->reaped);
  EXPECT_EQ(exit->signal, SIGKILL);
  EXPECT_EQ(DescribeExit(*exit), "killed by SIGKILL (signal 9)");
  // Reaped for real: the kernel has let go of the process.
  EXPECT_EQ(ProcState(child.pid()), '\0');

  // A second try cannot wait for anything: an answer, not "still running".
  const std::optional<ExitInfo> again = TryReapPidfd(child.pidfd(), child.pid());
  ASSERT_TRUE(again.has_value());
  EXPECT_FALSE(again->reaped);
}

TEST(TryReapPidfdTest, ExitedChildReportsItsExitCode) {
  Child child = Child::Start(/*exit_code=*/7);
  ASSERT_TRUE(WaitPidfd(child.pidfd(), kPatience));
  const std::optional<ExitInfo> exit = TryReapPidfd(child.pidfd(), child.pid());
  ASSERT_TRUE(exit.has_value());
  EXPECT_TRUE(exit->reaped);
  EXPECT_EQ(exit->signal, 0);
  EXPECT_EQ(exit->exit_code, 7);
  EXPECT_EQ(ProcState(child.pid()), '\0');
}

TEST(TryReapPidfdTest, PidMismatchIsNotReportedAsReaped) {
  Child child = Child::Start(/*exit_code=*/3);
  ASSERT_TRUE(WaitPidfd(child.pidfd(), kPatience));
  const std::optional<ExitInfo> exit = TryReapPidfd(child.pidfd(), child.pid() + 1);
  ASSERT_TRUE(exit.has_value());
  EXPECT_FALSE(exit->reaped);
  EXPECT_EQ(exit->exit_code, 0);
}

TEST(TryReapPidfdTest, NotOurChildIsAnAnswerNotNullopt) {
  // This process is not its own child: waitid says ECHILD.
  auto self = PidfdOpen(::getpid());
  ASSERT_THAT(self, IsOk());
  const std::optional<ExitInfo> exit = TryReapPidfd(self->get(), ::getpid());
  ASSERT_TRUE(exit.has_value());
  EXPECT_FALSE(exit->reaped);
}

TEST(PidfdPidTest, NamesTheProcessUntilItIsReaped) {
  Child child = Child::Start();
  EXPECT_EQ(PidfdPid(child.pidfd()), child.pid());
  ASSERT_EQ(::kill(child.pid(), SIGKILL), 0);
  ASSERT_TRUE(WaitPidfd(child.pidfd(), kPatience));
  EXPECT_EQ(PidfdPid(child.pidfd()), child.pid()) << "a zombie still has its pid";
  ASSERT_TRUE(TryReapPidfd(child.pidfd(), child.pid()).has_value());
  EXPECT_EQ(PidfdPid(child.pidfd()), std::nullopt);
}

TEST(ReapPidfdTest, RunningChildIsNotWaitedForForever) {
  Child child = Child::Start();
  const absl::Time start = absl::Now();
  const ExitInfo exit = ReapPidfd(child.pidfd(), absl::Milliseconds(200));
  const absl::Duration took = absl::Now() - start;
  EXPECT_FALSE(exit.reaped);
  EXPECT_GE(took, absl::Milliseconds(200));
  EXPECT_LT(took, absl::Seconds(5));
  // Left alone: still running, not a zombie.
  EXPECT_EQ(AwaitState(child.pid(), [](char s) { return s == 'S'; }), 'S');

  // What callers do: SIGKILL, then reap.
  ASSERT_EQ(::kill(child.pid(), SIGKILL), 0);
  const ExitInfo killed = ReapPidfd(child.pidfd());
  EXPECT_TRUE(killed.reaped);
  EXPECT_EQ(killed.signal, SIGKILL);
  EXPECT_EQ(ProcState(child.pid()), '\0');
}

TEST(ReapPidfdTest, WaitsForAChildThatIsExiting) {
  // No WaitPidfd first: ReapPidfd waits for the exit itself.
  Child child = Child::Start(/*exit_code=*/5);
  const ExitInfo exit = ReapPidfd(child.pidfd());
  EXPECT_TRUE(exit.reaped);
  EXPECT_EQ(exit.exit_code, 5);
  EXPECT_EQ(ProcState(child.pid()), '\0');
}

TEST(PollStopStateTest, StopAndContinueAreEachReportedOnce) {
  Child child = Child::Start();
  EXPECT_THAT(PollStopState(child.pidfd()), ::forkpool::testing::IsOkAndHolds(::testing::Field(
                                                &StopChange::kind, StopChange::Kind::kNone)));

  ASSERT_EQ(::kill(child.pid(), SIGSTOP), 0);
  absl::StatusOr<StopChange> stopped = AwaitStopChange(child.pidfd());
  ASSERT_THAT(stopped, IsOk());
  EXPECT_EQ(stopped->kind, StopChange::Kind::kStopped);
  EXPECT_EQ(stopped->signal, SIGSTOP);
  // The kernel agrees.
  EXPECT_EQ(ProcState(child.pid()), 'T');
  // Once: the same stop is not reported again.
  absl::StatusOr<StopChange> again = PollStopState(child.pidfd());
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->kind, StopChange::Kind::kNone);

  ASSERT_EQ(::kill(child.pid(), SIGCONT), 0);
  absl::StatusOr<StopChange> continued = AwaitStopChange(child.pidfd());
  ASSERT_THAT(continued, IsOk());
  EXPECT_EQ(continued->kind, StopChange::Kind::kContinued);
  EXPECT_NE(AwaitState(child.pid(), [](char s) { return s != 'T'; }), 'T');
  again = PollStopState(child.pidfd());
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->kind, StopChange::Kind::kNone);

  // A second stop is a new change. (SIGSTOP again: the kernel discards SIGTSTP sent to
  // an orphaned process group, which is what the test runs in under CI.)
  ASSERT_EQ(::kill(child.pid(), SIGSTOP), 0);
  stopped = AwaitStopChange(child.pidfd());
  ASSERT_THAT(stopped, IsOk());
  EXPECT_EQ(stopped->kind, StopChange::Kind::kStopped);
  EXPECT_EQ(stopped->signal, SIGSTOP);
}

TEST(PollStopStateTest, NeverReapsAnExitedChild) {
  Child child = Child::Start();
  ASSERT_EQ(::kill(child.pid(), SIGKILL), 0);
  ASSERT_TRUE(WaitPidfd(child.pidfd(), kPatience));
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<StopChange> change = PollStopState(child.pidfd());
    ASSERT_THAT(change, IsOk());
    EXPECT_EQ(change->kind, StopChange::Kind::kNone);
  }
  // Still a zombie, so its exit status is still there for the reaper.
  EXPECT_EQ(ProcState(child.pid()), 'Z');
  const std::optional<ExitInfo> exit = TryReapPidfd(child.pidfd(), child.pid());
  ASSERT_TRUE(exit.has_value());
  EXPECT_TRUE(exit->reaped);
  EXPECT_EQ(exit->signal, SIGKILL);
}

TEST(PollStopStateTest, KilledWhileStoppedIsStillReapable) {
  Child child = Child::Start();
  ASSERT_EQ(::kill(child.pid(), SIGSTOP), 0);
  absl::StatusOr<StopChange> stopped = AwaitStopChange(child.pidfd());
  ASSERT_THAT(stopped, IsOk());
  ASSERT_EQ(stopped->kind, StopChange::Kind::kStopped);
  ASSERT_EQ(::kill(child.pid(), SIGKILL), 0);
  const ExitInfo exit = ReapPidfd(child.pidfd());
  EXPECT_TRUE(exit.reaped);
  EXPECT_EQ(exit.signal, SIGKILL);
}

TEST(PollStopStateTest, NotOurChildIsAnError) {
  auto self = PidfdOpen(::getpid());
  ASSERT_THAT(self, IsOk());
  // waitid's ECHILD, which absl::ErrnoToStatus maps to FAILED_PRECONDITION.
  EXPECT_THAT(PollStopState(self->get()), StatusIs(absl::StatusCode::kFailedPrecondition));
}

}  // namespace
}  // namespace forkpool
