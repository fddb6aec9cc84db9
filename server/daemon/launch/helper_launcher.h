// HelperLauncher: the WorkerLauncher of native and spawn pools. The root helper
// makes the pool's own helper, which loads the pool's libraries (within
// --load_timeout) and forks its workers (forkserver) or forks and execs them
// (spawn).
#ifndef FORKPOOL_SERVER_DAEMON_LAUNCH_HELPER_LAUNCHER_H_
#define FORKPOOL_SERVER_DAEMON_LAUNCH_HELPER_LAUNCHER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "forkpool/v1/forkpool.pb.h"
#include "server/daemon/launch/child_registry.h"
#include "server/daemon/launch/helper_channel.h"
#include "server/daemon/launch/late_reaper.h"
#include "server/daemon/launch/root_helper_client.h"
#include "server/daemon/launch/worker_launcher.h"
#include "server/daemon/net/io_loop.h"

namespace forkpool {

struct HelperLauncherOptions {
  absl::Duration load_timeout = absl::Seconds(30);
  // How long a pool helper may take to fork a worker.
  absl::Duration fork_timeout = absl::Seconds(10);
  size_t max_frame_bytes = 64u << 20;
  // The soft RLIMIT_NOFILE forkpoold started with; workers get it back.
  uint64_t nofile_soft_limit = 0;
  // The worker program of spawn pools without a worker_command.
  std::string worker_program;
};

// What every HelperLauncher of the daemon shares.
struct HelperLauncherDeps {
  IoLoop* loop = nullptr;
  RootHelperClient* root = nullptr;
  ChildRegistry* children = nullptr;
  LateReaper* reaper = nullptr;
};

// Thread-safe.
class HelperLauncher : public WorkerLauncher, public std::enable_shared_from_this<HelperLauncher> {
 public:
  static std::shared_ptr<HelperLauncher> Create(HelperLauncherDeps deps, v1::PoolSettings settings,
                                                HelperLauncherOptions options);
  ~HelperLauncher() override;

  void Load(HelperEvents events, LoadDone done) override;
  pid_t helper_pid() const override;
  absl::Status StartWorker(int index, WorkerEvents events, StartDone done) override;
  void DropHelper(bool kill, const std::string& why) override;

 private:
  HelperLauncher(HelperLauncherDeps deps, v1::PoolSettings settings, HelperLauncherOptions options)
      : deps_(deps), settings_(std::move(settings)), options_(std::move(options)) {}
  void AskRoot(uint64_t attempt, int root_tries, HelperEvents events, LoadDone done);
  void OnHelperStarted(uint64_t attempt, absl::StatusOr<HelperProcess> process, int root_tries,
                       HelperEvents events, LoadDone done);
  void OnLoaded(uint64_t attempt, absl::StatusOr<internal::FromHelper> reply, LoadDone done);
  void OnForked(absl::StatusOr<internal::FromHelper> reply, std::vector<UniqueFd> fds, int index,
                WorkerEvents events, StartDone done);
  internal::ToHelper LoadRequest() const;

  const HelperLauncherDeps deps_;
  const v1::PoolSettings settings_;
  const HelperLauncherOptions options_;

  mutable absl::Mutex mu_;
  std::shared_ptr<HelperChannel> helper_ ABSL_GUARDED_BY(mu_);
  // Tells a superseded load's callbacks from the current one's.
  uint64_t attempt_ ABSL_GUARDED_BY(mu_) = 0;
  std::string loading_library_ ABSL_GUARDED_BY(mu_);
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_LAUNCH_HELPER_LAUNCHER_H_
