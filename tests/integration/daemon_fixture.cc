// Daemon and RunCommand: real processes for the integration tests.
#include "daemon_fixture.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "forkpool/client.h"

extern char** environ;

namespace forkpool::testing {
namespace {

// Pids the fixture started (daemons, commands): their owners reap them, so
// ReapAdoptedOrphans leaves them alone.
std::mutex owned_mu;
std::set<pid_t>& OwnedPids() {
  static std::set<pid_t>* pids = new std::set<pid_t>;
  return *pids;
}
void Own(pid_t pid) {
  std::lock_guard<std::mutex> lock(owned_mu);
  OwnedPids().insert(pid);
}
void Disown(pid_t pid) {
  std::lock_guard<std::mutex> lock(owned_mu);
  OwnedPids().erase(pid);
}
bool IsOwned(pid_t pid) {
  std::lock_guard<std::mutex> lock(owned_mu);
  return OwnedPids().count(pid) > 0;
}

// A seccomp filter that fails clone3 with ENOSYS and allows everything else (what
// the default profiles of Docker, podman and containerd do on older setups).
// x86_64 only; other architectures pass through unfiltered.
const sock_fprog& DenyClone3Filter() {
  static sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  static const sock_fprog program = {
      static_cast<unsigned short>(sizeof(filter) / sizeof(filter[0])), filter};
  return program;
}

// As Spawn below, by fork and exec, with the child under DenyClone3Filter() (set
// after fork, before exec: the test process itself keeps clone3). Everything the
// child uses is built before fork; the child makes only async-signal-safe calls and
// reports a failure before exec as an errno on a close-on-exec pipe.
absl::StatusOr<pid_t> ForkExecDenyingClone3(char* const* args, char* const* env,
                                            const std::string& out, const std::string& err) {
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2(spawn report)");
  const sock_fprog& filter = DenyClone3Filter();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(report[0]);
    ::close(report[1]);
    return absl::ErrnoToStatus(e, "fork(daemon under seccomp)");
  }
  if (pid == 0) {
    auto fail = [&](int e) {
      [[maybe_unused]] ssize_t n = ::write(report[1], &e, sizeof(e));
      ::_exit(127);
    };
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    const int in = ::open("/dev/null", O_RDONLY);
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (in < 0 || o < 0 || e < 0) fail(errno);
    if (::dup2(in, 0) < 0 || ::dup2(o, 1) < 0 || ::dup2(e, 2) < 0) fail(errno);
    if (in > 2) ::close(in);
    if (o > 2) ::close(o);
    if (e > 2) ::close(e);
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail(errno);
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &filter, 0, 0) != 0) fail(errno);
    ::execve(args[0], args, env);
    fail(errno);
  }
  ::close(report[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(report[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n > 0) {
    int status = 0;
    (void)::waitpid(pid, &status, 0);
    return absl::ErrnoToStatus(child_errno, absl::StrCat("starting ", args[0], " under seccomp"));
  }
  return pid;
}

// Spawns `argv` with `envp`, stdin from /dev/null, stdout and stderr to `out` and
// `err` (appended), default signal dispositions and an empty signal mask; with
// `deny_clone3`, under DenyClone3Filter().
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv,
                            const std::vector<std::string>& envp, const std::string& out,
                            const std::string& err, bool deny_clone3 = false) {
  if (deny_clone3) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    std::vector<char*> env;
    for (const std::string& e : envp) env.push_back(const_cast<char*>(e.c_str()));
    env.push_back(nullptr);
    absl::StatusOr<pid_t> pid = ForkExecDenyingClone3(args.data(), env.data(), out, err);
    if (pid.ok()) Own(*pid);
    return pid;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
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
  Own(pid);
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
  if (r == pid) {
    Disown(pid);
    return std::optional<int>(status);
  }
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

std::string ForkpooldPath() {
  const char* override_path = std::getenv("FORKPOOL_TEST_FORKPOOLD");
  if (override_path != nullptr && *override_path != '\0') return override_path;
  return FORKPOOLD_PATH;
}

std::string ForkpooldWorkerPath() {
  const std::string daemon = ForkpooldPath();
  if (daemon == FORKPOOLD_PATH) return kWorkerPath;
  return (std::filesystem::path(daemon).parent_path() / "forkpool-worker").string();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string TestLibrariesFlag() {
  return absl::StrCat("--task_library=", kExampleTasksPath, ",", kTestTasksPath);
}

std::optional<ProcInfo> ReadProc(pid_t pid) {
  const std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
  const size_t open = stat.find('(');
  const size_t close = stat.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) {
    return std::nullopt;
  }
  ProcInfo info;
  info.pid = pid;
  info.comm = stat.substr(open + 1, close - open - 1);
  std::vector<std::string> rest = absl::StrSplit(stat.substr(close + 1), ' ', absl::SkipEmpty());
  if (rest.size() < 3 || rest[0].empty()) return std::nullopt;
  info.state = rest[0][0];
  if (!absl::SimpleAtoi(rest[1], &info.ppid) || !absl::SimpleAtoi(rest[2], &info.pgid)) {
    return std::nullopt;
  }
  return info;
}

std::vector<ProcInfo> ChildrenOf(pid_t parent, const std::string& comm) {
  std::vector<ProcInfo> out;
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return out;
  while (dirent* entry = ::readdir(dir)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid) || pid <= 0) continue;
    std::optional<ProcInfo> info = ReadProc(pid);
    if (!info || info->ppid != parent || info->state == 'Z' || info->state == 'X') continue;
    if (!comm.empty() && info->comm != comm) continue;
    out.push_back(*info);
  }
  ::closedir(dir);
  std::sort(out.begin(), out.end(),
            [](const ProcInfo& a, const ProcInfo& b) { return a.pid < b.pid; });
  return out;
}

std::set<pid_t> WorkerPidsOf(pid_t daemon) {
  std::set<pid_t> out;
  for (const ProcInfo& p : ChildrenOf(daemon, "forkpool-worker")) out.insert(p.pid);
  return out;
}

std::set<pid_t> HelperPidsOf(pid_t daemon) {
  std::set<pid_t> out;
  for (const ProcInfo& p : ChildrenOf(daemon, "forkpool-helper")) {
    if (!IsSpareHelper(p.pid)) out.insert(p.pid);
  }
  return out;
}

bool IsSpareHelper(pid_t pid) {
  return absl::StartsWith(ReadFile(absl::StrCat("/proc/", pid, "/cmdline")),
                          "forkpool-helper: spare");
}

std::set<pid_t> SpareHelperPidsOf(pid_t daemon) {
  std::set<pid_t> out;
  for (const ProcInfo& p : ChildrenOf(daemon, "forkpool-helper")) {
    if (IsSpareHelper(p.pid)) out.insert(p.pid);
  }
  return out;
}

std::set<pid_t> DescendantsOf(pid_t root) {
  std::multimap<pid_t, ProcInfo> by_parent;
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return {};
  while (dirent* entry = ::readdir(dir)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid) || pid <= 0) continue;
    if (std::optional<ProcInfo> info = ReadProc(pid)) by_parent.emplace(info->ppid, *info);
  }
  ::closedir(dir);
  std::set<pid_t> out;
  std::vector<pid_t> todo = {root};
  while (!todo.empty()) {
    const pid_t parent = todo.back();
    todo.pop_back();
    auto [begin, end] = by_parent.equal_range(parent);
    for (auto it = begin; it != end; ++it) {
      const ProcInfo& child = it->second;
      if (child.state == 'Z' || child.state == 'X' || out.count(child.pid)) continue;
      out.insert(child.pid);
      todo.push_back(child.pid);
    }
  }
  return out;
}

int ThreadsOf(pid_t pid) {
  const std::string status = ReadFile(absl::StrCat("/proc/", pid, "/status"));
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    if (!absl::ConsumePrefix(&line, "Threads:")) continue;
    int n = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &n)) return n;
  }
  return -1;
}

bool MapsMention(pid_t pid, const std::string& path) {
  return absl::StrContains(ReadFile(absl::StrCat("/proc/", pid, "/maps")), path);
}

std::vector<int> OpenFds(pid_t pid) {
  std::vector<int> out;
  DIR* dir = ::opendir(absl::StrCat("/proc/", pid, "/fd").c_str());
  if (dir == nullptr) return out;
  while (dirent* entry = ::readdir(dir)) {
    int fd = 0;
    if (absl::SimpleAtoi(entry->d_name, &fd)) out.push_back(fd);
  }
  ::closedir(dir);
  std::sort(out.begin(), out.end());
  return out;
}

std::string ReadLink(const std::string& path) {
  char buf[4096];
  const ssize_t n = ::readlink(path.c_str(), buf, sizeof(buf));
  if (n <= 0) return "";
  return std::string(buf, static_cast<size_t>(n));
}

void BecomeSubreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

void ReapAdoptedOrphans() {
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return;
  const pid_t self = ::getpid();
  std::vector<pid_t> zombies;
  while (dirent* entry = ::readdir(dir)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid) || pid <= 0) continue;
    std::optional<ProcInfo> info = ReadProc(pid);
    if (info && info->ppid == self && info->state == 'Z' && !IsOwned(pid)) {
      zombies.push_back(pid);
    }
  }
  ::closedir(dir);
  for (pid_t pid : zombies) {
    int status = 0;
    (void)::waitpid(pid, &status, WNOHANG);
  }
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
  const std::string binary = options.binary == FORKPOOLD_PATH ? ForkpooldPath() : options.binary;
  std::vector<std::string> argv = {binary, absl::StrCat("--socket=", socket),
                                   absl::StrCat("--processes=", options.processes)};
  argv.insert(argv.end(), options.extra_flags.begin(), options.extra_flags.end());
  absl::StatusOr<pid_t> pid = Spawn(argv, Environment(options.env), log, log, options.deny_clone3);
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
  // "serving on unix:... (pid N, root helper pid M, ...)"
  const std::string said = daemon->ReadLog();
  const std::string helper_key = "root helper pid ";
  if (const size_t at = said.find(helper_key); at != std::string::npos) {
    const size_t begin = at + helper_key.size();
    const size_t end = said.find_first_not_of("0123456789", begin);
    (void)absl::SimpleAtoi(said.substr(begin, end - begin), &daemon->first_helper_pid_);
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

absl::StatusOr<int> Daemon::AwaitExit(absl::Duration timeout) {
  if (stopped_) return stop_result_;
  absl::StatusOr<std::optional<int>> reaped = ReapWithin(pid_, timeout);
  if (!reaped.ok()) {
    stopped_ = true;
    stop_result_ = reaped.status();
    return stop_result_;
  }
  if (!reaped->has_value()) {
    return absl::DeadlineExceededError(
        absl::StrCat("forkpoold pid ", pid_, " still runs after ", absl::FormatDuration(timeout)));
  }
  stopped_ = true;
  stop_result_ = **reaped;
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
    return absl::DeadlineExceededError(absl::StrCat(argv[0], " did not finish within ",
                                                    absl::FormatDuration(timeout), "; stderr:\n",
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
