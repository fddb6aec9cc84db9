// ConnectedWorker: a real worker process as an executor sees it (WorkerProcess):
// its socket, pidfd and output pipe, watched on the IoLoop.
#ifndef FORKPOOL_SERVER_DAEMON_LAUNCH_CONNECTED_WORKER_H_
#define FORKPOOL_SERVER_DAEMON_LAUNCH_CONNECTED_WORKER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/daemon/launch/child_registry.h"
#include "server/daemon/launch/late_reaper.h"
#include "server/daemon/launch/worker_connection.h"
#include "server/daemon/launch/worker_launcher.h"
#include "server/daemon/net/io_loop.h"

namespace forkpool {

// Thread-compatible (its executor's lock), except that its output is drained on
// the loop thread without that lock: a chatty task never holds up dispatch.
class ConnectedWorker : public WorkerProcess {
 public:
  // Starts watching `conn`'s fds; its events go to `events`. Registers the pid
  // in `children` until it is reaped.
  static absl::StatusOr<std::unique_ptr<ConnectedWorker>> Start(
      IoLoop* loop, ChildRegistry* children, LateReaper* reaper,
      std::unique_ptr<WorkerConnection> conn, WorkerEvents events);
  // A worker dropped before it was collected is killed and reaped later.
  ~ConnectedWorker() override;

  pid_t pid() const override { return conn_->pid(); }
  absl::Status Send(const internal::ToWorker& message) override;
  absl::StatusOr<bool> OnReady(uint32_t events, const FrameHandler& on_frame) override;
  void StopReading() override;
  ExitInfo Collect(const FrameHandler& on_frame, bool read_frames) override;
  std::string OutputTail() override;
  void Kill() override { conn_->Kill(); }
  StopChange::Kind PollStop() override;

 private:
  ConnectedWorker(IoLoop* loop, ChildRegistry* children, LateReaper* reaper,
                  std::unique_ptr<WorkerConnection> conn)
      : loop_(loop), children_(children), reaper_(reaper), conn_(std::move(conn)) {}
  void UnwatchAll();

  IoLoop* const loop_;
  ChildRegistry* const children_;
  LateReaper* const reaper_;
  std::unique_ptr<WorkerConnection> conn_;
  bool writing_ = false;  // EPOLLOUT is watched
  bool reading_ = true;
  bool collected_ = false;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_LAUNCH_CONNECTED_WORKER_H_
