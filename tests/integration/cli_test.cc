// Integration tests of the forkpool CLI binary against a real forkpoold.
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "daemon_fixture.h"
#include "forkpool/v1/forkpool.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "status_matchers.h"

namespace forkpool {
namespace {

using ::forkpool::testing::CommandResult;
using ::forkpool::testing::Daemon;
using ::forkpool::testing::IsOk;
using ::forkpool::testing::RunCommand;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start();
    ASSERT_THAT(daemon, IsOk());
    daemon_ = *std::move(daemon);
  }

  // Runs `forkpool --address <daemon> args...`.
  CommandResult Cli(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {FORKPOOL_CLI_PATH, "--address", daemon_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    return Run(argv, {});
  }

  CommandResult Run(const std::vector<std::string>& argv,
                    const std::map<std::string, std::string>& env) {
    absl::StatusOr<CommandResult> r = RunCommand(argv, daemon_->dir(), env);
    EXPECT_THAT(r, IsOk());
    return r.ok() ? *r : CommandResult{};
  }

  static std::string Line(const std::string& out) {
    return std::string(absl::StripSuffix(out, "\n"));
  }

  std::unique_ptr<Daemon> daemon_;
};

TEST_F(CliTest, ApplySquarePrints49) {
  CommandResult r = Cli({"apply", "square", "7"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "49\n");
  EXPECT_EQ(r.err, "");
}

TEST_F(CliTest, UnknownFunctionExits4NamingIt) {
  CommandResult r = Cli({"apply", "sqaure", "7"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_THAT(r.err, HasSubstr("pool 'default' has no function 'sqaure'"));
  EXPECT_EQ(r.out, "");
}

TEST_F(CliTest, UnknownPoolExits4NamingIt) {
  CommandResult r = Cli({"apply", "--pool", "nope", "square", "7"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_THAT(r.err, HasSubstr("unknown pool 'nope'"));
}

TEST_F(CliTest, FailingTaskExits1WithItsError) {
  CommandResult r = Cli({"apply", "fail", "boom"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, MatchesRegex("forkpool: task t-[0-9a-f]+-[0-9]+ failed: boom\n"));
  CommandResult crash = Cli({"apply", "crash", "abort"});
  EXPECT_EQ(crash.exit_code, 1);
  EXPECT_THAT(crash.err, HasSubstr("SIGABRT"));
}

TEST_F(CliTest, GetTimeoutExits2ThenGetSucceeds) {
  CommandResult submitted = Cli({"submit", "sleep", "1"});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  const std::string id = Line(submitted.out);
  ASSERT_THAT(id, MatchesRegex("t-[0-9a-f]+-[0-9]+"));

  CommandResult early = Cli({"get", id, "--timeout", "0.1"});
  EXPECT_EQ(early.exit_code, 2) << early.err;
  EXPECT_THAT(early.err, HasSubstr("not ready"));
  EXPECT_EQ(early.out, "");

  CommandResult waited = Cli({"wait", id, "--timeout", "0"});
  EXPECT_EQ(waited.exit_code, 2);
  EXPECT_THAT(waited.out, HasSubstr(id + "\tnot done"));

  CommandResult later = Cli({"get", id});
  EXPECT_EQ(later.exit_code, 0) << later.err;
  EXPECT_EQ(later.out, "1\n");
}

TEST_F(CliTest, GetOfAFailedTaskExits1) {
  CommandResult submitted = Cli({"submit", "fail", "bang"});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  CommandResult r = Cli({"get", Line(submitted.out), "--timeout", "20"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("failed: bang"));
}

TEST_F(CliTest, SubmitWithTheSameRequestIdTwicePrintsTheSameId) {
  CommandResult a = Cli({"submit", "--request-id", "cli-rid", "square", "4"});
  CommandResult b = Cli({"submit", "--request-id", "cli-rid", "square", "4"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
  CommandResult other = Cli({"submit", "--request-id", "cli-rid", "square", "5"});
  EXPECT_EQ(other.exit_code, 4);
  EXPECT_THAT(other.err, HasSubstr("cli-rid"));
  CommandResult got = Cli({"get", Line(a.out)});
  EXPECT_EQ(got.out, "16\n");
}

TEST_F(CliTest, WaitAnyAndAll) {
  const std::string fast = Line(Cli({"submit", "sleep", "0.05"}).out);
  const std::string slow = Line(Cli({"submit", "sleep", "30"}).out);
  ASSERT_FALSE(fast.empty());
  ASSERT_FALSE(slow.empty());
  CommandResult any = Cli({"wait", fast, slow, "--any", "--timeout", "20"});
  EXPECT_EQ(any.exit_code, 0) << any.err;
  EXPECT_THAT(any.out, HasSubstr(fast + "\tdone"));
  EXPECT_THAT(any.out, HasSubstr(slow + "\tnot done"));
  CommandResult all = Cli({"wait", fast, slow, "--timeout", "0.1"});
  EXPECT_EQ(all.exit_code, 2);
  CommandResult cancel = Cli({"cancel", slow});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_THAT(cancel.out, HasSubstr("cancelled"));
  CommandResult after = Cli({"wait", fast, slow});
  EXPECT_EQ(after.exit_code, 0) << after.err;
  CommandResult again = Cli({"cancel", slow});
  EXPECT_EQ(again.exit_code, 0);
  EXPECT_THAT(again.out, HasSubstr("already ended (CANCELLED)"));
}

TEST_F(CliTest, PoolsJsonParsesAndTableNamesWorkers) {
  CommandResult json = Cli({"pools", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  v1::ListPoolsResponse pools;
  const auto status = google::protobuf::util::JsonStringToMessage(json.out, &pools);
  ASSERT_TRUE(status.ok()) << status.ToString() << "\n" << json.out;
  ASSERT_EQ(pools.pools_size(), 1);
  EXPECT_EQ(pools.pools(0).settings().name(), "default");
  EXPECT_EQ(pools.pools(0).settings().processes(), 2);

  CommandResult table = Cli({"pools"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("default"));
  EXPECT_THAT(table.out, HasSubstr("worker 0"));
  EXPECT_THAT(table.out, HasSubstr("worker 1"));
}

TEST_F(CliTest, UsageErrorsExit3) {
  EXPECT_EQ(Cli({}).exit_code, 3);
  EXPECT_EQ(Cli({"frobnicate"}).exit_code, 3);
  EXPECT_EQ(Cli({"apply", "square"}).exit_code, 3);
  EXPECT_EQ(Cli({"get", "t-1", "--timeout", "soon"}).exit_code, 3);
  EXPECT_EQ(Cli({"get", "t-1", "--timeout", "-1"}).exit_code, 3);
  EXPECT_EQ(Cli({"--help"}).exit_code, 0);
}

TEST_F(CliTest, NoDaemonExits4NamingTheAddress) {
  const std::string nowhere = daemon_->dir() + "/nobody.sock";
  CommandResult r = Run({FORKPOOL_CLI_PATH, "--address", nowhere, "health"}, {});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_THAT(r.err, HasSubstr(nowhere));
}

TEST_F(CliTest, AddressFromEnvironmentAndXdgRuntimeDir) {
  CommandResult env = Run({FORKPOOL_CLI_PATH, "health"}, {{"FORKPOOL_ADDRESS", daemon_->address()}});
  EXPECT_EQ(env.exit_code, 0) << env.err;
  EXPECT_THAT(env.out, HasSubstr("SERVING"));

  // $XDG_RUNTIME_DIR/forkpool/forkpoold.sock is found when nothing names an address.
  absl::StatusOr<std::unique_ptr<Daemon>> xdg_daemon = [&] {
    testing::DaemonOptions options;
    return Daemon::Start(options);
  }();
  ASSERT_THAT(xdg_daemon, IsOk());
  // Point XDG_RUNTIME_DIR at a directory whose forkpool/forkpoold.sock is a symlink to
  // the daemon's socket.
  const std::string runtime = daemon_->dir() + "/xdg";
  ASSERT_EQ(::mkdir(runtime.c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((runtime + "/forkpool").c_str(), 0700), 0);
  ASSERT_EQ(::symlink((*xdg_daemon)->socket_path().c_str(),
                      (runtime + "/forkpool/forkpoold.sock").c_str()),
            0);
  CommandResult found = Run({FORKPOOL_CLI_PATH, "apply", "square", "8"},
                            {{"XDG_RUNTIME_DIR", runtime}});
  EXPECT_EQ(found.exit_code, 0) << found.err;
  EXPECT_EQ(found.out, "64\n");
}

TEST_F(CliTest, HealthPrintsServing) {
  CommandResult r = Cli({"health"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("SERVING"));
}

}  // namespace
}  // namespace forkpool
