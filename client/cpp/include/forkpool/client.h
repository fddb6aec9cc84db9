// The forkpool C++ client: connects to forkpoold over gRPC and runs tasks in its pools.
//
//   FORKPOOL_ASSIGN_OR_RETURN(auto client,
//   forkpool::Client::Connect("unix:/run/forkpool/forkpoold.sock")); absl::StatusOr<std::string>
//   out = client->pool().Apply("square", "7");  // "49"
//
// Every fallible call returns absl::Status / absl::StatusOr; nothing throws. What each
// code means is in forkpool/task_status.h.
#ifndef FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_CLIENT_H_
#define FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_CLIENT_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "forkpool/async_result.h"
#include "forkpool/pool.h"
#include "forkpool/queue.h"
#include "forkpool/task_status.h"
#include "forkpool/v1/forkpool.pb.h"

namespace forkpool {

namespace internal {
struct Connection;
}  // namespace internal

// How Connect behaves.
struct ConnectOptions {
  // How long Connect's health check may take.
  absl::Duration connect_timeout = absl::Seconds(5);
  // Deadline of calls that do not wait for tasks (Submit, Cancel, ListPools, ...).
  absl::Duration rpc_timeout = absl::Seconds(30);
  // Largest reply the client accepts (gRPC's default of 4 MiB is too small for
  // batches of results).
  int max_receive_message_bytes = 64 << 20;
  // A connection with no call open this long is closed by the client (gRPC's
  // grpc.client_idle_timeout_ms); the next call connects again. Keep it below
  // forkpoold's --idle_timeout (10 min): a connection the daemon closes first can make
  // the next call fail with UNAVAILABLE ("Broken pipe") when it comes before this
  // client has read the daemon's GOAWAY (an idle C++ client reads it within ~5 s).
  // Zero: gRPC's default (30 min).
  absl::Duration idle_timeout = absl::Minutes(5);
};

// What forkpool::Wait waits for.
enum class WaitMode {
  // Until every task has ended.
  kAll,
  // Until at least one has ended.
  kFirst,
};

// The answer of a Wait.
struct WaitOutcome {
  // True when the condition was met before the timeout.
  bool satisfied = false;
  // Ids of the tasks that have ended, and of those still pending or running, in
  // request order.
  std::vector<std::string> done;
  std::vector<std::string> not_done;
};

// A connection to one forkpoold. Thread-safe; handles made from it (Pool,
// AsyncResult) keep the connection alive after the Client is gone.
class Client {
 public:
  // Connects to `address` — "unix:/path", a bare absolute path "/path", or
  // "host:port" — and checks that a forkpoold answers there (a health check within
  // options.connect_timeout). Fails with kUnavailable (or kDeadlineExceeded) naming
  // the address when nothing answers, kInvalidArgument for an empty address.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& address,
                                                         const ConnectOptions& options = {});

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  // The address as given to Connect.
  const std::string& address() const;

  // A handle on pool `name` (not checked until used).
  Pool pool(std::string name = "default") const;

  // A handle on an existing task, e.g. one submitted by another process.
  AsyncResult Task(std::string task_id) const;

  // Every pool with its counts.
  absl::StatusOr<v1::ListPoolsResponse> ListPools() const;

  // One pool with its workers (kNotFound for an unknown name).
  absl::StatusOr<v1::PoolInfo> DescribePool(const std::string& name) const;

  // Creates a pool (kAlreadyExists for a taken name).
  absl::StatusOr<v1::PoolInfo> CreatePool(const v1::PoolSettings& settings) const;

  // Deletes a pool: its pending tasks end CANCELLED, its workers are stopped
  // (kNotFound for an unknown name).
  absl::Status DeletePool(const std::string& name) const;

  // Closes a pool to new work (multiprocessing's close): later submits and maps fail
  // with kFailedPrecondition; work already accepted runs on. Returns the pool.
  absl::StatusOr<v1::PoolInfo> ClosePool(const std::string& name) const;

  // Blocks up to `timeout` (nullopt: no limit; zero: no wait) until the closed pool has
  // no work and no workers (multiprocessing's join). Returns the pool when it has;
  // kDeadlineExceeded "pool '...' not joined after ..." when the timeout passed first
  // (nothing is stopped); kFailedPrecondition when the pool is not closed.
  absl::StatusOr<v1::PoolInfo> JoinPool(const std::string& name,
                                        std::optional<absl::Duration> timeout = std::nullopt) const;

  // Stops a pool at once (multiprocessing's terminate): pending and running tasks end
  // CANCELLED, workers are killed. Returns the pool.
  absl::StatusOr<v1::PoolInfo> TerminatePool(const std::string& name) const;

  // Creates shared queue `name` ([A-Za-z0-9_.-]{1,64}) holding at most `maxsize`
  // items (0: unbounded). kAlreadyExists for a taken name, unless `exist_ok` and the
  // existing queue has the same maxsize. Returns the queue's counters.
  absl::StatusOr<v1::QueueInfo> CreateQueue(const std::string& name, int64_t maxsize = 0,
                                            bool exist_ok = false) const;

  // A handle on shared queue `name` (not checked until used).
  Queue queue(std::string name) const;

  // Deletes a queue and its items; calls blocked in it fail with kNotFound "queue
  // 'name' was deleted while this call waited". kNotFound for an unknown name.
  absl::Status DeleteQueue(const std::string& name) const;

  // Every queue with its counters, sorted by name.
  absl::StatusOr<std::vector<v1::QueueInfo>> ListQueues() const;

  // OK when the daemon says SERVING; kUnavailable when it says otherwise or does not
  // answer.
  absl::Status Health() const;

  // Blocks up to `timeout` (nullopt: no limit; zero: no wait) until all or the first
  // of `task_ids` have ended. kNotFound when an id is unknown. An empty list is
  // satisfied at once without asking the daemon.
  absl::StatusOr<WaitOutcome> Wait(const std::vector<std::string>& task_ids, WaitMode mode,
                                   std::optional<absl::Duration> timeout = std::nullopt) const;
  // The same for AsyncResults; the ended tasks' results come back in the same call and
  // are remembered by the AsyncResults (a later Get needs no RPC).
  absl::StatusOr<WaitOutcome> Wait(const std::vector<AsyncResult>& results, WaitMode mode,
                                   std::optional<absl::Duration> timeout = std::nullopt) const;

 private:
  friend class ScopedPool;
  explicit Client(std::shared_ptr<const internal::Connection> connection);

  std::shared_ptr<const internal::Connection> connection_;
};

// A pool created for one scope, as `with multiprocessing.Pool() as pool:` — leaving
// the scope terminates the pool (its workers are killed) and deletes it. Move-only;
// thread-safe. Keeps the connection alive.
class ScopedPool {
 public:
  // Creates pool `settings.name` (kAlreadyExists for a taken name, as CreatePool).
  static absl::StatusOr<ScopedPool> Create(const Client& client, const v1::PoolSettings& settings);

  ScopedPool(ScopedPool&& other) noexcept;
  ScopedPool& operator=(ScopedPool&& other) noexcept;
  // Terminates and deletes the pool (errors ignored: it may be gone already).
  ~ScopedPool();

  const std::string& name() const { return pool_.name(); }
  // The pool, to run work in; handles outlive the scope but then name no pool.
  const Pool& pool() const { return pool_; }
  const Pool* operator->() const { return &pool_; }
  // The pool as created (defaults filled in).
  const v1::PoolInfo& created() const { return created_; }

  // As Client::ClosePool / JoinPool / TerminatePool on this pool.
  absl::StatusOr<v1::PoolInfo> Close() const;
  absl::StatusOr<v1::PoolInfo> Join(std::optional<absl::Duration> timeout = std::nullopt) const;
  absl::StatusOr<v1::PoolInfo> Terminate() const;

  // Terminates and deletes the pool now; the destructor then does nothing. Returns
  // the first error.
  absl::Status Release();

 private:
  ScopedPool(std::unique_ptr<Client> client, v1::PoolInfo created);

  std::unique_ptr<Client> client_;  // null when released or moved from
  Pool pool_;
  v1::PoolInfo created_;
};

// Waits for all or the first of `results` (see Client::Wait).
absl::StatusOr<WaitOutcome> Wait(const Client& client, const std::vector<AsyncResult>& results,
                                 WaitMode mode,
                                 std::optional<absl::Duration> timeout = std::nullopt);

}  // namespace forkpool

#endif  // FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_CLIENT_H_
