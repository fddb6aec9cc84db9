// Tests for server/daemon/task_table.h: TaskTable and IsTerminal.
#include "server/daemon/task_table.h"

#include <functional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "tests/unit/status_matchers.h"

namespace forkpool {
namespace {

using ::forkpool::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

Task NewTask(TaskTable& table, const std::string& input = "7", const std::string& request_id = "") {
  Task task;
  task.result.set_task_id(table.NewId());
  task.result.set_state(v1::TASK_STATE_PENDING);
  task.input = input;
  task.request_id = request_id;
  return task;
}

void RunAll(std::vector<std::function<void()>>& notify) {
  for (auto& fn : notify) fn();
}

// Returns once absl::Now() has moved past `t`: a bounded spin on the clock, so that
// "finished before" and "finished after" are distinct instants.
void WaitUntilAfter(absl::Time t) {
  const absl::Time limit = absl::Now() + absl::Seconds(5);
  while (absl::Now() <= t) ASSERT_LT(absl::Now(), limit);
}

TEST(TaskTableTest, InsertThenFind) {
  TaskTable table;
  Task& inserted = table.Insert(NewTask(table, "input bytes"));
  const std::string id = inserted.result.task_id();
  EXPECT_EQ(table.size(), 1u);
  Task* found = table.Find(id);
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found, &inserted);
  EXPECT_EQ(found->input, "input bytes");
  EXPECT_EQ(found->result.state(), v1::TASK_STATE_PENDING);
  EXPECT_EQ(table.Find("t-nope-1"), nullptr);
}

TEST(TaskTableTest, NewIdsAreDistinctAndCarryTheTaskKind) {
  TaskTable table;
  const std::string a = table.NewId();
  const std::string b = table.NewId();
  EXPECT_NE(a, b);
  EXPECT_THAT(a, ::testing::StartsWith("t-"));
}

TEST(TaskTableTest, FinishRunsEachWaiterOnceOnlyWhenTheClosuresRun) {
  TaskTable table;
  Task& task = table.Insert(NewTask(table));
  const std::string id = task.result.task_id();
  int calls_a = 0, calls_b = 0;
  v1::TaskResult seen_a, seen_b;
  table.AddWaiter(task, [&](const v1::TaskResult& r) {
    ++calls_a;
    seen_a = r;
  });
  table.AddWaiter(task, [&](const v1::TaskResult& r) {
    ++calls_b;
    seen_b = r;
  });
  task.result.mutable_output()->set_data("49");

  std::vector<std::function<void()>> notify;
  table.Finish(task, v1::TASK_STATE_SUCCEEDED, &notify);
  // Nothing runs under the caller's lock: waiters wait for the closures.
  EXPECT_EQ(calls_a, 0);
  EXPECT_EQ(calls_b, 0);
  ASSERT_THAT(notify, SizeIs(2));
  EXPECT_THAT(task.waiters, IsEmpty());
  EXPECT_EQ(task.result.state(), v1::TASK_STATE_SUCCEEDED);
  EXPECT_TRUE(task.result.has_finished_at());
  EXPECT_EQ(task.input, "") << "a finished task should not keep its input";

  RunAll(notify);
  EXPECT_EQ(calls_a, 1);
  EXPECT_EQ(calls_b, 1);
  for (const v1::TaskResult* r : {&seen_a, &seen_b}) {
    EXPECT_EQ(r->task_id(), id);
    EXPECT_EQ(r->state(), v1::TASK_STATE_SUCCEEDED);
    EXPECT_EQ(r->output().data(), "49");
    EXPECT_TRUE(r->has_finished_at());
  }

  // A second Finish neither changes the outcome nor notifies anyone again.
  std::vector<std::function<void()>> again;
  table.Finish(task, v1::TASK_STATE_CANCELLED, &again);
  EXPECT_THAT(again, IsEmpty());
  EXPECT_EQ(task.result.state(), v1::TASK_STATE_SUCCEEDED);
  EXPECT_EQ(calls_a, 1);
  EXPECT_EQ(calls_b, 1);
}

TEST(TaskTableTest, WaitersSeeTheResultAsItWasWhenFinished) {
  TaskTable table;
  Task& task = table.Insert(NewTask(table));
  v1::TaskResult seen;
  table.AddWaiter(task, [&](const v1::TaskResult& r) { seen = r; });
  task.result.set_error("boom");
  std::vector<std::function<void()>> notify;
  table.Finish(task, v1::TASK_STATE_FAILED, &notify);
  // The closures may run after the table (under the caller's lock) moved on.
  task.result.set_error("changed later");
  RunAll(notify);
  EXPECT_EQ(seen.state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(seen.error(), "boom");
}

TEST(TaskTableTest, FinishWithoutWaitersAddsNoClosures) {
  TaskTable table;
  Task& task = table.Insert(NewTask(table));
  std::vector<std::function<void()>> notify;
  table.Finish(task, v1::TASK_STATE_WORKER_LOST, &notify);
  EXPECT_THAT(notify, IsEmpty());
  EXPECT_EQ(task.result.state(), v1::TASK_STATE_WORKER_LOST);
}

TEST(TaskTableTest, RemovedWaiterIsNotCalled) {
  TaskTable table;
  Task& task = table.Insert(NewTask(table));
  const std::string id = task.result.task_id();
  int removed_calls = 0, kept_calls = 0;
  const uint64_t removed = table.AddWaiter(task, [&](const v1::TaskResult&) { ++removed_calls; });
  const uint64_t kept = table.AddWaiter(task, [&](const v1::TaskResult&) { ++kept_calls; });
  EXPECT_NE(removed, kept);

  table.RemoveWaiter(id, removed);
  // Harmless: removed twice, unknown waiter, unknown task.
  table.RemoveWaiter(id, removed);
  table.RemoveWaiter(id, kept + 1000);
  table.RemoveWaiter("t-unknown-1", kept);
  EXPECT_THAT(task.waiters, SizeIs(1));

  std::vector<std::function<void()>> notify;
  table.Finish(task, v1::TASK_STATE_SUCCEEDED, &notify);
  ASSERT_THAT(notify, SizeIs(1));
  RunAll(notify);
  EXPECT_EQ(removed_calls, 0);
  EXPECT_EQ(kept_calls, 1);
}

TEST(TaskTableTest, WaiterIdsAreUniqueAcrossTasks) {
  TaskTable table;
  Task& a = table.Insert(NewTask(table));
  const uint64_t wa = table.AddWaiter(a, [](const v1::TaskResult&) {});
  Task& b = table.Insert(NewTask(table));
  const uint64_t wb = table.AddWaiter(b, [](const v1::TaskResult&) {});
  EXPECT_NE(wa, wb);
}

TEST(TaskTableTest, MissingSaysExpiredForOurIdAndUnknownForAForeignOne) {
  TaskTable ours;
  TaskTable theirs;
  // Issued here, then swept away after its TTL.
  Task& task = ours.Insert(NewTask(ours));
  const std::string id = task.result.task_id();
  std::vector<std::function<void()>> notify;
  ours.Finish(task, v1::TASK_STATE_SUCCEEDED, &notify);
  ASSERT_EQ(ours.SweepExpired(absl::InfiniteFuture(), absl::ZeroDuration()), 1u);
  ASSERT_EQ(ours.Find(id), nullptr);
  EXPECT_THAT(ours.Missing(id),
              StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr(id), HasSubstr("expired"))));

  const std::string foreign = theirs.NewId();
  EXPECT_THAT(ours.Missing(foreign), StatusIs(absl::StatusCode::kNotFound,
                                              AllOf(HasSubstr("unknown task"), HasSubstr(foreign),
                                                    Not(HasSubstr("expired")))));
}

TEST(TaskTableTest, MissingSaysUnknownForMalformedIds) {
  TaskTable table;
  const std::string mine = table.NewId();  // t-<instance>-1
  const std::string prefix = mine.substr(0, mine.rfind('-') + 1);
  for (const std::string& id : {std::string(""), std::string("garbage"), prefix, prefix + "0",
                                prefix + "x1", prefix + "1x", "m" + mine.substr(1)}) {
    EXPECT_THAT(table.Missing(id), StatusIs(absl::StatusCode::kNotFound, HasSubstr("unknown task")))
        << "id '" << id << "'";
  }
}

TEST(TaskTableTest, FindByRequestId) {
  TaskTable table;
  Task& with = table.Insert(NewTask(table, "a", "req-1"));
  table.Insert(NewTask(table, "b"));
  Task* found = table.FindByRequestId("req-1");
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found, &with);
  EXPECT_EQ(found->input, "a");
  EXPECT_EQ(table.FindByRequestId("req-2"), nullptr);
  EXPECT_EQ(table.FindByRequestId(""), nullptr);

  // Once swept, the request id is forgotten too.
  std::vector<std::function<void()>> notify;
  table.Finish(*found, v1::TASK_STATE_SUCCEEDED, &notify);
  ASSERT_EQ(table.SweepExpired(absl::InfiniteFuture(), absl::ZeroDuration()), 1u);
  EXPECT_EQ(table.FindByRequestId("req-1"), nullptr);
}

TEST(TaskTableTest, SweepDropsOnlyTerminalTasksPastTheTtl) {
  TaskTable table;
  const absl::Duration ttl = absl::Hours(1);
  Task& early = table.Insert(NewTask(table, "early", "req-early"));
  Task& late = table.Insert(NewTask(table, "late", "req-late"));
  Task& running = table.Insert(NewTask(table, "running"));
  running.result.set_state(v1::TASK_STATE_RUNNING);
  const std::string early_id = early.result.task_id();
  const std::string late_id = late.result.task_id();
  const std::string running_id = running.result.task_id();

  std::vector<std::function<void()>> notify;
  table.Finish(early, v1::TASK_STATE_SUCCEEDED, &notify);
  const absl::Time between = absl::Now();
  WaitUntilAfter(between);
  table.Finish(late, v1::TASK_STATE_FAILED, &notify);
  ASSERT_EQ(table.size(), 3u);

  // Before anyone's TTL has passed: nothing goes.
  EXPECT_EQ(table.SweepExpired(between, ttl), 0u);
  EXPECT_EQ(table.SweepExpired(between + ttl - absl::Minutes(1), ttl), 0u);
  EXPECT_EQ(table.size(), 3u);

  // `early` ended at or before `between`, `late` after it.
  EXPECT_EQ(table.SweepExpired(between + ttl, ttl), 1u);
  EXPECT_EQ(table.Find(early_id), nullptr);
  EXPECT_EQ(table.FindByRequestId("req-early"), nullptr);
  EXPECT_NE(table.Find(late_id), nullptr);
  EXPECT_NE(table.FindByRequestId("req-late"), nullptr);
  EXPECT_NE(table.Find(running_id), nullptr);

  // Far in the future: the finished one goes, the running one never does.
  EXPECT_EQ(table.SweepExpired(absl::Now() + 2 * ttl, ttl), 1u);
  EXPECT_EQ(table.Find(late_id), nullptr);
  ASSERT_NE(table.Find(running_id), nullptr);
  EXPECT_EQ(table.size(), 1u);
  EXPECT_EQ(table.SweepExpired(absl::InfiniteFuture(), ttl), 0u);
  EXPECT_EQ(table.size(), 1u);
  EXPECT_THAT(table.Missing(early_id), StatusIs(absl::StatusCode::kNotFound, HasSubstr("expired")));
}

TEST(IsTerminalTest, ClassifiesEveryState) {
  const auto* descriptor = v1::TaskState_descriptor();
  ASSERT_EQ(descriptor->value_count(), 9) << "a new TaskState needs a decision here";
  EXPECT_FALSE(IsTerminal(v1::TASK_STATE_UNSPECIFIED));
  EXPECT_FALSE(IsTerminal(v1::TASK_STATE_PENDING));
  EXPECT_FALSE(IsTerminal(v1::TASK_STATE_RUNNING));
  EXPECT_TRUE(IsTerminal(v1::TASK_STATE_SUCCEEDED));
  EXPECT_TRUE(IsTerminal(v1::TASK_STATE_FAILED));
  EXPECT_TRUE(IsTerminal(v1::TASK_STATE_CANCELLED));
  EXPECT_TRUE(IsTerminal(v1::TASK_STATE_TIMED_OUT));
  EXPECT_TRUE(IsTerminal(v1::TASK_STATE_EXPIRED));
  EXPECT_TRUE(IsTerminal(v1::TASK_STATE_WORKER_LOST));
}

}  // namespace
}  // namespace forkpool
