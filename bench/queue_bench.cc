// queue_bench: put+get throughput of forkpoold's shared queues vs Python's
// multiprocessing.Manager().Queue(). Not a test: prints figures (medians of several
// runs) and asserts nothing about speed.
//
// Starts its own forkpoold on a socket in a fresh /tmp/fpqbench.XXXXXX directory (or
// uses --address / $FORKPOOL_BENCH_ADDRESS), then measures, each ops/s where one put
// and one get are two ops:
//   unary sequential     Queue::Put then Queue::Get, one item, N times (the shape of
//                        Python's loop: each call waits for its answer)
//   stream pipelined     QueueStream: N single puts in flight in windows of W, then N
//                        single gets likewise (one bidi stream)
//   stream interleaved   QueueStream: windows of W (put, get) pairs in flight
//   batched              Queue::PutMany / GetMany of B items per call
// and runs bench/queue_baseline.py (a Manager queue, q.put(x); q.get() N times) with
// python3 in the same process tree. Environment: FORKPOOL_BENCH_REPS (default 5),
// FORKPOOL_BENCH_PYTHON (default python3), FORKPOOL_BENCH_QUEUE_N (default 20000).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "forkpool/client.h"
#include "forkpool/queue.h"

extern char** environ;

namespace forkpool {
namespace {

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  int n = 0;
  if (v != nullptr && absl::SimpleAtoi(v, &n) && n > 0) return n;
  return fallback;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string Reps(const std::vector<double>& v) {
  std::vector<std::string> parts;
  for (double x : v) parts.push_back(absl::StrFormat("%.0f", x));
  return absl::StrJoin(parts, " ");
}

// A forkpoold this benchmark started; SIGTERM and reaped on destruction.
class BenchDaemon {
 public:
  static absl::StatusOr<std::unique_ptr<BenchDaemon>> Start() {
    char tmpl[] = "/tmp/fpqbench.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return absl::ErrnoToStatus(errno, "mkdtemp");
    auto d = std::unique_ptr<BenchDaemon>(new BenchDaemon(tmpl));
    const std::string log = d->dir_ + "/forkpoold.log";
    std::vector<std::string> args = {FORKPOOL_BENCH_FORKPOOLD,
                                     absl::StrCat("--socket=", d->dir_, "/s.sock"),
                                     "--processes=2"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = posix_spawn(&d->pid_, args[0].c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) return absl::ErrnoToStatus(rc, absl::StrCat("posix_spawn ", args[0]));
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      ConnectOptions options;
      options.connect_timeout = absl::Milliseconds(500);
      if (Client::Connect(d->address(), options).ok()) return d;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return absl::DeadlineExceededError(absl::StrCat("forkpoold did not answer; log ", log));
  }

  ~BenchDaemon() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    std::system(absl::StrCat("rm -rf '", dir_, "'").c_str());
  }

  std::string address() const { return absl::StrCat("unix:", dir_, "/s.sock"); }

 private:
  explicit BenchDaemon(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
  pid_t pid_ = -1;
};

// Runs `body` (which does `ops` operations) `reps` times; ops/s of each run.
std::vector<double> Measure(int reps, int64_t ops, const std::function<absl::Status()>& body) {
  std::vector<double> out;
  for (int r = 0; r < reps; ++r) {
    const absl::Time start = absl::Now();
    absl::Status s = body();
    const double secs = absl::ToDoubleSeconds(absl::Now() - start);
    if (!s.ok()) {
      std::cerr << "queue_bench: run failed: " << s << "\n";
      std::exit(1);
    }
    out.push_back(static_cast<double>(ops) / secs);
  }
  return out;
}

// Waits for every op; the first error.
absl::Status WaitAll(std::vector<QueueOp>& ops) {
  absl::Status first;
  for (QueueOp& op : ops) {
    const QueueOpResult& r = op.Wait();
    if (!r.status.ok() && first.ok()) first = r.status;
  }
  return first;
}

// ops/s of multiprocessing.Manager().Queue() per run, from queue_baseline.py.
std::vector<double> PythonBaseline(int n, int reps) {
  const char* py = std::getenv("FORKPOOL_BENCH_PYTHON");
  const std::string cmd = absl::StrCat(py != nullptr && *py != '\0' ? py : "python3", " '",
                                       FORKPOOL_BENCH_SOURCE_DIR, "/queue_baseline.py' ", n,
                                       " ", reps);
  std::vector<double> out;
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) return out;
  char line[256];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    double v = 0;
    if (std::sscanf(line, "ops_per_sec %lf", &v) == 1) out.push_back(v);
  }
  ::pclose(f);
  return out;
}

void PrintLine(const std::string& what, const std::vector<double>& ours, double python) {
  const double m = Median(ours);
  const double ratio = python > 0 ? m / python : 0;
  std::cout << absl::StrFormat("%-34s forkpool %10.0f ops/s   python %9.0f ops/s   ratio %6.2f  (%.1fx %s)\n",
                               what, m, python, ratio, ratio >= 1 ? ratio : 1 / ratio,
                               ratio >= 1 ? "better" : "worse");
  std::cout << "  reps: " << Reps(ours) << "\n";
  std::cout.flush();
}

int Main() {
  const int reps = EnvInt("FORKPOOL_BENCH_REPS", 5);
  const int n = EnvInt("FORKPOOL_BENCH_QUEUE_N", 20000);
  constexpr int kWindow = 256;
  constexpr int kBatch = 100;

  std::unique_ptr<BenchDaemon> daemon;
  std::string address;
  if (const char* a = std::getenv("FORKPOOL_BENCH_ADDRESS"); a != nullptr && *a != '\0') {
    address = a;
  } else {
    absl::StatusOr<std::unique_ptr<BenchDaemon>> d = BenchDaemon::Start();
    if (!d.ok()) {
      std::cerr << "queue_bench: " << d.status() << "\n";
      return 1;
    }
    daemon = std::move(*d);
    address = daemon->address();
  }
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(address);
  if (!client.ok()) {
    std::cerr << "queue_bench: " << client.status() << "\n";
    return 1;
  }
  Client& c = **client;
  const std::string name = "bench";
  if (absl::StatusOr<v1::QueueInfo> q = c.CreateQueue(name, 0, true); !q.ok()) {
    std::cerr << "queue_bench: " << q.status() << "\n";
    return 1;
  }
  Queue q = c.queue(name);
  absl::StatusOr<std::unique_ptr<QueueStream>> opened = q.OpenStream();
  if (!opened.ok()) {
    std::cerr << "queue_bench: " << opened.status() << "\n";
    return 1;
  }
  QueueStream& stream = **opened;
  const std::string item(16, 'x');  // the baseline's item is 16 bytes too
  std::vector<std::string> window_items(kWindow, item);
  std::vector<std::string> batch_items(kBatch, item);

  std::cout << "queue_bench: " << n << " items per run (16 bytes), " << reps
            << " runs, medians; ops = puts + gets\n";

  // Warm-up.
  for (int i = 0; i < 200; ++i) {
    (void)q.Put(item);
    (void)q.Get(absl::ZeroDuration());
  }

  const int unary_n = std::min(n, 5000);
  std::vector<double> unary = Measure(reps, 2LL * unary_n, [&]() -> absl::Status {
    for (int i = 0; i < unary_n; ++i) {
      if (absl::Status s = q.Put(item); !s.ok()) return s;
      if (absl::StatusOr<std::string> g = q.Get(absl::Seconds(5)); !g.ok()) return g.status();
    }
    return absl::OkStatus();
  });

  std::vector<double> piped = Measure(reps, 2LL * n, [&]() -> absl::Status {
    for (int done = 0; done < n; done += kWindow) {
      std::vector<QueueOp> ops = stream.StartPuts(name, window_items);
      if (absl::Status s = WaitAll(ops); !s.ok()) return s;
    }
    for (int done = 0; done < n; done += kWindow) {
      std::vector<QueueOp> ops = stream.StartGets(name, kWindow, absl::Seconds(5));
      if (absl::Status s = WaitAll(ops); !s.ok()) return s;
    }
    return absl::OkStatus();
  });
  // n rounded up to whole windows: correct the figures for the extra items.
  const double piped_scale = static_cast<double>(n) / (((n + kWindow - 1) / kWindow) * kWindow);
  for (double& v : piped) v /= piped_scale;

  std::vector<double> interleaved = Measure(reps, 2LL * n, [&]() -> absl::Status {
    for (int done = 0; done < n; done += kWindow) {
      std::vector<QueueOp> ops;
      ops.reserve(2 * kWindow);
      for (int i = 0; i < kWindow; ++i) {
        ops.push_back(stream.StartPut(name, item));
        ops.push_back(stream.StartGet(name, 1, absl::Seconds(5)));
      }
      if (absl::Status s = WaitAll(ops); !s.ok()) return s;
    }
    return absl::OkStatus();
  });
  for (double& v : interleaved) v /= piped_scale;

  std::vector<double> batched = Measure(reps, 2LL * n, [&]() -> absl::Status {
    for (int done = 0; done < n; done += kBatch) {
      if (absl::Status s = q.PutMany(batch_items); !s.ok()) return s;
      absl::StatusOr<std::vector<std::string>> got = q.GetMany(kBatch, absl::Seconds(5));
      if (!got.ok()) return got.status();
    }
    return absl::OkStatus();
  });
  const double batch_scale = static_cast<double>(n) / (((n + kBatch - 1) / kBatch) * kBatch);
  for (double& v : batched) v /= batch_scale;

  if (absl::StatusOr<v1::QueueInfo> info = q.Info(); info.ok() && info->size() != 0) {
    std::cerr << "queue_bench: " << info->size() << " items left in the queue\n";
  }
  (void)stream.Close();
  opened->reset();

  std::vector<double> python = PythonBaseline(n, reps);
  const double py = Median(python);
  if (python.empty()) std::cout << "python baseline failed to run (no figures)\n";

  PrintLine("unary sequential put+get", unary, py);
  PrintLine(absl::StrCat("stream pipelined (window ", kWindow, ")"), piped, py);
  PrintLine(absl::StrCat("stream interleaved (window ", kWindow, ")"), interleaved, py);
  PrintLine(absl::StrCat("batched PutMany/GetMany (", kBatch, ")"), batched, py);
  std::cout << "python Manager().Queue() put+get loop: median " << absl::StrFormat("%.0f", py)
            << " ops/s; reps: " << Reps(python) << "\n";
  (void)c.DeleteQueue(name);
  return 0;
}

}  // namespace
}  // namespace forkpool

int main() { return forkpool::Main(); }
