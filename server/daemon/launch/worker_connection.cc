// WorkerConnection implementation.
#include "server/daemon/launch/worker_connection.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "server/daemon/launch/process_util.h"

namespace forkpool {
namespace {

absl::Status SetNonBlocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return absl::ErrnoToStatus(errno, "fcntl(O_NONBLOCK, worker fd)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerConnection>> WorkerConnection::Create(
    pid_t pid, UniqueFd socket, UniqueFd pidfd, UniqueFd stderr_read, size_t max_frame_bytes,
    std::string tag, ChildOutput::Sink sink) {
  FORKPOOL_RETURN_IF_ERROR(SetNonBlocking(socket.get()));
  FORKPOOL_ASSIGN_OR_RETURN(
      std::unique_ptr<ChildOutput> output,
      ChildOutput::Create(std::move(stderr_read), std::move(tag), std::move(sink)));
  return std::unique_ptr<WorkerConnection>(new WorkerConnection(
      pid, std::move(socket), std::move(pidfd), std::move(output), max_frame_bytes));
}

WorkerConnection::WorkerConnection(pid_t pid, UniqueFd socket, UniqueFd pidfd,
                                   std::shared_ptr<ChildOutput> output, size_t max_frame_bytes)
    : pid_(pid),
      socket_(std::move(socket)),
      pidfd_(std::move(pidfd)),
      output_(std::move(output)),
      decoder_(max_frame_bytes) {}

absl::StatusOr<bool> WorkerConnection::Send(const internal::ToWorker& message) {
  AppendFrame(message, &out_);
  return Flush();
}

absl::StatusOr<bool> WorkerConnection::Flush() {
  while (out_start_ < out_.size()) {
    const ssize_t n = RetryOnEintr([&] {
      return ::send(socket_.get(), out_.data() + out_start_, out_.size() - out_start_,
                    MSG_NOSIGNAL | MSG_DONTWAIT);
    });
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return absl::ErrnoToStatus(errno, absl::StrCat("send(worker ", pid_, ")"));
    }
    out_start_ += static_cast<size_t>(n);
  }
  if (out_start_ == out_.size()) {
    out_.clear();
    out_start_ = 0;
    return false;
  }
  return true;
}

absl::StatusOr<bool> WorkerConnection::Read(
    const std::function<void(internal::FromWorker&)>& on_message) {
  while (true) {
    absl::StatusOr<size_t> n = decoder_.ReadFrom(socket_.get());
    if (!n.ok()) {
      if (absl::IsUnavailable(n.status())) return true;  // EAGAIN
      return n.status();
    }
    if (*n == 0) return false;
    while (true) {
      auto frame = decoder_.Next();
      if (!frame.ok()) return frame.status();
      if (!frame->has_value()) break;
      message_.Clear();
      if (!message_.ParseFromArray((*frame)->data(), static_cast<int>((*frame)->size()))) {
        return absl::InvalidArgumentError(
            absl::StrCat("unparsable frame of ", (*frame)->size(), " bytes"));
      }
      on_message(message_);
    }
  }
}

void WorkerConnection::Kill() {
  // The pidfd reaches exactly our worker; the group reaches what it started.
  if (pidfd_.valid()) (void)PidfdSignal(pidfd_.get(), SIGKILL);
  ::kill(-pid_, SIGKILL);
}

}  // namespace forkpool
