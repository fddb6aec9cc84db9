// Tests for server/daemon/queues/memory_queue_manager.h on a fake clock: a wall
// clock step neither expires a lease nor stretches or cuts a get's wait.
#include "server/daemon/queues/memory_queue_manager.h"

#include <optional>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/fake_clock.h"

namespace forkpool {
namespace {

using ::forkpool::testing::FakeClock;

v1::Payload Item(const std::string& data) {
  v1::Payload p;
  p.set_data(data);
  return p;
}

TEST(MemoryQueueManagerTest, AWallClockStepNeitherExpiresALeaseNorMovesAWait) {
  FakeClock clock;
  MemoryQueueManager queues(&clock, QueueLimits{});
  ASSERT_TRUE(queues.Create("q", 0, false).ok());
  bool put = false;
  queues.Put("q", {Item("a")}, absl::ZeroDuration(),
             [&](absl::Status s, bool full) { put = s.ok() && !full; });
  ASSERT_TRUE(put);
  // Leased for 10 s.
  std::optional<std::vector<v1::QueueItem>> got;
  queues.Get("q", 1, absl::ZeroDuration(), absl::Seconds(10),
             [&](absl::StatusOr<std::vector<v1::QueueItem>> items) {
               got = *items;
               return true;
             });
  ASSERT_TRUE(got.has_value());
  ASSERT_EQ(got->size(), 1u);
  // A get waiting 5 s for the next item.
  std::optional<size_t> waited;
  queues.Get("q", 1, absl::Seconds(5), absl::ZeroDuration(),
             [&](absl::StatusOr<std::vector<v1::QueueItem>> items) {
               waited = items.ok() ? items->size() : 99;
               return true;
             });
  clock.StepWall(absl::Hours(2));
  clock.Advance(absl::Seconds(4));
  EXPECT_FALSE(waited.has_value());  // still waiting
  EXPECT_EQ(queues.Info("q")->leased(), 1);
  clock.Advance(absl::Seconds(1));
  ASSERT_TRUE(waited.has_value());
  EXPECT_EQ(*waited, 0u);  // timed out empty, after 5 s of monotonic time
  EXPECT_EQ(queues.Info("q")->leased(), 1);
  clock.StepWall(-absl::Hours(5));
  clock.Advance(absl::Seconds(5));
  // The lease ran its 10 s: the item is back.
  EXPECT_EQ(queues.Info("q")->leased(), 0);
  EXPECT_EQ(queues.Info("q")->size(), 1);
}

}  // namespace
}  // namespace forkpool
