// Tests for server/daemon/net/connection_limits.h: which cap refuses which connection.
#include "server/daemon/net/connection_limits.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forkpool {
namespace {

using ::testing::HasSubstr;

ConnectionLimits Limits() {
  ConnectionLimits limits;
  limits.max_connections = 100;
  limits.max_per_uid = 10;
  limits.admin_reserved = 20;
  limits.daemon_uid = 1000;
  return limits;
}

TEST(ConnectionLimitsTest, RootAndTheDaemonsUidAreAdmins) {
  const ConnectionLimits limits = Limits();
  EXPECT_TRUE(limits.IsAdmin(0));
  EXPECT_TRUE(limits.IsAdmin(1000));
  EXPECT_FALSE(limits.IsAdmin(65534));
}

TEST(ConnectionLimitsTest, AUidStopsAtItsOwnCap) {
  EXPECT_EQ(CheckAdmission(Limits(), {.total = 9, .non_admin = 9, .same_uid = 9}, false),
            Refusal::kNone);
  EXPECT_EQ(CheckAdmission(Limits(), {.total = 10, .non_admin = 10, .same_uid = 10}, false),
            Refusal::kPerUid);
}

TEST(ConnectionLimitsTest, NonAdminsTogetherLeaveTheReserve) {
  // 80 non-admin connections of other uids: a new uid is refused, an admin is not.
  const ConnectionCounts counts{.total = 80, .non_admin = 80, .same_uid = 0};
  EXPECT_EQ(CheckAdmission(Limits(), counts, false), Refusal::kNonAdmin);
  EXPECT_EQ(CheckAdmission(Limits(), counts, true), Refusal::kNone);
  // Admins' own connections do not eat into the others' share.
  EXPECT_EQ(CheckAdmission(Limits(), {.total = 99, .non_admin = 79, .same_uid = 0}, false),
            Refusal::kNone);
}

TEST(ConnectionLimitsTest, AdminsHaveNoPerUidCapButTheGlobalOne) {
  EXPECT_EQ(CheckAdmission(Limits(), {.total = 99, .non_admin = 0, .same_uid = 99}, true),
            Refusal::kNone);
  EXPECT_EQ(CheckAdmission(Limits(), {.total = 100, .non_admin = 0, .same_uid = 100}, true),
            Refusal::kTotal);
}

TEST(ConnectionLimitsTest, ZeroTurnsACapOff) {
  ConnectionLimits limits = Limits();
  limits.max_connections = 0;
  limits.max_per_uid = 0;
  EXPECT_EQ(CheckAdmission(limits, {.total = 5000, .non_admin = 5000, .same_uid = 5000}, false),
            Refusal::kNone);
}

TEST(ConnectionLimitsTest, ReasonsNameTheirFlags) {
  const ConnectionLimits limits = Limits();
  EXPECT_THAT(RefusalReason(limits, Refusal::kTotal, 0), HasSubstr("--max_connections"));
  EXPECT_THAT(RefusalReason(limits, Refusal::kPerUid, 65534),
              HasSubstr("uid 65534 holds 10 connections (--max_connections_per_uid)"));
  EXPECT_THAT(RefusalReason(limits, Refusal::kNonAdmin, 65534),
              HasSubstr("--admin_reserved_connections"));
}

}  // namespace
}  // namespace forkpool
