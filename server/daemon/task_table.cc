// TaskTable implementation.
#include "server/daemon/task_table.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"

namespace forkpool {

namespace {

size_t ResultBytes(const v1::TaskResult& r) {
  return r.output().data().size() + r.error().size() + r.worker_loss().stderr_tail().size();
}

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

Task& TaskTable::Insert(Task task) {
  const std::string id = task.result.task_id();
  if (!task.request_id.empty()) by_request_id_[task.request_id] = id;
  return tasks_.insert_or_assign(id, std::move(task)).first->second;
}

Task* TaskTable::Find(const std::string& id) {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : &it->second;
}

absl::Status TaskTable::Missing(const std::string& id) const {
  // Our ids are "t-<instance>-<n>" with n counting up, so an id of ours that is not
  // in the table has expired.
  const std::string prefix = absl::StrCat("t-", ids_.instance(), "-");
  uint64_t n = 0;
  if (absl::StartsWith(id, prefix) &&
      absl::SimpleAtoi(absl::string_view(id).substr(prefix.size()), &n) && n > 0) {
    return absl::NotFoundError(absl::StrCat(
        "task '", id, "' has expired: its result was dropped after the result TTL"));
  }
  return absl::NotFoundError(absl::StrCat("unknown task '", id, "'"));
}

Task* TaskTable::FindByRequestId(const std::string& request_id) {
  auto it = by_request_id_.find(request_id);
  if (it == by_request_id_.end()) return nullptr;
  return Find(it->second);
}

uint64_t TaskTable::AddWaiter(Task& task, TaskWaiter waiter) {
  const uint64_t id = next_waiter_++;
  task.waiters.emplace_back(id, std::move(waiter));
  return id;
}

void TaskTable::RemoveWaiter(const std::string& task_id, uint64_t waiter_id) {
  Task* task = Find(task_id);
  if (task == nullptr) return;
  auto& w = task->waiters;
  for (auto it = w.begin(); it != w.end(); ++it) {
    if (it->first == waiter_id) {
      w.erase(it);
      return;
    }
  }
}

void TaskTable::Finish(Task& task, v1::TaskState state,
                       std::vector<std::function<void()>>* notify) {
  if (IsTerminal(task.result.state())) return;
  const absl::Time now = absl::Now();
  task.result.set_state(state);
  *task.result.mutable_finished_at() =
      google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(now));
  task.worker_key = 0;
  task.input.clear();
  task.input.shrink_to_fit();
  finished_.emplace_back(now, task.result.task_id());
  result_bytes_ += ResultBytes(task.result);
  if (!task.waiters.empty()) {
    auto snapshot = std::make_shared<const v1::TaskResult>(task.result);
    for (auto& [id, waiter] : task.waiters) {
      notify->push_back([snapshot, w = std::move(waiter)] { w(*snapshot); });
    }
    task.waiters.clear();
  }
}

size_t TaskTable::SweepExpired(absl::Time now, absl::Duration ttl, size_t max_bytes) {
  size_t n = 0;
  while (!finished_.empty() && (finished_.front().first + ttl <= now ||
                                (max_bytes > 0 && result_bytes_ > max_bytes))) {
    auto it = tasks_.find(finished_.front().second);
    if (it != tasks_.end()) {
      result_bytes_ -= std::min(result_bytes_, ResultBytes(it->second.result));
      if (!it->second.request_id.empty()) by_request_id_.erase(it->second.request_id);
      tasks_.erase(it);
      ++n;
    }
    finished_.pop_front();
  }
  return n;
}

}  // namespace forkpool
