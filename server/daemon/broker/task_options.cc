// Checks of durations, task options, codec names and idempotency keys.
#include "server/daemon/broker/task_options.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace forkpool {
namespace {

// "10 years", "1 hour", or a number of seconds, for error texts.
std::string Seconds(int64_t seconds) {
  if (seconds == kMaxDurationSeconds) return absl::StrCat(seconds, " s (10,000 years)");
  if (seconds == kMaxTaskDurationSeconds) return absl::StrCat(seconds, " s (10 x 365 days)");
  return absl::StrCat(seconds, " s");
}

}  // namespace

absl::Status ValidateDuration(const google::protobuf::Duration& d, absl::string_view field,
                              int64_t max_seconds) {
  if (d.nanos() < 0 || d.nanos() >= 1'000'000'000) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " has nanos ", d.nanos(), " (seconds ", d.seconds(),
                     "); nanos must be 0 to 999999999 and the duration not negative"));
  }
  if (d.seconds() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " must not be negative (got ", d.seconds(), " s ", d.nanos(), " ns)"));
  }
  // At the longest a Duration goes (its seconds at the maximum, any nanos) a
  // wait is still valid: "as long as it takes".
  if (d.seconds() > max_seconds ||
      (d.seconds() == max_seconds && d.nanos() > 0 && max_seconds < kMaxDurationSeconds)) {
    return absl::InvalidArgumentError(absl::StrCat(field, " of ", d.seconds(), " s ", d.nanos(),
                                                   " ns is too long; at most ",
                                                   Seconds(max_seconds)));
  }
  return absl::OkStatus();
}

absl::Status ValidateTaskOptions(const v1::TaskOptions& o, absl::string_view where) {
  for (const auto& [name, d] : {
           std::pair<const char*, const google::protobuf::Duration*>{"time_limit", &o.time_limit()},
           {"soft_time_limit", &o.soft_time_limit()},
           {"queue_deadline", &o.queue_deadline()},
       }) {
    if (absl::Status s =
            ValidateDuration(*d, absl::StrCat(where, ": ", name), kMaxTaskDurationSeconds);
        !s.ok()) {
      return s;
    }
  }
  if (o.max_retries() < 0 || o.max_retries() > kMaxRetries) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": max_retries must be 0 to ", kMaxRetries, ", not ", o.max_retries()));
  }
  return absl::OkStatus();
}

absl::Status ValidateCodec(absl::string_view codec, absl::string_view where) {
  if (codec.size() > kMaxCodecBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": codec name of ", codec.size(), " bytes; at most ", kMaxCodecBytes));
  }
  for (char c : codec) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": codec name '", absl::CHexEscape(codec),
                       "' may only hold printable ASCII characters without spaces"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateRequestId(absl::string_view request_id, absl::string_view where) {
  if (request_id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": request_id of ", request_id.size(),
                                                   " bytes; at most ", kMaxRequestIdBytes));
  }
  return absl::OkStatus();
}

}  // namespace forkpool
