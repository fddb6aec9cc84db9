// Pool: Apply / Submit / SubmitMany over the Tasks service.
#include "forkpool/pool.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "connection.h"
#include "forkpool/task_status.h"

namespace forkpool {
namespace {

// A SubmitMany request is cut before it passes this many bytes: well under the
// daemon's default 16 MiB limit and gRPC's 4 MiB default elsewhere.
constexpr size_t kMaxSubmitManyBytes = 3 << 20;

void SetProtoDuration(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
}

v1::TaskOptions ToTaskOptions(const ApplyOptions& options) {
  v1::TaskOptions out;
  if (options.time_limit) SetProtoDuration(*options.time_limit, out.mutable_time_limit());
  if (options.soft_time_limit) {
    SetProtoDuration(*options.soft_time_limit, out.mutable_soft_time_limit());
  }
  if (options.queue_deadline) {
    SetProtoDuration(*options.queue_deadline, out.mutable_queue_deadline());
  }
  out.set_max_retries(options.max_retries);
  out.set_retry_on_error(options.retry_on_error);
  return out;
}

// Bytes a string adds to a repeated field: tag, length varint, data.
size_t FieldBytes(size_t n) {
  size_t varint = 1;
  for (size_t v = n; v >= 0x80; v >>= 7) ++varint;
  return 1 + varint + n;
}

}  // namespace

Pool::Pool(std::shared_ptr<const internal::Connection> connection, std::string name)
    : connection_(std::move(connection)), name_(std::move(name)) {}

v1::TaskSpec Pool::MakeSpec(const std::string& function, const std::string& input,
                            const ApplyOptions& options) const {
  v1::TaskSpec spec;
  spec.set_pool(name_);
  spec.set_function(function);
  spec.mutable_input()->set_data(input);
  spec.mutable_input()->set_codec(options.codec);
  spec.set_request_id(options.request_id);
  *spec.mutable_options() = ToTaskOptions(options);
  return spec;
}

absl::StatusOr<v1::TaskResult> Pool::ApplyResult(const std::string& function,
                                                  const std::string& input,
                                                  const ApplyOptions& options) const {
  v1::ApplyRequest request;
  *request.mutable_task() = MakeSpec(function, input, options);
  grpc::ClientContext context;
  if (options.apply_timeout.has_value()) internal::SetDeadline(context, *options.apply_timeout);
  v1::ApplyResponse response;
  const grpc::Status status = connection_->tasks->Apply(&context, request, &response);
  if (!status.ok()) return internal::FromGrpcStatus(status, "Apply", *connection_);
  return std::move(*response.mutable_result());
}

absl::StatusOr<std::string> Pool::Apply(const std::string& function, const std::string& input,
                                        const ApplyOptions& options) const {
  absl::StatusOr<v1::TaskResult> result = ApplyResult(function, input, options);
  if (!result.ok()) return result.status();
  absl::Status failed = TaskResultToStatus(*result);
  if (!failed.ok()) return failed;
  return std::move(*result->mutable_output()->mutable_data());
}

absl::StatusOr<AsyncResult> Pool::ApplyAsync(const std::string& function,
                                             const std::string& input,
                                             const ApplyOptions& options) const {
  v1::SubmitRequest request;
  *request.mutable_task() = MakeSpec(function, input, options);
  grpc::ClientContext context;
  internal::SetDeadline(context, connection_->rpc_timeout);
  v1::SubmitResponse response;
  const grpc::Status status = connection_->tasks->Submit(&context, request, &response);
  if (!status.ok()) return internal::FromGrpcStatus(status, "Submit", *connection_);
  return AsyncResult(connection_, response.task_id());
}

absl::StatusOr<std::vector<AsyncResult>> Pool::SubmitMany(const std::string& function,
                                                          const std::vector<std::string>& inputs,
                                                          const ApplyOptions& options) const {
  std::vector<AsyncResult> out;
  out.reserve(inputs.size());
  v1::SubmitManyRequest base;
  base.set_pool(name_);
  base.set_function(function);
  base.set_codec(options.codec);
  *base.mutable_options() = ToTaskOptions(options);
  const size_t base_bytes = base.ByteSizeLong();

  auto request_id = [&](size_t i) {
    return options.request_id.empty() ? std::string()
                                      : absl::StrCat(options.request_id, "/", i);
  };
  auto item_bytes = [&](size_t i) {
    return FieldBytes(inputs[i].size()) +
           (options.request_id.empty() ? 0 : FieldBytes(request_id(i).size()));
  };
  size_t next = 0;
  while (next < inputs.size()) {
    v1::SubmitManyRequest request = base;
    size_t bytes = base_bytes;
    // At least one input per request, however large: the daemon judges that one.
    do {
      request.add_inputs(inputs[next]);
      if (!options.request_id.empty()) request.add_request_ids(request_id(next));
      bytes += item_bytes(next);
      ++next;
    } while (next < inputs.size() && bytes + item_bytes(next) <= kMaxSubmitManyBytes);

    grpc::ClientContext context;
    internal::SetDeadline(context, connection_->rpc_timeout);
    v1::SubmitManyResponse response;
    const grpc::Status status = connection_->tasks->SubmitMany(&context, request, &response);
    if (!status.ok()) return internal::FromGrpcStatus(status, "SubmitMany", *connection_);
    if (response.task_ids_size() != request.inputs_size()) {
      return absl::InternalError(absl::StrCat("SubmitMany answered ", response.task_ids_size(),
                                              " task ids for ", request.inputs_size(),
                                              " inputs"));
    }
    for (const std::string& id : response.task_ids()) out.emplace_back(connection_, id);
  }
  return out;
}

absl::StatusOr<v1::PoolInfo> Pool::Describe() const {
  v1::DescribePoolRequest request;
  request.set_name(name_);
  grpc::ClientContext context;
  internal::SetDeadline(context, connection_->rpc_timeout);
  v1::PoolInfo response;
  const grpc::Status status = connection_->pools->DescribePool(&context, request, &response);
  if (!status.ok()) return internal::FromGrpcStatus(status, "DescribePool", *connection_);
  return response;
}

}  // namespace forkpool
