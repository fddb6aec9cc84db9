// Shared base of the fault-injection tests: a real forkpoold, a client on it, and
// /proc-based views of its process tree. The test process is a child subreaper, so
// what a killed daemon leaves behind is re-parented to it and can be checked (and is
// reaped here).
#ifndef FORKPOOL_TESTS_INTEGRATION_FAULT_TEST_BASE_H_
#define FORKPOOL_TESTS_INTEGRATION_FAULT_TEST_BASE_H_

#include <signal.h>
#include <sys/types.h>

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "daemon_fixture.h"
#include "forkpool/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "status_matchers.h"

namespace forkpool::testing {

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override { BecomeSubreaper(); }

  void TearDown() override {
    client_.reset();
    if (daemon_) (void)daemon_->Stop(absl::Seconds(5));
    daemon_.reset();
    ReapAdoptedOrphans();
  }

  // Starts a daemon with `processes` default-pool workers loading the example and the
  // test task libraries, connects a client, and waits until /proc shows every worker.
  void StartDaemon(int processes, std::vector<std::string> extra_flags = {}) {
    DaemonOptions options;
    options.processes = processes;
    options.extra_flags = {TestLibrariesFlag()};
    options.extra_flags.insert(options.extra_flags.end(), extra_flags.begin(), extra_flags.end());
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(options);
    ASSERT_THAT(daemon, IsOk());
    daemon_ = *std::move(daemon);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(daemon_->address());
    ASSERT_THAT(client, IsOk());
    client_ = *std::move(client);
    ASSERT_NO_FATAL_FAILURE(AwaitIdleWorkers("default", processes));
  }

  // Pool `pool`'s worker pids when it has exactly `n` workers, all IDLE and shown by
  // /proc as live forkpool-worker children of the daemon; nullopt otherwise.
  std::optional<std::set<pid_t>> IdleWorkers(const std::string& pool, int n,
                                             std::string* why = nullptr) {
    absl::StatusOr<v1::PoolInfo> info = client_->DescribePool(pool);
    if (!info.ok()) {
      if (why) *why = info.status().ToString();
      return std::nullopt;
    }
    if (why) *why = info->ShortDebugString();
    const std::set<pid_t> live = WorkerPidsOf(daemon_->pid());
    std::set<pid_t> pids;
    for (const v1::WorkerInfo& w : info->workers()) {
      if (w.state() != v1::WORKER_STATE_IDLE || live.count(w.pid()) == 0) return std::nullopt;
      pids.insert(w.pid());
    }
    if (static_cast<int>(pids.size()) != n || info->workers_size() != n) return std::nullopt;
    return pids;
  }

  // Polls until IdleWorkers(pool, n) holds, excluding none of `not_these`; returns the
  // pids (empty, with a test failure, on timeout).
  std::set<pid_t> AwaitIdleWorkers(const std::string& pool, int n,
                                   const std::set<pid_t>& not_these = {},
                                   absl::Duration timeout = absl::Seconds(10)) {
    std::set<pid_t> pids;
    std::string last;
    const bool ok = PollUntil(
        [&] {
          std::optional<std::set<pid_t>> now = IdleWorkers(pool, n, &last);
          if (!now) return false;
          for (pid_t p : not_these) {
            if (now->count(p)) return false;
          }
          pids = *now;
          return true;
        },
        timeout);
    EXPECT_TRUE(ok) << "pool " << pool << " never had " << n << " idle live workers (without "
                    << absl::StrJoin(not_these, ",") << "); last DescribePool: " << last;
    return pids;
  }

  // Polls until `r` is RUNNING and returns its result (worker_pid set).
  v1::TaskResult AwaitRunning(const AsyncResult& r, absl::Duration timeout = absl::Seconds(10)) {
    v1::TaskResult running;
    const bool ok = PollUntil(
        [&] {
          absl::StatusOr<v1::TaskResult> result = r.Result();
          if (!result.ok() || result->state() != v1::TASK_STATE_RUNNING ||
              result->worker_pid() == 0) {
            return false;
          }
          running = *result;
          return true;
        },
        timeout);
    EXPECT_TRUE(ok) << "task " << r.id() << " never started";
    return running;
  }

  // Polls (reaping adopted zombies) until none of `pids` is alive; returns the live ones.
  std::set<pid_t> AwaitGone(const std::set<pid_t>& pids,
                            absl::Duration timeout = absl::Seconds(5)) {
    std::set<pid_t> alive;
    PollUntil(
        [&] {
          ReapAdoptedOrphans();
          alive.clear();
          for (pid_t pid : pids) {
            if (ProcessAlive(pid)) alive.insert(pid);
          }
          return alive.empty();
        },
        timeout);
    return alive;
  }

  static std::string Pids(const std::set<pid_t>& pids) { return absl::StrJoin(pids, ","); }

  // `to` - `from`.
  static absl::Duration Between(const google::protobuf::Timestamp& from,
                                const google::protobuf::Timestamp& to) {
    return absl::Seconds(to.seconds() - from.seconds()) +
           absl::Nanoseconds(to.nanos() - from.nanos());
  }

  static absl::Time ToTime(const google::protobuf::Timestamp& t) {
    return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<Client> client_;
};

}  // namespace forkpool::testing

#endif  // FORKPOOL_TESTS_INTEGRATION_FAULT_TEST_BASE_H_
