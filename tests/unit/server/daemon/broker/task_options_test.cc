// Tests for server/daemon/broker/task_options.h: durations, task options, codec names and
// idempotency keys.
#include "server/daemon/broker/task_options.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/status_matchers.h"

namespace forkpool {
namespace {

using ::forkpool::testing::IsOk;
using ::forkpool::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

google::protobuf::Duration D(int64_t seconds, int32_t nanos) {
  google::protobuf::Duration d;
  d.set_seconds(seconds);
  d.set_nanos(nanos);
  return d;
}

TEST(ValidateDurationTest, AcceptsZeroToTheMaximum) {
  EXPECT_THAT(ValidateDuration(D(0, 0), "timeout"), IsOk());
  EXPECT_THAT(ValidateDuration(D(0, 999'999'999), "timeout"), IsOk());
  EXPECT_THAT(ValidateDuration(D(3600, 500), "timeout"), IsOk());
  EXPECT_THAT(ValidateDuration(D(kMaxDurationSeconds, 0), "timeout"), IsOk());
  EXPECT_THAT(ValidateDuration(D(10, 0), "lease", 10), IsOk());
}

TEST(ValidateDurationTest, NanosOutOfRangeAreInvalid) {
  for (int32_t nanos : {1'000'000'000, 2'000'000'000, -1, -999'999'999}) {
    EXPECT_THAT(ValidateDuration(D(1, nanos), "timeout"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("timeout"), HasSubstr(absl::StrCat("nanos ", nanos)),
                               HasSubstr("0 to 999999999"))))
        << nanos;
  }
}

TEST(ValidateDurationTest, NegativeIsInvalid) {
  EXPECT_THAT(ValidateDuration(D(-1, 0), "timeout"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("timeout must not be negative"), HasSubstr("-1 s"))));
  EXPECT_THAT(ValidateDuration(D(-5, -3), "x"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateDuration(D(INT64_MIN, 0), "x"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
}

TEST(ValidateDurationTest, PastTheMaximumIsInvalid) {
  EXPECT_THAT(ValidateDuration(D(kMaxDurationSeconds + 1, 0), "timeout"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("timeout of 315576000001 s"), HasSubstr("too long"),
                             HasSubstr("10,000 years"))));
  // The longest Duration there is (its seconds at the maximum, any nanos, as
  // protobuf's own check allows) is a valid wait.
  EXPECT_THAT(ValidateDuration(D(kMaxDurationSeconds, 999'999'999), "timeout"), IsOk());
  EXPECT_THAT(ValidateDuration(D(10, 1), "lease", 10),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too long")));
  EXPECT_THAT(ValidateDuration(D(INT64_MAX, 0), "timeout"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too long")));
  EXPECT_THAT(ValidateDuration(D(11, 0), "lease", 10),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("lease of 11 s"), HasSubstr("at most 10 s"))));
}

TEST(ValidateTaskOptionsTest, EmptyAndTypicalOptionsPass) {
  EXPECT_THAT(ValidateTaskOptions(v1::TaskOptions(), "task options"), IsOk());
  v1::TaskOptions o;
  *o.mutable_time_limit() = D(60, 0);
  *o.mutable_soft_time_limit() = D(30, 5);
  *o.mutable_queue_deadline() = D(kMaxTaskDurationSeconds, 0);
  o.set_max_retries(kMaxRetries);
  o.set_retry_on_error(true);
  EXPECT_THAT(ValidateTaskOptions(o, "task options"), IsOk());
}

TEST(ValidateTaskOptionsTest, EveryDurationIsCheckedAndNamed) {
  for (const char* field : {"time_limit", "soft_time_limit", "queue_deadline"}) {
    for (const google::protobuf::Duration& bad :
         {D(-1, 0), D(0, -1), D(1, 1'000'000'000), D(kMaxTaskDurationSeconds + 1, 0),
          D(kMaxTaskDurationSeconds, 1)}) {
      v1::TaskOptions o;
      google::protobuf::Duration* d = std::string(field) == "time_limit" ? o.mutable_time_limit()
                                      : std::string(field) == "soft_time_limit"
                                          ? o.mutable_soft_time_limit()
                                          : o.mutable_queue_deadline();
      *d = bad;
      EXPECT_THAT(ValidateTaskOptions(o, "pool 'p' task_defaults"),
                  StatusIs(absl::StatusCode::kInvalidArgument,
                           HasSubstr(absl::StrCat("pool 'p' task_defaults: ", field))))
          << field << " " << bad.ShortDebugString();
    }
  }
}

TEST(ValidateTaskOptionsTest, TaskDurationsStopAtTenYears) {
  v1::TaskOptions o;
  *o.mutable_time_limit() = D(kMaxTaskDurationSeconds + 1, 0);
  EXPECT_THAT(ValidateTaskOptions(o, "task options"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("time_limit of 315360001 s"), HasSubstr("10 x 365 days"))));
}

TEST(ValidateTaskOptionsTest, MaxRetriesIsZeroToAHundred) {
  v1::TaskOptions o;
  o.set_max_retries(-1);
  EXPECT_THAT(
      ValidateTaskOptions(o, "task options"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("task options: max_retries must be 0 to 100"), HasSubstr("-1"))));
  o.set_max_retries(101);
  EXPECT_THAT(ValidateTaskOptions(o, "task options"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not 101")));
  o.set_max_retries(0);
  EXPECT_THAT(ValidateTaskOptions(o, "task options"), IsOk());
}

TEST(ValidateCodecTest, AcceptsEmptyAndNamesUpTo64Bytes) {
  EXPECT_THAT(ValidateCodec("", "task"), IsOk());
  for (const char* codec : {"text", "json", "pickle", "raw", "msgpack+zstd", "application/json"}) {
    EXPECT_THAT(ValidateCodec(codec, "task"), IsOk()) << codec;
  }
  EXPECT_THAT(ValidateCodec(std::string(kMaxCodecBytes, 'c'), "task"), IsOk());
}

TEST(ValidateCodecTest, RefusesLongNamesWithoutEchoingThem) {
  const std::string long_codec(100000, 'c');
  const absl::Status s = ValidateCodec(long_codec, "map");
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                          AllOf(HasSubstr("map: codec name of 100000 bytes; at most 64"),
                                Not(HasSubstr("ccc")))));
  EXPECT_THAT(ValidateCodec(std::string(kMaxCodecBytes + 1, 'c'), "task"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("65 bytes")));
}

TEST(ValidateCodecTest, RefusesSpacesControlAndNonAsciiBytes) {
  for (const std::string& codec : {std::string("has space"), std::string("a\nb"),
                                   std::string("a\0b", 3), std::string("caf\xc3\xa9")}) {
    EXPECT_THAT(ValidateCodec(codec, "task"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("task: codec name"), HasSubstr("printable ASCII"))))
        << codec;
  }
}

TEST(ValidateRequestIdTest, AcceptsUpTo256Bytes) {
  EXPECT_THAT(ValidateRequestId("", "task"), IsOk());
  EXPECT_THAT(ValidateRequestId("job-42/7", "task"), IsOk());
  EXPECT_THAT(ValidateRequestId(std::string(kMaxRequestIdBytes, 'r'), "task"), IsOk());
}

TEST(ValidateRequestIdTest, RefusesLongerKeysGivingTheLengthOnly) {
  EXPECT_THAT(ValidateRequestId(std::string(kMaxRequestIdBytes + 1, 'r'), "request_ids[3]"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("request_ids[3]: request_id of 257 bytes; at most 256"),
                             Not(HasSubstr("rrr")))));
}

}  // namespace
}  // namespace forkpool
