// Task outcomes as absl::Status (table in forkpool/task_status.h).
#include "forkpool/task_status.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace forkpool {

bool IsTerminalState(v1::TaskState state) {
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

absl::StatusCode TaskStateToCode(v1::TaskState state) {
  switch (state) {
    case v1::TASK_STATE_SUCCEEDED:
      return absl::StatusCode::kOk;
    case v1::TASK_STATE_FAILED:
      return absl::StatusCode::kUnknown;
    case v1::TASK_STATE_WORKER_LOST:
      return absl::StatusCode::kAborted;
    case v1::TASK_STATE_CANCELLED:
      return absl::StatusCode::kCancelled;
    case v1::TASK_STATE_TIMED_OUT:
    case v1::TASK_STATE_EXPIRED:
      return absl::StatusCode::kDeadlineExceeded;
    default:
      return absl::StatusCode::kInternal;
  }
}

std::string TaskStateName(v1::TaskState state) {
  const std::string& full = v1::TaskState_Name(state);
  constexpr absl::string_view kPrefix = "TASK_STATE_";
  if (full.empty()) return absl::StrCat("state ", static_cast<int>(state));
  if (absl::string_view(full).substr(0, kPrefix.size()) == kPrefix) {
    return full.substr(kPrefix.size());
  }
  return full;
}

absl::Status TaskResultToStatus(const v1::TaskResult& result) {
  if (result.state() == v1::TASK_STATE_SUCCEEDED) return absl::OkStatus();
  if (!IsTerminalState(result.state()) && result.state() != v1::TASK_STATE_UNSPECIFIED) {
    return absl::FailedPreconditionError(absl::StrCat(
        "task ", result.task_id(), " has not ended (", TaskStateName(result.state()), ")"));
  }
  const std::string error =
      result.error().empty() ? absl::StrCat("ended ", TaskStateName(result.state()))
                             : result.error();
  absl::Status status(TaskStateToCode(result.state()),
                      absl::StrCat("task ", result.task_id(), " failed: ", error));
  v1::TaskResult carried = result;
  carried.clear_output();
  status.SetPayload(kTaskResultPayloadUrl, absl::Cord(carried.SerializeAsString()));
  return status;
}

std::optional<v1::TaskResult> TaskResultFromStatus(const absl::Status& status) {
  if (status.ok()) return std::nullopt;
  absl::optional<absl::Cord> payload = status.GetPayload(kTaskResultPayloadUrl);
  if (!payload.has_value()) return std::nullopt;
  v1::TaskResult result;
  if (!result.ParseFromString(std::string(*payload))) return std::nullopt;
  return result;
}

}  // namespace forkpool
