// Helpers of the map and pool-API integration tests: a daemon with a client, /proc
// readings, and waiting for a pool's state.
#ifndef FORKPOOL_TESTS_INTEGRATION_MAP_TEST_UTIL_H_
#define FORKPOOL_TESTS_INTEGRATION_MAP_TEST_UTIL_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "daemon_fixture.h"
#include "forkpool/client.h"
#include "gtest/gtest.h"
#include "status_matchers.h"

namespace forkpool::testing {

// A field of /proc/<pid>/status in KiB ("VmHWM", "VmRSS"); -1 when unreadable.
inline int64_t ProcStatusKiB(pid_t pid, const std::string& field) {
  const std::string text = ReadFile(absl::StrCat("/proc/", pid, "/status"));
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, field + ":")) continue;
    line = absl::StripAsciiWhitespace(line);
    absl::ConsumeSuffix(&line, "kB");
    int64_t kib = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &kib)) return kib;
  }
  return -1;
}

// The pids of a pool's workers (0 while starting left out).
inline std::set<pid_t> WorkerPids(const v1::PoolInfo& info) {
  std::set<pid_t> pids;
  for (const v1::WorkerInfo& w : info.workers()) {
    if (w.pid() != 0) pids.insert(w.pid());
  }
  return pids;
}

// Test base: a daemon (default pool of `processes` workers) and a client.
class MapTestBase : public ::testing::Test {
 protected:
  void StartDaemon(int processes = 2) {
    client_.reset();
    daemon_.reset();
    DaemonOptions options;
    options.processes = processes;
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(options);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(daemon_->address());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  // Polls until pool `name` has `n` idle workers with pids; returns their pids.
  std::set<pid_t> AwaitIdleWorkers(const std::string& name, int n) {
    std::set<pid_t> pids;
    EXPECT_TRUE(PollUntil([&] {
      absl::StatusOr<v1::PoolInfo> info = client_->DescribePool(name);
      if (!info.ok() || info->idle() != n) return false;
      pids = WorkerPids(*info);
      return static_cast<int>(pids.size()) == n;
    })) << "pool " << name << " never had " << n << " idle workers";
    return pids;
  }

  // Settings of a pool of `processes` workers running the example task library.
  static v1::PoolSettings ExamplePool(const std::string& name, int processes) {
    v1::PoolSettings settings;
    settings.set_name(name);
    settings.set_processes(processes);
    settings.add_libraries(kExampleTasksPath);
    return settings;
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<Client> client_;
};

// "0", "1", ..., as text.
inline std::vector<std::string> Numbers(int64_t n) {
  std::vector<std::string> out;
  out.reserve(n);
  for (int64_t i = 0; i < n; ++i) out.push_back(absl::StrCat(i));
  return out;
}

}  // namespace forkpool::testing

#endif  // FORKPOOL_TESTS_INTEGRATION_MAP_TEST_UTIL_H_
