// QueueStream: many queue operations over one Queues.Stream call, completed by a
// reader thread as their answers come.
#include <grpcpp/grpcpp.h>

#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "connection.h"
#include "forkpool/queue.h"
#include "queue_internal.h"

namespace forkpool {

// The answer slot of one operation.
struct QueueOp::State {
  enum class Kind { kPut, kGet, kAck };
  Kind kind = Kind::kPut;
  std::string queue;
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  // Written once, before `done` is set; read only after.
  QueueOpResult result;

  void Complete(QueueOpResult r) {
    absl::MutexLock lock(&mu);
    if (done) return;
    result = std::move(r);
    done = true;
  }
};

bool QueueOp::Ready() const {
  if (state_ == nullptr) return true;
  absl::MutexLock lock(&state_->mu);
  return state_->done;
}

QueueOpResult QueueOp::Wait() && {
  const QueueOp& self = *this;
  return self.Wait();
}

const QueueOpResult& QueueOp::Wait() const& {
  static const QueueOpResult* const kNoOp =
      new QueueOpResult{absl::FailedPreconditionError("no queue operation was started"), {}, {}};
  if (state_ == nullptr) return *kNoOp;
  absl::MutexLock lock(&state_->mu);
  state_->mu.Await(absl::Condition(&state_->done));
  return state_->result;
}

namespace internal {

// Everything of one stream; the reader thread and the QueueStream share it.
// Thread-safe.
struct QueueStreamState {
  using Stream = grpc::ClientReaderWriter<v1::QueueStreamRequest, v1::QueueStreamResponse>;

  std::shared_ptr<const Connection> connection;
  grpc::ClientContext context;
  std::unique_ptr<Stream> stream;
  std::thread reader;

  // Serialises writes, WritesDone and Finish on `stream`.
  absl::Mutex write_mu;
  bool writes_done ABSL_GUARDED_BY(write_mu) = false;
  bool finished ABSL_GUARDED_BY(write_mu) = false;

  absl::Mutex mu;
  uint64_t next_id ABSL_GUARDED_BY(mu) = 1;
  absl::flat_hash_map<uint64_t, std::shared_ptr<QueueOp::State>> pending ABSL_GUARDED_BY(mu);
  // Set when the reader saw the end of the call: its status (OK after Close).
  bool ended ABSL_GUARDED_BY(mu) = false;
  absl::Status end_status ABSL_GUARDED_BY(mu);

  // Reads answers until the call ends, then fails what is still pending.
  void ReadLoop() {
    v1::QueueStreamResponse response;
    while (stream->Read(&response)) {
      std::shared_ptr<QueueOp::State> op;
      {
        absl::MutexLock lock(&mu);
        auto it = pending.find(response.correlation_id());
        if (it == pending.end()) continue;  // not ours: nothing to complete
        op = std::move(it->second);
        pending.erase(it);
      }
      op->Complete(ToResult(*op, response));
    }
    grpc::Status status;
    {
      absl::MutexLock lock(&write_mu);
      status = stream->Finish();
      finished = true;
    }
    absl::Status end = FromGrpcStatus(status, "Queues.Stream", *connection);
    std::vector<std::shared_ptr<QueueOp::State>> left;
    {
      absl::MutexLock lock(&mu);
      ended = true;
      end_status = end;
      for (auto& [id, op] : pending) left.push_back(std::move(op));
      pending.clear();
    }
    const absl::Status lost =
        end.ok() ? absl::UnavailableError("queue stream ended before this operation was answered")
                 : end;
    for (auto& op : left) op->Complete(QueueOpResult{lost, {}, {}});
  }

  static QueueOpResult ToResult(const QueueOp::State& op, v1::QueueStreamResponse& response) {
    QueueOpResult r;
    if (response.code() != 0) {
      r.status = absl::Status(static_cast<absl::StatusCode>(response.code()), response.message());
      return r;
    }
    switch (op.kind) {
      case QueueOp::State::Kind::kPut:
        if (response.put().full()) r.status = QueueFullError(op.queue);
        break;
      case QueueOp::State::Kind::kGet: {
        v1::QueueGetResponse* get = response.mutable_get();
        if (get->empty() || get->items_size() == 0) {
          r.status = QueueEmptyError(op.queue);
          break;
        }
        r.items.reserve(get->items_size());
        for (v1::QueueItem& item : *get->mutable_items()) {
          r.items.push_back(QueueItemFromProto(item));
        }
        break;
      }
      case QueueOp::State::Kind::kAck:
        r.unknown_leases.assign(response.ack().unknown().begin(), response.ack().unknown().end());
        break;
    }
    return r;
  }
};

}  // namespace internal

namespace {

// Fills a request's timeout: false when it must carry none.
absl::Status FillTimeout(std::optional<absl::Duration> timeout, google::protobuf::Duration* out,
                         bool* has) {
  absl::StatusOr<bool> h = internal::ToProtoTimeout(timeout, out);
  if (!h.ok()) return h.status();
  *has = *h;
  return absl::OkStatus();
}

QueueOp::State::Kind KindOf(const v1::QueueStreamRequest& request) {
  switch (request.op_case()) {
    case v1::QueueStreamRequest::kGet:
      return QueueOp::State::Kind::kGet;
    case v1::QueueStreamRequest::kAck:
      return QueueOp::State::Kind::kAck;
    default:
      return QueueOp::State::Kind::kPut;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<QueueStream>> QueueStream::Open(
    std::shared_ptr<const internal::Connection> connection) {
  auto state = std::make_shared<internal::QueueStreamState>();
  state->connection = std::move(connection);
  state->stream = state->connection->queues->Stream(&state->context);
  if (state->stream == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot open Queues.Stream to forkpoold at ", state->connection->address));
  }
  state->reader = std::thread([s = state.get()] { s->ReadLoop(); });
  return std::unique_ptr<QueueStream>(new QueueStream(std::move(state)));
}

QueueStream::QueueStream(std::shared_ptr<internal::QueueStreamState> state)
    : state_(std::move(state)) {}

QueueStream::~QueueStream() {
  state_->context.TryCancel();
  if (state_->reader.joinable()) state_->reader.join();
}

QueueOp QueueStream::Start(v1::QueueStreamRequest request, bool buffer) {
  auto op = std::make_shared<QueueOp::State>();
  op->kind = KindOf(request);
  switch (request.op_case()) {
    case v1::QueueStreamRequest::kPut:
      op->queue = request.put().queue();
      break;
    case v1::QueueStreamRequest::kGet:
      op->queue = request.get().queue();
      break;
    default:
      op->queue = request.ack().queue();
  }
  {
    absl::MutexLock lock(&state_->mu);
    if (state_->ended) {
      op->Complete(QueueOpResult{
          state_->end_status.ok()
              ? absl::FailedPreconditionError("queue stream is closed")
              : state_->end_status,
          {},
          {}});
      return QueueOp(op);
    }
    const uint64_t id = state_->next_id++;
    request.set_correlation_id(id);
    state_->pending.emplace(id, op);
  }
  bool written = false;
  {
    absl::MutexLock lock(&state_->write_mu);
    if (!state_->writes_done && !state_->finished) {
      grpc::WriteOptions options;
      if (buffer) options.set_buffer_hint();
      written = state_->stream->Write(request, options);
    }
  }
  if (!written) {
    // Never sent: answer it here (unless the reader already failed it).
    std::shared_ptr<QueueOp::State> mine;
    {
      absl::MutexLock lock(&state_->mu);
      auto it = state_->pending.find(request.correlation_id());
      if (it != state_->pending.end()) {
        mine = std::move(it->second);
        state_->pending.erase(it);
      }
    }
    if (mine != nullptr) {
      mine->Complete(QueueOpResult{
          absl::FailedPreconditionError("queue stream is closed or broken"), {}, {}});
    }
  }
  return QueueOp(op);
}

QueueOp QueueStream::StartPut(const std::string& queue, const std::string& item,
                              std::optional<absl::Duration> timeout) {
  return StartPutMany(queue, {item}, timeout);
}

QueueOp QueueStream::StartPutMany(const std::string& queue, const std::vector<std::string>& items,
                                  std::optional<absl::Duration> timeout) {
  v1::QueueStreamRequest request;
  v1::PutRequest* put = request.mutable_put();
  put->set_queue(queue);
  for (const std::string& item : items) put->add_items()->set_data(item);
  bool has = false;
  if (absl::Status s = FillTimeout(timeout, put->mutable_timeout(), &has); !s.ok()) {
    auto op = std::make_shared<QueueOp::State>();
    op->Complete(QueueOpResult{s, {}, {}});
    return QueueOp(op);
  }
  if (!has) put->clear_timeout();
  return Start(std::move(request), /*buffer=*/false);
}

QueueOp QueueStream::StartGet(const std::string& queue, int max_items,
                              std::optional<absl::Duration> timeout,
                              std::optional<absl::Duration> lease) {
  v1::QueueStreamRequest request;
  v1::QueueGetRequest* get = request.mutable_get();
  get->set_queue(queue);
  get->set_max_items(std::max(max_items, 1));
  bool has = false;
  absl::Status s = FillTimeout(timeout, get->mutable_timeout(), &has);
  if (s.ok() && !has) get->clear_timeout();
  if (s.ok() && lease.has_value()) {
    if (*lease <= absl::ZeroDuration()) {
      s = absl::InvalidArgumentError(
          absl::StrCat("lease must be positive (got ", absl::FormatDuration(*lease), ")"));
    } else {
      s = FillTimeout(lease, get->mutable_lease(), &has);
    }
  }
  if (!s.ok()) {
    auto op = std::make_shared<QueueOp::State>();
    op->Complete(QueueOpResult{s, {}, {}});
    return QueueOp(op);
  }
  return Start(std::move(request), /*buffer=*/false);
}

QueueOp QueueStream::StartAck(const std::string& queue, const std::vector<std::string>& lease_ids) {
  v1::QueueStreamRequest request;
  v1::AckRequest* ack = request.mutable_ack();
  ack->set_queue(queue);
  for (const std::string& id : lease_ids) ack->add_lease_ids(id);
  return Start(std::move(request), /*buffer=*/false);
}

std::vector<QueueOp> QueueStream::StartPuts(const std::string& queue,
                                            const std::vector<std::string>& items,
                                            std::optional<absl::Duration> timeout) {
  std::vector<QueueOp> ops;
  ops.reserve(items.size());
  v1::QueueStreamRequest request;
  v1::PutRequest* put = request.mutable_put();
  put->set_queue(queue);
  bool has = false;
  if (absl::Status s = FillTimeout(timeout, put->mutable_timeout(), &has); !s.ok()) {
    for (size_t i = 0; i < items.size(); ++i) {
      auto op = std::make_shared<QueueOp::State>();
      op->Complete(QueueOpResult{s, {}, {}});
      ops.push_back(QueueOp(op));
    }
    return ops;
  }
  if (!has) put->clear_timeout();
  put->add_items();
  for (size_t i = 0; i < items.size(); ++i) {
    put->mutable_items(0)->set_data(items[i]);
    ops.push_back(Start(request, /*buffer=*/i + 1 < items.size()));
  }
  return ops;
}

std::vector<QueueOp> QueueStream::StartGets(const std::string& queue, int count,
                                            std::optional<absl::Duration> timeout) {
  std::vector<QueueOp> ops;
  ops.reserve(std::max(count, 0));
  v1::QueueStreamRequest request;
  v1::QueueGetRequest* get = request.mutable_get();
  get->set_queue(queue);
  get->set_max_items(1);
  bool has = false;
  absl::Status s = FillTimeout(timeout, get->mutable_timeout(), &has);
  for (int i = 0; i < count; ++i) {
    if (!s.ok()) {
      auto op = std::make_shared<QueueOp::State>();
      op->Complete(QueueOpResult{s, {}, {}});
      ops.push_back(QueueOp(op));
      continue;
    }
    if (!has) get->clear_timeout();
    ops.push_back(Start(request, /*buffer=*/i + 1 < count));
  }
  return ops;
}

absl::Status QueueStream::Put(const std::string& queue, const std::string& item,
                              std::optional<absl::Duration> timeout) {
  return StartPut(queue, item, timeout).Wait().status;
}

absl::StatusOr<std::string> QueueStream::Get(const std::string& queue,
                                             std::optional<absl::Duration> timeout) {
  QueueOp op = StartGet(queue, 1, timeout);
  const QueueOpResult& r = op.Wait();
  if (!r.status.ok()) return r.status;
  if (r.items.size() != 1) {
    return absl::InternalError(
        absl::StrCat("forkpoold answered a get of 1 item with ", r.items.size(), " items"));
  }
  return r.items.front().data;
}

absl::Status QueueStream::Close() {
  {
    absl::MutexLock lock(&state_->write_mu);
    if (!state_->writes_done && !state_->finished) state_->stream->WritesDone();
    state_->writes_done = true;
  }
  if (state_->reader.joinable()) state_->reader.join();
  absl::MutexLock lock(&state_->mu);
  return state_->end_status;
}

}  // namespace forkpool
