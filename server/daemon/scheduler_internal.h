// Small helpers shared by the Scheduler's source files (scheduler*.cc) only.
#ifndef FORKPOOL_SERVER_DAEMON_SCHEDULER_INTERNAL_H_
#define FORKPOOL_SERVER_DAEMON_SCHEDULER_INTERNAL_H_

#include <string>

#include "absl/time/time.h"
#include "forkpool/v1/forkpool.pb.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/time_util.h"
#include "server/daemon/pool.h"

namespace forkpool::internal_scheduler {

inline google::protobuf::Timestamp NowProto() {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(
      absl::ToUnixNanos(absl::Now()));
}

// Payloads without a codec are text.
inline std::string CodecOrText(const std::string& codec) {
  return codec.empty() ? "text" : codec;
}

inline absl::Duration ToDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// The task's own options over the pool's defaults, field by field.
inline v1::TaskOptions EffectiveOptions(const Pool& pool, const v1::TaskOptions& own) {
  v1::TaskOptions o = pool.settings.task_defaults();
  if (own.has_time_limit()) *o.mutable_time_limit() = own.time_limit();
  if (own.has_soft_time_limit()) *o.mutable_soft_time_limit() = own.soft_time_limit();
  if (own.has_queue_deadline()) *o.mutable_queue_deadline() = own.queue_deadline();
  if (own.max_retries() != 0) o.set_max_retries(own.max_retries());
  if (own.retry_on_error()) o.set_retry_on_error(true);
  return o;
}

}  // namespace forkpool::internal_scheduler

#endif  // FORKPOOL_SERVER_DAEMON_SCHEDULER_INTERNAL_H_
