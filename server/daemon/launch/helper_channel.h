// HelperChannel: forkpoold's end of one fork helper process (the root helper or
// a pool helper): its non-blocking control socket with a send queue, its pidfd,
// its stderr pipe, and requests with deadlines.
#ifndef FORKPOOL_SERVER_DAEMON_LAUNCH_HELPER_CHANNEL_H_
#define FORKPOOL_SERVER_DAEMON_LAUNCH_HELPER_CHANNEL_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/control_message.h"
#include "common/unique_fd.h"
#include "forkpool/internal/control.pb.h"
#include "server/daemon/launch/child_output.h"
#include "server/daemon/launch/child_registry.h"
#include "server/daemon/net/io_loop.h"

namespace forkpool {

// A helper process as it arrives: forked by main(), spawned by exec, or made by
// the root helper (its three fds passed up).
struct HelperProcess {
  pid_t pid = -1;
  UniqueFd control;
  UniqueFd pidfd;
  UniqueFd stderr_read;  // invalid when it shares forkpoold's stderr
};

// Thread-safe. Replies, progress and the exit are delivered on the IoLoop's
// thread with no lock of the channel held, so they may take the caller's locks
// (lock order: a caller's lock before the channel's). Owned through shared_ptr:
// the loop's watches keep it alive until the helper is reaped, so a channel its
// owner dropped (Close, Kill) still reaps its process.
class HelperChannel : public std::enable_shared_from_this<HelperChannel> {
 public:
  // The helper's answer, or: DeadlineExceeded when it did not answer in time
  // (it is then killed), Unavailable when it died first (the message says how).
  using Reply =
      std::function<void(absl::StatusOr<internal::FromHelper> reply, std::vector<UniqueFd> fds)>;
  struct Callbacks {
    // LoadProgress messages.
    std::function<void(const internal::LoadProgress&)> on_progress;
    // The helper has exited and every pending request has been answered; `why`
    // is "killed by SIGABRT (signal 6)" or the reason forkpoold killed it. Not
    // called after Close().
    std::function<void(const std::string& why)> on_exit;
  };

  // Starts watching `process`. `name` names it in logs ("pool helper 'img'").
  // Registers its pid in `children` until it is reaped.
  static absl::StatusOr<std::shared_ptr<HelperChannel>> Start(IoLoop* loop, ChildRegistry* children,
                                                              std::string name,
                                                              HelperProcess process,
                                                              Callbacks callbacks);
  ~HelperChannel();

  // Queues `request` (its request_id is assigned here) and sends what the
  // socket takes now; never blocks. `reply` runs once. `timeout` counts from
  // now. Unavailable at once if the helper is gone.
  absl::Status Request(internal::ToHelper request, absl::Duration timeout, Reply reply);
  // SIGKILLs the helper; pending requests then fail with `why` (and on_exit
  // gets it).
  void Kill(const std::string& why);
  // Closes the control socket (the helper leaves on EOF) and drops the
  // callbacks: no reply or on_exit runs after this. The process is still
  // reaped.
  void Close();
  pid_t pid() const { return pid_; }
  // False once the helper has exited (or was closed).
  bool alive() const;

 private:
  struct Pending {
    Reply reply;
    IoLoop::TimerId timer = 0;
  };
  HelperChannel(IoLoop* loop, ChildRegistry* children, std::string name, HelperProcess process,
                Callbacks callbacks);
  absl::Status Watch();
  void OnControl(uint32_t events);
  void ReadMessages();
  void OnExit();
  void OnStderr();
  void OnDeadline(uint64_t id);
  // Hands `status` to every pending reply (without the lock).
  void FailPending(const absl::Status& status);

  IoLoop* const loop_;
  ChildRegistry* const children_;
  const std::string name_;
  const pid_t pid_;
  UniqueFd control_;
  UniqueFd pidfd_;
  // What it writes (a library's constructor, say): logged with its name, rate-limited
  // and capped like a worker's output. Null when it shares forkpoold's stderr.
  std::unique_ptr<ChildOutput> output_;
  ControlReader reader_;  // loop thread only

  mutable absl::Mutex mu_;
  Callbacks callbacks_ ABSL_GUARDED_BY(mu_);
  ControlWriter writer_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool exited_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::string kill_reason_ ABSL_GUARDED_BY(mu_);
  uint64_t next_request_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_LAUNCH_HELPER_CHANNEL_H_
