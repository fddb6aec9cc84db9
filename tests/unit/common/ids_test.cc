// Tests for common/ids.h: IdGenerator.
#include "common/ids.h"

#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forkpool {
namespace {

using ::testing::MatchesRegex;
using ::testing::StartsWith;

TEST(IdGeneratorTest, IdsHaveKindInstanceAndCounter) {
  IdGenerator ids;
  EXPECT_THAT(ids.instance(), MatchesRegex("[0-9a-f]{16}"));
  EXPECT_EQ(ids.Next("t"), "t-" + ids.instance() + "-1");
  EXPECT_EQ(ids.Next("m"), "m-" + ids.instance() + "-2");
  EXPECT_EQ(ids.Next("l"), "l-" + ids.instance() + "-3");
}

TEST(IdGeneratorTest, UniqueAcrossManyCallsAndThreads) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20000;
  IdGenerator ids;
  std::vector<std::vector<std::string>> made(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      made[t].reserve(kPerThread);
      for (int i = 0; i < kPerThread; ++i) made[t].push_back(ids.Next("t"));
    });
  }
  for (auto& th : threads) th.join();
  std::unordered_set<std::string> all;
  for (const auto& v : made) {
    for (const auto& id : v) {
      EXPECT_THAT(id, StartsWith("t-" + ids.instance() + "-"));
      all.insert(id);
    }
  }
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kPerThread));
  // Every counter value 1..N was handed out exactly once.
  for (int n = 1; n <= kThreads * kPerThread; ++n) {
    ASSERT_TRUE(all.count("t-" + ids.instance() + "-" + std::to_string(n))) << n;
  }
}

TEST(IdGeneratorTest, TwoGeneratorsHaveDifferentInstances) {
  IdGenerator a;
  IdGenerator b;
  EXPECT_NE(a.instance(), b.instance());
  EXPECT_NE(a.Next("t"), b.Next("t"));
}

TEST(IdGeneratorTest, ManyGeneratorsAllDiffer) {
  // A fixed or clock-derived instance would collide here; getrandom does not.
  std::unordered_set<std::string> instances;
  for (int i = 0; i < 1000; ++i) instances.insert(IdGenerator().instance());
  EXPECT_EQ(instances.size(), 1000u);
}

}  // namespace
}  // namespace forkpool
