// ConnectedWorker implementation.
#include "server/daemon/launch/connected_worker.h"

#include <sys/epoll.h>
#include <unistd.h>

#include "common/utf8.h"
#include "server/daemon/launch/process_util.h"

namespace forkpool {

absl::StatusOr<std::unique_ptr<ConnectedWorker>> ConnectedWorker::Start(
    IoLoop* loop, ChildRegistry* children, LateReaper* reaper,
    std::unique_ptr<WorkerConnection> conn, WorkerEvents events) {
  std::unique_ptr<ConnectedWorker> w(new ConnectedWorker(loop, children, reaper, std::move(conn)));
  children->Add(w->pid());
  WorkerConnection& c = *w->conn_;
  absl::Status watched =
      loop->Watch(c.pidfd(), EPOLLIN, [on_exit = events.on_exit](uint32_t) { on_exit(); });
  if (watched.ok()) {
    watched =
        loop->Watch(c.socket_fd(), EPOLLIN, [on_io = events.on_io](uint32_t ev) { on_io(ev); });
  }
  if (watched.ok()) {
    watched = loop->Watch(c.stderr_fd(), EPOLLIN, [loop, output = c.output()](uint32_t) {
      (void)output->Drain();
      if (output->eof()) loop->Unwatch(output->fd());
    });
  }
  if (!watched.ok()) return watched;  // the destructor kills and reaps it
  return w;
}

ConnectedWorker::~ConnectedWorker() {
  if (collected_) return;
  UnwatchAll();
  // Still our child: end it and reap it when it goes.
  children_->Remove(conn_->pid());
  conn_->Kill();
  reaper_->Reap(conn_->ReleasePidfd(), /*kill=*/true);
}

void ConnectedWorker::UnwatchAll() {
  loop_->Unwatch(conn_->pidfd());
  loop_->Unwatch(conn_->socket_fd());
  loop_->Unwatch(conn_->stderr_fd());
}

absl::Status ConnectedWorker::Send(const internal::ToWorker& message) {
  absl::StatusOr<bool> more = conn_->Send(message);
  if (!more.ok()) return more.status();
  if (*more && !writing_) {
    writing_ = true;
    (void)loop_->Modify(conn_->socket_fd(), EPOLLIN | EPOLLOUT);
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> ConnectedWorker::OnReady(uint32_t events, const FrameHandler& on_frame) {
  if (events & EPOLLOUT) {
    absl::StatusOr<bool> more = conn_->Flush();
    if (!more.ok()) return more.status();
    if (!*more && writing_) {
      writing_ = false;
      (void)loop_->Modify(conn_->socket_fd(), EPOLLIN);
    }
  }
  if (!reading_ || !(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return true;
  absl::StatusOr<bool> open = conn_->Read(on_frame);
  if (open.ok() && !*open) StopReading();
  return open;
}

void ConnectedWorker::StopReading() {
  if (!reading_) return;
  reading_ = false;
  loop_->Unwatch(conn_->socket_fd());
}

ExitInfo ConnectedWorker::Collect(const FrameHandler& on_frame, bool read_frames) {
  // Frames the worker sent before it died still count (results, a Hello that
  // reports a failed initializer).
  if (read_frames) (void)conn_->Read(on_frame);
  // Everything it wrote is in the pipe now; kept for the report.
  (void)conn_->output()->Drain();
  const ExitInfo exit = ReapPidfd(conn_->pidfd());
  children_->Remove(conn_->pid());
  UnwatchAll();
  collected_ = true;
  return exit;
}

std::string ConnectedWorker::OutputTail() { return ValidUtf8(conn_->output()->Tail()); }

StopChange::Kind ConnectedWorker::PollStop() {
  absl::StatusOr<StopChange> polled = PollStopState(conn_->pidfd());
  return polled.ok() ? polled->kind : StopChange::Kind::kNone;
}

}  // namespace forkpool
