// Test helper: runs the real forkpoold binary on a socket in a fresh temporary
// directory, and runs other programs (the forkpool CLI) with their output
// captured.
#ifndef FORKPOOL_TESTS_INTEGRATION_DAEMON_FIXTURE_H_
#define FORKPOOL_TESTS_INTEGRATION_DAEMON_FIXTURE_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace forkpool::testing {

// The forkpoold binary tests run: $FORKPOOL_TEST_FORKPOOLD when it is set and not
// empty (to run tests built here against another build, e.g. today's daemon), else
// the one built beside the tests.
std::string ForkpooldPath();

// How to start a daemon.
struct DaemonOptions {
  // Path of the forkpoold binary; left at this default, Start runs ForkpooldPath().
  std::string binary = FORKPOOLD_PATH;
  // Workers of the default pool.
  int processes = 2;
  // More flags, e.g. "--max_message_bytes=4194304".
  std::vector<std::string> extra_flags;
  // How long it may take to answer a health check.
  absl::Duration start_timeout = absl::Seconds(20);
  // Added to (or replacing in) the test's environment (NAME -> value).
  std::map<std::string, std::string> env;
  // When true, the daemon runs under a seccomp filter (with PR_SET_NO_NEW_PRIVS) that
  // makes clone3 fail with ENOSYS and allows every other system call, as the default
  // seccomp profile of container runtimes does. The daemon and everything it starts
  // inherit it; glibc falls back to clone for threads.
  bool deny_clone3 = false;
};

// A forkpoold process this test started, its temporary directory (socket, log)
// and its lifetime. The destructor stops it (SIGTERM, then SIGKILL) and removes
// the directory. Thread-compatible.
class Daemon {
 public:
  // Makes a directory under /tmp (keeps the socket path far below 108 bytes),
  // starts the daemon there with stdin /dev/null and stdout+stderr appended to
  // `log_path()`, and polls until it logs that it is serving and answers a
  // health check. Fails, with the log's text, if it exits or does not answer
  // within options.start_timeout.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const DaemonOptions& options = {});

  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  ~Daemon();

  // SIGTERM, then waits up to `grace` for the exit; SIGKILL after that. Returns
  // the wait status (as from waitpid), or an error if the process could not be
  // reaped. Idempotent: a second call returns the first's answer.
  absl::StatusOr<int> Stop(absl::Duration grace = absl::Seconds(15));

  // Waits up to `timeout` for the daemon to exit by itself (after a signal the
  // test sent) and reaps it: its wait status, kDeadlineExceeded if it still
  // runs (it is then left running for Stop or the destructor).
  absl::StatusOr<int> AwaitExit(absl::Duration timeout);

  pid_t pid() const { return pid_; }
  // The root helper's pid as the daemon logged it at start-up ("root helper pid
  // N").
  pid_t first_helper_pid() const { return first_helper_pid_; }
  // The temporary directory, the socket in it, and "unix:<socket>".
  const std::string& dir() const { return dir_; }
  const std::string& socket_path() const { return socket_path_; }
  std::string address() const { return "unix:" + socket_path_; }
  const std::string& log_path() const { return log_path_; }
  // The daemon's stderr so far.
  std::string ReadLog() const;

 private:
  Daemon(std::string dir, pid_t pid);

  std::string dir_;
  std::string socket_path_;
  std::string log_path_;
  pid_t pid_;
  pid_t first_helper_pid_ = 0;
  bool stopped_ = false;
  absl::StatusOr<int> stop_result_ = 0;
};

// What a finished command did.
struct CommandResult {
  // Exit code, or 128 + signal when it was killed by a signal.
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `argv` (argv[0] is the path) with the test's environment minus
// FORKPOOL_ADDRESS, plus `env` (NAME -> value); stdin /dev/null, stdout and
// stderr to files in `scratch_dir`. Waits up to `timeout`, then SIGKILLs it and
// fails with kDeadlineExceeded.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const std::string& scratch_dir,
                                         const std::map<std::string, std::string>& env = {},
                                         absl::Duration timeout = absl::Seconds(30));

// True while /proc says process `pid` exists and is not a zombie.
bool ProcessAlive(pid_t pid);

// Paths of the example and test task libraries and of the spawn worker program,
// as built beside forkpoold.
inline constexpr char kExampleTasksPath[] = FORKPOOL_EXAMPLE_TASKS_PATH;
inline constexpr char kTestTasksPath[] = FORKPOOL_TEST_TASKS_PATH;
inline constexpr char kWorkerPath[] = FORKPOOL_WORKER_PATH;
// The spawn worker program the daemon of ForkpooldPath() runs: forkpool-worker beside
// it (kWorkerPath unless FORKPOOL_TEST_FORKPOOLD is set).
std::string ForkpooldWorkerPath();

// Test task libraries that misbehave while loading (tests/testlib): their static
// initializers abort(), _exit(3), sleep forever, or start a thread (and then register
// one task); one that registers 20,000 functions f00000..f19999 (echo); one that
// aborts while loading if the file named by $FORKPOOL_TEST_CRASH_MARKER exists
// (task "marker_ok" otherwise); and the one that takes a second to load.
inline constexpr char kBadLoadAbortPath[] = FORKPOOL_BAD_LOAD_ABORT_PATH;
inline constexpr char kBadLoadExitPath[] = FORKPOOL_BAD_LOAD_EXIT_PATH;
inline constexpr char kBadLoadHangPath[] = FORKPOOL_BAD_LOAD_HANG_PATH;
inline constexpr char kBadLoadThreadPath[] = FORKPOOL_BAD_LOAD_THREAD_PATH;
inline constexpr char kManyFunctionsPath[] = FORKPOOL_MANY_FUNCTIONS_PATH;
inline constexpr char kCrashOnMarkerPath[] = FORKPOOL_CRASH_ON_MARKER_PATH;
inline constexpr char kSlowLoadTasksPath[] = FORKPOOL_SLOW_LOAD_TASKS_PATH;
// The environment variable crash_on_marker reads.
inline constexpr char kCrashMarkerEnv[] = "FORKPOOL_TEST_CRASH_MARKER";

// "--task_library=<example library>,<test library>": the default pool loads
// both.
std::string TestLibrariesFlag();

// One process as /proc/PID/stat describes it.
struct ProcInfo {
  pid_t pid = 0;
  pid_t ppid = 0;
  pid_t pgid = 0;
  // R, S, D, Z, T, ...
  char state = '?';
  // /proc/PID/comm (at most 15 characters).
  std::string comm;
};

// What /proc/PID/stat says of `pid`; nullopt when there is no such process.
std::optional<ProcInfo> ReadProc(pid_t pid);

// Live (non-zombie) children of `parent` according to /proc, optionally only
// those whose comm is `comm`; sorted by pid.
std::vector<ProcInfo> ChildrenOf(pid_t parent, const std::string& comm = "");

// Pids of the live `forkpool-worker` children of `daemon`, and of its live
// `forkpool-helper` children.
std::set<pid_t> WorkerPidsOf(pid_t daemon);
// (HelperPidsOf leaves out the spare pool helper forkpoold keeps made in advance,
// "forkpool-helper: spare", which loads nothing until a CreatePool takes it.)
std::set<pid_t> HelperPidsOf(pid_t daemon);
std::set<pid_t> SpareHelperPidsOf(pid_t daemon);
bool IsSpareHelper(pid_t pid);

// Live (non-zombie) descendants of `root` according to /proc: its children, their
// children, and so on (not `root` itself).
std::set<pid_t> DescendantsOf(pid_t root);

// The thread count of `pid` ("Threads:" in /proc/PID/status); -1 when unreadable.
int ThreadsOf(pid_t pid);

// Whether /proc/PID/maps of `pid` maps a file whose path contains `path` (resolve
// symlinks first: maps shows the real path).
bool MapsMention(pid_t pid, const std::string& path);

// The fds process `pid` has open (names in /proc/PID/fd), sorted.
std::vector<int> OpenFds(pid_t pid);

// readlink() of `path`; empty when it fails.
std::string ReadLink(const std::string& path);

// Makes this process a child subreaper (PR_SET_CHILD_SUBREAPER), so that what a
// dead daemon leaves behind is re-parented to the test and stays checkable.
void BecomeSubreaper();

// Reaps every zombie child of this process that the fixture did not start
// itself (daemons and commands are reaped by their owners): orphans adopted as
// subreaper.
void ReapAdoptedOrphans();

// Polls `condition` every few milliseconds until it holds or `timeout` passes;
// returns whether it held.
template <typename Condition>
bool PollUntil(Condition condition, absl::Duration timeout = absl::Seconds(10));

// Reads a whole file; empty when it cannot.
std::string ReadFile(const std::string& path);

// --- implementation of the template
// -------------------------------------------------
void SleepForPoll();
template <typename Condition>
bool PollUntil(Condition condition, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (condition()) return true;
    if (absl::Now() >= deadline) return false;
    SleepForPoll();
  }
}

}  // namespace forkpool::testing

#endif  // FORKPOOL_TESTS_INTEGRATION_DAEMON_FIXTURE_H_
