// Tests for common/proto_status.h: absl::Status <-> internal::Status.
#include "common/proto_status.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/status_matchers.h"

namespace forkpool {
namespace {

using ::forkpool::testing::IsOk;
using ::forkpool::testing::StatusIs;
using ::testing::Eq;

TEST(ProtoStatusTest, OkRoundTrips) {
  internal::Status proto;
  proto.set_message("stale");
  StatusToProto(absl::OkStatus(), &proto);
  EXPECT_EQ(proto.code(), 0);
  EXPECT_EQ(proto.message(), "");
  EXPECT_THAT(StatusFromProto(proto), IsOk());
}

TEST(ProtoStatusTest, EveryCanonicalCodeRoundTripsWithItsMessage) {
  for (int code = 1; code <= 16; ++code) {
    const auto c = static_cast<absl::StatusCode>(code);
    const std::string message = "message for " + absl::StatusCodeToString(c);
    internal::Status proto;
    StatusToProto(absl::Status(c, message), &proto);
    EXPECT_EQ(proto.code(), code);
    EXPECT_EQ(proto.message(), message);
    // Through the wire as well.
    internal::Status parsed;
    ASSERT_TRUE(parsed.ParseFromString(proto.SerializeAsString()));
    EXPECT_THAT(StatusFromProto(parsed), StatusIs(c, Eq(message))) << code;
  }
}

TEST(ProtoStatusTest, UnknownCodesBecomeUnknownKeepingTheMessage) {
  for (int code : {17, 100, -1, -16, 1 << 30}) {
    internal::Status proto;
    proto.set_code(code);
    proto.set_message("from a newer peer");
    const absl::Status status = StatusFromProto(proto);
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnknown, Eq("from a newer peer")))
        << code;
    // code() maps any non-canonical code to kUnknown by itself; the raw code shows
    // whether the conversion did.
    EXPECT_EQ(status.raw_code(), static_cast<int>(absl::StatusCode::kUnknown)) << code;
  }
}

TEST(ProtoStatusTest, ZeroCodeIsOkWhateverTheMessage) {
  internal::Status proto;
  proto.set_message("ignored");
  EXPECT_THAT(StatusFromProto(proto), IsOk());
}

}  // namespace
}  // namespace forkpool
