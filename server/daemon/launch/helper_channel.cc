// HelperChannel implementation.
#include "server/daemon/launch/helper_channel.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/proto_status.h"
#include "server/daemon/launch/process_util.h"
#include "server/daemon/log.h"

namespace forkpool {
namespace {

absl::Status SetNonBlocking(int fd, const char* what) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("fcntl(O_NONBLOCK, ", what, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<HelperChannel>> HelperChannel::Start(IoLoop* loop,
                                                                    ChildRegistry* children,
                                                                    std::string name,
                                                                    HelperProcess process,
                                                                    Callbacks callbacks) {
  FORKPOOL_RETURN_IF_ERROR(SetNonBlocking(process.control.get(), "helper control"));
  std::unique_ptr<ChildOutput> output;
  if (process.stderr_read.valid()) {
    FORKPOOL_ASSIGN_OR_RETURN(
        output, ChildOutput::Create(std::move(process.stderr_read),
                                    absl::StrCat("[", name, " pid ", process.pid, "]")));
  }
  std::shared_ptr<HelperChannel> channel(
      new HelperChannel(loop, children, std::move(name), std::move(process), std::move(callbacks)));
  channel->output_ = std::move(output);
  FORKPOOL_RETURN_IF_ERROR(channel->Watch());
  return channel;
}

HelperChannel::HelperChannel(IoLoop* loop, ChildRegistry* children, std::string name,
                             HelperProcess process, Callbacks callbacks)
    : loop_(loop),
      children_(children),
      name_(std::move(name)),
      pid_(process.pid),
      control_(std::move(process.control)),
      pidfd_(std::move(process.pidfd)) {
  children_->Add(pid_);
  absl::MutexLock lock(&mu_);
  callbacks_ = std::move(callbacks);
}

HelperChannel::~HelperChannel() = default;

absl::Status HelperChannel::Watch() {
  // The watches hold the channel: it lives until the process is reaped.
  std::shared_ptr<HelperChannel> self = shared_from_this();
  FORKPOOL_RETURN_IF_ERROR(
      loop_->Watch(control_.get(), EPOLLIN, [self](uint32_t events) { self->OnControl(events); }));
  if (output_) {
    FORKPOOL_RETURN_IF_ERROR(
        loop_->Watch(output_->fd(), EPOLLIN, [self](uint32_t) { self->OnStderr(); }));
  }
  return loop_->Watch(pidfd_.get(), EPOLLIN, [self](uint32_t) { self->OnExit(); });
}

bool HelperChannel::alive() const {
  absl::MutexLock lock(&mu_);
  return !exited_ && !closed_;
}

absl::Status HelperChannel::Request(internal::ToHelper request, absl::Duration timeout,
                                    Reply reply) {
  absl::MutexLock lock(&mu_);
  if (exited_ || closed_ || !kill_reason_.empty()) {
    return absl::UnavailableError(absl::StrCat(name_, " (pid ", pid_, ") is gone"));
  }
  const uint64_t id = next_request_++;
  request.set_request_id(id);
  std::string bytes;
  request.SerializeToString(&bytes);
  writer_.Queue(bytes);
  absl::StatusOr<bool> more = writer_.Flush(control_.get());
  if (!more.ok()) {
    // The helper is leaving; its pidfd will say how.
    return absl::UnavailableError(
        absl::StrCat(name_, " (pid ", pid_, "): ", more.status().message()));
  }
  if (*more && !writing_) {
    writing_ = true;
    (void)loop_->Modify(control_.get(), EPOLLIN | EPOLLOUT);
  }
  Pending& p = pending_[id];
  p.reply = std::move(reply);
  std::weak_ptr<HelperChannel> weak = weak_from_this();
  p.timer = loop_->AddTimerAfter(timeout, [weak, id] {
    if (auto self = weak.lock()) self->OnDeadline(id);
  });
  return absl::OkStatus();
}

void HelperChannel::OnDeadline(uint64_t id) {
  Reply reply;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    reply = std::move(it->second.reply);
    pending_.erase(it);
    if (kill_reason_.empty()) kill_reason_ = "did not answer in time; killed";
  }
  // A helper that does not answer is stuck (a hanging constructor, a stopped
  // process): it is never used again.
  (void)PidfdSignal(pidfd_.get(), SIGKILL);
  if (reply) reply(absl::DeadlineExceededError("no answer in time"), {});
}

void HelperChannel::Kill(const std::string& why) {
  {
    absl::MutexLock lock(&mu_);
    if (exited_) return;
    if (kill_reason_.empty()) kill_reason_ = why;
  }
  (void)PidfdSignal(pidfd_.get(), SIGKILL);
}

void HelperChannel::Close() {
  {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    callbacks_ = Callbacks{};
    for (auto& [id, p] : pending_) loop_->CancelTimer(p.timer);
    pending_.clear();
    if (exited_) return;
  }
  // Killed, not told: requests already in its socket would otherwise still be
  // served (workers forked for a pool that is gone), and a helper holds nothing
  // worth a graceful exit. The fd stays watched until OnExit reaps it.
  ::shutdown(control_.get(), SHUT_RDWR);
  (void)PidfdSignal(pidfd_.get(), SIGKILL);
}

void HelperChannel::OnControl(uint32_t events) {
  if (events & EPOLLOUT) {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<bool> more = writer_.Flush(control_.get());
    if ((!more.ok() || !*more) && writing_) {
      writing_ = false;
      (void)loop_->Modify(control_.get(), EPOLLIN);
    }
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ReadMessages();
}

void HelperChannel::ReadMessages() {
  while (true) {
    absl::StatusOr<Packet> packet = reader_.Next(control_.get());
    if (!packet.ok()) {
      if (absl::IsUnavailable(packet.status())) return;
      // EOF or a broken message: stop reading; the pidfd says when it has gone.
      loop_->Unwatch(control_.get());
      if (!absl::IsNotFound(packet.status())) {
        Kill(absl::StrCat("broke the control protocol (", packet.status().message(), ")"));
      }
      return;
    }
    internal::FromHelper message;
    if (!message.ParseFromString(packet->bytes)) {
      loop_->Unwatch(control_.get());
      Kill("sent an unparsable control message");
      return;
    }
    Reply reply;
    std::function<void(const internal::LoadProgress&)> progress;
    if (message.has_hello()) {
      if (message.hello().version() != internal::CONTROL_VERSION_2) {
        Kill(absl::StrCat("speaks control version ", message.hello().version(),
                          "; forkpoold speaks ", internal::CONTROL_VERSION_2));
      }
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      if (closed_) continue;
      if (message.has_progress()) {
        progress = callbacks_.on_progress;
      } else if (auto it = pending_.find(message.request_id()); it != pending_.end()) {
        loop_->CancelTimer(it->second.timer);
        reply = std::move(it->second.reply);
        pending_.erase(it);
      }
    }
    if (progress) progress(message.progress());
    if (reply) reply(std::move(message), std::move(packet->fds));
  }
}

void HelperChannel::OnStderr() {
  if (!output_) return;
  (void)output_->Drain();
  if (output_->eof()) loop_->Unwatch(output_->fd());
}

void HelperChannel::FailPending(const absl::Status& status) {
  std::map<uint64_t, Pending> pending;
  {
    absl::MutexLock lock(&mu_);
    pending.swap(pending_);
  }
  for (auto& [id, p] : pending) {
    loop_->CancelTimer(p.timer);
    if (p.reply) p.reply(status, {});
  }
}

void HelperChannel::OnExit() {
  // What it sent before it died still counts (a LoadProgress naming the library
  // that killed it, a reply).
  ReadMessages();
  OnStderr();
  const ExitInfo exit = ReapPidfd(pidfd_.get());
  children_->Remove(pid_);
  loop_->Unwatch(pidfd_.get());
  loop_->Unwatch(control_.get());
  if (output_) loop_->Unwatch(output_->fd());
  std::string why;
  std::function<void(const std::string&)> on_exit;
  {
    absl::MutexLock lock(&mu_);
    exited_ = true;
    why = kill_reason_.empty() ? DescribeExit(exit) : kill_reason_;
    on_exit = callbacks_.on_exit;
    callbacks_ = Callbacks{};
  }
  FailPending(absl::UnavailableError(why));
  if (on_exit) on_exit(why);
}

}  // namespace forkpool
