// ConnectionLimits: which client connections forkpoold admits. Each uid has a cap of
// its own, and a share of the global cap is kept for admin uids (root and forkpoold's
// own uid), so one user cannot lock out the others or the administrator.
#ifndef FORKPOOL_SERVER_DAEMON_NET_CONNECTION_LIMITS_H_
#define FORKPOOL_SERVER_DAEMON_NET_CONNECTION_LIMITS_H_

#include <sys/types.h>

#include <string>

namespace forkpool {

// Live connections as the PeerRegistry counts them, seen from one new connection.
struct ConnectionCounts {
  int total = 0;      // every connection
  int non_admin = 0;  // those of uids that are not admins
  int same_uid = 0;   // those of the new connection's uid
};

// The caps; 0 turns a cap off. Thread-compatible value type.
struct ConnectionLimits {
  // Every connection together (--max_connections).
  int max_connections = 1024;
  // One non-admin uid's connections (--max_connections_per_uid). Admin uids have no
  // cap of their own: they are bounded by max_connections only.
  int max_per_uid = 256;
  // Of max_connections, how many only admin uids may use
  // (--admin_reserved_connections): non-admin uids together stop at
  // max_connections - admin_reserved.
  int admin_reserved = 64;
  // forkpoold's own effective uid; it and root are the admin uids.
  uid_t daemon_uid = 0;

  bool IsAdmin(uid_t uid) const { return uid == 0 || uid == daemon_uid; }
};

// Why a connection is refused.
enum class Refusal {
  kNone,      // admitted
  kTotal,     // max_connections reached
  kNonAdmin,  // non-admin uids hold max_connections - admin_reserved
  kPerUid,    // the uid holds max_per_uid
};

// Whether one more connection of a uid (admin or not), given `counts` (which do not
// include it yet), is admitted, and if not which cap refuses it.
Refusal CheckAdmission(const ConnectionLimits& limits, const ConnectionCounts& counts, bool admin);

// A log line's reason for `refusal` of a connection of `uid`, naming the flag.
std::string RefusalReason(const ConnectionLimits& limits, Refusal refusal, uid_t uid);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_NET_CONNECTION_LIMITS_H_
