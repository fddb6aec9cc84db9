// WorkerLauncher and WorkerProcess: how a pool's executor gets and talks to
// its processes, whatever makes them (a native pool helper today; spawn through
// the helper; a Python zygote later). Tests give executors fakes of both.
#ifndef FORKPOOL_SERVER_DAEMON_LAUNCH_WORKER_LAUNCHER_H_
#define FORKPOOL_SERVER_DAEMON_LAUNCH_WORKER_LAUNCHER_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "forkpool/internal/worker.pb.h"
#include "server/daemon/launch/process_util.h"

namespace forkpool {

// One live worker process. Thread-compatible: its executor calls it under its
// own lock.
class WorkerProcess {
 public:
  using FrameHandler = std::function<void(internal::FromWorker&)>;
  virtual ~WorkerProcess() = default;

  virtual pid_t pid() const = 0;
  // Queues `message` and writes what the socket takes now; the rest goes as
  // the socket drains. Errors: the connection is broken.
  virtual absl::Status Send(const internal::ToWorker& message) = 0;
  // Its socket is ready (`events` from WorkerEvents::on_io): writes what is
  // queued and passes each complete frame to `on_frame` (the frame is the
  // callee's to consume). Returns false at EOF. Errors: a broken frame.
  virtual absl::StatusOr<bool> OnReady(uint32_t events, const FrameHandler& on_frame) = 0;
  // Stops reading its socket (it broke the protocol or said EOF).
  virtual void StopReading() = 0;
  // After WorkerEvents::on_exit: passes the frames it sent before it died to
  // `on_frame` (if `read_frames`), reaps it and stops watching it.
  virtual ExitInfo Collect(const FrameHandler& on_frame, bool read_frames) = 0;
  // The last lines it wrote to stdout and stderr (complete after Collect).
  virtual std::string OutputTail() = 0;
  // SIGKILLs it and its process group; its exit follows through on_exit.
  virtual void Kill() = 0;
  // Whether it was stopped (SIGSTOP) or continued since last asked; asks the
  // kernel, never blocks.
  virtual StopChange::Kind PollStop() = 0;
};

// Where a worker's readiness and exit are reported: on the loop thread (the
// fakes: the test's).
struct WorkerEvents {
  std::function<void(uint32_t events)> on_io;
  std::function<void()> on_exit;
};

// What a pool's helper loaded.
struct LoadResult {
  std::set<std::string> functions;
};

// Makes one pool's processes. Thread-safe; callbacks run without its lock on
// the loop thread (the fakes: the test's), never inside a call to it.
class WorkerLauncher {
 public:
  struct HelperEvents {
    // The helper says which library it is opening (for a load that hangs).
    std::function<void(const std::string& library)> on_progress;
    // The helper that loaded was lost (it exited or was killed): workers live
    // on; a new Load is needed before more can start.
    std::function<void(const std::string& why)> on_lost;
  };
  using LoadDone = std::function<void(absl::StatusOr<LoadResult>)>;
  using StartDone = std::function<void(absl::StatusOr<std::unique_ptr<WorkerProcess>>)>;

  virtual ~WorkerLauncher() = default;

  // Starts a new helper for the pool and has it load the pool's libraries
  // (any helper it had is dropped first). `done` runs once: with the functions,
  // or FAILED_PRECONDITION naming what broke (the helper is then gone), or
  // UNAVAILABLE when forkpoold shuts down.
  virtual void Load(HelperEvents events, LoadDone done) = 0;
  // The current helper's pid, 0 while none.
  virtual pid_t helper_pid() const = 0;
  // Asks the helper for worker `index`; `done` runs once with the process
  // (reporting to `events`) or an error. Errors now: no helper.
  virtual absl::Status StartWorker(int index, WorkerEvents events, StartDone done) = 0;
  // Drops the helper: killed (`kill`, a failed load: never reused) or asked
  // to leave. No event of it runs afterwards.
  virtual void DropHelper(bool kill, const std::string& why) = 0;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_LAUNCH_WORKER_LAUNCHER_H_
