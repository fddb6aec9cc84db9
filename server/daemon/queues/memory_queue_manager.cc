// QueueManager implementation.
#include "server/daemon/queues/memory_queue_manager.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/daemon/executor/pool_settings.h"

namespace forkpool {

MemoryQueueManager::MemoryQueueManager(Clock* loop, QueueLimits limits, MemoryBudget* budget)
    : loop_(loop), limits_(limits), budget_(budget != nullptr ? budget : &own_budget_) {}

void MemoryQueueManager::SyncBudgetLocked(Queue& q) {
  // Queued and leased items, and the items of puts waiting for room.
  int64_t now = q.bytes;
  for (const Putter& p : q.putters) now += p.bytes;
  budget_->Adjust(now - q.charged);
  q.charged = now;
}

MemoryQueueManager::~MemoryQueueManager() {
  absl::MutexLock lock(&mu_);
  for (auto& [name, q] : queues_) {
    for (auto& g : q->getters) loop_->CancelTimer(g.timer);
    for (auto& p : q->putters) loop_->CancelTimer(p.timer);
    for (auto& [id, lease] : q->leased) loop_->CancelTimer(lease.timer);
  }
}

void MemoryQueueManager::Run(Closures& closures) {
  for (auto& fn : closures) fn();
  closures.clear();
}

MemoryQueueManager::Queue* MemoryQueueManager::FindLocked(const std::string& name) {
  auto it = queues_.find(name);
  return it == queues_.end() ? nullptr : it->second.get();
}

absl::Status MemoryQueueManager::MissingLocked(const std::string& name) const {
  return absl::NotFoundError(absl::StrCat("unknown queue '", name, "'"));
}

v1::QueueInfo MemoryQueueManager::InfoLocked(const Queue& q) const {
  v1::QueueInfo info;
  info.set_name(q.name);
  info.set_maxsize(q.maxsize);
  info.set_size(static_cast<int64_t>(q.items.size()));
  info.set_leased(static_cast<int64_t>(q.leased.size()));
  info.set_waiting_getters(static_cast<int64_t>(q.getters.size()));
  info.set_waiting_putters(static_cast<int64_t>(q.putters.size()));
  info.set_bytes(q.bytes);
  info.set_requeued(q.requeued);
  return info;
}

absl::StatusOr<v1::QueueInfo> MemoryQueueManager::Create(const std::string& name, int64_t maxsize,
                                                         bool exist_ok) {
  if (absl::Status s = ValidateName("queue", name); !s.ok()) return s;
  if (maxsize < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("queue '", name, "': maxsize must be 0 (unbounded) or more, not ", maxsize));
  }
  absl::MutexLock lock(&mu_);
  if (Queue* q = FindLocked(name)) {
    if (exist_ok && q->maxsize == maxsize) return InfoLocked(*q);
    return absl::AlreadyExistsError(
        absl::StrCat("queue '", name, "' already exists", exist_ok ? " with another maxsize" : ""));
  }
  if (queues_.size() >= static_cast<size_t>(std::max(0, limits_.max_queues))) {
    return absl::ResourceExhaustedError(
        absl::StrCat("forkpoold holds ", queues_.size(), " queues, the most it allows (",
                     "--max_queues=", limits_.max_queues, "); delete one first"));
  }
  auto q = std::make_unique<Queue>();
  q->name = name;
  q->maxsize = maxsize;
  v1::QueueInfo info = InfoLocked(*q);
  queues_.emplace(name, std::move(q));
  return info;
}

absl::Status MemoryQueueManager::Delete(const std::string& name) {
  FORKPOOL_RETURN_IF_ERROR(ValidateName("queue", name));
  Closures out;
  {
    absl::MutexLock lock(&mu_);
    auto it = queues_.find(name);
    if (it == queues_.end()) return MissingLocked(name);
    Queue& q = *it->second;
    const absl::Status gone =
        absl::NotFoundError(absl::StrCat("queue '", name, "' was deleted while this call waited"));
    for (Getter& g : q.getters) {
      loop_->CancelTimer(g.timer);
      out.push_back([done = std::move(g.done), gone] { done(gone); });
    }
    for (Putter& p : q.putters) {
      loop_->CancelTimer(p.timer);
      out.push_back([done = std::move(p.done), gone] { done(gone, false); });
    }
    for (auto& [id, lease] : q.leased) loop_->CancelTimer(lease.timer);
    budget_->Release(static_cast<uint64_t>(q.charged));
    queues_.erase(it);
  }
  Run(out);
  return absl::OkStatus();
}

std::vector<v1::QueueInfo> MemoryQueueManager::List() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::QueueInfo> out;
  for (const auto& [name, q] : queues_) out.push_back(InfoLocked(*q));
  return out;
}

absl::StatusOr<v1::QueueInfo> MemoryQueueManager::Info(const std::string& name) {
  FORKPOOL_RETURN_IF_ERROR(ValidateName("queue", name));
  absl::MutexLock lock(&mu_);
  Queue* q = FindLocked(name);
  if (q == nullptr) return MissingLocked(name);
  return InfoLocked(*q);
}

bool MemoryQueueManager::HasRoomLocked(const Queue& q, size_t count) const {
  return q.maxsize == 0 || static_cast<int64_t>(q.items.size() + count) <= q.maxsize;
}

uint64_t MemoryQueueManager::Put(const std::string& name, std::vector<v1::Payload> items,
                                 absl::Duration timeout, PutDone done,
                                 const absl::Status& refuse_wait) {
  Closures out;
  uint64_t id = 0;
  absl::Status error = ValidateName("queue", name);
  {
    absl::MutexLock lock(&mu_);
    Queue* q = error.ok() ? FindLocked(name) : nullptr;
    int64_t bytes = 0;
    if (!error.ok()) {
      // A name no queue can have.
    } else if (q == nullptr) {
      error = MissingLocked(name);
    } else if (items.empty()) {
      error = absl::InvalidArgumentError(absl::StrCat("put to queue '", name, "' has no items"));
    } else if (q->maxsize > 0 && static_cast<int64_t>(items.size()) > q->maxsize) {
      error = absl::InvalidArgumentError(absl::StrCat("cannot put ", items.size(),
                                                      " items at once into queue '", name,
                                                      "' of maxsize ", q->maxsize));
    } else {
      for (const v1::Payload& p : items) {
        const int64_t size = static_cast<int64_t>(p.ByteSizeLong());
        if (size > limits_.max_item_bytes) {
          error = absl::ResourceExhaustedError(
              absl::StrCat("item of ", size, " bytes exceeds the queue item limit of ",
                           limits_.max_item_bytes, " bytes"));
          break;
        }
        bytes += size;
      }
      if (error.ok() && bytes > limits_.max_queue_bytes) {
        error = absl::ResourceExhaustedError(absl::StrCat("put of ", bytes,
                                                          " bytes exceeds the queue byte limit of ",
                                                          limits_.max_queue_bytes, " bytes"));
      }
      if (error.ok()) error = budget_->Check(static_cast<uint64_t>(bytes), "a queue put");
    }
    if (!error.ok()) {
      out.push_back([done = std::move(done), error] { done(error, false); });
    } else if (q->putters.empty() && HasRoomLocked(*q, items.size()) &&
               q->bytes + bytes <= limits_.max_queue_bytes) {
      for (v1::Payload& p : items) q->items.push_back(StoredItem{std::move(p), 0});
      q->bytes += bytes;
      out.push_back([done = std::move(done)] { done(absl::OkStatus(), false); });
      ServeLocked(*q, &out);
    } else if (timeout <= absl::ZeroDuration()) {
      out.push_back([done = std::move(done)] { done(absl::OkStatus(), /*full=*/true); });
    } else if (!refuse_wait.ok()) {
      out.push_back([done = std::move(done), refuse_wait] { done(refuse_wait, false); });
    } else {
      id = next_waiter_++;
      Putter p{id, std::move(items), bytes, std::move(done)};
      if (timeout != absl::InfiniteDuration()) {
        p.timer = loop_->AddTimerAfter(timeout, [this, name, id] { OnWaitTimeout(name, id); });
      }
      q->putters.push_back(std::move(p));
      SyncBudgetLocked(*q);
    }
  }
  Run(out);
  return id;
}

uint64_t MemoryQueueManager::Get(const std::string& name, int max_items, absl::Duration timeout,
                                 absl::Duration lease, GetDone done,
                                 const absl::Status& refuse_wait) {
  Closures out;
  uint64_t id = 0;
  absl::Status error = ValidateName("queue", name);
  {
    absl::MutexLock lock(&mu_);
    Queue* q = error.ok() ? FindLocked(name) : nullptr;
    if (!error.ok()) {
      // A name no queue can have.
    } else if (q == nullptr) {
      error = MissingLocked(name);
    } else if (max_items < 0) {
      error = absl::InvalidArgumentError(
          absl::StrCat("max_items must be 0 (one) or more, not ", max_items));
    } else if (lease < absl::ZeroDuration() || lease > limits_.max_lease) {
      error = absl::InvalidArgumentError(
          absl::StrCat("lease must be 0 to ", absl::FormatDuration(limits_.max_lease)));
    }
    max_items = std::clamp(max_items, 1, limits_.max_get_items);
    if (!error.ok()) {
      out.push_back([done = std::move(done), error] { done(error); });
    } else if (q->getters.empty() && !q->items.empty()) {
      std::vector<StoredItem> plain;
      std::vector<std::string> lease_ids;
      std::vector<v1::QueueItem> items = TakeLocked(*q, max_items, lease, &plain, &lease_ids);
      out.push_back(DeliverClosure(name, std::move(done), std::move(items), std::move(plain),
                                   std::move(lease_ids)));
      ServeLocked(*q, &out);
    } else if (timeout <= absl::ZeroDuration()) {
      out.push_back([done = std::move(done)] { done(std::vector<v1::QueueItem>()); });
    } else if (!refuse_wait.ok()) {
      out.push_back([done = std::move(done), refuse_wait] { done(refuse_wait); });
    } else {
      id = next_waiter_++;
      Getter g{id, max_items, lease, std::move(done)};
      if (timeout != absl::InfiniteDuration()) {
        g.timer = loop_->AddTimerAfter(timeout, [this, name, id] { OnWaitTimeout(name, id); });
      }
      q->getters.push_back(std::move(g));
    }
  }
  Run(out);
  return id;
}

std::vector<v1::QueueItem> MemoryQueueManager::TakeLocked(Queue& q, int max_items,
                                                          absl::Duration lease,
                                                          std::vector<StoredItem>* plain,
                                                          std::vector<std::string>* lease_ids) {
  std::vector<v1::QueueItem> items;
  int64_t reply_bytes = 0;
  while (!q.items.empty() && static_cast<int>(items.size()) < max_items) {
    StoredItem& front = q.items.front();
    const int64_t size = static_cast<int64_t>(front.payload.ByteSizeLong());
    if (!items.empty() && reply_bytes + size > limits_.max_get_bytes) break;
    reply_bytes += size;
    StoredItem item = std::move(front);
    q.items.pop_front();
    ++item.delivery_count;
    v1::QueueItem out;
    *out.mutable_payload() = item.payload;
    out.set_delivery_count(item.delivery_count);
    if (lease > absl::ZeroDuration()) {
      const std::string lease_id = lease_ids_.Next("l");
      out.set_lease_id(lease_id);
      const std::string name = q.name;
      Lease l{std::move(item)};
      l.timer =
          loop_->AddTimerAfter(lease, [this, name, lease_id] { OnLeaseExpired(name, lease_id); });
      q.leased.emplace(lease_id, std::move(l));
      lease_ids->push_back(lease_id);
    } else {
      q.bytes -= size;
      plain->push_back(std::move(item));
    }
    items.push_back(std::move(out));
  }
  return items;
}

std::function<void()> MemoryQueueManager::DeliverClosure(
    const std::string& queue, GetDone done, absl::StatusOr<std::vector<v1::QueueItem>> items,
    std::vector<StoredItem> plain, std::vector<std::string> lease_ids) {
  return [this, queue, done = std::move(done), items = std::move(items), plain = std::move(plain),
          lease_ids = std::move(lease_ids)]() mutable {
    if (done(std::move(items))) return;
    // The receiver left before its reply was handed over: nothing is lost.
    if (!plain.empty()) Requeue(queue, std::move(plain));
    if (!lease_ids.empty()) ReleaseLeases(queue, lease_ids);
  };
}

void MemoryQueueManager::ServeLocked(Queue& q, Closures* out) {
  bool progress = true;
  while (progress) {
    progress = false;
    while (!q.getters.empty() && !q.items.empty()) {
      Getter g = std::move(q.getters.front());
      q.getters.pop_front();
      loop_->CancelTimer(g.timer);
      std::vector<StoredItem> plain;
      std::vector<std::string> lease_ids;
      std::vector<v1::QueueItem> items = TakeLocked(q, g.max_items, g.lease, &plain, &lease_ids);
      out->push_back(DeliverClosure(q.name, std::move(g.done), std::move(items), std::move(plain),
                                    std::move(lease_ids)));
      progress = true;
    }
    while (!q.putters.empty() && HasRoomLocked(q, q.putters.front().items.size()) &&
           q.bytes + q.putters.front().bytes <= limits_.max_queue_bytes) {
      Putter p = std::move(q.putters.front());
      q.putters.pop_front();
      loop_->CancelTimer(p.timer);
      for (v1::Payload& item : p.items) q.items.push_back(StoredItem{std::move(item), 0});
      q.bytes += p.bytes;
      out->push_back([done = std::move(p.done)] { done(absl::OkStatus(), false); });
      progress = true;
    }
  }
  SyncBudgetLocked(q);
}

void MemoryQueueManager::Requeue(const std::string& name, std::vector<StoredItem> items) {
  Closures out;
  {
    absl::MutexLock lock(&mu_);
    Queue* q = FindLocked(name);
    if (q == nullptr) return;  // deleted meanwhile: the items go with it
    for (auto it = items.rbegin(); it != items.rend(); ++it) {
      q->bytes += static_cast<int64_t>(it->payload.ByteSizeLong());
      q->items.push_front(std::move(*it));
      ++q->requeued;
    }
    ServeLocked(*q, &out);
  }
  Run(out);
}

void MemoryQueueManager::ReleaseLeases(const std::string& name,
                                       const std::vector<std::string>& ids) {
  Closures out;
  {
    absl::MutexLock lock(&mu_);
    Queue* q = FindLocked(name);
    if (q == nullptr) return;
    // Back in the order they were taken.
    for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
      auto l = q->leased.find(*it);
      if (l == q->leased.end()) continue;
      loop_->CancelTimer(l->second.timer);
      q->items.push_front(std::move(l->second.item));
      q->leased.erase(l);
      ++q->requeued;
    }
    ServeLocked(*q, &out);
  }
  Run(out);
}

void MemoryQueueManager::OnLeaseExpired(const std::string& name, const std::string& lease_id) {
  Closures out;
  {
    absl::MutexLock lock(&mu_);
    Queue* q = FindLocked(name);
    if (q == nullptr) return;
    auto l = q->leased.find(lease_id);
    if (l == q->leased.end()) return;
    q->items.push_front(std::move(l->second.item));
    q->leased.erase(l);
    ++q->requeued;
    ServeLocked(*q, &out);
  }
  Run(out);
}

absl::StatusOr<std::vector<std::string>> MemoryQueueManager::Ack(
    const std::string& name, const std::vector<std::string>& lease_ids) {
  FORKPOOL_RETURN_IF_ERROR(ValidateName("queue", name));
  absl::MutexLock lock(&mu_);
  Queue* q = FindLocked(name);
  if (q == nullptr) return MissingLocked(name);
  std::vector<std::string> unknown;
  for (const std::string& id : lease_ids) {
    auto l = q->leased.find(id);
    if (l == q->leased.end()) {
      unknown.push_back(id);
      continue;
    }
    loop_->CancelTimer(l->second.timer);
    q->bytes -= static_cast<int64_t>(l->second.item.payload.ByteSizeLong());
    q->leased.erase(l);
  }
  SyncBudgetLocked(*q);
  return unknown;
}

void MemoryQueueManager::CancelWaiter(const std::string& name, uint64_t waiter_id) {
  if (waiter_id == 0) return;
  Closures out;
  {
    absl::MutexLock lock(&mu_);
    Queue* q = FindLocked(name);
    if (q == nullptr) return;
    for (auto it = q->getters.begin(); it != q->getters.end(); ++it) {
      if (it->id == waiter_id) {
        loop_->CancelTimer(it->timer);
        q->getters.erase(it);
        return;
      }
    }
    for (auto it = q->putters.begin(); it != q->putters.end(); ++it) {
      if (it->id == waiter_id) {
        loop_->CancelTimer(it->timer);
        q->putters.erase(it);
        ServeLocked(*q, &out);  // a putter behind it may fit now
        break;
      }
    }
  }
  Run(out);
}

void MemoryQueueManager::OnWaitTimeout(const std::string& name, uint64_t waiter_id) {
  std::function<void()> fire;
  Closures out;
  {
    absl::MutexLock lock(&mu_);
    Queue* q = FindLocked(name);
    if (q == nullptr) return;
    for (auto it = q->getters.begin(); it != q->getters.end(); ++it) {
      if (it->id == waiter_id) {
        fire = [done = std::move(it->done)] { done(std::vector<v1::QueueItem>()); };
        q->getters.erase(it);
        break;
      }
    }
    if (!fire) {
      for (auto it = q->putters.begin(); it != q->putters.end(); ++it) {
        if (it->id == waiter_id) {
          fire = [done = std::move(it->done)] { done(absl::OkStatus(), /*full=*/true); };
          q->putters.erase(it);
          ServeLocked(*q, &out);
          break;
        }
      }
    }
  }
  if (fire) fire();
  Run(out);
}

}  // namespace forkpool
