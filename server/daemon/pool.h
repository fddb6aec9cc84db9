// Pool: one named pool's settings, workers and pending queue. Plain data owned
// by the Scheduler and guarded by its lock.
#ifndef FORKPOOL_SERVER_DAEMON_POOL_H_
#define FORKPOOL_SERVER_DAEMON_POOL_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "forkpool/v1/forkpool.pb.h"
#include "server/daemon/launch/helper_channel.h"
#include "server/daemon/map_job.h"
#include "server/daemon/worker_connection.h"

namespace forkpool {

// One worker process of a pool (or a request for one).
struct WorkerSlot {
  uint64_t key = 0;  // unique in the daemon, never reused
  int index = 0;     // position in the pool, reused by its replacement
  v1::WorkerState state = v1::WORKER_STATE_STARTING;
  std::unique_ptr<WorkerConnection> conn;  // null while STARTING
  std::string task_id;                     // set while BUSY with a task
  std::shared_ptr<MapChunk> chunk;         // set while BUSY with a map chunk
  int chunk_results = 0;                   // results of `chunk` received so far
  uint64_t batch_id = 0;
  int64_t tasks_done = 0;
  int64_t rss_bytes = 0;
  bool writing = false;        // EPOLLOUT is being watched
  uint64_t limit_timer = 0;    // hard time limit of the running batch
  bool timed_out = false;      // killed for running past its hard time limit
  absl::Duration time_limit;   // the limit it ran past
  std::string protocol_error;  // why the daemon killed it, if it broke the protocol
  absl::Time requested_at;
  uint64_t start_timer = 0;  // --start_timeout while STARTING
  bool start_timed_out = false;
  bool stopped = false;  // SIGSTOPped: given no work
  absl::Time stopped_since;
  bool stopped_killed = false;  // killed for staying stopped past --stopped_grace
  absl::Time last_active;       // when it last finished or started work
};

// An entry of a pool's pending queue: a task or a chunk of a map.
struct PendingWork {
  std::string task_id;              // a task, or
  std::shared_ptr<MapChunk> chunk;  // a map chunk
};

struct Pool {
  v1::PoolSettings settings;  // defaults filled in
  std::set<std::string> functions;
  bool loaded = false;  // its helper has loaded its libraries (at least once)
  // Its pool helper (null while it has none) and where loading it stands.
  std::shared_ptr<HelperChannel> helper;
  v1::PoolState state = v1::POOL_STATE_LOADING;
  uint64_t load_attempt = 0;    // tells a stale helper's callbacks from the current's
  std::string loading_library;  // the library its helper said it is opening
  int helper_failures = 0;      // consecutive failed (re)loads and helper losses
  absl::Time helper_since;      // when its current helper finished loading
  // CreatePool's answer, until the first load ends.
  std::function<void(absl::StatusOr<v1::PoolInfo>)> create_done;
  bool closed = false;
  bool deleting = false;  // DeletePool: erased once its last worker is reaped
  // Called (after the lock is released) once a closed pool has no work and no
  // workers.
  std::vector<std::function<void()>> join_waiters;
  std::map<uint64_t, WorkerSlot> workers;  // by key
  std::deque<uint64_t> idle;               // keys of IDLE workers
  std::deque<PendingWork> pending;         // cancelled tasks and maps are skipped
  int64_t queued = 0;                      // PENDING tasks and queued map items
  int64_t map_inflight_high_water = 0;
  int64_t tasks_done = 0;
  int64_t tasks_failed = 0;
  int64_t workers_started = 0;
  int64_t workers_lost = 0;
  std::string last_error;
  // Consecutive worker starts that failed (fork error, initializer, early
  // death): drives the restart back-off.
  int failed_starts = 0;
  absl::Time created_at;
  // When its first helper was running and when it had loaded (for the ready log).
  absl::Time helper_started_at;
  absl::Time loaded_at;
  bool reported_ready = false;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_POOL_H_
