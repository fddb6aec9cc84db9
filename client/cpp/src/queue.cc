// Queue: unary calls on one shared queue, and the Client's queue management calls.
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "connection.h"
#include "forkpool/client.h"
#include "forkpool/queue.h"
#include "queue_internal.h"

namespace forkpool {
namespace {

absl::Status FullError(const std::string& queue) {
  return absl::DeadlineExceededError(absl::StrCat("queue '", queue, "' is full"));
}
absl::Status EmptyError(const std::string& queue) {
  return absl::DeadlineExceededError(absl::StrCat("queue '", queue, "' is empty"));
}

// Fills `request`'s timeout; returns the wait for the call's deadline.
template <typename Request>
absl::StatusOr<std::optional<absl::Duration>> SetTimeout(std::optional<absl::Duration> timeout,
                                                         Request& request) {
  absl::StatusOr<bool> has = internal::ToProtoTimeout(timeout, request.mutable_timeout());
  if (!has.ok()) return has.status();
  if (!*has) {
    request.clear_timeout();
    return std::optional<absl::Duration>();
  }
  return timeout;
}

QueueItem FromProto(v1::QueueItem& item) {
  QueueItem out;
  out.data = std::move(*item.mutable_payload()->mutable_data());
  out.codec = std::move(*item.mutable_payload()->mutable_codec());
  out.lease_id = std::move(*item.mutable_lease_id());
  out.delivery_count = item.delivery_count();
  return out;
}

}  // namespace

bool IsQueueFull(const absl::Status& status) {
  return absl::IsDeadlineExceeded(status) && absl::StartsWith(status.message(), "queue '") &&
         absl::EndsWith(status.message(), "' is full");
}

bool IsQueueEmpty(const absl::Status& status) {
  return absl::IsDeadlineExceeded(status) && absl::StartsWith(status.message(), "queue '") &&
         absl::EndsWith(status.message(), "' is empty");
}

namespace internal {

absl::Status QueueFullError(const std::string& queue) { return FullError(queue); }
absl::Status QueueEmptyError(const std::string& queue) { return EmptyError(queue); }
QueueItem QueueItemFromProto(v1::QueueItem& item) { return FromProto(item); }

}  // namespace internal

Queue::Queue(std::shared_ptr<const internal::Connection> connection, std::string name)
    : connection_(std::move(connection)), name_(std::move(name)) {}

absl::Status Queue::Put(const std::string& item, std::optional<absl::Duration> timeout) const {
  return PutMany({item}, timeout);
}

absl::Status Queue::PutMany(const std::vector<std::string>& items,
                            std::optional<absl::Duration> timeout) const {
  v1::PutRequest request;
  request.set_queue(name_);
  for (const std::string& item : items) request.add_items()->set_data(item);
  absl::StatusOr<std::optional<absl::Duration>> wait = SetTimeout(timeout, request);
  if (!wait.ok()) return wait.status();
  grpc::ClientContext context;
  internal::SetWaitDeadline(context, *wait);
  v1::PutResponse response;
  const grpc::Status status = connection_->queues->Put(&context, request, &response);
  if (!status.ok()) return internal::FromGrpcStatus(status, "Put", *connection_);
  if (response.full()) return FullError(name_);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Queue::Get(std::optional<absl::Duration> timeout) const {
  absl::StatusOr<std::vector<std::string>> items = GetMany(1, timeout);
  if (!items.ok()) return items.status();
  if (items->size() != 1) {
    return absl::InternalError(
        absl::StrCat("forkpoold answered a get of 1 item with ", items->size(), " items"));
  }
  return std::move(items->front());
}

absl::StatusOr<std::vector<std::string>> Queue::GetMany(
    int max_items, std::optional<absl::Duration> timeout) const {
  v1::QueueGetRequest request;
  request.set_queue(name_);
  request.set_max_items(std::max(max_items, 1));
  absl::StatusOr<std::optional<absl::Duration>> wait = SetTimeout(timeout, request);
  if (!wait.ok()) return wait.status();
  grpc::ClientContext context;
  internal::SetWaitDeadline(context, *wait);
  v1::QueueGetResponse response;
  const grpc::Status status = connection_->queues->Get(&context, request, &response);
  if (!status.ok()) return internal::FromGrpcStatus(status, "Get", *connection_);
  if (response.empty() || response.items_size() == 0) return EmptyError(name_);
  std::vector<std::string> out;
  out.reserve(response.items_size());
  for (v1::QueueItem& item : *response.mutable_items()) {
    out.push_back(std::move(*item.mutable_payload()->mutable_data()));
  }
  return out;
}

absl::StatusOr<std::vector<QueueItem>> Queue::GetLeased(
    int max_items, absl::Duration lease, std::optional<absl::Duration> timeout) const {
  if (lease <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("lease must be positive (got ", absl::FormatDuration(lease), ")"));
  }
  v1::QueueGetRequest request;
  request.set_queue(name_);
  request.set_max_items(std::max(max_items, 1));
  absl::StatusOr<std::optional<absl::Duration>> wait = SetTimeout(timeout, request);
  if (!wait.ok()) return wait.status();
  absl::StatusOr<bool> has_lease = internal::ToProtoTimeout(lease, request.mutable_lease());
  if (!has_lease.ok()) return has_lease.status();
  grpc::ClientContext context;
  internal::SetWaitDeadline(context, *wait);
  v1::QueueGetResponse response;
  const grpc::Status status = connection_->queues->Get(&context, request, &response);
  if (!status.ok()) return internal::FromGrpcStatus(status, "Get", *connection_);
  if (response.empty() || response.items_size() == 0) return EmptyError(name_);
  std::vector<QueueItem> out;
  out.reserve(response.items_size());
  for (v1::QueueItem& item : *response.mutable_items()) out.push_back(FromProto(item));
  return out;
}

absl::StatusOr<std::vector<std::string>> Queue::Ack(
    const std::vector<std::string>& lease_ids) const {
  v1::AckRequest request;
  request.set_queue(name_);
  for (const std::string& id : lease_ids) request.add_lease_ids(id);
  grpc::ClientContext context;
  internal::SetDeadline(context, connection_->rpc_timeout);
  v1::AckResponse response;
  const grpc::Status status = connection_->queues->Ack(&context, request, &response);
  if (!status.ok()) return internal::FromGrpcStatus(status, "Ack", *connection_);
  return std::vector<std::string>(response.unknown().begin(), response.unknown().end());
}

absl::StatusOr<int64_t> Queue::Size() const {
  absl::StatusOr<v1::QueueInfo> info = Info();
  if (!info.ok()) return info.status();
  return info->size();
}

absl::StatusOr<v1::QueueInfo> Queue::Info() const {
  v1::SizeRequest request;
  request.set_queue(name_);
  grpc::ClientContext context;
  internal::SetDeadline(context, connection_->rpc_timeout);
  v1::QueueInfo response;
  const grpc::Status status = connection_->queues->Size(&context, request, &response);
  if (!status.ok()) return internal::FromGrpcStatus(status, "Size", *connection_);
  return response;
}

absl::StatusOr<std::unique_ptr<QueueStream>> Queue::OpenStream() const {
  return QueueStream::Open(connection_);
}

// --- Client -------------------------------------------------------------------------

absl::StatusOr<v1::QueueInfo> Client::CreateQueue(const std::string& name, int64_t maxsize,
                                                  bool exist_ok) const {
  v1::CreateQueueRequest request;
  request.set_name(name);
  request.set_maxsize(maxsize);
  request.set_exist_ok(exist_ok);
  grpc::ClientContext context;
  internal::SetDeadline(context, connection_->rpc_timeout);
  v1::QueueInfo response;
  const grpc::Status status = connection_->queues->CreateQueue(&context, request, &response);
  if (!status.ok()) return internal::FromGrpcStatus(status, "CreateQueue", *connection_);
  return response;
}

Queue Client::queue(std::string name) const { return Queue(connection_, std::move(name)); }

absl::Status Client::DeleteQueue(const std::string& name) const {
  v1::DeleteQueueRequest request;
  request.set_name(name);
  grpc::ClientContext context;
  internal::SetDeadline(context, connection_->rpc_timeout);
  v1::DeleteQueueResponse response;
  const grpc::Status status = connection_->queues->DeleteQueue(&context, request, &response);
  return internal::FromGrpcStatus(status, "DeleteQueue", *connection_);
}

absl::StatusOr<std::vector<v1::QueueInfo>> Client::ListQueues() const {
  grpc::ClientContext context;
  internal::SetDeadline(context, connection_->rpc_timeout);
  v1::ListQueuesResponse response;
  const grpc::Status status =
      connection_->queues->ListQueues(&context, v1::ListQueuesRequest(), &response);
  if (!status.ok()) return internal::FromGrpcStatus(status, "ListQueues", *connection_);
  return std::vector<v1::QueueInfo>(response.queues().begin(), response.queues().end());
}

}  // namespace forkpool
