// PendingQueue: one pool's work waiting for a worker, in order: tasks (by id)
// and map chunks. In memory today (MemoryPendingQueue); a shared store can hold
// it later behind the same calls.
#ifndef FORKPOOL_SERVER_DAEMON_BROKER_PENDING_QUEUE_H_
#define FORKPOOL_SERVER_DAEMON_BROKER_PENDING_QUEUE_H_

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "server/daemon/broker/map_job.h"

namespace forkpool {

// An entry: a task or a chunk of a map.
struct PendingWork {
  std::string task_id;              // a task, or
  std::shared_ptr<MapChunk> chunk;  // a map chunk
};

// Thread-compatible (the broker's lock guards it).
class PendingQueue {
 public:
  virtual ~PendingQueue() = default;
  virtual void PushBack(PendingWork work) = 0;
  // For work that was already due (a retry, a lost worker's chunk).
  virtual void PushFront(PendingWork work) = 0;
  virtual std::optional<PendingWork> PopFront() = 0;
  // Removes the entries `drop` says, in order.
  virtual void RemoveIf(const std::function<bool(const PendingWork&)>& drop) = 0;
  // Removes and returns every entry.
  virtual std::vector<PendingWork> TakeAll() = 0;
  virtual bool empty() const = 0;
};

class MemoryPendingQueue : public PendingQueue {
 public:
  void PushBack(PendingWork work) override { q_.push_back(std::move(work)); }
  void PushFront(PendingWork work) override { q_.push_front(std::move(work)); }
  std::optional<PendingWork> PopFront() override {
    if (q_.empty()) return std::nullopt;
    PendingWork w = std::move(q_.front());
    q_.pop_front();
    return w;
  }
  void RemoveIf(const std::function<bool(const PendingWork&)>& drop) override {
    std::deque<PendingWork> kept;
    for (PendingWork& w : q_) {
      if (!drop(w)) kept.push_back(std::move(w));
    }
    q_.swap(kept);
  }
  std::vector<PendingWork> TakeAll() override {
    std::vector<PendingWork> all(std::make_move_iterator(q_.begin()),
                                 std::make_move_iterator(q_.end()));
    q_.clear();
    return all;
  }
  bool empty() const override { return q_.empty(); }

 private:
  std::deque<PendingWork> q_;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_BROKER_PENDING_QUEUE_H_
