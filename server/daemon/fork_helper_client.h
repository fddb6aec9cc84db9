// ForkHelperClient: forkpoold's side of the control socket to its fork helper.
#ifndef FORKPOOL_SERVER_DAEMON_FORK_HELPER_CLIENT_H_
#define FORKPOOL_SERVER_DAEMON_FORK_HELPER_CLIENT_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/unique_fd.h"
#include "forkpool/internal/control.pb.h"
#include "server/daemon/io_loop.h"

namespace forkpool {

// A helper process and the daemon's end of its control socket.
struct HelperProcess {
  pid_t pid = -1;
  UniqueFd control;
  UniqueFd pidfd;
};

// Forks the first fork helper. Call from main() before any thread exists: the
// child runs the helper loop and never returns.
absl::StatusOr<HelperProcess> ForkFirstHelper();

// Thread-safe. Replies and the helper's death are handled on the IoLoop's thread.
class ForkHelperClient {
 public:
  using Reply = std::function<void(const internal::FromHelper& reply,
                                   std::vector<UniqueFd> fds)>;

  // Takes over `helper`; `on_lost` runs on the loop thread when the helper dies,
  // after every pending request has been answered with an UNAVAILABLE status.
  ForkHelperClient(IoLoop* loop, HelperProcess helper,
                   std::function<void(const std::string& why)> on_lost);
  ~ForkHelperClient();

  // Starts watching the control socket and the helper's pidfd.
  absl::Status Start();
  // Sends `request` (its request_id is assigned here); `reply` runs on the loop
  // thread with the answer. Fails at once if the helper is gone.
  absl::Status Request(internal::ToHelper request, Reply reply);
  // Starts a new helper by fork+exec of /proc/self/exe in helper mode. Call on the
  // loop thread (PR_SET_PDEATHSIG follows the thread that forks).
  absl::Status Respawn();
  // Closes the control socket (the helper exits on EOF) and reaps it, waiting at
  // most `timeout`.
  void Stop(absl::Duration timeout);
  // The helper's pid, or -1 while there is none.
  pid_t pid() const;

 private:
  void OnControlReadable();
  void OnHelperExit();
  void Attach(HelperProcess helper) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailPending(const std::string& why);

  IoLoop* const loop_;
  const std::function<void(const std::string&)> on_lost_;
  mutable absl::Mutex mu_;
  HelperProcess helper_ ABSL_GUARDED_BY(mu_);
  uint64_t next_request_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, Reply> pending_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_FORK_HELPER_CLIENT_H_
