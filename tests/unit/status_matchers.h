// Local gMock matchers for absl::Status and absl::StatusOr (Debian's Abseil 20220623
// ships none): StatusIs(code[, message_matcher]), IsOk(), IsOkAndHolds(matcher).
#ifndef FORKPOOL_TESTS_UNIT_STATUS_MATCHERS_H_
#define FORKPOOL_TESTS_UNIT_STATUS_MATCHERS_H_

#include <ostream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace forkpool::testing {
namespace internal {

inline const absl::Status& GetStatus(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

}  // namespace internal

// Matches a Status or StatusOr whose code is `code` and whose message matches
// `message_matcher` (a std::string matcher, e.g. HasSubstr("...")).
MATCHER_P2(StatusIs, code, message_matcher,
           std::string("has status code ") + absl::StatusCodeToString(code) +
               " and a message that " +
               ::testing::DescribeMatcher<std::string>(message_matcher, negation)) {
  const absl::Status& status = internal::GetStatus(arg);
  *result_listener << "whose status is " << status.ToString();
  if (status.code() != code) return false;
  const auto message = status.message();
  return ::testing::Matches(message_matcher)(std::string(message.data(), message.size()));
}

// Matches a Status or StatusOr whose code is `code`, whatever its message.
MATCHER_P(StatusIs, code,
          std::string("has status code ") + absl::StatusCodeToString(code)) {
  const absl::Status& status = internal::GetStatus(arg);
  *result_listener << "whose status is " << status.ToString();
  return status.code() == code;
}

// Matches an OK Status or StatusOr.
MATCHER(IsOk, "is OK") {
  const absl::Status& status = internal::GetStatus(arg);
  *result_listener << "whose status is " << status.ToString();
  return status.ok();
}

// Matches an OK StatusOr whose value matches `value_matcher`.
MATCHER_P(IsOkAndHolds, value_matcher, "is OK and holds a value that matches") {
  if (!arg.ok()) {
    *result_listener << "whose status is " << arg.status().ToString();
    return false;
  }
  return ::testing::ExplainMatchResult(value_matcher, *arg, result_listener);
}

}  // namespace forkpool::testing

#define FORKPOOL_ASSERT_OK(expr) ASSERT_THAT((expr), ::forkpool::testing::IsOk())
#define FORKPOOL_EXPECT_OK(expr) EXPECT_THAT((expr), ::forkpool::testing::IsOk())

#endif  // FORKPOOL_TESTS_UNIT_STATUS_MATCHERS_H_
