// Tests for server/daemon/broker/task_broker.h: idempotency keys, tied callers,
// retries and poison, queue deadlines, result TTL and caps, waiters, on a fake
// clock with a fake consumer standing in for the executor.
#include "server/daemon/broker/task_broker.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "server/daemon/broker/memory_task_store.h"
#include "tests/unit/fake_clock.h"
#include "tests/unit/status_matchers.h"

namespace forkpool {
namespace {

using ::forkpool::testing::FakeClock;
using ::forkpool::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

class FakeConsumer : public WorkConsumer {
 public:
  void WorkAdded() override { ++added; }
  void AbandonRunning(const std::string& task_id, uint64_t) override {
    abandoned.push_back(task_id);
  }
  void StopChunks(const std::shared_ptr<MapJob>&) override { ++stopped; }
  int added = 0;
  int stopped = 0;
  std::vector<std::string> abandoned;
};

class TaskBrokerTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kGen = 3;

  void Make(BrokerOptions options = {}, int64_t max_queued = 0, MemoryBudget* budget = nullptr) {
    broker_ =
        std::make_unique<TaskBroker>(&clock_, options, std::make_unique<MemoryTaskStore>(), budget);
    PoolEntry e;
    e.name = "p";
    e.consumer = consumer_;
    e.max_queued = max_queued;
    broker_->AddPool(kGen, e);
    broker_->SetFunctions(kGen, {"square"});
  }

  v1::TaskSpec Spec(const std::string& input, const std::string& key = "") {
    v1::TaskSpec spec;
    spec.set_pool("p");
    spec.set_function("square");
    spec.mutable_input()->set_data(input);
    spec.set_request_id(key);
    return spec;
  }
  std::string MustSubmit(const v1::TaskSpec& spec, SubmitMode mode = SubmitMode::kDetached) {
    absl::StatusOr<SubmitOutcome> out = broker_->Submit(spec, mode);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? out->task_id : "";
  }
  v1::TaskState State(const std::string& id) {
    absl::StatusOr<std::shared_ptr<const v1::TaskResult>> r = broker_->GetResult(id);
    return r.ok() ? (*r)->state() : v1::TASK_STATE_UNSPECIFIED;
  }
  // Runs the next pending task on worker `key` and answers it.
  std::string RunNext(uint64_t key, const std::string& output) {
    std::optional<Dispatch> d = broker_->TakeWork(kGen, key, 100);
    EXPECT_TRUE(d.has_value());
    if (!d) return "";
    TaskBroker::Notify notify;
    broker_->TaskSucceeded(d->task_id, key, output, &notify);
    for (auto& fn : notify) fn();
    return d->task_id;
  }

  FakeClock clock_;
  std::shared_ptr<FakeConsumer> consumer_ = std::make_shared<FakeConsumer>();
  std::unique_ptr<TaskBroker> broker_;
};

TEST_F(TaskBrokerTest, AKnownKeyAnswersItsTaskEvenWhenThePoolIsFullOrClosed) {
  Make({}, /*max_queued=*/1);
  const std::string id = MustSubmit(Spec("7", "key-a"));
  EXPECT_THAT(broker_->Submit(Spec("8", "key-b"), SubmitMode::kDetached),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("limit is 1")));
  absl::StatusOr<SubmitOutcome> again = broker_->Submit(Spec("7", "key-a"), SubmitMode::kDetached);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->task_id, id);
  EXPECT_TRUE(again->deduplicated);
  broker_->SetRefusal(kGen, absl::FailedPreconditionError("pool 'p' is closed to new work"));
  again = broker_->Submit(Spec("7", "key-a"), SubmitMode::kDetached);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->task_id, id);
  broker_->BeginDrain();
  EXPECT_THAT(broker_->Submit(Spec("7", "key-c"), SubmitMode::kDetached),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(TaskBrokerTest, AKeyReusedForAnotherTaskIsRefused) {
  Make();
  MustSubmit(Spec("7", "k"));
  EXPECT_THAT(broker_->Submit(Spec("8", "k"), SubmitMode::kDetached),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("different task")));
}

TEST_F(TaskBrokerTest, AKeyRepeatedInOneSubmitManyIsOneTask) {
  Make({}, /*max_queued=*/2);
  v1::SubmitManyRequest req;
  req.set_pool("p");
  req.set_function("square");
  for (const char* in : {"1", "1", "2"}) req.add_inputs(in);
  for (const char* k : {"a", "a", "b"}) req.add_request_ids(k);
  absl::StatusOr<std::vector<std::string>> ids = broker_->SubmitMany(req);
  ASSERT_TRUE(ids.ok()) << ids.status();  // two new tasks fit max_queued 2
  ASSERT_THAT(*ids, SizeIs(3));
  EXPECT_EQ((*ids)[0], (*ids)[1]);
  EXPECT_NE((*ids)[0], (*ids)[2]);
  EXPECT_EQ(broker_->Counts(kGen).queued, 2);
  // The same key for different inputs in one request is refused.
  req.set_inputs(1, "9");
  req.set_request_ids(0, "c");
  req.set_request_ids(1, "c");
  EXPECT_THAT(broker_->SubmitMany(req), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(TaskBrokerTest, ATiedTaskIsCancelledOnlyWhenItsLastCallerLeaves) {
  Make();
  const std::string id = MustSubmit(Spec("7", "k"), SubmitMode::kTied);
  EXPECT_EQ(MustSubmit(Spec("7", "k"), SubmitMode::kTied), id);  // a second Apply joins
  broker_->CallerLeft(id);
  EXPECT_EQ(State(id), v1::TASK_STATE_PENDING);
  broker_->CallerLeft(id);
  EXPECT_EQ(State(id), v1::TASK_STATE_CANCELLED);
  // The retry with the same key runs anew instead of getting the cancellation.
  absl::StatusOr<SubmitOutcome> retry = broker_->Submit(Spec("7", "k"), SubmitMode::kTied);
  ASSERT_TRUE(retry.ok());
  EXPECT_NE(retry->task_id, id);
  EXPECT_FALSE(retry->deduplicated);
  EXPECT_EQ(State(retry->task_id), v1::TASK_STATE_PENDING);
}

TEST_F(TaskBrokerTest, ADetachedSubmitKeepsAJoinedTaskAliveWhenTheApplyLeaves) {
  Make();
  const std::string id = MustSubmit(Spec("7", "k"), SubmitMode::kTied);
  EXPECT_EQ(MustSubmit(Spec("7", "k"), SubmitMode::kDetached), id);
  broker_->CallerLeft(id);
  EXPECT_EQ(State(id), v1::TASK_STATE_PENDING);
}

TEST_F(TaskBrokerTest, CancellingARunningTaskAsksItsExecutorToFreeTheWorker) {
  Make();
  const std::string id = MustSubmit(Spec("7"));
  ASSERT_TRUE(broker_->TakeWork(kGen, 5, 100).has_value());
  ASSERT_TRUE(broker_->Cancel(id, "cancelled by a client").ok());
  EXPECT_THAT(consumer_->abandoned, ElementsAre(id));
  // Its late answer changes nothing.
  TaskBroker::Notify notify;
  broker_->TaskSucceeded(id, 5, "49", &notify);
  EXPECT_EQ(State(id), v1::TASK_STATE_CANCELLED);
}

TEST_F(TaskBrokerTest, FailuresRetryOnlyWhenAskedAndLostWorkersUpToPoison) {
  BrokerOptions o;
  o.poison_threshold = 2;
  Make(o);
  v1::TaskSpec spec = Spec("7");
  spec.mutable_options()->set_max_retries(5);
  const std::string id = MustSubmit(spec);
  TaskBroker::Notify notify;
  ASSERT_TRUE(broker_->TakeWork(kGen, 1, 100).has_value());
  broker_->TaskFailed(id, 1, v1::TASK_STATE_FAILED, "ValueError", nullptr, true, &notify);
  EXPECT_EQ(State(id), v1::TASK_STATE_FAILED);  // no retry_on_error

  const std::string lost = MustSubmit(Spec("8"));
  (void)lost;
  v1::TaskSpec s2 = Spec("9");
  s2.mutable_options()->set_max_retries(5);
  const std::string id2 = MustSubmit(s2);
  // "8" runs first (no retries): lost once, it ends WORKER_LOST.
  std::optional<Dispatch> d = broker_->TakeWork(kGen, 2, 100);
  ASSERT_TRUE(d.has_value());
  broker_->TaskFailed(d->task_id, 2, v1::TASK_STATE_WORKER_LOST, "worker lost", nullptr, true,
                      &notify);
  EXPECT_EQ(State(d->task_id), v1::TASK_STATE_WORKER_LOST);
  // "9" may retry five times, but two losses make it poison.
  for (int i = 0; i < 2; ++i) {
    d = broker_->TakeWork(kGen, 10 + i, 100);
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->task_id, id2);
    EXPECT_EQ(d->attempt, i + 1);
    broker_->TaskFailed(id2, 10 + i, v1::TASK_STATE_WORKER_LOST, "worker lost: SIGSEGV", nullptr,
                        true, &notify);
  }
  absl::StatusOr<std::shared_ptr<const v1::TaskResult>> r = broker_->GetResult(id2);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->state(), v1::TASK_STATE_FAILED);
  EXPECT_THAT((*r)->error(), HasSubstr("poison task: it killed 2 workers"));
}

TEST_F(TaskBrokerTest, AQueueDeadlineRunsOnTheMonotonicClock) {
  Make();
  v1::TaskSpec spec = Spec("7");
  *spec.mutable_options()->mutable_queue_deadline() =
      google::protobuf::util::TimeUtil::SecondsToDuration(5);
  const std::string id = MustSubmit(spec);
  clock_.StepWall(absl::Hours(2));
  clock_.Advance(absl::Seconds(4));
  EXPECT_EQ(State(id), v1::TASK_STATE_PENDING);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(State(id), v1::TASK_STATE_EXPIRED);
  EXPECT_EQ(broker_->Counts(kGen).queued, 0);
  EXPECT_FALSE(broker_->TakeWork(kGen, 1, 100).has_value());
}

TEST_F(TaskBrokerTest, ResultsLastTheirTtlOnTheMonotonicClockAndTheCountIsCapped) {
  BrokerOptions o;
  o.result_ttl = absl::Minutes(10);
  o.max_results = 2;
  Make(o);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    MustSubmit(Spec(std::to_string(i)));
    ids.push_back(RunNext(1, "out"));
  }
  // Three ended, two kept: the oldest went first.
  EXPECT_THAT(broker_->GetResult(ids[0]),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("expired")));
  EXPECT_EQ(State(ids[2]), v1::TASK_STATE_SUCCEEDED);
  clock_.StepWall(absl::Hours(5));
  clock_.Advance(absl::Minutes(9));
  EXPECT_EQ(State(ids[2]), v1::TASK_STATE_SUCCEEDED);
  clock_.Advance(absl::Minutes(2));
  EXPECT_THAT(broker_->GetResult(ids[2]), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(TaskBrokerTest, EveryWaiterSharesOneCopyOfTheResult) {
  Make();
  const std::string id = MustSubmit(Spec("7"));
  std::vector<std::shared_ptr<const v1::TaskResult>> seen;
  for (int i = 0; i < 3; ++i) {
    uint64_t wid = 0;
    absl::StatusOr<std::shared_ptr<const v1::TaskResult>> now = broker_->Watch(
        id, [&](std::shared_ptr<const v1::TaskResult> r) { seen.push_back(std::move(r)); }, &wid);
    ASSERT_TRUE(now.ok());
    EXPECT_EQ(*now, nullptr);
  }
  RunNext(1, std::string(1 << 20, 'x'));
  ASSERT_THAT(seen, SizeIs(3));
  EXPECT_EQ(seen[0].get(), seen[1].get());
  EXPECT_EQ(seen[1].get(), seen[2].get());
  EXPECT_EQ(seen[0]->output().data().size(), 1u << 20);
  // A Get afterwards reads the same copy.
  absl::StatusOr<std::shared_ptr<const v1::TaskResult>> got = broker_->GetResult(id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->get(), seen[0].get());
}

TEST_F(TaskBrokerTest, AMapsItemsCountAgainstMaxQueued) {
  Make({}, /*max_queued=*/3);
  auto job = std::make_shared<MapJob>("m-1", "p", "square", "", true, [] {});
  std::string inputs;
  for (const char* item : {"1", "2", "3", "4"}) AppendPackedItem(item, &inputs);
  EXPECT_THAT(broker_->StartMap(job, inputs, 1),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("limit is 3")));
}

TEST_F(TaskBrokerTest, TheClientByteBudgetRefusesNewWorkAndFreesAsInputsAndResultsGo) {
  MemoryBudget budget(10'000);
  BrokerOptions o;
  o.result_ttl = absl::Seconds(30);
  Make(o, 0, &budget);
  MustSubmit(Spec(std::string(4000, 'a')));
  MustSubmit(Spec(std::string(4000, 'b')));
  EXPECT_EQ(budget.used(), 8000u);
  EXPECT_THAT(broker_->Submit(Spec(std::string(4000, 'c')), SubmitMode::kDetached),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("--max_client_bytes")));
  // A map's inputs are refused by the same budget.
  auto job = std::make_shared<MapJob>("m-1", "p", "square", "", true, [] {});
  EXPECT_THAT(broker_->StartMap(job, std::string(3000, '\n'), 1),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("--max_client_bytes")));
  // The first runs: its input goes, its small result stays until the TTL.
  RunNext(1, "ok");
  EXPECT_LT(budget.used(), 6000u);
  EXPECT_GT(budget.used(), 4000u);
  MustSubmit(Spec(std::string(4000, 'c')));
  clock_.Advance(absl::Seconds(31));
  RunNext(2, "ok");
  RunNext(3, "ok");
  clock_.Advance(absl::Seconds(31));
  EXPECT_EQ(budget.used(), 0u);
}

TEST_F(TaskBrokerTest, AnUnloadedOrUnknownPoolIsNotFound) {
  Make();
  EXPECT_THAT(broker_->Submit(
                  [&] {
                    v1::TaskSpec s = Spec("1");
                    s.set_pool("nope");
                    return s;
                  }(),
                  SubmitMode::kDetached),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("unknown pool 'nope'")));
  v1::TaskSpec s = Spec("1");
  s.set_function("cube");
  EXPECT_THAT(broker_->Submit(s, SubmitMode::kDetached),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("has no function 'cube'")));
}

}  // namespace
}  // namespace forkpool
