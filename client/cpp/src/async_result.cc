// AsyncResult: Get / Wait / Cancel of one task over the Tasks service.
#include "forkpool/async_result.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "connection.h"
#include "forkpool/task_status.h"

namespace forkpool {

AsyncResult::AsyncResult(std::shared_ptr<const internal::Connection> connection,
                         std::string task_id)
    : connection_(std::move(connection)),
      task_id_(std::move(task_id)),
      cache_(std::make_shared<internal::ResultCache>()) {}

AsyncResult::~AsyncResult() = default;

void AsyncResult::Remember(const v1::TaskResult& result) const {
  if (result.task_id() != task_id_) return;
  switch (result.state()) {
    case v1::TASK_STATE_PENDING:
    case v1::TASK_STATE_RUNNING:
    case v1::TASK_STATE_UNSPECIFIED:
      return;
    default:
      break;
  }
  absl::MutexLock lock(&cache_->mu);
  if (!cache_->final_result.has_value()) cache_->final_result = result;
}

absl::StatusOr<v1::TaskResult> AsyncResult::Fetch(std::optional<absl::Duration> timeout) const {
  {
    absl::MutexLock lock(&cache_->mu);
    if (cache_->final_result.has_value()) return *cache_->final_result;
  }
  v1::GetRequest request;
  request.set_task_id(task_id_);
  absl::StatusOr<bool> has_timeout = internal::ToProtoTimeout(timeout, request.mutable_timeout());
  if (!has_timeout.ok()) return has_timeout.status();
  if (!*has_timeout) request.clear_timeout();
  grpc::ClientContext context;
  internal::SetWaitDeadline(context, *has_timeout ? timeout : std::nullopt);
  v1::GetResponse response;
  const grpc::Status status = connection_->tasks->Get(&context, request, &response);
  if (!status.ok()) return internal::FromGrpcStatus(status, "Get", *connection_);
  if (response.ready()) {
    absl::MutexLock lock(&cache_->mu);
    cache_->final_result = response.result();
  }
  return std::move(*response.mutable_result());
}

absl::StatusOr<std::string> AsyncResult::Get(std::optional<absl::Duration> timeout) const {
  absl::StatusOr<v1::TaskResult> result = Fetch(timeout);
  if (!result.ok()) return result.status();
  if (!IsTerminalState(result->state())) {
    return absl::DeadlineExceededError(
        absl::StrCat("task ", task_id_, " not ready after ",
                     absl::FormatDuration(timeout.value_or(absl::ZeroDuration())), " (",
                     TaskStateName(result->state()), ")"));
  }
  absl::Status failed = TaskResultToStatus(*result);
  if (!failed.ok()) return failed;
  return std::move(*result->mutable_output()->mutable_data());
}

absl::StatusOr<bool> AsyncResult::Wait(std::optional<absl::Duration> timeout) const {
  absl::StatusOr<v1::TaskResult> result = Fetch(timeout);
  if (!result.ok()) return result.status();
  return IsTerminalState(result->state());
}

absl::StatusOr<bool> AsyncResult::Ready() const { return Wait(absl::ZeroDuration()); }

absl::StatusOr<bool> AsyncResult::Successful() const {
  absl::StatusOr<v1::TaskResult> result = Fetch(absl::ZeroDuration());
  if (!result.ok()) return result.status();
  if (!IsTerminalState(result->state())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "task ", task_id_, " is not ready (", TaskStateName(result->state()), ")"));
  }
  return result->state() == v1::TASK_STATE_SUCCEEDED;
}

absl::StatusOr<bool> AsyncResult::Cancel() const {
  v1::CancelRequest request;
  request.set_task_id(task_id_);
  grpc::ClientContext context;
  internal::SetDeadline(context, connection_->rpc_timeout);
  v1::CancelResponse response;
  const grpc::Status status = connection_->tasks->Cancel(&context, request, &response);
  if (!status.ok()) return internal::FromGrpcStatus(status, "Cancel", *connection_);
  return response.cancelled();
}

absl::StatusOr<v1::TaskResult> AsyncResult::Result(std::optional<absl::Duration> timeout) const {
  return Fetch(timeout);
}

}  // namespace forkpool
