// QueueManager: the daemon's named shared queues (multiprocessing's Manager().Queue()):
// bounded FIFO queues with blocking put and get, waiters served in arrival order,
// plain (at most once) and leased (at least once, Ack) gets. An interface, so that a
// shared store (Redis lists and streams) can hold queues later; MemoryQueueManager is
// the one of a single daemon.
#ifndef FORKPOOL_SERVER_DAEMON_QUEUES_QUEUE_MANAGER_H_
#define FORKPOOL_SERVER_DAEMON_QUEUES_QUEUE_MANAGER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "forkpool/v1/forkpool.pb.h"

namespace forkpool {

// Default of QueueLimits::max_queues (--max_queues).
inline constexpr int kDefaultMaxQueues = 10000;

struct QueueLimits {
  // Most queues at once (--max_queues).
  int max_queues = kDefaultMaxQueues;
  // Largest item, in bytes.
  int64_t max_item_bytes = 4 << 20;
  // Most bytes one queue may hold (queued and leased).
  int64_t max_queue_bytes = 256 << 20;
  // Most items one get may return, and most bytes of one get's reply (below the
  // 4 MiB clients accept by default).
  int max_get_items = 10000;
  int64_t max_get_bytes = 3 << 20;
  // Longest lease.
  absl::Duration max_lease = absl::Hours(1);
};

// An item as the queue holds it.
struct StoredItem {
  v1::Payload payload;
  int32_t delivery_count = 0;
};

// Thread-safe. Waiter callbacks run without any lock of the manager, on the calling
// thread or its timer thread. Every wait runs on the monotonic clock.
class QueueManager {
 public:
  // Receives the items of a get (or an error, or an empty list when the timeout
  // passed). Returns false if the receiver is gone: plain items then go back to the
  // front of the queue, leased ones are released.
  using GetDone = std::function<bool(absl::StatusOr<std::vector<v1::QueueItem>>)>;
  // Receives the outcome of a put: OK, `full` when the timeout passed, or an error.
  using PutDone = std::function<void(absl::Status status, bool full)>;

  virtual ~QueueManager() = default;

  // Creates a queue (ALREADY_EXISTS, or OK with exist_ok and the same maxsize;
  // RESOURCE_EXHAUSTED when limits.max_queues exist). Every method that takes a
  // queue name answers INVALID_ARGUMENT for a name ValidateName refuses (and NOT_FOUND
  // for a valid one no queue has).
  virtual absl::StatusOr<v1::QueueInfo> Create(const std::string& name, int64_t maxsize,
                                               bool exist_ok) = 0;
  // Deletes a queue; its blocked getters and putters get NOT_FOUND naming it.
  virtual absl::Status Delete(const std::string& name) = 0;
  virtual std::vector<v1::QueueInfo> List() = 0;
  virtual absl::StatusOr<v1::QueueInfo> Info(const std::string& name) = 0;

  // Puts `items` in order, all or none, waiting up to `timeout` for room (InfiniteDuration: as long
  // as it takes; zero: not at all). Calls `done` exactly once. Returns a waiter id for CancelWaiter
  // (0 if `done` already ran). When `refuse_wait` is not OK and the put would have to wait, `done`
  // gets `refuse_wait` at once instead (the caller's cap on its waiters).
  virtual uint64_t Put(const std::string& name, std::vector<v1::Payload> items,
                       absl::Duration timeout, PutDone done,
                       const absl::Status& refuse_wait = absl::OkStatus()) = 0;
  // Gets up to `max_items` (0 = 1), waiting up to `timeout` for the first. With a
  // positive `lease`, items are leased until Ack or the lease ends. Calls `done`
  // exactly once, unless cancelled first. Returns a waiter id (0 if done ran).
  // `refuse_wait` as for Put.
  virtual uint64_t Get(const std::string& name, int max_items, absl::Duration timeout,
                       absl::Duration lease, GetDone done,
                       const absl::Status& refuse_wait = absl::OkStatus()) = 0;
  // Withdraws a waiting put or get (its `done` will not run).
  virtual void CancelWaiter(const std::string& name, uint64_t waiter_id) = 0;
  // Removes leased items for good; returns the lease ids no longer held.
  virtual absl::StatusOr<std::vector<std::string>> Ack(
      const std::string& name, const std::vector<std::string>& lease_ids) = 0;
  // Puts items back at the front (a reply that never reached its client), counting
  // them as requeued.
  virtual void Requeue(const std::string& name, std::vector<StoredItem> items) = 0;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_QUEUES_QUEUE_MANAGER_H_
