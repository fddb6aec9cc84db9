// Tests for common/process_title.h: a forked child sets its title; the parent
// reads what the kernel shows in /proc/CHILD/cmdline and /proc/CHILD/comm.
#include "common/process_title.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace forkpool {
namespace {

using ::forkpool::testing::MakePipe;

// main's argc/argv as the kernel laid them out: gtest_main owns main, but glibc
// passes (argc, argv, envp) to .init_array functions too. The pointers are
// copied there, before InitGoogleTest removes its flags from argv (which would
// make the arguments look non-contiguous).
int g_argc = 0;
char** g_argv = nullptr;
void CaptureArgs(int argc, char** argv, char** /*envp*/) {
  g_argc = argc;
  g_argv = new char*[argc + 1];
  for (int i = 0; i <= argc; ++i) g_argv[i] = argv[i];
}
__attribute__((section(".init_array"),
               used)) void (*kCaptureArgs)(int, char**, char**) = &CaptureArgs;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
}

// What the child saw of itself after the title was set.
struct ChildReport {
  char argv0_intact = '?';  // 'y' if argv[0] still reads as before
};

// Forks a child that saves argv, sets `title` (and `comm`), reports, and pauses
// until killed. Returns its pid; the report arrives on `report_fd`.
pid_t StartTitledChild(const std::string& title,
                       std::optional<std::string> comm, int* report_fd,
                       UniqueFd* keep_read_end) {
  auto [r, w] = MakePipe();
  const std::string argv0_before = g_argv[0];
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    r.reset();
    SaveArgvForTitle(g_argc, g_argv);
    if (comm.has_value()) {
      SetProcessTitle(title, *comm);
    } else {
      SetProcessTitle(title);
    }
    const char intact = argv0_before == g_argv[0] ? 'y' : 'n';
    if (::write(w.get(), &intact, 1) != 1) ::_exit(1);
    while (true) ::pause();
  }
  *keep_read_end = std::move(r);
  *report_fd = keep_read_end->get();
  return pid;
}

// Kills and reaps `pid`; true if it was our child and is gone.
bool KillAndReap(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status = 0;
  return ::waitpid(pid, &status, 0) == pid && WIFSIGNALED(status);
}

class ProcessTitleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GT(g_argc, 0) << ".init_array did not see argv";
    // The child inherits this process's argument area: its size is what this
    // process's own cmdline holds.
    area_ = ReadFile("/proc/self/cmdline").size();
    ASSERT_GT(area_, 1u);
  }

  // Starts the child, waits for its report, and reads /proc.
  void Run(const std::string& title, std::optional<std::string> comm) {
    int report_fd = -1;
    UniqueFd read_end;
    const pid_t pid =
        StartTitledChild(title, std::move(comm), &report_fd, &read_end);
    ASSERT_GT(pid, 0);
    pollfd p{report_fd, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10'000), 1) << "child did not report within 10 s";
    ASSERT_EQ(::read(report_fd, &report_.argv0_intact, 1), 1);
    cmdline_ = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
    comm_ = ReadFile("/proc/" + std::to_string(pid) + "/comm");
    EXPECT_TRUE(KillAndReap(pid));
    EXPECT_NE(::kill(pid, 0), 0) << "child still there";
  }

  size_t area_ = 0;
  std::string cmdline_;
  std::string comm_;
  ChildReport report_;
};

TEST_F(ProcessTitleTest, ShortTitleIsTheWholeCmdlineAndTheComm) {
  const std::string title = "fp";  // shorter than any argv[0]
  Run(title, std::nullopt);
  // The title, then NULs to the end of the original arguments: nothing of them
  // left.
  EXPECT_EQ(cmdline_, title + std::string(area_ - title.size(), '\0'));
  EXPECT_EQ(comm_, "fp\n");
  EXPECT_EQ(report_.argv0_intact, 'y');
}

TEST_F(ProcessTitleTest, CommIsTheFirstFifteenBytesOfTheTitle) {
  // Longer than 15 bytes, and shorter than the area unless argv[0] is tiny.
  const std::string title = "forkpool: pool/abc worker 7";
  if (title.size() >= area_)
    GTEST_SKIP() << "argument area too small: " << area_;
  Run(title, std::nullopt);
  EXPECT_EQ(cmdline_, title + std::string(area_ - title.size(), '\0'));
  EXPECT_EQ(comm_, "forkpool: pool/\n");
}

TEST_F(ProcessTitleTest, SeparateCommIsUsed) {
  Run("fp-title", std::string("fp-comm"));
  EXPECT_EQ(cmdline_.substr(0, 9), std::string("fp-title\0", 9));
  EXPECT_EQ(comm_, "fp-comm\n");
}

TEST_F(ProcessTitleTest, LongTitleIsCutToTheArgumentArea) {
  const std::string title(area_ + 500, 'x');
  Run(title, std::nullopt);
  // Exactly the area: all of it but the final byte is title, and nothing of the
  // environment that follows it is shown.
  EXPECT_EQ(cmdline_, std::string(area_ - 1, 'x') + '\0');
  EXPECT_EQ(comm_, std::string(15, 'x') + "\n");
  EXPECT_EQ(report_.argv0_intact, 'y');
}

TEST_F(ProcessTitleTest, EmptyCommLeavesTheCommAlone) {
  const std::string before = ReadFile("/proc/self/comm");
  Run("fp-title", std::string());
  // A forked child inherits the comm.
  EXPECT_EQ(comm_, before);
}

TEST(ProcessTitleCapacityTest, ZeroBeforeSaveArgv) {
  // This process never saves argv (only the children do).
  EXPECT_EQ(ProcessTitleCapacity(), 0u);
}

}  // namespace
}  // namespace forkpool
