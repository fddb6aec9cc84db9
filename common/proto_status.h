// absl::Status <-> forkpool.internal.Status, for statuses that cross processes.
#ifndef FORKPOOL_COMMON_PROTO_STATUS_H_
#define FORKPOOL_COMMON_PROTO_STATUS_H_

#include "absl/status/status.h"
#include "forkpool/internal/worker.pb.h"

namespace forkpool {

// Copies `status` into `out`.
void StatusToProto(const absl::Status& status, internal::Status* out);
// The status `proto` carries; an unknown code becomes kUnknown.
absl::Status StatusFromProto(const internal::Status& proto);

}  // namespace forkpool

#endif  // FORKPOOL_COMMON_PROTO_STATUS_H_
