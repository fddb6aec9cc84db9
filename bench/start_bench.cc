// start_bench: how fast forkpool gets worker processes from its fork helper, against
// Python multiprocessing on the same machine.
//
//   daemon start: forkpoold --processes 2 from fork/exec to its log line
//     "pool 'default': 2 workers ready in X" (wall time seen here, and X as logged).
//   run-time pool: CreatePool of 1 and of 2 workers, timed from the call until
//     DescribePool shows every worker IDLE (and the daemon's own "ready in" figure)
//     vs Python Pool(1)/Pool(2) ready (every worker has run its initializer).
//   per-process: the pool-of-1 figure vs Python's forkserver
//     Process(target=f).start()/join().
//   recycle: max_tasks_per_child=1, every task in a fresh worker — SubmitMany of tasks
//     to a pool of 2 then Wait (tasks/s), and sequential Apply on a pool of 1 (ms per
//     task) vs Python Pool(2, maxtasksperchild=1).
// Medians over FORKPOOL_BENCH_REPS (default 5) reps.
#include <cstdio>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_harness.h"
#include "forkpool/client.h"

namespace forkpool::bench {
namespace {

constexpr int kRecycleTasks = 1000;
constexpr int kRecycleSequential = 200;
constexpr int kPythonRecycleTasks = 100;

// The duration X of the daemon's log line "pool '<pool>': N workers ready in X", in ms;
// NaN when the line is not there (yet).
double LoggedReadyMs(const std::string& log, const std::string& pool) {
  const std::string prefix = "pool '" + pool + "': ";
  size_t at = log.find(prefix);
  while (at != std::string::npos) {
    const size_t eol = log.find('\n', at);
    const std::string line = log.substr(at, eol == std::string::npos ? eol : eol - at);
    const size_t in = line.find(" workers ready in ");
    if (in != std::string::npos) {
      // "X" or "X (its helper started in ...)".
      const std::string rest = line.substr(in + 18);
      absl::Duration d;
      if (absl::ParseDuration(rest.substr(0, rest.find(' ')), &d)) {
        return absl::ToDoubleMilliseconds(d);
      }
    }
    at = log.find(prefix, at + 1);
  }
  return NAN;
}

// Waits (polling DescribePool) until `name` has `n` IDLE workers; returns seconds
// since t0.
double AwaitIdle(const Client& client, const std::string& name, int n, Clock::time_point t0) {
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(20);
  while (true) {
    v1::PoolInfo info = Check(client.DescribePool(name), "describe pool");
    int idle = 0;
    for (const auto& w : info.workers()) idle += w.state() == v1::WORKER_STATE_IDLE;
    if (idle >= n) return SecondsSince(t0);
    if (Clock::now() > deadline) Die("pool " + name + " not ready after 20 s");
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

int Main() {
  const int reps = Reps();
  std::printf(
      "start_bench: worker start from forkpool's fork helper vs Python "
      "multiprocessing; medians of %d reps\n",
      reps);

  // 1. Daemon start to "2 workers ready".
  std::vector<double> daemon_wall_ms, daemon_logged_ms;
  for (int r = 0; r < reps; ++r) {
    Daemon d = Daemon::Start({"--processes=2"});
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(20);
    double logged = NAN;
    while (std::isnan(logged = LoggedReadyMs(d.log(), "default"))) {
      if (Clock::now() > deadline) Die("no 'workers ready' line in the log:\n" + d.log());
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    daemon_wall_ms.push_back(
        std::chrono::duration<double, std::milli>(Clock::now() - d.started()).count());
    daemon_logged_ms.push_back(logged);
    d.Stop();
  }

  Daemon daemon = Daemon::Start({"--processes=2"});
  std::unique_ptr<Client> client = Check(Client::Connect(daemon.address()), "connect");
  Check(client->pool().Apply("square", "1"), "warm-up apply");

  // 2. Pools of 1 and 2 created at run time.
  std::vector<double> create_ms[3], ready_ms[3], logged_ms[3];
  for (int r = 0; r < reps; ++r) {
    for (int n : {1, 2}) {
      v1::PoolSettings settings;
      settings.set_name(absl::StrCat("start-", n, "-", r));
      settings.set_processes(n);
      const Clock::time_point t0 = Clock::now();
      Check(client->CreatePool(settings), "create pool");
      create_ms[n].push_back(SecondsSince(t0) * 1000);
      ready_ms[n].push_back(AwaitIdle(*client, settings.name(), n, t0) * 1000);
      Check(client->DeletePool(settings.name()), "delete pool");
    }
  }
  const std::string log = daemon.log();
  for (int r = 0; r < reps; ++r) {
    for (int n : {1, 2})
      logged_ms[n].push_back(LoggedReadyMs(log, absl::StrCat("start-", n, "-", r)));
  }

  // 3. Recycling: every task in a fresh worker.
  std::vector<double> recycle_rates, recycle_seq_ms;
  {
    v1::PoolSettings settings;
    settings.set_name("recycle2");
    settings.set_processes(2);
    settings.set_max_tasks_per_child(1);
    Check(client->CreatePool(settings), "create recycle pool");
    AwaitIdle(*client, "recycle2", 2, Clock::now());
    Pool pool = client->pool("recycle2");
    Check(pool.Apply("square", "1"), "warm-up apply");
    std::vector<std::string> inputs;
    for (int i = 0; i < kRecycleTasks; ++i) inputs.push_back(std::to_string(i));
    for (int r = 0; r < reps; ++r) {
      const Clock::time_point t0 = Clock::now();
      std::vector<AsyncResult> handles = Check(pool.SubmitMany("square", inputs), "submit many");
      std::vector<std::string> ids;
      for (const AsyncResult& h : handles) ids.push_back(h.id());
      WaitOutcome outcome = Check(client->Wait(ids, WaitMode::kAll), "wait");
      if (!outcome.satisfied) Die("wait not satisfied");
      recycle_rates.push_back(kRecycleTasks / SecondsSince(t0));
      for (const AsyncResult& h : handles) Check(h.Get(absl::ZeroDuration()), "recycled task");
    }
    v1::PoolInfo info = Check(client->DescribePool("recycle2"), "describe");
    std::printf("    recycle2: workers_started %lld, tasks_done %lld, workers_lost %lld\n",
                static_cast<long long>(info.workers_started()),
                static_cast<long long>(info.tasks_done()),
                static_cast<long long>(info.workers_lost()));
    Check(client->DeletePool("recycle2"), "delete pool");

    settings.set_name("recycle1");
    settings.set_processes(1);
    Check(client->CreatePool(settings), "create recycle pool");
    AwaitIdle(*client, "recycle1", 1, Clock::now());
    Pool one = client->pool("recycle1");
    Check(one.Apply("square", "1"), "warm-up apply");
    for (int r = 0; r < reps; ++r) {
      std::vector<double> lat;
      for (int i = 0; i < kRecycleSequential; ++i) {
        const Clock::time_point t0 = Clock::now();
        Check(one.Apply("square", std::to_string(i)), "recycled apply");
        lat.push_back(SecondsSince(t0) * 1000);
      }
      recycle_seq_ms.push_back(Median(lat));
    }
    Check(client->DeletePool("recycle1"), "delete pool");
  }

  std::printf("running the Python baseline...\n");
  std::fflush(stdout);
  const std::string py = RunPython(
      "py_start.py", absl::StrCat("--reps ", reps, " --recycle-tasks ", kPythonRecycleTasks));

  std::printf("\n");
  PrintFigure("daemon start -> 2 workers ready (wall)", "ms", Median(daemon_wall_ms),
              "fork/exec of forkpoold to its log line");
  PrintReps("forkpool", daemon_wall_ms);
  PrintFigure("daemon start: 'workers ready in' (logged)", "ms", Median(daemon_logged_ms),
              "from the default pool's creation");
  PrintReps("forkpool", daemon_logged_ms);
  for (int n : {1, 2}) {
    const std::string pool = absl::StrCat("Pool(", n, ")");
    PrintComparison("CreatePool(" + std::to_string(n) + ") -> all IDLE vs py forkserver " + pool,
                    "ms", Median(ready_ms[n]),
                    JsonNumber(py, absl::StrCat("forkserver_pool", n, "_ready_ms")),
                    Better::kLower);
    PrintReps("forkpool", ready_ms[n]);
    PrintComparison("  same vs py fork " + pool, "ms", Median(ready_ms[n]),
                    JsonNumber(py, absl::StrCat("fork_pool", n, "_ready_ms")), Better::kLower);
    PrintFigure("  CreatePool(" + std::to_string(n) + ") call returns", "ms", Median(create_ms[n]));
    PrintFigure("  'workers ready in' (logged)", "ms", Median(logged_ms[n]));
  }
  PrintComparison("worker start (pool of 1) vs forkserver Process", "ms", Median(ready_ms[1]),
                  JsonNumber(py, "forkserver_process_start_join_ms"), Better::kLower);
  PrintComparison("  same vs py fork Process start/join", "ms", Median(ready_ms[1]),
                  JsonNumber(py, "fork_process_start_join_ms"), Better::kLower);
  std::printf("    python Process.start() alone: forkserver %s ms, fork %s ms\n",
              Fmt(JsonNumber(py, "forkserver_process_start_ms")).c_str(),
              Fmt(JsonNumber(py, "fork_process_start_ms")).c_str());
  PrintComparison("recycle, max_tasks_per_child=1, pool of 2", "tasks/s", Median(recycle_rates),
                  JsonNumber(py, "forkserver_recycle_tasks_per_s"), Better::kHigher);
  PrintReps("forkpool", recycle_rates);
  PrintComparison("  same vs py fork Pool(2, maxtasksperchild=1)", "tasks/s", Median(recycle_rates),
                  JsonNumber(py, "fork_recycle_tasks_per_s"), Better::kHigher);
  PrintComparison("recycle, pool of 1, sequential Apply", "ms/task", Median(recycle_seq_ms),
                  JsonNumber(py, "forkserver_process_start_join_ms"), Better::kLower);
  std::printf("    (vs py forkserver Process start/join per process)\n");
  std::printf("    python raw: %s", py.c_str());
  daemon.Stop();
  return 0;
}

}  // namespace
}  // namespace forkpool::bench

int main() { return forkpool::bench::Main(); }
