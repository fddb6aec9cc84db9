// Helpers shared by Queue and QueueStream: the Full/Empty statuses and item conversion.
#ifndef FORKPOOL_CLIENT_CPP_SRC_QUEUE_INTERNAL_H_
#define FORKPOOL_CLIENT_CPP_SRC_QUEUE_INTERNAL_H_

#include <string>

#include "absl/status/status.h"
#include "forkpool/queue.h"
#include "forkpool/v1/forkpool.pb.h"

namespace forkpool::internal {

// kDeadlineExceeded "queue 'q' is full" / "queue 'q' is empty".
absl::Status QueueFullError(const std::string& queue);
absl::Status QueueEmptyError(const std::string& queue);

// Moves the fields of `item` into a QueueItem.
QueueItem QueueItemFromProto(v1::QueueItem& item);

}  // namespace forkpool::internal

#endif  // FORKPOOL_CLIENT_CPP_SRC_QUEUE_INTERNAL_H_
