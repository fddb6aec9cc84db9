// Queue and QueueStream: the daemon's named shared queues (the daemon is the
// multiprocessing Manager; a Queue is a handle like Manager().Queue()'s proxy).
//
//   FORKPOOL_RETURN_IF_ERROR(client->CreateQueue("results", /*maxsize=*/0).status());
//   forkpool::Queue q = client->queue("results");
//   FORKPOOL_RETURN_IF_ERROR(q.Put("hello"));
//   absl::StatusOr<std::string> item = q.Get(absl::Seconds(1));
//
// Timeouts: std::nullopt (or an infinite duration) waits until done, zero does not
// wait (put_nowait / get_nowait), a positive duration waits that long.
//
// Status codes, the same as the in-task SDK (TaskContext::QueuePut / QueueGet):
//   kDeadlineExceeded "queue 'q' is full"   a put found no room within its timeout
//                                           (multiprocessing's queue.Full); nothing
//                                           was put
//   kDeadlineExceeded "queue 'q' is empty"  a get found no item within its timeout
//                                           (queue.Empty)
//   kNotFound "unknown queue 'q'"           no such queue
//   kNotFound "queue 'q' was deleted while this call waited"
//   kResourceExhausted                      an item or the queue's bytes over the
//                                           daemon's limit (the message names it)
//   kInvalidArgument                        a negative timeout, a bad name
//   kUnavailable / transport kDeadlineExceeded naming the method and the address
// Tell Full/Empty apart from a transport deadline with IsQueueFull / IsQueueEmpty.
#ifndef FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_QUEUE_H_
#define FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_QUEUE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "forkpool/v1/forkpool.pb.h"

namespace forkpool {

namespace internal {
struct Connection;
struct QueueStreamState;
}  // namespace internal

class QueueStream;

// One item of a get. Items of a plain get have an empty lease_id.
struct QueueItem {
  // The item's bytes and codec ("" means text).
  std::string data;
  std::string codec;
  // Leased gets: what to Ack before the lease ends; empty for plain gets.
  std::string lease_id;
  // How many times this item has been handed out (1 the first time; more after a
  // lease ran out, or a plain get's reply never reached its client).
  int32_t delivery_count = 0;
};

// True for the "queue 'q' is full" / "queue 'q' is empty" answers of Queue and
// QueueStream (kDeadlineExceeded with that message), false for anything else — also
// for a transport deadline.
bool IsQueueFull(const absl::Status& status);
bool IsQueueEmpty(const absl::Status& status);

// A handle on the named queue of the daemon (not checked until used). Cheap to copy;
// copies share the client's connection. Thread-safe. Each call is one unary RPC; for
// many small operations use a QueueStream.
class Queue {
 public:
  Queue(std::shared_ptr<const internal::Connection> connection, std::string name);

  const std::string& name() const { return name_; }

  // Puts `item` at the back, blocking up to `timeout` for room in a bounded queue.
  // OK, or kDeadlineExceeded "queue '...' is full" (nothing put); see above.
  absl::Status Put(const std::string& item,
                   std::optional<absl::Duration> timeout = std::nullopt) const;
  // Puts `items` in order, all or none: waits up to `timeout` until there is room for
  // all of them.
  absl::Status PutMany(const std::vector<std::string>& items,
                       std::optional<absl::Duration> timeout = std::nullopt) const;

  // Takes the front item, blocking up to `timeout` for one. kDeadlineExceeded
  // "queue '...' is empty" when none came. At most once: an item whose reply never
  // reached this client (the call was cancelled) goes back to the front.
  absl::StatusOr<std::string> Get(std::optional<absl::Duration> timeout = std::nullopt) const;
  // Takes up to `max_items` (at least 1; the daemon caps one reply at 10,000 items and
  // 3 MiB), waiting up to `timeout` for the first; returns what was there then,
  // in queue order. kDeadlineExceeded "... is empty" when none came.
  absl::StatusOr<std::vector<std::string>> GetMany(
      int max_items, std::optional<absl::Duration> timeout = std::nullopt) const;
  // As GetMany, but the items are leased for `lease` (> 0): they stay the daemon's
  // until acknowledged with Ack; if the lease ends first they go back to the front and
  // are delivered again with a higher delivery_count (at least once).
  absl::StatusOr<std::vector<QueueItem>> GetLeased(
      int max_items, absl::Duration lease,
      std::optional<absl::Duration> timeout = std::nullopt) const;
  // Acknowledges leased items: they leave the queue for good. Returns the lease ids
  // the daemon no longer held (the lease had ended: the item was requeued).
  absl::StatusOr<std::vector<std::string>> Ack(const std::vector<std::string>& lease_ids) const;

  // Items queued now (leased items not counted): qsize().
  absl::StatusOr<int64_t> Size() const;
  // The queue's counters: size, leased, waiting getters and putters, bytes, requeued.
  absl::StatusOr<v1::QueueInfo> Info() const;

  // Opens a stream on this client's connection for many pipelined operations.
  absl::StatusOr<std::unique_ptr<QueueStream>> OpenStream() const;

 private:
  std::shared_ptr<const internal::Connection> connection_;
  std::string name_;
};

// The answer of one QueueStream operation.
struct QueueOpResult {
  // OK, or the operation's error (kDeadlineExceeded "... is full" / "... is empty",
  // kNotFound, ...), or the stream's error if the stream ended first.
  absl::Status status;
  // Gets: the items (empty unless status is OK).
  std::vector<QueueItem> items;
  // Acks: lease ids no longer held.
  std::vector<std::string> unknown_leases;
};

// An operation in flight on a QueueStream. Copyable; copies share the answer.
// Thread-safe.
class QueueOp {
 public:
  QueueOp() = default;
  // True once the answer came (or the stream ended).
  bool Ready() const;
  // Blocks until the answer came; returns it (valid while this QueueOp or a copy
  // lives). On a temporary (`stream->StartGet(...).Wait()`) it returns a copy.
  const QueueOpResult& Wait() const&;
  QueueOpResult Wait() &&;

  // The answer slot (opaque; defined by the library).
  struct State;

 private:
  friend class QueueStream;
  explicit QueueOp(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

// One Queues.Stream call: many puts, gets and acks (on any queues) over one
// bidirectional stream, each answered as it completes, so a caller can keep many in
// flight (pipelining) and a blocked get does not hold up the others. Answers may
// come in another order than the requests (a get waits, later puts do not).
//
// Thread-safe: Start* may be called from several threads (writes are serialised); a
// reader thread owned by the stream completes the operations. Operations started on
// one thread reach the daemon in that order.
class QueueStream {
 public:
  // Opens the stream (usually through Queue::OpenStream).
  static absl::StatusOr<std::unique_ptr<QueueStream>> Open(
      std::shared_ptr<const internal::Connection> connection);

  QueueStream(const QueueStream&) = delete;
  QueueStream& operator=(const QueueStream&) = delete;
  // Cancels the stream: operations still waiting end kCancelled (items the daemon had
  // handed to this stream but not yet sent go back to their queues). Joins the reader.
  ~QueueStream();

  // Start an operation; the returned QueueOp completes when the daemon answers.
  // `timeout` as for Queue. Never blocks on the daemon's answer, but may block
  // briefly on gRPC flow control when very many requests are unsent.
  QueueOp StartPut(const std::string& queue, const std::string& item,
                   std::optional<absl::Duration> timeout = std::nullopt);
  QueueOp StartPutMany(const std::string& queue, const std::vector<std::string>& items,
                       std::optional<absl::Duration> timeout = std::nullopt);
  QueueOp StartGet(const std::string& queue, int max_items = 1,
                   std::optional<absl::Duration> timeout = std::nullopt,
                   std::optional<absl::Duration> lease = std::nullopt);
  QueueOp StartAck(const std::string& queue, const std::vector<std::string>& lease_ids);

  // Starts one put per item, sent in one write batch (gRPC coalesces them); the ops
  // in item order.
  std::vector<QueueOp> StartPuts(const std::string& queue, const std::vector<std::string>& items,
                                 std::optional<absl::Duration> timeout = std::nullopt);
  // Starts `count` single-item gets in one write batch.
  std::vector<QueueOp> StartGets(const std::string& queue, int count,
                                 std::optional<absl::Duration> timeout = std::nullopt);

  // Blocking conveniences: start one operation and wait for it.
  absl::Status Put(const std::string& queue, const std::string& item,
                   std::optional<absl::Duration> timeout = std::nullopt);
  absl::StatusOr<std::string> Get(const std::string& queue,
                                  std::optional<absl::Duration> timeout = std::nullopt);

  // Half-closes the stream and waits until the daemon answered every operation
  // (blocked gets without a timeout keep it waiting) and ended the call. Returns the
  // call's status. Later Start* calls fail with kFailedPrecondition.
  absl::Status Close();

 private:
  explicit QueueStream(std::shared_ptr<internal::QueueStreamState> state);
  QueueOp Start(v1::QueueStreamRequest request, bool buffer);

  std::shared_ptr<internal::QueueStreamState> state_;
};

}  // namespace forkpool

#endif  // FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_QUEUE_H_
