// TaskStore: where the broker keeps tasks and results. In memory today
// (MemoryTaskStore); a shared store (Redis) implements the same calls later,
// writing a task back in Updated().
#ifndef FORKPOOL_SERVER_DAEMON_BROKER_TASK_STORE_H_
#define FORKPOOL_SERVER_DAEMON_BROKER_TASK_STORE_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "server/daemon/broker/task.h"
#include "server/daemon/net/clock.h"

namespace forkpool {

// Thread-compatible: the TaskBroker calls it under its lock. A Task* it returns
// stays valid until the next Insert or Sweep.
class TaskStore {
 public:
  virtual ~TaskStore() = default;

  // A fresh task id, unique across daemons.
  virtual std::string NewId() = 0;
  // Adds a task whose result.task_id came from NewId(), indexed by its
  // request_id if it has one.
  virtual Task& Insert(Task task) = 0;
  // The task, or nullptr.
  virtual Task* Find(const std::string& id) = 0;
  // NOT_FOUND for `id`, saying whether it expired or never existed here.
  virtual absl::Status Missing(const std::string& id) const = 0;
  // The task submitted with idempotency key `request_id`, or nullptr.
  virtual Task* FindByKey(const std::string& request_id) = 0;
  // The task's key no longer finds it (a retry with the key starts anew).
  virtual void ForgetKey(Task& task) = 0;
  // The task changed (a shared store writes it back; memory needs nothing).
  virtual void Updated(Task& task) = 0;
  // The task has just ended at `now`: its result is kept until the TTL passes.
  virtual void Finished(Task& task, MonoTime now) = 0;
  // Drops ended tasks older than `ttl`, then the oldest while more than
  // `max_bytes` or `max_count` are kept; returns how many went.
  virtual size_t Sweep(MonoTime now, absl::Duration ttl, size_t max_bytes, size_t max_count) = 0;
  // What the ended tasks kept cost: result bytes plus a fixed per-task
  // overhead (ids, timestamps, index entries).
  virtual size_t kept_bytes() const = 0;
  // Ended tasks kept.
  virtual size_t kept_count() const = 0;
  // All tasks, live and ended.
  virtual size_t size() const = 0;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_BROKER_TASK_STORE_H_
