// How a task's outcome and an RPC's outcome become an absl::Status in the C++ client.
//
// A task that ends in any state but SUCCEEDED becomes a non-OK status whose message is
// "task <id> failed: <the task's error text>", with this code:
//
//   task state     absl code           why
//   FAILED         kUnknown            the function returned an error (an "exception")
//   WORKER_LOST    kAborted            the process running it died; it may be retried
//   CANCELLED      kCancelled          a client (or the daemon's shutdown) cancelled it
//   TIMED_OUT      kDeadlineExceeded   it ran past its hard time limit
//   EXPIRED        kDeadlineExceeded   it waited in the queue past its queue deadline
//   other          kInternal           the daemon answered a state this client does not know
//
// The full TaskResult (without its output) travels with such a status as a payload, so
// TaskResultFromStatus tells a task failure from an RPC error, and a TIMED_OUT task
// from AsyncResult::Get's "not ready yet" (also kDeadlineExceeded, but without payload).
//
// RPC errors keep the daemon's code and message (NOT_FOUND "pool 'default' has no
// function 'sqaure'", INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...); transport failures
// (UNAVAILABLE and the like) name the daemon's address.
#ifndef FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_TASK_STATUS_H_
#define FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_TASK_STATUS_H_

#include <optional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "forkpool/v1/forkpool.pb.h"

namespace forkpool {

// Payload key under which a failed task's TaskResult (serialised, output cleared) rides
// on its status.
inline constexpr absl::string_view kTaskResultPayloadUrl =
    "type.googleapis.com/forkpool.v1.TaskResult";

// True for SUCCEEDED, FAILED, CANCELLED, TIMED_OUT, EXPIRED and WORKER_LOST.
bool IsTerminalState(v1::TaskState state);

// The absl code a terminal, unsuccessful task state maps to (table above); kOk for
// SUCCEEDED.
absl::StatusCode TaskStateToCode(v1::TaskState state);

// OK when `result` SUCCEEDED; else the status described above, carrying `result` as a
// payload. A non-terminal result gives kFailedPrecondition ("task ... has not ended").
absl::Status TaskResultToStatus(const v1::TaskResult& result);

// The TaskResult a status made by TaskResultToStatus carries; nullopt for any other
// status (an RPC error, "not ready", OK).
std::optional<v1::TaskResult> TaskResultFromStatus(const absl::Status& status);

// "SUCCEEDED", "FAILED", ... (the enum name without its prefix).
std::string TaskStateName(v1::TaskState state);

}  // namespace forkpool

#endif  // FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_TASK_STATUS_H_
