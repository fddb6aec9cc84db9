// ForkHelperClient implementation.
#include "server/daemon/fork_helper_client.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/fd_passing.h"
#include "common/proto_status.h"
#include "server/daemon/process_util.h"
#include "server/fork_helper/fork_helper.h"

extern char** environ;

namespace forkpool {

absl::StatusOr<HelperProcess> ForkFirstHelper() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return absl::ErrnoToStatus(errno, "socketpair(fork helper control)");
  }
  UniqueFd daemon_end(sv[0]), helper_end(sv[1]);
  const pid_t daemon_pid = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return absl::ErrnoToStatus(errno, "fork(fork helper)");
  if (pid == 0) {
    daemon_end.reset();
    RunForkHelper(std::move(helper_end), daemon_pid);
  }
  HelperProcess helper;
  helper.pid = pid;
  helper.control = std::move(daemon_end);
  FORKPOOL_ASSIGN_OR_RETURN(helper.pidfd, PidfdOpen(pid));
  return helper;
}

ForkHelperClient::ForkHelperClient(IoLoop* loop, HelperProcess helper,
                                   std::function<void(const std::string&)> on_lost)
    : loop_(loop), on_lost_(std::move(on_lost)) {
  absl::MutexLock lock(&mu_);
  helper_ = std::move(helper);
}

ForkHelperClient::~ForkHelperClient() { Stop(absl::Seconds(1)); }

absl::Status ForkHelperClient::Start() {
  absl::MutexLock lock(&mu_);
  FORKPOOL_RETURN_IF_ERROR(loop_->Watch(helper_.control.get(), EPOLLIN,
                                        [this](uint32_t) { OnControlReadable(); }));
  return loop_->Watch(helper_.pidfd.get(), EPOLLIN, [this](uint32_t) { OnHelperExit(); });
}

void ForkHelperClient::Attach(HelperProcess helper) {
  helper_ = std::move(helper);
  absl::Status s = loop_->Watch(helper_.control.get(), EPOLLIN,
                                [this](uint32_t) { OnControlReadable(); });
  if (s.ok()) {
    s = loop_->Watch(helper_.pidfd.get(), EPOLLIN, [this](uint32_t) { OnHelperExit(); });
  }
  if (!s.ok()) std::fprintf(stderr, "forkpoold: %s\n", std::string(s.message()).c_str());
}

pid_t ForkHelperClient::pid() const {
  absl::MutexLock lock(&mu_);
  return helper_.pid;
}

absl::Status ForkHelperClient::Request(internal::ToHelper request, Reply reply) {
  absl::MutexLock lock(&mu_);
  if (stopped_ || !helper_.control.valid()) {
    return absl::UnavailableError("the fork helper is not running");
  }
  const uint64_t id = next_request_++;
  request.set_request_id(id);
  std::string bytes;
  request.SerializeToString(&bytes);
  // The helper answers every request in order and packets are small, so a blocking
  // send returns at once unless the helper is stuck, which its death ends.
  FORKPOOL_RETURN_IF_ERROR(SendPacket(helper_.control.get(), bytes));
  pending_.emplace(id, std::move(reply));
  return absl::OkStatus();
}

void ForkHelperClient::OnControlReadable() {
  while (true) {
    int fd;
    {
      absl::MutexLock lock(&mu_);
      fd = helper_.control.get();
    }
    if (fd < 0) return;
    // MSG_DONTWAIT through a non-blocking poll: the socket itself stays blocking.
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP))) return;
    absl::StatusOr<Packet> packet = ReceivePacket(fd);
    if (!packet.ok()) {
      // EOF or a broken packet: the helper is gone or broken; its pidfd tells when it
      // has exited. Stop reading the socket meanwhile.
      if (!absl::IsNotFound(packet.status())) {
        std::fprintf(stderr, "forkpoold: fork helper control: %s\n",
                     std::string(packet.status().message()).c_str());
        absl::MutexLock lock(&mu_);
        if (helper_.pid > 0) ::kill(helper_.pid, SIGKILL);
      }
      loop_->Unwatch(fd);
      return;
    }
    internal::FromHelper reply;
    if (!reply.ParseFromString(packet->bytes)) {
      std::fprintf(stderr, "forkpoold: unparsable packet from the fork helper\n");
      continue;
    }
    Reply callback;
    {
      absl::MutexLock lock(&mu_);
      auto it = pending_.find(reply.request_id());
      if (it == pending_.end()) continue;  // the fds close with the packet
      callback = std::move(it->second);
      pending_.erase(it);
    }
    callback(reply, std::move(packet->fds));
  }
}

void ForkHelperClient::FailPending(const std::string& why) {
  std::map<uint64_t, Reply> pending;
  {
    absl::MutexLock lock(&mu_);
    pending.swap(pending_);
  }
  for (auto& [id, reply] : pending) {
    internal::FromHelper r;
    r.set_request_id(id);
    StatusToProto(absl::UnavailableError(why), r.mutable_status());
    reply(r, {});
  }
}

void ForkHelperClient::OnHelperExit() {
  std::string why;
  {
    absl::MutexLock lock(&mu_);
    if (!helper_.pidfd.valid()) return;
    why = absl::StrCat("fork helper (pid ", helper_.pid, ") ",
                       DescribeExit(ReapPidfd(helper_.pidfd.get())));
    loop_->Unwatch(helper_.pidfd.get());
    loop_->Unwatch(helper_.control.get());
    helper_ = HelperProcess{};
  }
  FailPending(why);
  on_lost_(why);
}

absl::Status ForkHelperClient::Respawn() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return absl::ErrnoToStatus(errno, "socketpair(fork helper control)");
  }
  UniqueFd daemon_end(sv[0]), helper_end(sv[1]);
  const std::string parent = absl::StrCat(::getpid());
  char* const argv[] = {const_cast<char*>("forkpoold"),
                        const_cast<char*>(kHelperModeFlag),
                        const_cast<char*>(parent.c_str()), nullptr};
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
  const int err = ::posix_spawn(&pid, "/proc/self/exe", &actions, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (err != 0) return absl::ErrnoToStatus(err, "posix_spawn(fork helper)");
  HelperProcess helper;
  helper.pid = pid;
  helper.control = std::move(daemon_end);
  FORKPOOL_ASSIGN_OR_RETURN(helper.pidfd, PidfdOpen(pid));
  absl::MutexLock lock(&mu_);
  if (stopped_) {
    ::kill(pid, SIGKILL);
    ReapPidfd(helper.pidfd.get());
    return absl::UnavailableError("forkpoold is stopping");
  }
  Attach(std::move(helper));
  return absl::OkStatus();
}

void ForkHelperClient::Stop(absl::Duration timeout) {
  HelperProcess helper;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
    if (helper_.control.valid()) loop_->Unwatch(helper_.control.get());
    if (helper_.pidfd.valid()) loop_->Unwatch(helper_.pidfd.get());
    helper = std::move(helper_);
    helper_ = HelperProcess{};
  }
  helper.control.reset();  // EOF: the helper leaves
  if (helper.pidfd.valid()) {
    if (!WaitPidfd(helper.pidfd.get(), timeout)) ::kill(helper.pid, SIGKILL);
    ReapPidfd(helper.pidfd.get());
  }
  FailPending("forkpoold is stopping");
}

}  // namespace forkpool
