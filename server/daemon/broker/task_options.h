// Checks of what a request's tasks carry: durations, task options, codec names and
// idempotency keys. Each error is INVALID_ARGUMENT naming where and which field.
#ifndef FORKPOOL_SERVER_DAEMON_BROKER_TASK_OPTIONS_H_
#define FORKPOOL_SERVER_DAEMON_BROKER_TASK_OPTIONS_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "forkpool/v1/forkpool.pb.h"
#include "google/protobuf/duration.pb.h"

namespace forkpool {

// The longest google.protobuf.Duration there is (its documented range, about 10,000
// years): the bound of a wait's timeout. A longer wait is an absent timeout.
inline constexpr int64_t kMaxDurationSeconds = 315'576'000'000;
// The longest time_limit, soft_time_limit and queue_deadline: 10 x 365 days. (A
// limit is sent to the worker in nanoseconds, an int64 that holds 292 years.)
inline constexpr int64_t kMaxTaskDurationSeconds = int64_t{10} * 365 * 24 * 3600;
// Most retries of one task.
inline constexpr int kMaxRetries = 100;
// Longest codec name ("text", "json", "pickle", ...).
inline constexpr size_t kMaxCodecBytes = 64;
// Longest idempotency key (TaskSpec.request_id, SubmitManyRequest.request_ids).
inline constexpr size_t kMaxRequestIdBytes = 256;

// OK when `d` is a duration that is not negative and at most `max_seconds` long:
// 0 <= nanos < 1e9 and 0 <= seconds <= max_seconds (nanos 0 at max_seconds).
// Otherwise INVALID_ARGUMENT naming `field` (e.g. "timeout", "task options:
// time_limit") and the value.
absl::Status ValidateDuration(const google::protobuf::Duration& d, absl::string_view field,
                              int64_t max_seconds = kMaxDurationSeconds);

// Checks every field of `options`: time_limit, soft_time_limit and queue_deadline as
// ValidateDuration with kMaxTaskDurationSeconds, max_retries 0 to kMaxRetries. Errors
// start with `where` ("task options", "pool 'p' task_defaults", ...).
absl::Status ValidateTaskOptions(const v1::TaskOptions& options, absl::string_view where);

// A codec name: empty (text) or 1 to kMaxCodecBytes printable ASCII characters
// without spaces (0x21 to 0x7E). Errors start with `where`.
absl::Status ValidateCodec(absl::string_view codec, absl::string_view where);

// An idempotency key: empty (none) or at most kMaxRequestIdBytes bytes. Errors start
// with `where` and give the length, not the key.
absl::Status ValidateRequestId(absl::string_view request_id, absl::string_view where);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_BROKER_TASK_OPTIONS_H_
