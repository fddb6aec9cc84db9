// Tests for server/daemon/broker/memory_task_store.h: ids, "expired" against
// "unknown", the key index, the sweep by TTL, bytes and count, and IsTerminal.
#include "server/daemon/broker/memory_task_store.h"

#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "tests/unit/status_matchers.h"

namespace forkpool {
namespace {

using ::forkpool::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

const MonoTime kT0 = MonoTime::FromSinceZero(absl::Hours(5));

Task& Add(MemoryTaskStore& store, const std::string& key = "", const std::string& output = "") {
  Task task;
  task.result.set_task_id(store.NewId());
  task.result.set_state(v1::TASK_STATE_PENDING);
  task.result.mutable_output()->set_data(output);
  task.request_id = key;
  return store.Insert(std::move(task));
}

void End(MemoryTaskStore& store, Task& task, MonoTime at) {
  task.result.set_state(v1::TASK_STATE_SUCCEEDED);
  store.Finished(task, at);
}

TEST(MemoryTaskStoreTest, MissingSaysExpiredForOurIdAndUnknownForAForeignOne) {
  MemoryTaskStore ours, theirs;
  Task& task = Add(ours);
  const std::string id = task.result.task_id();
  End(ours, task, kT0);
  ASSERT_EQ(ours.Sweep(kT0 + absl::Hours(2), absl::Hours(1), 0, 0), 1u);
  ASSERT_EQ(ours.Find(id), nullptr);
  EXPECT_THAT(ours.Missing(id),
              StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr(id), HasSubstr("expired"))));
  const std::string foreign = theirs.NewId();
  EXPECT_THAT(ours.Missing(foreign),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("unknown task"), Not(HasSubstr("expired")))));
  const std::string prefix = id.substr(0, id.rfind('-') + 1);
  for (const std::string& bad : {std::string(""), std::string("garbage"), prefix, prefix + "0",
                                 prefix + "x1", prefix + "1x"}) {
    EXPECT_THAT(ours.Missing(bad), StatusIs(absl::StatusCode::kNotFound, HasSubstr("unknown")))
        << "id '" << bad << "'";
  }
}

TEST(MemoryTaskStoreTest, TheKeyFindsItsTaskUntilForgottenOrSwept) {
  MemoryTaskStore store;
  Task& with = Add(store, "req-1");
  Add(store);
  EXPECT_EQ(store.FindByKey("req-1"), &with);
  EXPECT_EQ(store.FindByKey("req-2"), nullptr);
  EXPECT_EQ(store.FindByKey(""), nullptr);
  store.ForgetKey(with);
  EXPECT_EQ(store.FindByKey("req-1"), nullptr);
  // A new task with the key is found; sweeping the old one does not unindex it.
  Task& again = Add(store, "req-1");
  End(store, with, kT0);
  ASSERT_EQ(store.Sweep(kT0 + absl::Hours(2), absl::Hours(1), 0, 0), 1u);
  EXPECT_EQ(store.FindByKey("req-1"), &again);
  End(store, again, kT0);
  ASSERT_EQ(store.Sweep(kT0 + absl::Hours(2), absl::Hours(1), 0, 0), 1u);
  EXPECT_EQ(store.FindByKey("req-1"), nullptr);
}

TEST(MemoryTaskStoreTest, SweepDropsOnlyEndedTasksPastTheTtlThenTheOldestOverACap) {
  MemoryTaskStore store;
  Task& early = Add(store, "", std::string(1000, 'e'));
  Task& late = Add(store, "", std::string(1000, 'l'));
  Task& running = Add(store);
  const std::string early_id = early.result.task_id(), late_id = late.result.task_id();
  End(store, early, kT0);
  End(store, late, kT0 + absl::Minutes(10));
  EXPECT_EQ(store.kept_count(), 2u);
  EXPECT_GE(store.kept_bytes(), 2 * (1000 + kKeptTaskOverheadBytes));
  EXPECT_EQ(store.Sweep(kT0 + absl::Minutes(59), absl::Hours(1), 0, 0), 0u);
  EXPECT_EQ(store.Sweep(kT0 + absl::Hours(1), absl::Hours(1), 0, 0), 1u);
  EXPECT_EQ(store.Find(early_id), nullptr);
  EXPECT_NE(store.Find(late_id), nullptr);
  // Over a byte cap (or a count cap) the oldest goes before its TTL.
  EXPECT_EQ(store.Sweep(kT0 + absl::Hours(1), absl::Hours(1), 100, 0), 1u);
  EXPECT_EQ(store.Find(late_id), nullptr);
  EXPECT_EQ(store.kept_bytes(), 0u);
  EXPECT_NE(store.Find(running.result.task_id()), nullptr);
  EXPECT_EQ(store.Sweep(MonoTime::Infinite(), absl::Hours(1), 0, 0), 0u);
  EXPECT_EQ(store.size(), 1u);
}

TEST(IsTerminalTest, ClassifiesEveryState) {
  const auto* descriptor = v1::TaskState_descriptor();
  ASSERT_EQ(descriptor->value_count(), 9) << "a new TaskState needs a decision here";
  EXPECT_FALSE(IsTerminal(v1::TASK_STATE_UNSPECIFIED));
  EXPECT_FALSE(IsTerminal(v1::TASK_STATE_PENDING));
  EXPECT_FALSE(IsTerminal(v1::TASK_STATE_RUNNING));
  for (v1::TaskState s :
       {v1::TASK_STATE_SUCCEEDED, v1::TASK_STATE_FAILED, v1::TASK_STATE_CANCELLED,
        v1::TASK_STATE_TIMED_OUT, v1::TASK_STATE_EXPIRED, v1::TASK_STATE_WORKER_LOST}) {
    EXPECT_TRUE(IsTerminal(s)) << s;
  }
}

}  // namespace
}  // namespace forkpool
