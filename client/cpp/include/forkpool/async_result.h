// AsyncResult: a handle on one submitted task, in the shape of multiprocessing's
// AsyncResult (get / wait / ready / successful), plus cancel and the full result.
#ifndef FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_ASYNC_RESULT_H_
#define FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_ASYNC_RESULT_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "forkpool/v1/forkpool.pb.h"

namespace forkpool {

namespace internal {
struct Connection;
struct ResultCache;
}  // namespace internal

// A task accepted by the daemon, named by its id. Obtained from Pool::ApplyAsync,
// Pool::SubmitMany or Client::Task. Copies share what they have learnt: once one copy
// has seen the task end, every copy answers from that without another RPC (so the
// answer survives the daemon's result TTL).
//
// Timeouts follow the API rules: std::nullopt waits until the task ends, a zero
// duration does not wait, a negative one is kInvalidArgument. A timeout never cancels
// the task: like multiprocessing's TimeoutError, it keeps running.
//
// Thread-safe. Blocking calls block the calling thread only.
class AsyncResult {
 public:
  // A handle on task `task_id` through `connection` (see Client::Task).
  AsyncResult(std::shared_ptr<const internal::Connection> connection, std::string task_id);

  AsyncResult(const AsyncResult&) = default;
  AsyncResult& operator=(const AsyncResult&) = default;
  AsyncResult(AsyncResult&&) = default;
  AsyncResult& operator=(AsyncResult&&) = default;
  ~AsyncResult();

  // The task's id ("t-<daemon>-<n>").
  const std::string& id() const { return task_id_; }

  // Blocks up to `timeout` for the task to end. Returns its output when it SUCCEEDED;
  // the task's failure as a status (see task_status.h) when it ended otherwise;
  // kDeadlineExceeded "task ... not ready after ..." (no task payload) when the
  // timeout passed first; the RPC's error (kNotFound for an unknown or expired id, ...).
  absl::StatusOr<std::string> Get(std::optional<absl::Duration> timeout = std::nullopt) const;

  // Blocks up to `timeout` for the task to end; true when it has ended.
  absl::StatusOr<bool> Wait(std::optional<absl::Duration> timeout = std::nullopt) const;

  // True when the task has ended (does not wait).
  absl::StatusOr<bool> Ready() const;

  // True when the task SUCCEEDED, false when it ended otherwise; kFailedPrecondition
  // when it has not ended yet (multiprocessing raises ValueError there).
  absl::StatusOr<bool> Successful() const;

  // Records the task's terminal result learnt by another call (forkpool::Wait asks
  // for the results of the tasks it waited for), so Get answers without an RPC.
  // Ignored for a result of another task or one that has not ended.
  void Remember(const v1::TaskResult& result) const;

  // Asks the daemon to cancel the task: a queued task is dropped, a running one's
  // worker is killed. Returns true when this call cancelled it, false when it had
  // already ended.
  absl::StatusOr<bool> Cancel() const;

  // The task's full result after waiting up to `timeout` (default: not at all); its
  // state is PENDING or RUNNING when it has not ended.
  absl::StatusOr<v1::TaskResult> Result(
      std::optional<absl::Duration> timeout = absl::ZeroDuration()) const;

 private:
  // Asks the daemon (unless the task's end is already known) and records the answer.
  absl::StatusOr<v1::TaskResult> Fetch(std::optional<absl::Duration> timeout) const;

  std::shared_ptr<const internal::Connection> connection_;
  std::string task_id_;
  std::shared_ptr<internal::ResultCache> cache_;
};

}  // namespace forkpool

#endif  // FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_ASYNC_RESULT_H_
