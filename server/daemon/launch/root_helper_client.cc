// RootHelperClient implementation.
#include "server/daemon/launch/root_helper_client.h"

#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/proto_status.h"
#include "server/daemon/launch/process_util.h"
#include "server/daemon/log.h"
#include "server/helpers/helper_common.h"
#include "server/helpers/root_helper.h"

extern char** environ;

namespace forkpool {
namespace {

constexpr int kMaxLosses = 10;
constexpr absl::Duration kLossWindow = absl::Seconds(30);
constexpr absl::Duration kStartTimeout = absl::Seconds(10);

}  // namespace

absl::StatusOr<HelperProcess> ForkRootHelper(const std::vector<std::string>& env_deny) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return absl::ErrnoToStatus(errno, "socketpair(root helper control)");
  }
  UniqueFd daemon_end(sv[0]), helper_end(sv[1]);
  const pid_t daemon_pid = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return absl::ErrnoToStatus(errno, "fork(root helper)");
  if (pid == 0) {
    daemon_end.reset();
    RunRootHelper(std::move(helper_end), daemon_pid, env_deny);
  }
  HelperProcess helper;
  helper.pid = pid;
  helper.control = std::move(daemon_end);
  FORKPOOL_ASSIGN_OR_RETURN(helper.pidfd, PidfdOpen(pid));
  return helper;
}

RootHelperClient::RootHelperClient(IoLoop* loop, ChildRegistry* children,
                                   std::vector<std::string> env_deny)
    : loop_(loop), children_(children), env_deny_(std::move(env_deny)) {}

absl::Status RootHelperClient::Start(HelperProcess first) {
  const pid_t pid = first.pid;
  HelperChannel::Callbacks callbacks;
  callbacks.on_exit = [this, pid](const std::string& why) {
    OnLost(absl::StrCat("root helper (pid ", pid, ") ", why));
  };
  FORKPOOL_ASSIGN_OR_RETURN(std::shared_ptr<HelperChannel> channel,
                            HelperChannel::Start(loop_, children_, "root helper", std::move(first),
                                                 std::move(callbacks)));
  absl::MutexLock lock(&mu_);
  channel_ = std::move(channel);
  return absl::OkStatus();
}

pid_t RootHelperClient::pid() const {
  absl::MutexLock lock(&mu_);
  return channel_ ? channel_->pid() : 0;
}

void RootHelperClient::StartPoolHelper(std::function<void(absl::StatusOr<HelperProcess>)> done) {
  std::optional<HelperProcess> spare;
  {
    absl::MutexLock lock(&mu_);
    spare.swap(spare_);
  }
  if (spare && WaitPidfd(spare->pidfd.get(), absl::ZeroDuration())) {
    // The spare died waiting (something outside killed it): reaped, not handed out.
    (void)ReapPidfd(spare->pidfd.get());
    children_->Remove(spare->pid);
    spare.reset();
  }
  if (spare) {
    // Its owner registers it again when it watches it.
    children_->Remove(spare->pid);
    loop_->Post([done, p = std::make_shared<HelperProcess>(*std::move(spare))]() mutable {
      done(std::move(*p));
    });
  } else {
    Ask(std::move(done));
  }
  RequestSpare();
}

void RootHelperClient::RequestSpare() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_ || spare_ || spare_requested_) return;
    spare_requested_ = true;
  }
  Ask([this](absl::StatusOr<HelperProcess> p) {
    if (!p.ok()) {
      absl::MutexLock lock(&mu_);
      spare_requested_ = false;
      return;  // tried again at the next StartPoolHelper
    }
    {
      absl::MutexLock lock(&mu_);
      spare_requested_ = false;
      if (!stopped_ && !spare_) {
        // A spare is forkpoold's child that nobody watches yet: registered, so that
        // the OrphanReaper leaves it alone.
        children_->Add(p->pid);
        spare_ = *std::move(p);
        return;
      }
    }
    // Not wanted (stopping): ended and reaped here, without the lock.
    (void)PidfdSignal(p->pidfd.get(), SIGKILL);
    if (WaitPidfd(p->pidfd.get(), absl::Seconds(1))) (void)ReapPidfd(p->pidfd.get());
  });
}

void RootHelperClient::Ask(std::function<void(absl::StatusOr<HelperProcess>)> done) {
  std::shared_ptr<HelperChannel> channel;
  {
    absl::MutexLock lock(&mu_);
    channel = channel_;
  }
  internal::ToHelper request;
  request.mutable_start_pool_helper();
  auto reply = [done](absl::StatusOr<internal::FromHelper> r, std::vector<UniqueFd> fds) {
    if (!r.ok()) {
      done(absl::UnavailableError(absl::StrCat("root helper: ", r.status().message())));
      return;
    }
    absl::Status s = StatusFromProto(r->status());
    if (s.ok() && (fds.size() != 3 || !r->has_pool_helper_started())) {
      s = absl::InternalError(
          absl::StrCat("root helper passed ", fds.size(), " fds for a pool helper; expected 3"));
    }
    if (!s.ok()) {
      done(s);
      return;
    }
    HelperProcess p;
    p.pid = r->pool_helper_started().pid();
    p.control = std::move(fds[0]);
    p.pidfd = std::move(fds[1]);
    p.stderr_read = std::move(fds[2]);
    done(std::move(p));
  };
  absl::Status sent = channel ? channel->Request(request, kStartTimeout, reply)
                              : absl::UnavailableError("no root helper is running");
  if (!sent.ok()) {
    loop_->Post([done, sent] { done(sent); });
  }
}

void RootHelperClient::OnLost(const std::string& why) {
  {
    absl::MutexLock lock(&mu_);
    channel_.reset();
    if (stopped_) return;
  }
  const MonoTime now = MonotonicNow();
  losses_.push_back(now);
  while (!losses_.empty() && losses_.front() < now - kLossWindow) losses_.pop_front();
  if (static_cast<int>(losses_.size()) > kMaxLosses) {
    Log(why, "; the root helper was lost ", losses_.size(), " times within ",
        absl::FormatDuration(kLossWindow), ": giving up, exiting with status 1");
    std::fflush(stderr);
    std::_Exit(1);
  }
  Log(why, "; starting a new root helper");
  absl::StatusOr<HelperProcess> next = Respawn();
  if (!next.ok()) {
    Log("cannot start a new root helper: ", next.status().message());
    loop_->AddTimerAfter(absl::Seconds(1), [this] { OnLost("root helper missing"); });
    return;
  }
  if (absl::Status s = Start(*std::move(next)); !s.ok()) {
    Log("cannot watch the new root helper: ", s.message());
  }
}

absl::StatusOr<HelperProcess> RootHelperClient::Respawn() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return absl::ErrnoToStatus(errno, "socketpair(root helper control)");
  }
  UniqueFd daemon_end(sv[0]), helper_end(sv[1]);
  // Everything is built before the spawn; /proc/self/exe, not argv[0], which
  // breaks after a chdir or a package upgrade.
  const std::string parent = absl::StrCat(::getpid());
  const std::string deny = absl::StrJoin(env_deny_, ",");
  std::vector<char*> argv = {const_cast<char*>("forkpoold"), const_cast<char*>(kRootHelperModeFlag),
                             const_cast<char*>(parent.c_str()), const_cast<char*>(deny.c_str()),
                             nullptr};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, helper_end.get(), kHelperControlFd);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  const int err = ::posix_spawn(&pid, "/proc/self/exe", &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (err != 0) return absl::ErrnoToStatus(err, "posix_spawn(root helper)");
  HelperProcess helper;
  helper.pid = pid;
  helper.control = std::move(daemon_end);
  FORKPOOL_ASSIGN_OR_RETURN(helper.pidfd, PidfdOpen(pid));
  return helper;
}

void RootHelperClient::Stop() {
  std::shared_ptr<HelperChannel> channel;
  std::optional<HelperProcess> spare;
  {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
    channel = std::move(channel_);
    spare.swap(spare_);
  }
  if (channel) channel->Close();
  if (spare) {
    (void)PidfdSignal(spare->pidfd.get(), SIGKILL);
    if (WaitPidfd(spare->pidfd.get(), absl::Seconds(1))) (void)ReapPidfd(spare->pidfd.get());
    children_->Remove(spare->pid);
  }
}

}  // namespace forkpool
