// WorkerSlot: one worker of a pool (or a request for one), as its executor
// keeps it. Plain data guarded by the executor's lock.
#ifndef FORKPOOL_SERVER_DAEMON_EXECUTOR_WORKER_SLOT_H_
#define FORKPOOL_SERVER_DAEMON_EXECUTOR_WORKER_SLOT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "forkpool/v1/forkpool.pb.h"
#include "server/daemon/broker/task_broker.h"
#include "server/daemon/launch/worker_launcher.h"
#include "server/daemon/net/clock.h"

namespace forkpool {

struct WorkerSlot {
  uint64_t key = 0;  // unique in the daemon, never reused
  int index = 0;     // position in the pool, reused by its replacement
  v1::WorkerState state = v1::WORKER_STATE_STARTING;
  std::unique_ptr<WorkerProcess> process;  // null while STARTING
  std::optional<Dispatch> work;            // set while BUSY
  int chunk_results = 0;                   // results of a chunk received so far
  uint64_t batch_id = 0;
  int64_t tasks_done = 0;
  int64_t rss_bytes = 0;
  Clock::TimerId limit_timer = 0;  // hard time limit of the running batch
  bool timed_out = false;          // killed for running past it
  absl::Duration time_limit;       // the limit it ran past
  std::string protocol_error;      // why it was killed, if it broke the protocol
  Clock::TimerId start_timer = 0;  // --start_timeout while STARTING
  bool start_timed_out = false;
  bool stopped = false;  // SIGSTOPped: given no work
  MonoTime stopped_since;
  bool stopped_killed = false;  // killed for staying stopped past --stopped_grace
  MonoTime last_active;         // when it last finished or started work

  bool busy() const { return state == v1::WORKER_STATE_BUSY && work.has_value(); }
  bool running_chunk() const { return busy() && work->chunk != nullptr; }
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_EXECUTOR_WORKER_SLOT_H_
