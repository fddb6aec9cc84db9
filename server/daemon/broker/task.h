// Task: one submitted task as the broker keeps it (its result, its input until
// it ends, who waits for it), and the states that never change again.
#ifndef FORKPOOL_SERVER_DAEMON_BROKER_TASK_H_
#define FORKPOOL_SERVER_DAEMON_BROKER_TASK_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "forkpool/v1/forkpool.pb.h"
#include "server/daemon/net/clock.h"

namespace forkpool {

// Called once with the task's terminal result; every waiter of a task shares
// the one copy.
using TaskWaiter = std::function<void(std::shared_ptr<const v1::TaskResult>)>;

struct Task {
  // Id, state, output, error, timestamps, ... while the task lives; once it
  // has ended only its id and state, the rest being in `final_result`.
  v1::TaskResult result;
  // The terminal result, shared by every reader (waiters, Get, Wait) instead
  // of copied for each.
  std::shared_ptr<const v1::TaskResult> final_result;
  // What keeping it costs (set when it ends), for the store's caps.
  size_t kept_bytes = 0;
  // Shared with the dispatch that carries it to a worker; dropped when it ends.
  std::shared_ptr<const std::string> input;
  std::string codec;
  v1::TaskOptions options;  // its own, before the pool's defaults
  std::string request_id;   // its idempotency key, if any
  uint64_t spec_hash = 0;   // StableHash of what was asked: a key reused for
                            // something else is refused
  uint64_t pool_generation = 0;
  // Where it runs: the worker's key in its pool, 0 when not running.
  uint64_t worker_key = 0;
  // Workers lost while running it (for poison-task quarantine).
  int losses = 0;
  Clock::TimerId queue_timer = 0;  // its queue deadline, 0 when none is armed
  // Apply calls tied to it: when the last one leaves and nothing detached
  // wants it, it is cancelled.
  int callers = 0;
  bool detached = false;  // submitted (or joined) by Submit: it runs on regardless
  std::vector<std::pair<uint64_t, TaskWaiter>> waiters;
};

// True for states that never change again.
bool IsTerminal(v1::TaskState state);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_BROKER_TASK_H_
