// Worker creation with clone3(CLONE_PARENT | CLONE_PIDFD): the worker is the
// daemon's child, so a crash of the helper does not take it along, and the daemon
// reaps it through its pidfd.
#include "server/fork_helper/worker_forker.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"

namespace forkpool {
namespace {

constexpr int kWorkerSocketFd = 3;

// Runs in the new worker; never returns.
[[noreturn]] void BecomeWorker(const WorkerIdentity& identity,
                               const TaskRegistry& registry, pid_t daemon_pid,
                               int socket, int stderr_write, char* const* spawn_argv) {
  // PDEATHSIG first, then the check that closes the race with a daemon that died.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != daemon_pid) ::_exit(1);
  ::setpgid(0, 0);
  ::prctl(PR_SET_NAME, "forkpool-worker");
  // Signals: the daemon's blocked mask and the helper's SIG_IGNs survive fork.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    ::signal(sig, SIG_DFL);
  }
  // stdio: /dev/null in (a worker in its own group reading a tty would stop on
  // SIGTTIN); stdout and stderr into the pipe the daemon drains.
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0 || ::dup2(devnull, 0) < 0 || ::dup2(stderr_write, 1) < 0 ||
      ::dup2(stderr_write, 2) < 0 || ::dup2(socket, kWorkerSocketFd) < 0) {
    ::_exit(2);
  }
  ::close_range(kWorkerSocketFd + 1, ~0U, 0);
  // A core dump piped to a crash handler delays the exit by seconds.
  rlimit core{0, 0};
  ::setrlimit(RLIMIT_CORE, &core);
  if (identity.memory_limit_bytes > 0) {
    // An allocation past the cap fails (std::bad_alloc: "out of memory") instead of
    // the kernel's OOM killer taking something else.
    const rlim_t cap = static_cast<rlim_t>(identity.memory_limit_bytes);
    rlimit as{cap, cap};
    ::setrlimit(RLIMIT_AS, &as);
  }
  if (spawn_argv != nullptr) {
    // PR_SET_PDEATHSIG survives execve (it is cleared only for set-user-ID programs).
    ::execv(spawn_argv[0], spawn_argv);
    std::fprintf(stderr, "forkpool worker: execv(%s): %s\n", spawn_argv[0], std::strerror(errno));
    ::_exit(127);
  }
  const int code = RunWorkerLoop(identity, registry, UniqueFd(kWorkerSocketFd));
  std::fflush(stdout);
  std::fflush(stderr);
  ::_exit(code);
}

}  // namespace

absl::StatusOr<ForkedWorker> ForkWorker(const WorkerIdentity& identity,
                                        const TaskRegistry& registry,
                                        pid_t daemon_pid) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return absl::ErrnoToStatus(errno, "socketpair(worker)");
  }
  UniqueFd daemon_end(sv[0]), worker_end(sv[1]);
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) {
    return absl::ErrnoToStatus(errno, "pipe2(worker stderr)");
  }
  UniqueFd stderr_read(pipefd[0]), stderr_write(pipefd[1]);

  // argv is built before the fork: the child only execs.
  std::vector<std::string> spawn_args;
  std::vector<char*> spawn_argv;
  if (!identity.spawn_binary.empty()) {
    spawn_args = {identity.spawn_binary, "--pool", identity.pool, "--index",
                  std::to_string(identity.worker_index)};
    for (const std::string& lib : identity.libraries) {
      spawn_args.push_back("--library");
      spawn_args.push_back(lib);
    }
    if (!identity.initializer.empty()) {
      spawn_args.push_back("--initializer");
      spawn_args.push_back(identity.initializer);
      spawn_args.push_back("--initargs-hex");
      spawn_args.push_back(absl::BytesToHexString(identity.initargs));
    }
    for (std::string& a : spawn_args) spawn_argv.push_back(a.data());
    spawn_argv.push_back(nullptr);
  }
  int pidfd = -1;
  clone_args args{};
  args.flags = CLONE_PARENT | CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = 0;  // with CLONE_PARENT the helper's own exit signal is used
  const long pid = ::syscall(SYS_clone3, &args, sizeof(args));
  if (pid < 0) return absl::ErrnoToStatus(errno, "clone3(worker)");
  if (pid == 0) {
    BecomeWorker(identity, registry, daemon_pid, worker_end.get(), stderr_write.get(),
                 spawn_argv.empty() ? nullptr : spawn_argv.data());
  }
  ForkedWorker w;
  w.pid = static_cast<pid_t>(pid);
  w.socket = std::move(daemon_end);
  w.pidfd = UniqueFd(pidfd);
  w.stderr_read = std::move(stderr_read);
  return w;
}

}  // namespace forkpool
