// Soak test (not in the default suite): many clients submit work while a killer
// SIGKILLs busy workers and, now and then, the fork helper. At the end every task
// must have ended (none hung) with an outcome that fits what it was (none lost), and
// every square must be right.
//
//   build/bin/forkpool_soak [--seconds 120] [--clients 8] [--processes 4]
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "forkpool/client.h"
#include "tests/integration/daemon_fixture.h"

namespace {

using forkpool::v1::TaskState;

enum class Kind { kSquare, kSleep, kCrash, kFail, kTimeLimit, kRetry };

struct Submitted {
  forkpool::AsyncResult result;
  Kind kind;
  int64_t n = 0;
};

// Children of `pid` whose /proc/PID/comm is `comm`.
std::vector<pid_t> ChildrenNamed(pid_t pid, const std::string& comm) {
  std::vector<pid_t> out;
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return out;
  while (dirent* e = ::readdir(dir)) {
    pid_t child = 0;
    if (!absl::SimpleAtoi(e->d_name, &child)) continue;
    std::ifstream status(absl::StrCat("/proc/", child, "/status"));
    std::string line, name;
    pid_t ppid = -1;
    while (std::getline(status, line)) {
      if (line.rfind("Name:\t", 0) == 0) name = line.substr(6);
      if (line.rfind("PPid:\t", 0) == 0) absl::SimpleAtoi(line.substr(6), &ppid);
    }
    if (ppid == pid && name == comm) out.push_back(child);
  }
  ::closedir(dir);
  return out;
}

struct Tally {
  std::mutex mu;
  std::map<std::string, int64_t> by_cause;
  int64_t submitted = 0, lost = 0, hung = 0, wrong = 0, unexpected = 0;
};

// Waits (bounded) for one task and counts how it ended, and whether that fits.
void Settle(Submitted& s, absl::Duration wait, Tally& tally) {
  absl::StatusOr<forkpool::v1::TaskResult> r = s.result.Result(wait);
  std::lock_guard<std::mutex> lock(tally.mu);
  if (!r.ok()) {
    ++tally.lost;
    std::fprintf(stderr, "soak: task %s: %s\n", s.result.id().c_str(),
                 std::string(r.status().message()).c_str());
    return;
  }
  const TaskState state = r->state();
  if (state == forkpool::v1::TASK_STATE_PENDING || state == forkpool::v1::TASK_STATE_RUNNING) {
    ++tally.hung;
    std::fprintf(stderr, "soak: task %s still %s after %s\n", s.result.id().c_str(),
                 forkpool::v1::TaskState_Name(state).c_str(),
                 absl::FormatDuration(wait).c_str());
    return;
  }
  ++tally.by_cause[forkpool::v1::TaskState_Name(state)];
  // Killed workers may hit any task; what must hold is that the outcome fits.
  const bool killed = state == forkpool::v1::TASK_STATE_WORKER_LOST;
  bool fits = killed;
  switch (s.kind) {
    case Kind::kSquare:
      if (state == forkpool::v1::TASK_STATE_SUCCEEDED) {
        fits = true;
        if (r->output().data() != absl::StrCat(s.n * s.n)) ++tally.wrong;
      }
      break;
    case Kind::kSleep:
    case Kind::kRetry:
      fits = fits || state == forkpool::v1::TASK_STATE_SUCCEEDED;
      break;
    case Kind::kCrash:
      fits = killed || state == forkpool::v1::TASK_STATE_FAILED;  // poison after 3
      break;
    case Kind::kFail:
      fits = fits || state == forkpool::v1::TASK_STATE_FAILED;
      break;
    case Kind::kTimeLimit:
      fits = fits || state == forkpool::v1::TASK_STATE_TIMED_OUT;
      break;
  }
  if (!fits) {
    ++tally.unexpected;
    std::fprintf(stderr, "soak: task %s ended %s: %s\n", s.result.id().c_str(),
                 forkpool::v1::TaskState_Name(state).c_str(), r->error().c_str());
  }
}

int Flag(int argc, char** argv, const std::string& name, int def) {
  for (int i = 1; i + 1 < argc; ++i) {
    int v;
    if (argv[i] == name && absl::SimpleAtoi(argv[i + 1], &v)) return v;
  }
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  const int seconds = Flag(argc, argv, "--seconds", 120);
  const int clients = Flag(argc, argv, "--clients", 8);
  const int processes = Flag(argc, argv, "--processes", 4);
  forkpool::testing::DaemonOptions options;
  options.processes = processes;
  options.extra_flags = {absl::StrCat("--task_library=", FORKPOOL_EXAMPLE_TASKS_PATH, ",",
                                      FORKPOOL_TEST_TASKS_PATH),
                         "--grace=2s"};
  auto daemon = forkpool::testing::Daemon::Start(options);
  if (!daemon.ok()) {
    std::fprintf(stderr, "soak: %s\n", std::string(daemon.status().message()).c_str());
    return 2;
  }
  const pid_t dpid = (*daemon)->pid();
  std::printf("soak: forkpoold pid %d, %d workers, %d clients, %d s\n", dpid, processes,
              clients, seconds);

  Tally tally;
  std::atomic<int64_t> submit_errors{0}, worker_kills{0}, helper_kills{0};
  const absl::Time end = absl::Now() + absl::Seconds(seconds);

  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto client = forkpool::Client::Connect((*daemon)->address());
      if (!client.ok()) {
        ++submit_errors;
        return;
      }
      forkpool::Pool pool = (*client)->pool();
      std::mt19937_64 rng(c * 7919 + 1);
      // A window of outstanding tasks per client: the daemon stays busy, every task is
      // settled with a bounded wait, and none piles up unchecked.
      std::deque<Submitted> window;
      constexpr size_t kWindow = 32;
      while (absl::Now() < end) {
        const int r = static_cast<int>(rng() % 100);
        Submitted s{forkpool::AsyncResult(nullptr, ""), Kind::kSquare};
        forkpool::ApplyOptions o;
        std::string fn, input;
        if (r < 55) {
          s.kind = Kind::kSquare;
          s.n = static_cast<int64_t>(rng() % 1000000);
          fn = "square";
          input = absl::StrCat(s.n);
        } else if (r < 75) {
          s.kind = Kind::kSleep;
          fn = "sleep";
          input = "0.02";
        } else if (r < 80) {
          s.kind = Kind::kCrash;
          fn = "crash";
          input = "segv";
        } else if (r < 88) {
          s.kind = Kind::kFail;
          fn = "fail";
          input = "boom";
        } else if (r < 93) {
          s.kind = Kind::kTimeLimit;
          fn = "sleep";
          input = "2";
          o.time_limit = absl::Milliseconds(100);
        } else {
          s.kind = Kind::kRetry;
          fn = "crash_first";
          o.max_retries = 3;
        }
        absl::StatusOr<forkpool::AsyncResult> a = pool.ApplyAsync(fn, input, o);
        if (!a.ok()) {
          ++submit_errors;
          absl::SleepFor(absl::Milliseconds(10));
          continue;
        }
        s.result = *a;
        window.push_back(std::move(s));
        {
          std::lock_guard<std::mutex> lock(tally.mu);
          ++tally.submitted;
        }
        while (window.size() >= kWindow) {
          Settle(window.front(), absl::Seconds(60), tally);
          window.pop_front();
        }
      }
      for (Submitted& s : window) Settle(s, absl::Seconds(60), tally);
    });
  }
  std::thread killer([&] {
    std::mt19937_64 rng(42);
    absl::Time next_helper_kill = absl::Now() + absl::Seconds(5);
    while (absl::Now() < end) {
      absl::SleepFor(absl::Milliseconds(200 + static_cast<int>(rng() % 300)));
      std::vector<pid_t> workers = ChildrenNamed(dpid, "forkpool-worke");
      if (workers.empty()) workers = ChildrenNamed(dpid, "forkpool-worker");
      if (!workers.empty()) {
        ::kill(workers[rng() % workers.size()], SIGKILL);
        ++worker_kills;
      }
      if (absl::Now() >= next_helper_kill) {
        for (pid_t h : ChildrenNamed(dpid, "forkpool-helper")) {
          ::kill(h, SIGKILL);
          ++helper_kills;
        }
        next_helper_kill = absl::Now() + absl::Seconds(5);
      }
    }
  });
  for (auto& t : threads) t.join();
  killer.join();

  const bool daemon_alive = ::kill(dpid, 0) == 0;
  std::printf("soak: submitted %lld (submit errors %lld), worker kills %lld, helper kills %lld\n",
              static_cast<long long>(tally.submitted), static_cast<long long>(submit_errors.load()),
              static_cast<long long>(worker_kills.load()),
              static_cast<long long>(helper_kills.load()));
  for (const auto& [cause, n] : tally.by_cause) {
    std::printf("soak:   %-24s %lld\n", cause.c_str(), static_cast<long long>(n));
  }
  std::printf("soak: lost %lld, hung %lld, wrong outputs %lld, unexpected outcomes %lld, "
              "daemon %s\n",
              static_cast<long long>(tally.lost), static_cast<long long>(tally.hung),
              static_cast<long long>(tally.wrong), static_cast<long long>(tally.unexpected),
              daemon_alive ? "alive" : "DEAD");
  absl::StatusOr<int> stopped = (*daemon)->Stop(absl::Seconds(10));
  const bool clean_exit = stopped.ok() && WIFEXITED(*stopped) && WEXITSTATUS(*stopped) == 0;
  std::printf("soak: daemon exit %s\n", clean_exit ? "0" : "NOT CLEAN");
  return (tally.lost == 0 && tally.hung == 0 && tally.wrong == 0 && tally.unexpected == 0 &&
          daemon_alive && clean_exit)
             ? 0
             : 1;
}
