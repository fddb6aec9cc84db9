// The root helper's loop: one StartPoolHelper at a time.
#include "server/helpers/root_helper.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/control_message.h"
#include "common/process_title.h"
#include "common/proto_status.h"
#include "common/status_macros.h"
#include "forkpool/internal/control.pb.h"
#include "server/helpers/clone_parent.h"
#include "server/helpers/helper_common.h"
#include "server/helpers/pool_helper.h"

extern char** environ;

namespace forkpool {
namespace {

using internal::FromHelper;
using internal::ToHelper;

constexpr char kWho[] = "root helper";

// Makes one pool helper; the new process never returns from here.
absl::Status StartPoolHelper(pid_t daemon_pid, const std::string& pool, FromHelper* reply,
                             UniqueFd fds[3]) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return absl::ErrnoToStatus(errno, "socketpair(pool helper control)");
  }
  UniqueFd daemon_end(sv[0]), helper_end(sv[1]);
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0)
    return absl::ErrnoToStatus(errno, "pipe2(pool helper stderr)");
  UniqueFd err_read(pipefd[0]), err_write(pipefd[1]);
  FORKPOOL_ASSIGN_OR_RETURN(ClonedProcess child, CloneParent());
  if (child.pid == 0) {
    // stdout and stderr into the pipe forkpoold drains: what a library prints
    // while loading reaches the log tagged with its pool, and cannot flood it.
    if (::dup2(err_write.get(), 1) < 0 || ::dup2(err_write.get(), 2) < 0 ||
        ::dup2(helper_end.get(), kHelperControlFd) < 0) {
      ::_exit(2);
    }
    ::close_range(kHelperControlFd + 1, ~0U, 0);
    RunPoolHelper(daemon_pid, pool);
  }
  reply->mutable_pool_helper_started()->set_pid(child.pid);
  fds[0] = std::move(daemon_end);
  fds[1] = std::move(child.pidfd);
  fds[2] = std::move(err_read);
  return absl::OkStatus();
}

// Drops `names` (and systemd's) from the environment. unsetenv alone only unlinks
// them from `environ`: their bytes stay in the process's original environment block,
// which every clone inherits and /proc/PID/environ shows (and a task can read through
// /proc/self/environ). So the strings are also zeroed where they lie.
void ScrubEnvironment(const std::vector<std::string>& names) {
  std::vector<std::string> all = DaemonOnlyEnvironment();
  all.insert(all.end(), names.begin(), names.end());
  std::vector<char*> found;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    for (const std::string& name : all) {
      if (std::strncmp(*e, name.c_str(), name.size()) == 0 && (*e)[name.size()] == '=') {
        found.push_back(*e);
      }
    }
  }
  for (const std::string& name : all) ::unsetenv(name.c_str());
  for (char* entry : found) std::memset(entry, 0, std::strlen(entry));
}

}  // namespace

std::vector<std::string> DaemonOnlyEnvironment() {
  return {"NOTIFY_SOCKET", "LISTEN_PID",    "LISTEN_FDS",   "LISTEN_FDNAMES",
          "WATCHDOG_PID",  "WATCHDOG_USEC", "INVOCATION_ID"};
}

void RunRootHelper(UniqueFd control, pid_t daemon_pid, const std::vector<std::string>& env_deny) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != daemon_pid) ::_exit(1);
  SetProcessTitle("forkpool-helper: root", "forkpool-helper");
  // A terminal's Ctrl-C reaches the whole process group; helpers leave when
  // their control socket closes instead. Pool helpers inherit these.
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGTERM, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ScrubEnvironment(env_deny);
  // Keep stdio and the control socket; nothing else of the daemon's (its lock
  // file, its listening socket).
  const int fd = control.release();
  if (fd != kHelperControlFd) {
    if (::dup2(fd, kHelperControlFd) < 0) ::_exit(1);
    ::close(fd);
  }
  ::close_range(kHelperControlFd + 1, ~0U, 0);
  ::fcntl(kHelperControlFd, F_SETFD, FD_CLOEXEC);
  if (const int threads = CountThreads(); threads != 1) {
    HelperLog(kWho, absl::StrCat("started with ", threads, " threads; leaving"));
    ::_exit(1);
  }
  SendHello(kWho, "root");
  while (true) {
    const ToHelper request = ReceiveRequest(kWho);
    FromHelper reply;
    reply.set_request_id(request.request_id());
    if (request.kind_case() != ToHelper::kStartPoolHelper) {
      StatusToProto(absl::InvalidArgumentError(
                        absl::StrCat("the root helper does not take control request kind ",
                                     static_cast<int>(request.kind_case()))),
                    reply.mutable_status());
      SendToDaemon(kWho, reply);
      continue;
    }
    UniqueFd fds[3];
    absl::Status s = StartPoolHelper(daemon_pid, request.start_pool_helper().pool(), &reply, fds);
    StatusToProto(s, reply.mutable_status());
    if (!s.ok()) {
      SendToDaemon(kWho, reply);
      continue;
    }
    const int raw[] = {fds[0].get(), fds[1].get(), fds[2].get()};
    SendToDaemon(kWho, reply, raw, 3);
  }
}

}  // namespace forkpool
