// TaskTable: task id -> state, result and waiters; finished results are kept until
// the result TTL passes.
#ifndef FORKPOOL_SERVER_DAEMON_TASK_TABLE_H_
#define FORKPOOL_SERVER_DAEMON_TASK_TABLE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/ids.h"
#include "forkpool/v1/forkpool.pb.h"

namespace forkpool {

// Called once with the task's terminal result.
using TaskWaiter = std::function<void(const v1::TaskResult&)>;

struct Task {
  v1::TaskResult result;  // id, state, output, error, timestamps, ...
  std::string input;
  std::string codec;
  v1::TaskOptions options;
  std::string request_id;
  uint64_t spec_hash = 0;
  // Where it runs: the worker's key in its pool, 0 when not running.
  uint64_t worker_key = 0;
  // Workers lost while running it (for poison-task quarantine).
  int losses = 0;
  // The queue-deadline timer, 0 when none is armed.
  uint64_t queue_timer = 0;
  std::vector<std::pair<uint64_t, TaskWaiter>> waiters;
};

// True for states that never change again.
bool IsTerminal(v1::TaskState state);

// Thread-compatible: the Scheduler guards it with its lock.
class TaskTable {
 public:
  TaskTable() = default;

  // A fresh task id (never reused by this daemon).
  std::string NewId() { return ids_.Next("t"); }
  // Adds a task whose result.task_id was set from NewId().
  Task& Insert(Task task);
  // The task, or nullptr.
  Task* Find(const std::string& id);
  // NOT_FOUND for `id`, saying whether it expired or never existed here.
  absl::Status Missing(const std::string& id) const;
  // The live task submitted with `request_id`, or nullptr.
  Task* FindByRequestId(const std::string& request_id);

  // Registers a waiter on a task that has not ended; returns its id.
  uint64_t AddWaiter(Task& task, TaskWaiter waiter);
  // Removes a waiter if it is still registered.
  void RemoveWaiter(const std::string& task_id, uint64_t waiter_id);

  // Moves `task` to terminal `state` and appends to `notify` one closure per waiter
  // (to be run after the caller's lock is released).
  void Finish(Task& task, v1::TaskState state, std::vector<std::function<void()>>* notify);

  // Drops terminal tasks that ended before `now - ttl`, and then the oldest ones
  // while the results kept exceed `max_bytes` (0: no cap); returns how many.
  size_t SweepExpired(absl::Time now, absl::Duration ttl, size_t max_bytes = 0);
  // Bytes of the finished results kept (outputs and error texts).
  size_t result_bytes() const { return result_bytes_; }

  size_t size() const { return tasks_.size(); }

 private:
  IdGenerator ids_;
  std::unordered_map<std::string, Task> tasks_;
  std::unordered_map<std::string, std::string> by_request_id_;
  // Terminal tasks in the order they ended, for the TTL sweep.
  std::deque<std::pair<absl::Time, std::string>> finished_;
  uint64_t next_waiter_ = 1;
  size_t result_bytes_ = 0;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_TASK_TABLE_H_
