// Worker creation with CloneParent: the worker is forkpoold's child, so a crash
// of its pool helper does not take it along, and forkpoold reaps it through its
// pidfd.
#include "server/helpers/worker_forker.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/process_title.h"
#include "common/status_macros.h"
#include "server/helpers/clone_parent.h"

namespace forkpool {
namespace {

// Runs in the new worker; never returns.
[[noreturn]] void BecomeWorker(const WorkerIdentity& identity, const TaskRegistry& registry,
                               pid_t daemon_pid, int socket, int stderr_write,
                               char* const* spawn_argv, const std::string& title) {
  // PDEATHSIG first, then the check that closes the race with a daemon that
  // died.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != daemon_pid) ::_exit(1);
  ::setpgid(0, 0);
  SetProcessTitle(title, "forkpool-worker");
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
  if (identity.nofile_soft_limit > 0) {
    // forkpoold raised its own soft limit to the hard one; tasks get what it
    // started with (select() breaks past 1024).
    rlimit nofile;
    if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
      nofile.rlim_cur = std::min<rlim_t>(identity.nofile_soft_limit, nofile.rlim_max);
      ::setrlimit(RLIMIT_NOFILE, &nofile);
    }
  }
  if (identity.memory_limit_bytes > 0) {
    // An allocation past the cap fails (std::bad_alloc: "out of memory")
    // instead of the kernel's OOM killer taking something else.
    const rlim_t cap = static_cast<rlim_t>(identity.memory_limit_bytes);
    rlimit as{cap, cap};
    ::setrlimit(RLIMIT_AS, &as);
  }
  if (spawn_argv != nullptr) {
    // PR_SET_PDEATHSIG survives execve (it is cleared only for set-user-ID
    // programs).
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
                                        const TaskRegistry& registry, pid_t daemon_pid) {
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

  // Everything the child needs is built before the clone: it only execs or
  // runs.
  std::vector<std::string> spawn_args = identity.spawn_command;
  std::vector<char*> spawn_argv;
  for (std::string& a : spawn_args) spawn_argv.push_back(a.data());
  if (!spawn_argv.empty()) spawn_argv.push_back(nullptr);
  const std::string title =
      absl::StrCat("forkpool-worker: pool ", identity.pool, " #", identity.worker_index);
  FORKPOOL_ASSIGN_OR_RETURN(ClonedProcess child, CloneParent());
  if (child.pid == 0) {
    BecomeWorker(identity, registry, daemon_pid, worker_end.get(), stderr_write.get(),
                 spawn_argv.empty() ? nullptr : spawn_argv.data(), title);
  }
  ForkedWorker w;
  w.pid = child.pid;
  w.socket = std::move(daemon_end);
  w.pidfd = std::move(child.pidfd);
  w.stderr_read = std::move(stderr_read);
  return w;
}

}  // namespace forkpool
