// Daemon and RunCommand: real processes for the integration tests.
#include "daemon_fixture.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "forkpool/client.h"

extern char** environ;

namespace forkpool::testing {
namespace {

// Spawns `argv` with `envp`, stdin from /dev/null, stdout and stderr to `out` and
// `err` (appended), default signal dispositions and an empty signal mask.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv,
                            const std::vector<std::string>& envp, const std::string& out,
                            const std::string& err) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0600);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0600);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> env;
  for (const std::string& e : envp) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);

  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0], &actions, &attr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return absl::ErrnoToStatus(rc, absl::StrCat("posix_spawn(", argv[0], ")"));
  return pid;
}

std::vector<std::string> Environment(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view entry(*e);
    const absl::string_view name = entry.substr(0, entry.find('='));
    if (name == "FORKPOOL_ADDRESS" || extra.count(std::string(name))) continue;
    out.emplace_back(entry);
  }
  for (const auto& [name, value] : extra) out.push_back(absl::StrCat(name, "=", value));
  return out;
}

// Reaps `pid` if it has exited: the wait status, or nullopt while it runs.
absl::StatusOr<std::optional<int>> TryReap(pid_t pid) {
  int status = 0;
  const pid_t r = ::waitpid(pid, &status, WNOHANG);
  if (r == pid) return std::optional<int>(status);
  if (r == 0) return std::optional<int>();
  return absl::ErrnoToStatus(errno, absl::StrCat("waitpid(", pid, ")"));
}

// Waits up to `timeout` for `pid` to exit.
absl::StatusOr<std::optional<int>> ReapWithin(pid_t pid, absl::Duration timeout) {
  absl::StatusOr<std::optional<int>> reaped = std::optional<int>();
  PollUntil(
      [&] {
        reaped = TryReap(pid);
        return !reaped.ok() || reaped->has_value();
      },
      timeout);
  return reaped;
}

int ExitCodeOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

}  // namespace

void SleepForPoll() { absl::SleepFor(absl::Milliseconds(5)); }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool ProcessAlive(pid_t pid) {
  const std::string status = ReadFile(absl::StrCat("/proc/", pid, "/status"));
  if (status.empty()) return false;
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    if (absl::StartsWith(line, "State:")) return !absl::StrContains(line, "Z");
  }
  return true;
}

Daemon::Daemon(std::string dir, pid_t pid)
    : dir_(dir),
      socket_path_(dir + "/forkpoold.sock"),
      log_path_(dir + "/forkpoold.log"),
      pid_(pid) {}

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const DaemonOptions& options) {
  char tmpl[] = "/tmp/fpit-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return absl::ErrnoToStatus(errno, "mkdtemp(/tmp/fpit-*)");
  const std::string dir = tmpl;
  const std::string socket = dir + "/forkpoold.sock";
  const std::string log = dir + "/forkpoold.log";
  std::vector<std::string> argv = {options.binary, absl::StrCat("--socket=", socket),
                                   absl::StrCat("--processes=", options.processes)};
  argv.insert(argv.end(), options.extra_flags.begin(), options.extra_flags.end());
  absl::StatusOr<pid_t> pid = Spawn(argv, Environment({}), log, log);
  if (!pid.ok()) {
    std::filesystem::remove_all(dir);
    return pid.status();
  }
  auto daemon = std::unique_ptr<Daemon>(new Daemon(dir, *pid));

  // Ready = it says so in its log and a client's health check passes.
  absl::Status last = absl::UnavailableError("not started");
  bool exited = false;
  const bool ready = PollUntil(
      [&] {
        absl::StatusOr<std::optional<int>> reaped = TryReap(daemon->pid_);
        if (!reaped.ok() || reaped->has_value()) {
          exited = true;
          daemon->stopped_ = true;
          if (reaped.ok()) daemon->stop_result_ = **reaped;
          return true;
        }
        if (!absl::StrContains(daemon->ReadLog(), "serving on unix:")) return false;
        ConnectOptions connect;
        connect.connect_timeout = absl::Seconds(1);
        absl::StatusOr<std::unique_ptr<Client>> client =
            Client::Connect(daemon->address(), connect);
        last = client.status();
        return client.ok();
      },
      options.start_timeout);
  if (exited) {
    return absl::InternalError(
        absl::StrCat("forkpoold exited during start-up; its log:\n", daemon->ReadLog()));
  }
  if (!ready) {
    return absl::DeadlineExceededError(absl::StrCat(
        "forkpoold did not answer within ", absl::FormatDuration(options.start_timeout), " (",
        last.message(), "); its log:\n", daemon->ReadLog()));
  }
  return daemon;
}

Daemon::~Daemon() {
  (void)Stop();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

absl::StatusOr<int> Daemon::Stop(absl::Duration grace) {
  if (stopped_) return stop_result_;
  stopped_ = true;
  ::kill(pid_, SIGTERM);
  absl::StatusOr<std::optional<int>> reaped = ReapWithin(pid_, grace);
  if (reaped.ok() && !reaped->has_value()) {
    ::kill(pid_, SIGKILL);
    reaped = ReapWithin(pid_, absl::Seconds(10));
  }
  if (!reaped.ok()) {
    stop_result_ = reaped.status();
  } else if (!reaped->has_value()) {
    stop_result_ = absl::DeadlineExceededError(
        absl::StrCat("forkpoold pid ", pid_, " survived SIGKILL for 10s"));
  } else {
    stop_result_ = **reaped;
  }
  return stop_result_;
}

std::string Daemon::ReadLog() const { return ReadFile(log_path_); }

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const std::string& scratch_dir,
                                         const std::map<std::string, std::string>& env,
                                         absl::Duration timeout) {
  static int counter = 0;
  const std::string stem = absl::StrCat(scratch_dir, "/cmd-", ::getpid(), "-", ++counter);
  const std::string out_path = stem + ".out";
  const std::string err_path = stem + ".err";
  absl::StatusOr<pid_t> pid = Spawn(argv, Environment(env), out_path, err_path);
  if (!pid.ok()) return pid.status();
  absl::StatusOr<std::optional<int>> reaped = ReapWithin(*pid, timeout);
  if (!reaped.ok()) return reaped.status();
  if (!reaped->has_value()) {
    ::kill(*pid, SIGKILL);
    (void)ReapWithin(*pid, absl::Seconds(10));
    return absl::DeadlineExceededError(absl::StrCat(
        argv[0], " did not finish within ", absl::FormatDuration(timeout), "; stderr:\n",
        ReadFile(err_path)));
  }
  CommandResult result;
  result.exit_code = ExitCodeOf(**reaped);
  result.out = ReadFile(out_path);
  result.err = ReadFile(err_path);
  std::filesystem::remove(out_path);
  std::filesystem::remove(err_path);
  return result;
}

}  // namespace forkpool::testing
