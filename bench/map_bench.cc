// map_bench: 1,000,000 items through `square` and through the no-op `echo`, forkpool
// (C++ client Map; Imap over Tasks.MapStream; the CLI `seq 1 1000000 | forkpool map
// square`) against Python's multiprocessing.Pool(processes=2).map(f, range(1_000_000))
// on the same machine. Items/s, medians over FORKPOOL_BENCH_REPS (default 5) reps.
//
// The client's inputs ("1".."1000000" as text) are built once, outside the timing;
// Python's map builds its task list from the range inside the timing.
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_harness.h"
#include "forkpool/client.h"

namespace forkpool::bench {
namespace {

constexpr int kItems = 1000000;

// Map of all inputs; checks the count and one output.
double TimeMap(const Pool& pool, const std::string& function,
               const std::vector<std::string>& inputs, const MapOptions& options) {
  const Clock::time_point t0 = Clock::now();
  std::vector<std::string> out = Check(pool.Map(function, inputs, options), "map " + function);
  const double s = SecondsSince(t0);
  if (out.size() != inputs.size()) Die("map returned the wrong number of outputs");
  const std::string want = function == "square" ? "1000000" : "1000";
  if (out[999] != want) Die("map " + function + ": output 999 is '" + out[999] + "'");
  return inputs.size() / s;
}

// Imap (ordered), reading every result as it arrives.
double TimeImap(const Pool& pool, const std::string& function,
                const std::vector<std::string>& inputs, const MapOptions& options) {
  const Clock::time_point t0 = Clock::now();
  MapResults results = pool.Imap(function, inputs, options);
  uint64_t n = 0;
  while (true) {
    absl::StatusOr<std::optional<MapItem>> item = results.Next();
    if (!item.ok()) Die("imap " + function, item.status());
    if (!item->has_value()) break;
    if (!(*item)->output.ok()) Die("imap item failed", (*item)->output.status());
    ++n;
  }
  const double s = SecondsSince(t0);
  if (n != inputs.size()) Die("imap returned the wrong number of results");
  return inputs.size() / s;
}

int Main() {
  const int reps = Reps();
  std::printf("map_bench: %d items, forkpoold --processes 2 vs Python "
              "multiprocessing.Pool(processes=2).map; medians of %d reps\n", kItems, reps);
  Daemon daemon = Daemon::Start({"--processes=2"});
  std::unique_ptr<Client> client = Check(Client::Connect(daemon.address()), "connect");
  Pool pool = client->pool();

  std::vector<std::string> inputs;
  inputs.reserve(kItems);
  for (int i = 1; i <= kItems; ++i) inputs.push_back(std::to_string(i));
  {
    std::vector<std::string> warm(inputs.begin(), inputs.begin() + 10000);
    Check(pool.Map("square", warm), "warm-up map");
  }

  std::vector<double> map_square, map_echo, imap_square, cli_square;
  for (int r = 0; r < reps; ++r) map_square.push_back(TimeMap(pool, "square", inputs, {}));
  for (int r = 0; r < reps; ++r) map_echo.push_back(TimeMap(pool, "echo", inputs, {}));
  MapOptions stream;
  stream.force_stream = true;
  for (int r = 0; r < reps; ++r) imap_square.push_back(TimeImap(pool, "square", inputs, stream));
  const std::string cli_command =
      absl::StrCat("seq 1 ", kItems, " | ", FORKPOOL_BENCH_CLI, " --address ", daemon.address(),
                   " map square > /dev/null");
  for (int r = 0; r < reps; ++r) {
    const Clock::time_point t0 = Clock::now();
    RunCommand(cli_command);
    cli_square.push_back(kItems / SecondsSince(t0));
  }

  std::printf("running the Python baseline...\n");
  std::fflush(stdout);
  const std::string py =
      RunPython("py_map.py", absl::StrCat("--reps ", reps, " --items ", kItems));
  const double py_square = JsonNumber(py, "map_square_items_per_s");
  const double py_echo = JsonNumber(py, "map_echo_items_per_s");

  std::printf("\n");
  PrintComparison("Map 1M square (C++ client)", "items/s", Median(map_square), py_square,
                  Better::kHigher);
  PrintReps("forkpool", map_square);
  PrintComparison("Map 1M echo (C++ client)", "items/s", Median(map_echo), py_echo,
                  Better::kHigher);
  PrintReps("forkpool", map_echo);
  PrintComparison("Imap 1M square over MapStream (vs py map)", "items/s", Median(imap_square),
                  py_square, Better::kHigher);
  PrintReps("forkpool", imap_square);
  PrintComparison("  same vs py imap(chunksize=1000)", "items/s", Median(imap_square),
                  JsonNumber(py, "imap_square_chunk1000_items_per_s"), Better::kHigher);
  PrintComparison("CLI seq 1 1000000 | forkpool map square", "items/s", Median(cli_square),
                  py_square, Better::kHigher);
  PrintReps("forkpool", cli_square);
  std::printf("    CLI wall time (median): %s s\n", Fmt(kItems / Median(cli_square)).c_str());
  std::printf("    python raw: %s", py.c_str());
  daemon.Stop();
  return 0;
}

}  // namespace
}  // namespace forkpool::bench

int main() { return forkpool::bench::Main(); }
