// MemoryQueueManager: the QueueManager of one daemon, in its memory, with its waits
// and leases as timers on a Clock (the IoLoop).
#ifndef FORKPOOL_SERVER_DAEMON_QUEUES_MEMORY_QUEUE_MANAGER_H_
#define FORKPOOL_SERVER_DAEMON_QUEUES_MEMORY_QUEUE_MANAGER_H_

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
#include "server/daemon/broker/memory_budget.h"
#include "server/daemon/net/clock.h"
#include "server/daemon/queues/queue_manager.h"

namespace forkpool {

// Thread-safe. Waiter callbacks run without the lock, on the calling thread or the
// clock's timer thread (timeouts, leases).
class MemoryQueueManager : public QueueManager {
 public:
  // `budget` (shared with the broker; null: unbounded) counts every queue's
  // items and waiting puts.
  MemoryQueueManager(Clock* clock, QueueLimits limits, MemoryBudget* budget = nullptr);
  ~MemoryQueueManager() override;
  absl::StatusOr<v1::QueueInfo> Create(const std::string& name, int64_t maxsize,
                                       bool exist_ok) override;
  absl::Status Delete(const std::string& name) override;
  std::vector<v1::QueueInfo> List() override;
  absl::StatusOr<v1::QueueInfo> Info(const std::string& name) override;
  uint64_t Put(const std::string& name, std::vector<v1::Payload> items, absl::Duration timeout,
               PutDone done, const absl::Status& refuse_wait = absl::OkStatus()) override;
  uint64_t Get(const std::string& name, int max_items, absl::Duration timeout, absl::Duration lease,
               GetDone done, const absl::Status& refuse_wait = absl::OkStatus()) override;
  void CancelWaiter(const std::string& name, uint64_t waiter_id) override;
  absl::StatusOr<std::vector<std::string>> Ack(const std::string& name,
                                               const std::vector<std::string>& lease_ids) override;
  void Requeue(const std::string& name, std::vector<StoredItem> items) override;

 private:
  struct Getter {
    uint64_t id;
    int max_items;
    absl::Duration lease;
    GetDone done;
    Clock::TimerId timer = 0;
  };
  struct Putter {
    uint64_t id;
    std::vector<v1::Payload> items;
    int64_t bytes;
    PutDone done;
    Clock::TimerId timer = 0;
  };
  struct Lease {
    StoredItem item;
    Clock::TimerId timer = 0;
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
    int64_t charged = 0;  // what the budget counts for it
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
  // Brings the budget up to date with the queue's bytes.
  void SyncBudgetLocked(Queue& q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void Run(Closures& closures);

  Clock* const loop_;  // its timers (the IoLoop; a FakeClock in tests)
  const QueueLimits limits_;
  MemoryBudget own_budget_{0};
  MemoryBudget* const budget_;
  IdGenerator lease_ids_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Queue>> queues_ ABSL_GUARDED_BY(mu_);
  uint64_t next_waiter_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_QUEUES_MEMORY_QUEUE_MANAGER_H_
