// Worker request handling.
#include "server/daemon/queues/worker_requests.h"

#include <cstdint>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/daemon/broker/task_options.h"

namespace forkpool {
namespace {

// A task's timeout: negative ones never come from the SDK (they mean "no timeout"
// and are sent absent); one longer than a Duration holds means no limit too.
absl::StatusOr<absl::Duration> Deadline(bool has, const google::protobuf::Duration& d) {
  if (!has) return absl::InfiniteDuration();
  FORKPOOL_RETURN_IF_ERROR(ValidateDuration(d, "timeout", std::numeric_limits<int64_t>::max()));
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

}  // namespace

WorkerRequestHandler MakeWorkerRequestHandler(QueueManager* queues) {
  return [queues](const std::string& method, const std::string& body, WorkerReply reply) {
    if (method == "queue.put") {
      v1::PutRequest put;
      if (!put.ParseFromString(body)) {
        reply(absl::InvalidArgumentError("unparsable queue.put request"), "");
        return;
      }
      absl::StatusOr<absl::Duration> deadline = Deadline(put.has_timeout(), put.timeout());
      if (!deadline.ok()) {
        reply(deadline.status(), "");
        return;
      }
      std::vector<v1::Payload> items(put.items().begin(), put.items().end());
      queues->Put(put.queue(), std::move(items), *deadline, [reply](absl::Status s, bool full) {
        v1::PutResponse r;
        r.set_full(full);
        reply(s, s.ok() ? r.SerializeAsString() : "");
      });
      return;
    }
    if (method == "queue.get") {
      v1::QueueGetRequest get;
      if (!get.ParseFromString(body)) {
        reply(absl::InvalidArgumentError("unparsable queue.get request"), "");
        return;
      }
      absl::StatusOr<absl::Duration> deadline = Deadline(get.has_timeout(), get.timeout());
      if (!deadline.ok()) {
        reply(deadline.status(), "");
        return;
      }
      // Leases need an Ack path inside tasks; a task's get is plain (at most once),
      // and an item whose worker died before the answer reached it goes back.
      queues->Get(get.queue(), get.max_items(), *deadline, absl::ZeroDuration(),
                  [reply](absl::StatusOr<std::vector<v1::QueueItem>> items) {
                    if (!items.ok()) return reply(items.status(), "");
                    v1::QueueGetResponse r;
                    r.set_empty(items->empty());
                    for (auto& item : *items) *r.add_items() = std::move(item);
                    return reply(absl::OkStatus(), r.SerializeAsString());
                  });
      return;
    }
    reply(absl::UnimplementedError(absl::StrCat("unknown worker request '", method, "'")), "");
  };
}

}  // namespace forkpool
