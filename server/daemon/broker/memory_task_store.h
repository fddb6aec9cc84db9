// MemoryTaskStore: the TaskStore of one daemon, in its own memory.
#ifndef FORKPOOL_SERVER_DAEMON_BROKER_MEMORY_TASK_STORE_H_
#define FORKPOOL_SERVER_DAEMON_BROKER_MEMORY_TASK_STORE_H_

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>

#include "common/ids.h"
#include "server/daemon/broker/task_store.h"

namespace forkpool {

// What an ended task costs beyond its result's bytes (its id and strings, the
// proto, two index entries and a sweep entry), counted against the caps.
inline constexpr size_t kKeptTaskOverheadBytes = 768;

// Thread-compatible (the broker's lock guards it).
class MemoryTaskStore : public TaskStore {
 public:
  MemoryTaskStore() = default;

  std::string NewId() override { return ids_.Next("t"); }
  Task& Insert(Task task) override;
  Task* Find(const std::string& id) override;
  absl::Status Missing(const std::string& id) const override;
  Task* FindByKey(const std::string& request_id) override;
  void ForgetKey(Task& task) override;
  void Updated(Task&) override {}
  void Finished(Task& task, MonoTime now) override;
  size_t Sweep(MonoTime now, absl::Duration ttl, size_t max_bytes, size_t max_count) override;
  size_t kept_bytes() const override { return kept_bytes_; }
  size_t kept_count() const override { return finished_.size(); }
  size_t size() const override { return tasks_.size(); }

 private:
  IdGenerator ids_;
  std::unordered_map<std::string, Task> tasks_;
  // StableHash of the key -> task id (the task's own request_id is compared
  // on lookup, so a collision finds nothing rather than the wrong task).
  std::unordered_map<uint64_t, std::string> by_key_;
  // Ended tasks in the order they ended, for the sweep.
  std::deque<std::pair<MonoTime, std::string>> finished_;
  size_t kept_bytes_ = 0;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_BROKER_MEMORY_TASK_STORE_H_
