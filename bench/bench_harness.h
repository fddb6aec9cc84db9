// Shared by forkpool's benchmarks (apply_bench, map_bench, start_bench): starts a private
// forkpoold on a temporary socket, runs a Python multiprocessing baseline script, and
// prints medians side by side. Header-only; each benchmark is one executable.
//
// Paths come from compile definitions set in bench/CMakeLists.txt:
//   FORKPOOL_BENCH_FORKPOOLD   forkpoold binary
//   FORKPOOL_BENCH_CLI         forkpool CLI binary
//   FORKPOOL_BENCH_SOURCE_DIR  this directory (the Python baselines live here)
// Environment: FORKPOOL_BENCH_REPS (repetitions, default 5), FORKPOOL_BENCH_PYTHON
// (interpreter, default python3), FORKPOOL_BENCH_KEEP_LOG=1 (print the daemon's log).
#ifndef FORKPOOL_BENCH_BENCH_HARNESS_H_
#define FORKPOOL_BENCH_BENCH_HARNESS_H_

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "forkpool/client.h"

namespace forkpool::bench {

using Clock = std::chrono::steady_clock;

inline double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

inline int Reps() {
  if (const char* r = std::getenv("FORKPOOL_BENCH_REPS"); r && *r) {
    const int n = std::atoi(r);
    if (n > 0) return n;
  }
  return 5;
}

inline double Median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Nearest-rank percentile, p in [0, 100].
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  if (rank == 0) rank = 1;
  return v[std::min(rank, v.size()) - 1];
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

[[noreturn]] inline void Die(const std::string& what, const absl::Status& status = absl::OkStatus()) {
  std::fprintf(stderr, "bench: %s%s%s\n", what.c_str(), status.ok() ? "" : ": ",
               status.ok() ? "" : std::string(status.message()).c_str());
  std::exit(1);
}

template <typename T>
T Check(absl::StatusOr<T> v, const std::string& what) {
  if (!v.ok()) Die(what, v.status());
  return *std::move(v);
}
inline void Check(const absl::Status& s, const std::string& what) {
  if (!s.ok()) Die(what, s);
}

// A forkpoold of our own, on a socket in a fresh temporary directory. It gets
// PR_SET_PDEATHSIG=SIGTERM, so it does not outlive a benchmark that crashes.
class Daemon {
 public:
  static Daemon Start(const std::vector<std::string>& flags) {
    Daemon d;
    char tmpl[] = "/tmp/fpbench.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) Die("mkdtemp failed");
    d.dir_ = tmpl;
    d.socket_ = d.dir_ + "/forkpoold.sock";
    d.log_ = d.dir_ + "/forkpoold.log";
    std::vector<std::string> argv = {FORKPOOL_BENCH_FORKPOOLD, "--socket=" + d.socket_,
                                     "--grace=2s"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    const pid_t parent = ::getpid();
    d.started_ = Clock::now();
    const pid_t pid = ::fork();
    if (pid < 0) Die("fork failed");
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(1);
      const int null_fd = ::open("/dev/null", O_RDONLY);
      const int log_fd = ::open(d.log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (null_fd < 0 || log_fd < 0) ::_exit(127);
      ::dup2(null_fd, 0);
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    d.pid_ = pid;
    // Connect retries until the daemon answers its health check.
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(20);
    while (true) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        d.pid_ = -1;
        Die("forkpoold exited at start; its log:\n" + ReadFile(d.log_));
      }
      if (::access(d.socket_.c_str(), F_OK) == 0) {
        ConnectOptions opts;
        opts.connect_timeout = absl::Seconds(2);
        if (Client::Connect(d.address(), opts).ok()) break;
      }
      if (Clock::now() > deadline) Die("forkpoold did not answer within 20 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return d;
  }

  Daemon() = default;
  Daemon(Daemon&& o) noexcept { *this = std::move(o); }
  Daemon& operator=(Daemon&& o) noexcept {
    pid_ = o.pid_;
    o.pid_ = -1;
    dir_ = std::move(o.dir_);
    socket_ = std::move(o.socket_);
    log_ = std::move(o.log_);
    started_ = o.started_;
    return *this;
  }
  ~Daemon() { Stop(); }

  std::string address() const { return "unix:" + socket_; }
  pid_t pid() const { return pid_; }
  std::string log() const { return ReadFile(log_); }
  Clock::time_point started() const { return started_; }

  // SIGTERM to our daemon's pid (never by name), then wait for it to exit.
  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(15);
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        std::fprintf(stderr, "bench: forkpoold %d did not stop in 15 s; SIGKILL\n", pid_);
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (const char* keep = std::getenv("FORKPOOL_BENCH_KEEP_LOG"); keep && *keep == '1') {
      std::fprintf(stderr, "--- forkpoold log ---\n%s---\n", ReadFile(log_).c_str());
    }
    pid_ = -1;
    ::unlink(log_.c_str());
    ::unlink((socket_ + ".lock").c_str());
    ::unlink(socket_.c_str());
    ::rmdir(dir_.c_str());
  }

 private:
  pid_t pid_ = -1;
  std::string dir_, socket_, log_;
  Clock::time_point started_;
};

// Runs a shell command; returns its stdout. Dies when it fails.
inline std::string RunCommand(const std::string& command) {
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) Die("popen failed: " + command);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int rc = ::pclose(p);
  if (rc != 0) Die(absl::StrCat("command failed (status ", rc, "): ", command));
  return out;
}

inline std::string PythonInterpreter() {
  if (const char* p = std::getenv("FORKPOOL_BENCH_PYTHON"); p && *p) return p;
  return "python3";
}

// Runs bench/<script> with `args` under python3 and returns the JSON it prints last.
inline std::string RunPython(const std::string& script, const std::string& args) {
  const std::string command = absl::StrCat(PythonInterpreter(), " ", FORKPOOL_BENCH_SOURCE_DIR,
                                           "/", script, " ", args);
  std::string out = RunCommand(command);
  const size_t brace = out.rfind("\n{");
  return brace == std::string::npos ? out : out.substr(brace + 1);
}

// The number after "key": in a flat JSON object (NaN when absent).
inline double JsonNumber(const std::string& json, const std::string& key) {
  const std::string needle = "\"" + key + "\"";
  size_t at = json.find(needle);
  if (at == std::string::npos) return NAN;
  at = json.find(':', at + needle.size());
  if (at == std::string::npos) return NAN;
  return std::strtod(json.c_str() + at + 1, nullptr);
}

inline std::string Fmt(double v) {
  if (std::isnan(v)) return "n/a";
  char buf[64];
  const double a = std::fabs(v);
  if (a >= 100000) {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  } else if (a >= 100) {
    std::snprintf(buf, sizeof(buf), "%.1f", v);
  } else if (a >= 1) {
    std::snprintf(buf, sizeof(buf), "%.2f", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.3f", v);
  }
  return buf;
}

enum class Better { kHigher, kLower };

// One line: forkpool's median, Python's, their ratio and which way is better.
inline void PrintComparison(const std::string& what, const std::string& unit, double forkpool,
                            double python, Better better) {
  std::string verdict = "n/a";
  if (!std::isnan(forkpool) && !std::isnan(python) && forkpool > 0 && python > 0) {
    const double factor = better == Better::kHigher ? forkpool / python : python / forkpool;
    verdict = factor >= 1 ? absl::StrCat(Fmt(factor), "x better")
                          : absl::StrCat(Fmt(1 / factor), "x worse");
  }
  std::printf("%-52s forkpool %10s %-8s python %10s %-8s ratio %6s  (%s)\n", what.c_str(),
              Fmt(forkpool).c_str(), unit.c_str(), Fmt(python).c_str(), unit.c_str(),
              Fmt(forkpool / python).c_str(), verdict.c_str());
  std::fflush(stdout);
}

// One line for a figure with no Python counterpart.
inline void PrintFigure(const std::string& what, const std::string& unit, double value,
                        const std::string& note = "") {
  std::printf("%-52s forkpool %10s %-8s%s%s\n", what.c_str(), Fmt(value).c_str(), unit.c_str(),
              note.empty() ? "" : "  ", note.c_str());
  std::fflush(stdout);
}

inline std::string Joined(const std::vector<double>& v) {
  std::vector<std::string> s;
  for (double d : v) s.push_back(Fmt(d));
  return absl::StrJoin(s, " ");
}

// Per-rep figures on stderr-free stdout, indented, for the curious.
inline void PrintReps(const std::string& what, const std::vector<double>& v) {
  std::printf("    %s reps: %s\n", what.c_str(), Joined(v).c_str());
}

}  // namespace forkpool::bench

#endif  // FORKPOOL_BENCH_BENCH_HARNESS_H_
