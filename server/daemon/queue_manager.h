// QueueManager: the daemon's named shared queues (multiprocessing's Manager().Queue()):
// bounded FIFO queues with blocking put and get, waiters served in arrival order,
// plain (at most once) and leased (at least once, Ack) gets.
#ifndef FORKPOOL_SERVER_DAEMON_QUEUE_MANAGER_H_
#define FORKPOOL_SERVER_DAEMON_QUEUE_MANAGER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/ids.h"
#include "forkpool/v1/forkpool.pb.h"
#include "server/daemon/io_loop.h"

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

// Thread-safe. Waiter callbacks run without the lock, on the calling thread or the
// IoLoop's thread (timeouts, leases).
class QueueManager {
 public:
  // Receives the items of a get (or an error, or an empty list when the timeout
  // passed). Returns false if the receiver is gone: plain items then go back to the
  // front of the queue, leased ones are released.
  using GetDone = std::function<bool(absl::StatusOr<std::vector<v1::QueueItem>>)>;
  // Receives the outcome of a put: OK, `full` when the timeout passed, or an error.
  using PutDone = std::function<void(absl::Status status, bool full)>;

  QueueManager(IoLoop* loop, QueueLimits limits);
  ~QueueManager();

  // Creates a queue (ALREADY_EXISTS, or OK with exist_ok and the same maxsize;
  // RESOURCE_EXHAUSTED when limits.max_queues exist). Every method that takes a
  // queue name answers INVALID_ARGUMENT for a name ValidateName refuses (and NOT_FOUND
  // for a valid one no queue has).
  absl::StatusOr<v1::QueueInfo> Create(const std::string& name, int64_t maxsize, bool exist_ok);
  // Deletes a queue; its blocked getters and putters get NOT_FOUND naming it.
  absl::Status Delete(const std::string& name);
  std::vector<v1::QueueInfo> List();
  absl::StatusOr<v1::QueueInfo> Info(const std::string& name);

  // Puts `items` in order, all or none, waiting until `deadline` for room. Calls
  // `done` exactly once. Returns a waiter id for CancelWaiter (0 if `done` already ran).
  // When `refuse_wait` is not OK and the put would have to wait, `done` gets
  // `refuse_wait` at once instead (the caller's cap on its waiters).
  uint64_t Put(const std::string& name, std::vector<v1::Payload> items, absl::Time deadline,
               PutDone done, const absl::Status& refuse_wait = absl::OkStatus());
  // Gets up to `max_items` (0 = 1), waiting until `deadline` for the first. With a
  // positive `lease`, items are leased until Ack or the lease ends. Calls `done`
  // exactly once, unless cancelled first. Returns a waiter id (0 if done ran).
  // `refuse_wait` as for Put.
  uint64_t Get(const std::string& name, int max_items, absl::Time deadline, absl::Duration lease,
               GetDone done, const absl::Status& refuse_wait = absl::OkStatus());
  // Withdraws a waiting put or get (its `done` will not run).
  void CancelWaiter(const std::string& name, uint64_t waiter_id);
  // Removes leased items for good; returns the lease ids no longer held.
  absl::StatusOr<std::vector<std::string>> Ack(const std::string& name,
                                               const std::vector<std::string>& lease_ids);
  // Puts items back at the front (a reply that never reached its client), counting
  // them as requeued.
  void Requeue(const std::string& name, std::vector<StoredItem> items);

 private:
  struct Getter {
    uint64_t id;
    int max_items;
    absl::Duration lease;
    GetDone done;
    IoLoop::TimerId timer = 0;
  };
  struct Putter {
    uint64_t id;
    std::vector<v1::Payload> items;
    int64_t bytes;
    PutDone done;
    IoLoop::TimerId timer = 0;
  };
  struct Lease {
    StoredItem item;
    IoLoop::TimerId timer = 0;
  };
  struct Queue {
    std::string name;
    int64_t maxsize = 0;
    std::deque<StoredItem> items;
    int64_t bytes = 0;  // queued and leased
    std::map<std::string, Lease> leased;
    std::deque<Getter> getters;
    std::deque<Putter> putters;
    int64_t requeued = 0;
  };
  using Closures = std::vector<std::function<void()>>;

  Queue* FindLocked(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status MissingLocked(const std::string& name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::QueueInfo InfoLocked(const Queue& q) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasRoomLocked(const Queue& q, size_t count) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands items to waiting getters and room to waiting putters, in arrival order,
  // until neither can progress; the callbacks go into `out`.
  void ServeLocked(Queue& q, Closures* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes up to `max_items` from the front for one get (leasing them if asked).
  std::vector<v1::QueueItem> TakeLocked(Queue& q, int max_items, absl::Duration lease,
                                        std::vector<StoredItem>* plain,
                                        std::vector<std::string>* lease_ids)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The closure that delivers `items` to a getter and puts them back if it is gone.
  std::function<void()> DeliverClosure(const std::string& queue, GetDone done,
                                       absl::StatusOr<std::vector<v1::QueueItem>> items,
                                       std::vector<StoredItem> plain,
                                       std::vector<std::string> lease_ids);
  void ReleaseLeases(const std::string& queue, const std::vector<std::string>& lease_ids);
  void OnLeaseExpired(const std::string& queue, const std::string& lease_id);
  void OnWaitTimeout(const std::string& queue, uint64_t waiter_id);
  static void Run(Closures& closures);

  IoLoop* const loop_;
  const QueueLimits limits_;
  IdGenerator lease_ids_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Queue>> queues_ ABSL_GUARDED_BY(mu_);
  uint64_t next_waiter_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_QUEUE_MANAGER_H_
