// ConnectionLimits implementation.
#include "server/daemon/net/connection_limits.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace forkpool {

Refusal CheckAdmission(const ConnectionLimits& limits, const ConnectionCounts& counts, bool admin) {
  if (limits.max_connections > 0 && counts.total >= limits.max_connections) {
    return Refusal::kTotal;
  }
  if (admin) return Refusal::kNone;
  if (limits.max_connections > 0) {
    const int shared = std::max(0, limits.max_connections - std::max(0, limits.admin_reserved));
    if (counts.non_admin >= shared) return Refusal::kNonAdmin;
  }
  if (limits.max_per_uid > 0 && counts.same_uid >= limits.max_per_uid) {
    return Refusal::kPerUid;
  }
  return Refusal::kNone;
}

std::string RefusalReason(const ConnectionLimits& limits, Refusal refusal, uid_t uid) {
  switch (refusal) {
    case Refusal::kNone:
      return "admitted";
    case Refusal::kTotal:
      return absl::StrCat(limits.max_connections, " connections are open (--max_connections)");
    case Refusal::kNonAdmin:
      return absl::StrCat(
          "uid ", uid, ": non-admin uids hold ",
          std::max(0, limits.max_connections - std::max(0, limits.admin_reserved)),
          " connections, all but the ", limits.admin_reserved,
          " kept for root and forkpoold's uid (--max_connections, --admin_reserved_connections)");
    case Refusal::kPerUid:
      return absl::StrCat("uid ", uid, " holds ", limits.max_per_uid,
                          " connections (--max_connections_per_uid)");
  }
  return "unknown";
}

}  // namespace forkpool
