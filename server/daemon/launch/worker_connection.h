// WorkerConnection: forkpoold's end of one worker process: its socket (frames in
// and out), its pidfd and its stderr pipe.
#ifndef FORKPOOL_SERVER_DAEMON_LAUNCH_WORKER_CONNECTION_H_
#define FORKPOOL_SERVER_DAEMON_LAUNCH_WORKER_CONNECTION_H_

#include <sys/types.h>

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "common/frame.h"
#include "common/unique_fd.h"
#include "forkpool/internal/worker.pb.h"
#include "server/daemon/launch/child_output.h"

namespace forkpool {

// Thread-compatible: its owner (a ConnectedWorker) serialises every call under its lock.
// All fds are non-blocking.
class WorkerConnection {
 public:
  // Takes ownership of the three fds the fork helper passed up. The worker's
  // output goes to `sink` (default: forkpoold's stderr), each line tagged with `tag`.
  static absl::StatusOr<std::unique_ptr<WorkerConnection>> Create(
      pid_t pid, UniqueFd socket, UniqueFd pidfd, UniqueFd stderr_read, size_t max_frame_bytes,
      std::string tag, ChildOutput::Sink sink = nullptr);

  pid_t pid() const { return pid_; }
  int socket_fd() const { return socket_.get(); }
  int pidfd() const { return pidfd_.get(); }
  int stderr_fd() const { return output_->fd(); }

  // Queues `message` and writes what the socket takes now. Returns true when bytes
  // remain queued (the caller should watch for EPOLLOUT).
  absl::StatusOr<bool> Send(const internal::ToWorker& message);
  // Writes queued bytes; true while some remain.
  absl::StatusOr<bool> Flush();
  // Reads what is available and calls `on_message` for each complete frame (the
  // message is the callee's to consume, e.g. to move outputs out of).
  // Returns false at EOF. Errors: unparsable or oversized frames, read errors.
  absl::StatusOr<bool> Read(const std::function<void(internal::FromWorker&)>& on_message);
  // The worker's stdout and stderr: drained on the loop thread without any
  // scheduler lock (ChildOutput is thread-safe), rate-limited and capped, with a tail
  // for crash reports. Shared so that a drain in flight outlives the connection.
  const std::shared_ptr<ChildOutput>& output() const { return output_; }
  // Sends SIGKILL to the worker and its process group.
  void Kill();
  // Gives up the pidfd (for reaping after the connection is gone).
  UniqueFd ReleasePidfd() { return std::move(pidfd_); }

 private:
  WorkerConnection(pid_t pid, UniqueFd socket, UniqueFd pidfd, std::shared_ptr<ChildOutput> output,
                   size_t max_frame_bytes);

  const pid_t pid_;
  UniqueFd socket_;
  UniqueFd pidfd_;
  std::shared_ptr<ChildOutput> output_;
  FrameDecoder decoder_;
  std::string out_;
  size_t out_start_ = 0;
  internal::FromWorker message_;  // reused across reads
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_LAUNCH_WORKER_CONNECTION_H_
