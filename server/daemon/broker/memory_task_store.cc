// MemoryTaskStore implementation.
#include "server/daemon/broker/memory_task_store.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/stable_hash.h"

namespace forkpool {
namespace {

size_t KeptBytes(const Task& t) {
  const v1::TaskResult& r = t.result;
  return r.output().data().size() + r.output().codec().size() + r.error().size() +
         r.worker_loss().stderr_tail().size() + r.function().size() + r.pool().size() +
         t.request_id.size() + t.codec.size() + kKeptTaskOverheadBytes;
}

uint64_t KeyHash(const std::string& key) { return StableHash::Of({key}); }

}  // namespace

bool IsTerminal(v1::TaskState state) {
  switch (state) {
    case v1::TASK_STATE_SUCCEEDED:
    case v1::TASK_STATE_FAILED:
    case v1::TASK_STATE_CANCELLED:
    case v1::TASK_STATE_TIMED_OUT:
    case v1::TASK_STATE_EXPIRED:
    case v1::TASK_STATE_WORKER_LOST:
      return true;
    default:
      return false;
  }
}

Task& MemoryTaskStore::Insert(Task task) {
  const std::string id = task.result.task_id();
  if (!task.request_id.empty()) by_key_[KeyHash(task.request_id)] = id;
  return tasks_.insert_or_assign(id, std::move(task)).first->second;
}

Task* MemoryTaskStore::Find(const std::string& id) {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : &it->second;
}

absl::Status MemoryTaskStore::Missing(const std::string& id) const {
  // Our ids are "t-<instance>-<n>" with n counting up, so an id of ours that is
  // not here has expired.
  const std::string prefix = absl::StrCat("t-", ids_.instance(), "-");
  uint64_t n = 0;
  if (absl::StartsWith(id, prefix) &&
      absl::SimpleAtoi(absl::string_view(id).substr(prefix.size()), &n) && n > 0) {
    return absl::NotFoundError(
        absl::StrCat("task '", id, "' has expired: its result was dropped after the result TTL"));
  }
  return absl::NotFoundError(absl::StrCat("unknown task '", id, "'"));
}

Task* MemoryTaskStore::FindByKey(const std::string& request_id) {
  auto it = by_key_.find(KeyHash(request_id));
  if (it == by_key_.end()) return nullptr;
  Task* task = Find(it->second);
  return task != nullptr && task->request_id == request_id ? task : nullptr;
}

void MemoryTaskStore::ForgetKey(Task& task) {
  if (task.request_id.empty()) return;
  auto it = by_key_.find(KeyHash(task.request_id));
  if (it != by_key_.end() && it->second == task.result.task_id()) by_key_.erase(it);
}

void MemoryTaskStore::Finished(Task& task, MonoTime now) {
  task.input.reset();
  task.kept_bytes = KeptBytes(task);
  finished_.emplace_back(now, task.result.task_id());
  kept_bytes_ += task.kept_bytes;
}

size_t MemoryTaskStore::Sweep(MonoTime now, absl::Duration ttl, size_t max_bytes,
                              size_t max_count) {
  size_t n = 0;
  while (!finished_.empty() &&
         (finished_.front().first + ttl <= now || (max_bytes > 0 && kept_bytes_ > max_bytes) ||
          (max_count > 0 && finished_.size() > max_count))) {
    auto it = tasks_.find(finished_.front().second);
    if (it != tasks_.end()) {
      kept_bytes_ -= std::min(kept_bytes_, it->second.kept_bytes);
      ForgetKey(it->second);
      tasks_.erase(it);
      ++n;
    }
    finished_.pop_front();
  }
  return n;
}

}  // namespace forkpool
