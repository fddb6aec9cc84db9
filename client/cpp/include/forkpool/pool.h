// Pool: a handle on one named pool of the daemon; runs and submits tasks in it.
#ifndef FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_POOL_H_
#define FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_POOL_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "forkpool/async_result.h"
#include "forkpool/codec.h"
#include "forkpool/map_results.h"
#include "forkpool/v1/forkpool.pb.h"

namespace forkpool {

namespace internal {
struct Connection;
}  // namespace internal

// Options of one task (or of every task of a SubmitMany). Unset fields take the
// pool's defaults.
struct ApplyOptions {
  // Hard run-time limit: the worker is killed and the task ends TIMED_OUT.
  std::optional<absl::Duration> time_limit;
  // Soft run-time limit: the task is told and may stop by itself.
  std::optional<absl::Duration> soft_time_limit;
  // A task not started this long after submission ends EXPIRED.
  std::optional<absl::Duration> queue_deadline;
  // Retries on worker loss or time-out (and on error with retry_on_error).
  int max_retries = 0;
  bool retry_on_error = false;
  // Codec name of the input ("" means "text"); the daemon never decodes it.
  std::string codec;
  // Idempotency key: a repeat with the same key and the same task returns the first
  // task and runs nothing. SubmitMany gives item i the key "<request_id>/<i>".
  std::string request_id;
  // Apply only: give up after this long (the RPC's deadline). The daemon then cancels
  // the task, and Apply returns kDeadlineExceeded. Unset: wait until the task ends.
  std::optional<absl::Duration> apply_timeout;
};

// A named pool. Cheap to copy; copies share the client's connection, which stays open
// as long as any handle (Pool, AsyncResult) or the Client lives. Thread-safe.
class Pool {
 public:
  Pool(std::shared_ptr<const internal::Connection> connection, std::string name);

  // The pool's name.
  const std::string& name() const { return name_; }

  // Runs `function` on `input` and blocks until it ends. Returns the output when the
  // task SUCCEEDED, the task's failure (task_status.h) when it ended otherwise, and
  // the RPC's error when the daemon refused it (kNotFound for an unknown pool or
  // function, ...). The task is tied to the call: if the call is abandoned (the
  // apply_timeout passes), the daemon cancels it.
  absl::StatusOr<std::string> Apply(const std::string& function, const std::string& input,
                                    const ApplyOptions& options = {}) const;

  // As Apply, but a task that ran and failed is data, not an error: returns its full
  // result in every terminal state. Non-OK only for RPC errors.
  absl::StatusOr<v1::TaskResult> ApplyResult(const std::string& function,
                                             const std::string& input,
                                             const ApplyOptions& options = {}) const;

  // Submits one detached task and returns at once with its handle. With a request_id,
  // a repeat returns the same task.
  absl::StatusOr<AsyncResult> ApplyAsync(const std::string& function, const std::string& input,
                                         const ApplyOptions& options = {}) const;

  // Submits one task per input, in as few SubmitMany RPCs as fit under ~3 MiB each.
  // Handles come back in input order. Each RPC is all-or-none; when a later one fails,
  // the tasks of earlier ones stay accepted (give a request_id to make a retry safe).
  absl::StatusOr<std::vector<AsyncResult>> SubmitMany(const std::string& function,
                                                      const std::vector<std::string>& inputs,
                                                      const ApplyOptions& options = {}) const;

  // The pool's settings, workers and counts.
  absl::StatusOr<v1::PoolInfo> Describe() const;

  // --- map family (multiprocessing.Pool's map / imap / imap_unordered / starmap /
  // map_async). Inputs that fit one request (~3 MiB) go in one Tasks.Map call; larger
  // ones, and every InputSource, stream over Tasks.MapStream in batches with at most
  // options.window items in flight.

  // Applies `function` to every input and blocks until all have ended. Returns the
  // outputs in input order. When items failed, returns the error of the failing item
  // with the lowest index ("map item <i> failed (FAILED): <its error>", code as for a
  // task); an ordered map stops at that item and cancels the rest. RPC errors as Apply.
  absl::StatusOr<std::vector<std::string>> Map(const std::string& function,
                                               const std::vector<std::string>& inputs,
                                               const MapOptions& options = {}) const;
  absl::StatusOr<std::vector<std::string>> Map(const std::string& function, InputSource source,
                                               const MapOptions& options = {}) const;

  // Typed Map: inputs encoded and outputs decoded by Codec<In> / Codec<Out>. An output
  // that does not decode is kInvalidArgument naming its index.
  template <typename Out, typename In = Out>
  absl::StatusOr<std::vector<Out>> Map(const std::string& function, const std::vector<In>& inputs,
                                       MapOptions options = {}) const;

  // Starts a map and returns its results as they arrive (imap with options.ordered,
  // else imap_unordered). A failing item is yielded at its place; it does not end the
  // map. Does not block; errors of the call itself come from MapResults::Next. The
  // vector form packs its inputs first (at most 4 GiB in all; more is
  // kInvalidArgument: use an InputSource).
  MapResults Imap(const std::string& function, const std::vector<std::string>& inputs,
                  const MapOptions& options = {}) const;
  MapResults Imap(const std::string& function, InputSource source,
                  const MapOptions& options = {}) const;
  // Imap with options.ordered = false.
  MapResults ImapUnordered(const std::string& function, const std::vector<std::string>& inputs,
                           MapOptions options = {}) const;
  MapResults ImapUnordered(const std::string& function, InputSource source,
                           MapOptions options = {}) const;

  // Map over argument tuples, each encoded as one payload by options.codec (see
  // EncodeArgTuple: "text" joins fields with a tab, "json" makes a JSON array).
  // kInvalidArgument naming the tuple's index when one cannot be encoded.
  absl::StatusOr<std::vector<std::string>> Starmap(const std::string& function,
                                                   const std::vector<ArgTuple>& arg_tuples,
                                                   const MapOptions& options = {}) const;

  // Starts Map on a background thread and returns its handle at once.
  MapAsyncResult MapAsync(const std::string& function, const std::vector<std::string>& inputs,
                          const MapOptions& options = {}) const;

 private:
  v1::TaskSpec MakeSpec(const std::string& function, const std::string& input,
                        const ApplyOptions& options) const;

  std::shared_ptr<const internal::Connection> connection_;
  std::string name_;
};

// --- implementation of the templates ------------------------------------------------

template <typename Out, typename In>
absl::StatusOr<std::vector<Out>> Pool::Map(const std::string& function,
                                           const std::vector<In>& inputs,
                                           MapOptions options) const {
  std::vector<std::string> encoded;
  encoded.reserve(inputs.size());
  for (const In& in : inputs) encoded.push_back(Codec<In>::Encode(in));
  if (options.codec.empty()) options.codec = Codec<In>::kName;
  absl::StatusOr<std::vector<std::string>> raw = Map(function, encoded, options);
  if (!raw.ok()) return raw.status();
  std::vector<Out> out;
  out.reserve(raw->size());
  for (size_t i = 0; i < raw->size(); ++i) {
    absl::StatusOr<Out> value = Codec<Out>::Decode((*raw)[i]);
    if (!value.ok()) {
      return absl::Status(value.status().code(),
                          absl::StrCat("map item ", i, ": ", value.status().message()));
    }
    out.push_back(*std::move(value));
  }
  return out;
}

}  // namespace forkpool

#endif  // FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_POOL_H_
