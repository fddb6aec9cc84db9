// Tests for server/daemon/executor/pool_executor.h: a pool's policy (time
// limits, recycling, retries, lost map chunks, stopped workers, back-off of a
// failing helper or initializer, start deadlines) with a fake launcher and a
// fake clock. No process is made; each test runs in milliseconds.
#include "server/daemon/executor/pool_executor.h"

#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "common/packed_items.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "server/daemon/broker/memory_task_store.h"
#include "server/daemon/broker/task_broker.h"
#include "tests/unit/fake_clock.h"
#include "tests/unit/server/daemon/executor/fake_launcher.h"
#include "tests/unit/status_matchers.h"

namespace forkpool {
namespace {

using ::forkpool::testing::FakeClock;
using ::forkpool::testing::FakeLauncher;
using ::forkpool::testing::FakeWorker;
using ::testing::HasSubstr;
using ::testing::SizeIs;

google::protobuf::Duration Dur(absl::Duration d) {
  return google::protobuf::util::TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(d));
}

class PoolExecutorTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kGen = 7;

  void SetUp() override {
    BrokerOptions bo;
    bo.poison_threshold = 3;
    broker_ = std::make_unique<TaskBroker>(&clock_, bo, std::make_unique<MemoryTaskStore>());
  }

  // Makes the executor of pool "p" on a fresh FakeLauncher (not started).
  void MakeExecutor(v1::PoolSettings settings) {
    settings.set_name("p");
    auto launcher = std::make_shared<FakeLauncher>();
    launcher_ = launcher.get();
    ExecutorDeps deps;
    deps.clock = &clock_;
    deps.broker = broker_.get();
    deps.launcher = launcher;
    deps.census = &census_;
    executor_ = PoolExecutor::Create(kGen, settings, std::move(deps), options_);
  }

  // Creates pool "p" of `processes` workers, loads it and has every worker
  // say hello.
  void MakePool(int processes, v1::PoolSettings settings = {}) {
    settings.set_processes(processes);
    MakeExecutor(settings);
    PoolEntry entry;
    entry.name = "p";
    entry.consumer = executor_;
    entry.processes = processes;
    entry.task_defaults = settings.task_defaults();
    broker_->AddPool(kGen, entry);
    executor_->Start([this](absl::StatusOr<v1::PoolInfo> info) { created_ = info.status(); },
                     [this] { gone_ = true; });
    launcher_->FinishLoad();
    workers_ = launcher_->StartAll();
    ASSERT_THAT(workers_, SizeIs(processes));
  }

  std::string Submit(const std::string& input, v1::TaskOptions options = {}) {
    v1::TaskSpec spec;
    spec.set_pool("p");
    spec.set_function("square");
    spec.mutable_input()->set_data(input);
    *spec.mutable_options() = options;
    absl::StatusOr<SubmitOutcome> out = broker_->Submit(spec, SubmitMode::kDetached);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? out->task_id : "";
  }

  v1::TaskResult Result(const std::string& id) {
    absl::StatusOr<std::shared_ptr<const v1::TaskResult>> r = broker_->GetResult(id);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? **r : v1::TaskResult();
  }

  FakeClock clock_;
  WorkerCensus census_;
  ExecutorOptions options_;
  std::unique_ptr<TaskBroker> broker_;
  std::shared_ptr<PoolExecutor> executor_;
  FakeLauncher* launcher_ = nullptr;
  std::vector<FakeWorker*> workers_;
  absl::Status created_ = absl::UnknownError("not yet");
  bool gone_ = false;
};

TEST_F(PoolExecutorTest, RunsATaskOnAnIdleWorkerAndKeepsItsResult) {
  MakePool(1);
  EXPECT_TRUE(created_.ok()) << created_;
  const std::string id = Submit("7");
  ASSERT_EQ(workers_[0]->runs(), 1);
  EXPECT_EQ(workers_[0]->last_run().task_id(), id);
  EXPECT_EQ(Result(id).state(), v1::TASK_STATE_RUNNING);
  EXPECT_EQ(Result(id).worker_pid(), workers_[0]->pid());
  workers_[0]->Answer({"49"});
  EXPECT_EQ(Result(id).state(), v1::TASK_STATE_SUCCEEDED);
  EXPECT_EQ(Result(id).output().data(), "49");
  EXPECT_EQ(executor_->Info().idle(), 1);
}

TEST_F(PoolExecutorTest, HardTimeLimitKillsTheWorkerAndTheTaskTimesOut) {
  MakePool(1);
  v1::TaskOptions o;
  *o.mutable_time_limit() = Dur(absl::Seconds(2));
  const std::string id = Submit("7", o);
  clock_.Advance(absl::Milliseconds(1999));
  EXPECT_EQ(workers_[0]->kills, 0);
  clock_.Advance(absl::Milliseconds(2));
  EXPECT_EQ(workers_[0]->kills, 1);
  workers_[0]->Exit(SIGKILL);
  const v1::TaskResult r = Result(id);
  EXPECT_EQ(r.state(), v1::TASK_STATE_TIMED_OUT);
  EXPECT_THAT(r.error(), HasSubstr("hard time limit of 2s"));
  // Its replacement is asked for at once: a time-out is not a failed start.
  EXPECT_THAT(launcher_->starts, SizeIs(1));
}

TEST_F(PoolExecutorTest, ATimeLimitDueAfterItsTaskSucceededKillsNothing) {
  MakePool(1);
  v1::TaskOptions o;
  *o.mutable_time_limit() = Dur(absl::Seconds(1));
  const std::string id = Submit("7", o);
  clock_.Advance(absl::Milliseconds(500));
  workers_[0]->Answer({"49"});
  clock_.Advance(absl::Seconds(5));
  EXPECT_EQ(workers_[0]->kills, 0);
  EXPECT_EQ(Result(id).state(), v1::TASK_STATE_SUCCEEDED);
}

TEST_F(PoolExecutorTest, AWallClockStepDoesNotTimeOutARunningTask) {
  MakePool(1);
  v1::TaskOptions o;
  *o.mutable_time_limit() = Dur(absl::Seconds(10));
  const std::string id = Submit("7", o);
  clock_.StepWall(absl::Hours(3));
  clock_.Advance(absl::Seconds(9));
  EXPECT_EQ(workers_[0]->kills, 0);
  EXPECT_EQ(Result(id).state(), v1::TASK_STATE_RUNNING);
}

TEST_F(PoolExecutorTest, SoftLimitTravelsPerItemAndTheHardLimitCoversTheChunk) {
  MakePool(1);
  auto job = std::make_shared<MapJob>("m-1", "p", "square", "", true, [] {});
  v1::TaskOptions o;
  *o.mutable_time_limit() = Dur(absl::Seconds(1));
  *o.mutable_soft_time_limit() = Dur(absl::Milliseconds(300));
  job->set_options(o);
  std::string inputs;
  for (const char* item : {"1", "2", "3"}) AppendPackedItem(item, &inputs);
  FORKPOOL_ASSERT_OK(broker_->StartMap(job, inputs, 3));
  const internal::RunBatch& run = workers_[0]->last_run();
  EXPECT_EQ(run.soft_time_limit_ns(), 300'000'000);
  // Three items of 1 s each.
  clock_.Advance(absl::Milliseconds(2900));
  EXPECT_EQ(workers_[0]->kills, 0);
  clock_.Advance(absl::Milliseconds(200));
  EXPECT_EQ(workers_[0]->kills, 1);
}

TEST_F(PoolExecutorTest, RecyclesAWorkerAfterMaxTasksPerChild) {
  v1::PoolSettings s;
  s.set_max_tasks_per_child(2);
  MakePool(1, s);
  Submit("1");
  workers_[0]->Answer({"1"});
  EXPECT_FALSE(workers_[0]->sent_shutdown());
  Submit("2");
  workers_[0]->Answer({"4"});
  EXPECT_TRUE(workers_[0]->sent_shutdown());
  EXPECT_THAT(launcher_->starts, SizeIs(0));
  workers_[0]->Exit(0);
  EXPECT_THAT(launcher_->starts, SizeIs(1));
  EXPECT_EQ(executor_->Info().workers_lost(), 0);
}

TEST_F(PoolExecutorTest, ALostWorkersTaskIsRetriedAndQuarantinedAsPoison) {
  MakePool(1);
  v1::TaskOptions o;
  o.set_max_retries(10);
  const std::string id = Submit("7", o);
  for (int loss = 1; loss <= 3; ++loss) {
    SCOPED_TRACE(loss);
    FakeWorker* w = workers_.back();
    ASSERT_EQ(w->last_run().task_id(), id);
    EXPECT_EQ(w->last_run().attempt(), loss);
    w->Exit(SIGSEGV);
    if (loss < 3) {
      EXPECT_EQ(Result(id).state(), v1::TASK_STATE_PENDING);
      workers_ = launcher_->StartAll();
      ASSERT_THAT(workers_, SizeIs(1));
    }
  }
  const v1::TaskResult r = Result(id);
  EXPECT_EQ(r.state(), v1::TASK_STATE_FAILED);
  EXPECT_THAT(r.error(), HasSubstr("poison task: it killed 3 workers"));
  EXPECT_EQ(r.worker_loss().signal(), SIGSEGV);
}

TEST_F(PoolExecutorTest, ALostWorkersMapChunkIsQueuedAgainFromTheItemThatRan) {
  MakePool(1);
  auto job = std::make_shared<MapJob>("m-1", "p", "square", "", true, [] {});
  v1::TaskOptions o;
  o.set_max_retries(1);
  job->set_options(o);
  std::string inputs;
  for (const char* item : {"1", "2", "3", "4"}) AppendPackedItem(item, &inputs);
  FORKPOOL_ASSERT_OK(broker_->StartMap(job, inputs, 4));
  FakeWorker* w = workers_[0];
  // Items 0 and 1 answered, then the worker dies running item 2.
  internal::FromWorker r;
  r.mutable_results()->set_batch_id(w->last_run().batch_id());
  AppendPackedItem("1", r.mutable_results()->mutable_outputs());
  AppendPackedItem("4", r.mutable_results()->mutable_outputs());
  w->Say(std::move(r));
  w->Exit(SIGKILL);
  workers_ = launcher_->StartAll();
  ASSERT_THAT(workers_, SizeIs(1));
  const internal::RunBatch& again = workers_[0]->last_run();
  EXPECT_EQ(again.attempt(), 2);
  absl::StatusOr<size_t> n = CountPackedItems(again.inputs(), ~size_t{0}, "inputs");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u);  // items 2 and 3
  workers_[0]->Answer({"9", "16"});
  // Every item answered once, none failed.
  std::optional<v1::MapResponse> batch = job->TakeBatch();
  ASSERT_TRUE(batch.has_value());
  EXPECT_EQ(batch->done(), 4u);
  EXPECT_THAT(batch->errors(), SizeIs(0));
  EXPECT_TRUE(job->Finished());
}

TEST_F(PoolExecutorTest, AStoppedWorkerGetsNoWorkAndIsKilledAfterItsGrace) {
  options_.stopped_grace = absl::Seconds(10);
  MakePool(1);
  workers_[0]->stop_change = StopChange::Kind::kStopped;
  clock_.Advance(options_.stop_check_interval);
  const std::string id = Submit("7");
  EXPECT_EQ(workers_[0]->runs(), 0);
  EXPECT_EQ(Result(id).state(), v1::TASK_STATE_PENDING);
  clock_.Advance(absl::Seconds(9));
  EXPECT_EQ(workers_[0]->kills, 0);
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(workers_[0]->kills, 1);
  workers_[0]->Exit(SIGKILL);
  workers_ = launcher_->StartAll();
  ASSERT_THAT(workers_, SizeIs(1));
  EXPECT_EQ(workers_[0]->last_run().task_id(), id);
}

TEST_F(PoolExecutorTest, AContinuedWorkerGetsWorkAgain) {
  MakePool(1);
  workers_[0]->stop_change = StopChange::Kind::kStopped;
  clock_.Advance(options_.stop_check_interval);
  const std::string id = Submit("7");
  EXPECT_EQ(workers_[0]->runs(), 0);
  workers_[0]->stop_change = StopChange::Kind::kContinued;
  clock_.Advance(options_.stop_check_interval);
  EXPECT_EQ(workers_[0]->last_run().task_id(), id);
}

TEST_F(PoolExecutorTest, ALostHelperIsReloadedWithBackOffAndThePoolFailsAfterFive) {
  MakePool(1);
  EXPECT_EQ(launcher_->loads, 1);
  launcher_->LoseHelper("(pid 4242) killed by SIGKILL (signal 9)");
  EXPECT_EQ(executor_->Info().state(), v1::POOL_STATE_RECOVERING);
  // 0.1 s, 0.2 s, 0.4 s, 0.8 s between tries.
  absl::Duration delay = absl::Milliseconds(100);
  for (int failure = 1; failure < 5; ++failure) {
    SCOPED_TRACE(failure);
    clock_.Advance(delay - absl::Milliseconds(1));
    EXPECT_EQ(launcher_->loads, failure);
    clock_.Advance(absl::Milliseconds(1));
    EXPECT_EQ(launcher_->loads, failure + 1);
    launcher_->FailLoad(absl::FailedPreconditionError("libx.so: killed by SIGABRT"));
    delay *= 2;
  }
  const v1::PoolInfo info = executor_->Info();
  EXPECT_EQ(info.state(), v1::POOL_STATE_FAILED);
  EXPECT_THAT(info.last_error(), HasSubstr("libx.so"));
  // Its worker lives on and still takes work.
  const std::string id = Submit("7");
  EXPECT_EQ(workers_[0]->last_run().task_id(), id);
}

TEST_F(PoolExecutorTest, AFailingInitializerIsRestartedWithBackOff) {
  MakePool(1);
  FakeWorker* w = workers_[0];
  w->Exit(SIGKILL);  // an unexpected loss of a ready worker restarts at once
  ASSERT_THAT(launcher_->starts, SizeIs(1));
  for (int failure = 1; failure <= 3; ++failure) {
    SCOPED_TRACE(failure);
    FakeWorker* starting = launcher_->FinishStart();
    internal::FromWorker hello;
    hello.mutable_hello()->set_protocol_version(internal::PROTOCOL_VERSION_1);
    hello.mutable_hello()->mutable_init_error()->set_code(2);
    hello.mutable_hello()->mutable_init_error()->set_message("init blew up");
    starting->Say(std::move(hello));
    starting->Exit(0);
    EXPECT_THAT(executor_->Info().last_error(), HasSubstr("init blew up"));
    const absl::Duration delay = absl::Milliseconds(100) * (1 << (failure - 1));
    EXPECT_THAT(launcher_->starts, SizeIs(0));
    clock_.Advance(delay - absl::Milliseconds(1));
    EXPECT_THAT(launcher_->starts, SizeIs(0));
    clock_.Advance(absl::Milliseconds(1));
    EXPECT_THAT(launcher_->starts, SizeIs(1));
  }
}

TEST_F(PoolExecutorTest, AWorkerThatNeverSaysHelloIsKilledAtItsStartDeadline) {
  options_.start_timeout = absl::Seconds(60);
  MakePool(1);
  workers_[0]->Exit(SIGKILL);
  FakeWorker* starting = launcher_->FinishStart();
  clock_.Advance(absl::Seconds(59));
  EXPECT_EQ(starting->kills, 0);
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(starting->kills, 1);
  EXPECT_THAT(executor_->Info().last_error(), HasSubstr("did not start within 1m"));
}

TEST_F(PoolExecutorTest, CancellingARunningTaskKillsItsWorkerAndIgnoresItsLateAnswer) {
  MakePool(1);
  const std::string id = Submit("7");
  absl::StatusOr<v1::CancelResponse> c = broker_->Cancel(id, "cancelled by a client");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->cancelled());
  EXPECT_EQ(workers_[0]->kills, 1);
  workers_[0]->Answer({"49"});
  EXPECT_EQ(Result(id).state(), v1::TASK_STATE_CANCELLED);
}

TEST_F(PoolExecutorTest, CloseLetsQueuedWorkFinishThenStopsWorkersAndJoins) {
  MakePool(1);
  const std::string a = Submit("1");
  const std::string b = Submit("2");
  executor_->Close();
  bool joined = false;
  FORKPOOL_ASSERT_OK(executor_->Join([&] { joined = true; }));
  workers_[0]->Answer({"1"});
  EXPECT_EQ(workers_[0]->last_run().task_id(), b);
  EXPECT_FALSE(workers_[0]->sent_shutdown());
  workers_[0]->Answer({"4"});
  EXPECT_TRUE(workers_[0]->sent_shutdown());
  EXPECT_FALSE(joined);
  workers_[0]->Exit(0);
  EXPECT_TRUE(joined);
  EXPECT_EQ(Result(b).state(), v1::TASK_STATE_SUCCEEDED);
  EXPECT_THAT(launcher_->starts, SizeIs(0));
}

TEST_F(PoolExecutorTest, DeleteCancelsWorkAndIsGoneOnceItsWorkersAreReaped) {
  MakePool(2);
  const std::string id = Submit("7");
  executor_->Delete();
  EXPECT_EQ(Result(id).state(), v1::TASK_STATE_CANCELLED);
  EXPECT_FALSE(gone_);
  workers_[0]->Exit(SIGKILL);
  EXPECT_FALSE(gone_);
  workers_[1]->Exit(SIGKILL);
  EXPECT_TRUE(gone_);
  EXPECT_THAT(launcher_->starts, SizeIs(0));
}

TEST_F(PoolExecutorTest, APoolDeletedBeforeItStartedAnswersItsCreateAndIsGoneAtOnce) {
  // What a CreatePool racing a DeletePool of the same name looks like: the
  // registry has the executor, the delete reaches it before Start.
  v1::PoolSettings settings;
  settings.set_processes(1);
  MakeExecutor(settings);
  executor_->Delete();
  executor_->Start([this](absl::StatusOr<v1::PoolInfo> info) { created_ = info.status(); },
                   [this] { gone_ = true; });
  EXPECT_THAT(created_, ::forkpool::testing::StatusIs(absl::StatusCode::kNotFound,
                                                      HasSubstr("deleted while loading")));
  EXPECT_TRUE(gone_);
  EXPECT_EQ(launcher_->loads, 0);  // no helper was ever asked for
}

}  // namespace
}  // namespace forkpool
