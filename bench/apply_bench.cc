// apply_bench: round trip of one trivial task (`square`) and pipelined submits, forkpool's
// C++ client against Python's multiprocessing.Pool(2) on the same machine.
//
//   apply round trip: 1,000 sequential Pool::Apply("square") calls; p50 and p99 per rep
//     vs Pool(2).apply(f, (x,)).
//   pipelined: SubmitMany of 10,000 tasks then Wait for all (and then Get of every result)
//     vs 10,000 apply_async then get() of each.
// Every figure is the median over FORKPOOL_BENCH_REPS (default 5) repetitions.
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_harness.h"
#include "forkpool/client.h"

namespace forkpool::bench {
namespace {

constexpr int kCalls = 1000;
constexpr int kTasks = 10000;

int Main() {
  const int reps = Reps();
  std::printf("apply_bench: forkpoold --processes 2 vs Python multiprocessing.Pool(2); "
              "medians of %d reps\n", reps);
  Daemon daemon = Daemon::Start({"--processes=2"});
  std::unique_ptr<Client> client = Check(Client::Connect(daemon.address()), "connect");
  Pool pool = client->pool();

  // Warm up: both workers, the channel, the daemon's allocator.
  for (int i = 0; i < 200; ++i) Check(pool.Apply("square", std::to_string(i)), "warm-up apply");

  std::vector<double> p50s, p99s;
  for (int r = 0; r < reps; ++r) {
    std::vector<double> lat;
    lat.reserve(kCalls);
    for (int i = 0; i < kCalls; ++i) {
      const std::string in = std::to_string(i);
      const Clock::time_point t0 = Clock::now();
      absl::StatusOr<std::string> out = pool.Apply("square", in);
      lat.push_back(SecondsSince(t0) * 1e6);
      if (!out.ok()) Die("apply", out.status());
    }
    p50s.push_back(Percentile(lat, 50));
    p99s.push_back(Percentile(lat, 99));
  }

  // The gRPC floor: a unary RPC that runs nothing (the health check).
  std::vector<double> health_p50s;
  for (int r = 0; r < reps; ++r) {
    std::vector<double> lat;
    for (int i = 0; i < kCalls; ++i) {
      const Clock::time_point t0 = Clock::now();
      Check(client->Health(), "health");
      lat.push_back(SecondsSince(t0) * 1e6);
    }
    health_p50s.push_back(Percentile(lat, 50));
  }

  std::vector<std::string> inputs;
  inputs.reserve(kTasks);
  for (int i = 0; i < kTasks; ++i) inputs.push_back(std::to_string(i));
  std::vector<double> submit_rates, wait_rates, get_rates, get8_rates;
  for (int r = 0; r < reps; ++r) {
    const Clock::time_point t0 = Clock::now();
    std::vector<AsyncResult> handles = Check(pool.SubmitMany("square", inputs), "submit many");
    const double submitted = SecondsSince(t0);
    // forkpool::Wait over the handles brings the results along (one RPC for all).
    WaitOutcome outcome = Check(Wait(*client, handles, WaitMode::kAll), "wait");
    if (!outcome.satisfied) Die("wait: not satisfied");
    const double waited = SecondsSince(t0);
    for (const AsyncResult& h : handles) Check(h.Get(), "get");
    const double fetched = SecondsSince(t0);
    // Again, waiting by id only and fetching each result from 8 threads at once.
    const Clock::time_point t1 = Clock::now();
    std::vector<AsyncResult> more = Check(pool.SubmitMany("square", inputs), "submit many");
    std::vector<std::string> more_ids;
    for (const AsyncResult& h : more) more_ids.push_back(h.id());
    Check(client->Wait(more_ids, WaitMode::kAll), "wait");
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&more, t] {
        for (size_t i = t; i < more.size(); i += 8) Check(more[i].Get(), "get");
      });
    }
    for (std::thread& t : threads) t.join();
    get8_rates.push_back(kTasks / SecondsSince(t1));
    submit_rates.push_back(kTasks / submitted);
    wait_rates.push_back(kTasks / waited);
    get_rates.push_back(kTasks / fetched);
  }

  std::printf("running the Python baseline...\n");
  std::fflush(stdout);
  const std::string py = RunPython(
      "py_apply.py", absl::StrCat("--reps ", reps, " --calls ", kCalls, " --tasks ", kTasks));

  std::printf("\n");
  PrintComparison("apply round trip p50 (square)", "us", Median(p50s),
                  JsonNumber(py, "apply_p50_us"), Better::kLower);
  PrintReps("forkpool p50", p50s);
  PrintComparison("apply round trip p99 (square)", "us", Median(p99s),
                  JsonNumber(py, "apply_p99_us"), Better::kLower);
  PrintReps("forkpool p99", p99s);
  PrintComparison("pipelined 10k: SubmitMany+Wait all", "tasks/s", Median(wait_rates),
                  JsonNumber(py, "apply_async_tasks_per_s"), Better::kHigher);
  PrintReps("forkpool submit+wait", wait_rates);
  PrintComparison("pipelined 10k: SubmitMany+Wait+Get each", "tasks/s", Median(get_rates),
                  JsonNumber(py, "apply_async_tasks_per_s"), Better::kHigher);
  PrintReps("forkpool submit+wait+get", get_rates);
  PrintComparison("pipelined 10k: ... Get from 8 threads", "tasks/s", Median(get8_rates),
                  JsonNumber(py, "apply_async_tasks_per_s"), Better::kHigher);
  PrintReps("forkpool submit+wait+get x8", get8_rates);
  PrintFigure("  (SubmitMany call alone)", "tasks/s", Median(submit_rates));
  PrintFigure("gRPC floor: Health() round trip p50", "us", Median(health_p50s),
              "a unary RPC that runs no task");
  std::printf("    python raw: %s", py.c_str());
  daemon.Stop();
  return 0;
}

}  // namespace
}  // namespace forkpool::bench

int main() { return forkpool::bench::Main(); }
