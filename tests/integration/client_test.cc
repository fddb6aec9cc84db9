// Integration tests of the C++ client against a real forkpoold.
#include <signal.h>

#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "daemon_fixture.h"
#include "forkpool/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "status_matchers.h"

namespace forkpool {
namespace {

using ::forkpool::testing::Daemon;
using ::forkpool::testing::DaemonOptions;
using ::forkpool::testing::IsOk;
using ::forkpool::testing::IsOkAndHolds;
using ::forkpool::testing::PollUntil;
using ::forkpool::testing::ProcessAlive;
using ::forkpool::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override { StartDaemon({}); }

  void StartDaemon(const DaemonOptions& options) {
    client_.reset();
    daemon_.reset();
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(options);
    ASSERT_THAT(daemon, IsOk());
    daemon_ = *std::move(daemon);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(daemon_->address());
    ASSERT_THAT(client, IsOk());
    client_ = *std::move(client);
  }

  // Polls until the task is RUNNING (so that it holds a worker).
  void AwaitRunning(const AsyncResult& r) {
    ASSERT_TRUE(PollUntil([&] {
      absl::StatusOr<v1::TaskResult> result = r.Result();
      return result.ok() && result->state() == v1::TASK_STATE_RUNNING;
    })) << "task " << r.id() << " never started";
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientTest, ApplySquare) {
  EXPECT_THAT(client_->pool().Apply("square", "7"), IsOkAndHolds(std::string("49")));
  absl::StatusOr<std::string> out = client_->pool("default").Apply("square", "-12");
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(*out, "144");
}

TEST_F(ClientTest, ConnectAcceptsUnixPrefixAndBarePath) {
  absl::StatusOr<std::unique_ptr<Client>> bare = Client::Connect(daemon_->socket_path());
  ASSERT_THAT(bare, IsOk());
  EXPECT_THAT((*bare)->pool().Apply("square", "3"), IsOkAndHolds(std::string("9")));
  EXPECT_THAT((*bare)->Health(), IsOk());
}

TEST_F(ClientTest, ConnectToNothingFailsNamingTheAddress) {
  const std::string nowhere = daemon_->dir() + "/nobody-here.sock";
  ConnectOptions options;
  options.connect_timeout = absl::Seconds(2);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(nowhere, options);
  EXPECT_THAT(client, StatusIs(absl::StatusCode::kUnavailable, nowhere));
  EXPECT_THAT(Client::Connect(""), StatusIs(absl::StatusCode::kInvalidArgument, "address"));
}

TEST_F(ClientTest, UnknownPoolIsNotFoundNamingIt) {
  EXPECT_THAT(client_->pool("no-such-pool").Apply("square", "7"),
              StatusIs(absl::StatusCode::kNotFound, "no-such-pool"));
  EXPECT_THAT(client_->pool("no-such-pool").ApplyAsync("square", "7"),
              StatusIs(absl::StatusCode::kNotFound, "no-such-pool"));
  EXPECT_THAT(client_->DescribePool("no-such-pool"),
              StatusIs(absl::StatusCode::kNotFound, "no-such-pool"));
}

TEST_F(ClientTest, UnknownFunctionIsNotFoundNamingIt) {
  absl::StatusOr<std::string> out = client_->pool().Apply("sqaure", "7");
  EXPECT_THAT(out, StatusIs(absl::StatusCode::kNotFound, "pool 'default' has no function 'sqaure'"));
  // An RPC error, not a task outcome: no task result rides on it.
  EXPECT_FALSE(TaskResultFromStatus(out.status()).has_value());
  EXPECT_THAT(client_->pool().SubmitMany("sqaure", {"1", "2"}),
              StatusIs(absl::StatusCode::kNotFound, "sqaure"));
}

TEST_F(ClientTest, FailingTaskCarriesItsErrorText) {
  absl::StatusOr<std::string> out = client_->pool().Apply("fail", "boom");
  EXPECT_THAT(out, StatusIs(absl::StatusCode::kUnknown, "boom"));
  EXPECT_THAT(out.status().message(), HasSubstr("task t-"));
  std::optional<v1::TaskResult> carried = TaskResultFromStatus(out.status());
  ASSERT_TRUE(carried.has_value());
  EXPECT_EQ(carried->state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(carried->error(), "boom");

  // ApplyResult gives the same outcome as data.
  absl::StatusOr<v1::TaskResult> result = client_->pool().ApplyResult("fail", "boom");
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(result->state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(result->error(), "boom");

  // A non-numeric square is a task error too, not an RPC error.
  EXPECT_THAT(client_->pool().Apply("square", "abc"),
              StatusIs(absl::StatusCode::kUnknown, "abc"));
}

TEST_F(ClientTest, CrashedWorkerIsWorkerLostAndThePoolRecovers) {
  absl::StatusOr<v1::TaskResult> result = client_->pool().ApplyResult("crash", "segv");
  ASSERT_THAT(result, IsOk());
  ASSERT_EQ(result->state(), v1::TASK_STATE_WORKER_LOST) << result->DebugString();
  EXPECT_EQ(result->worker_loss().signal(), SIGSEGV);
  const pid_t dead = result->worker_loss().pid();
  ASSERT_GT(dead, 0);
  // The operating system agrees that the worker is gone.
  EXPECT_TRUE(PollUntil([&] { return !ProcessAlive(dead); })) << "worker " << dead << " lives";

  absl::StatusOr<std::string> out = client_->pool().Apply("crash", "segv");
  EXPECT_THAT(out, StatusIs(absl::StatusCode::kAborted, "SIGSEGV"));
  EXPECT_THAT(out.status().message(), HasSubstr("worker lost"));

  // Replacement workers run the next tasks.
  EXPECT_THAT(client_->pool().Apply("square", "5"), IsOkAndHolds(std::string("25")));
}

TEST_F(ClientTest, GetWithTimeoutReportsNotReadyThenSucceeds) {
  absl::StatusOr<AsyncResult> r = client_->pool().ApplyAsync("sleep", "1");
  ASSERT_THAT(r, IsOk());
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> early = r->Get(absl::Milliseconds(100));
  const absl::Duration waited = absl::Now() - start;
  EXPECT_THAT(early, StatusIs(absl::StatusCode::kDeadlineExceeded, "not ready"));
  EXPECT_THAT(early.status().message(), HasSubstr(r->id()));
  EXPECT_FALSE(TaskResultFromStatus(early.status()).has_value());
  EXPECT_GE(waited, absl::Milliseconds(95));  // it did wait
  EXPECT_LT(waited, absl::Seconds(1));        // and no longer than asked (generous)

  EXPECT_THAT(r->Ready(), IsOkAndHolds(false));
  EXPECT_THAT(r->Successful(), StatusIs(absl::StatusCode::kFailedPrecondition, "not ready"));
  EXPECT_THAT(r->Wait(absl::ZeroDuration()), IsOkAndHolds(false));

  // The task kept running and ends well.
  EXPECT_THAT(r->Get(), IsOkAndHolds(std::string("1")));
  EXPECT_THAT(r->Ready(), IsOkAndHolds(true));
  EXPECT_THAT(r->Successful(), IsOkAndHolds(true));
  absl::StatusOr<v1::TaskResult> full = r->Result();
  ASSERT_THAT(full, IsOk());
  EXPECT_EQ(full->state(), v1::TASK_STATE_SUCCEEDED);
  EXPECT_GT(full->worker_pid(), 0);
  // A copy made before the end shares what the first one learnt.
  AsyncResult copy = *r;
  EXPECT_THAT(copy.Get(absl::ZeroDuration()), IsOkAndHolds(std::string("1")));
}

TEST_F(ClientTest, NegativeTimeoutIsInvalidArgument) {
  absl::StatusOr<AsyncResult> r = client_->pool().ApplyAsync("echo", "x");
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->Get(absl::Seconds(-1)), StatusIs(absl::StatusCode::kInvalidArgument, "negative"));
}

TEST_F(ClientTest, UnknownTaskIdIsNotFound) {
  EXPECT_THAT(client_->Task("t-0000000000000000-1").Get(absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kNotFound, "t-0000000000000000-1"));
}

TEST_F(ClientTest, SameRequestIdReturnsTheSameTask) {
  ApplyOptions options;
  options.request_id = "client-test-rid-1";
  absl::StatusOr<AsyncResult> first = client_->pool().ApplyAsync("square", "6", options);
  absl::StatusOr<AsyncResult> second = client_->pool().ApplyAsync("square", "6", options);
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT(second, IsOk());
  EXPECT_EQ(first->id(), second->id());
  EXPECT_THAT(second->Get(), IsOkAndHolds(std::string("36")));
  // The same key for another task is refused, naming the key.
  EXPECT_THAT(client_->pool().ApplyAsync("square", "7", options),
              StatusIs(absl::StatusCode::kInvalidArgument, "client-test-rid-1"));
  // Only one task ran.
  absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("default");
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->tasks_done(), 1);
}

TEST_F(ClientTest, WaitFirstAndAll) {
  absl::StatusOr<AsyncResult> fast = client_->pool().ApplyAsync("sleep", "0.05");
  absl::StatusOr<AsyncResult> slow = client_->pool().ApplyAsync("sleep", "30");
  ASSERT_THAT(fast, IsOk());
  ASSERT_THAT(slow, IsOk());
  const std::vector<AsyncResult> both = {*fast, *slow};

  absl::StatusOr<WaitOutcome> first = Wait(*client_, both, WaitMode::kFirst, absl::Seconds(20));
  ASSERT_THAT(first, IsOk());
  EXPECT_TRUE(first->satisfied);
  EXPECT_THAT(first->done, ElementsAre(fast->id()));
  EXPECT_THAT(first->not_done, ElementsAre(slow->id()));

  absl::StatusOr<WaitOutcome> all = Wait(*client_, both, WaitMode::kAll, absl::Milliseconds(100));
  ASSERT_THAT(all, IsOk());
  EXPECT_FALSE(all->satisfied);
  EXPECT_THAT(all->not_done, ElementsAre(slow->id()));

  // Once the slow one ends (cancelled here), all is satisfied, waiting without a limit.
  EXPECT_THAT(slow->Cancel(), IsOkAndHolds(true));
  absl::StatusOr<WaitOutcome> after = Wait(*client_, both, WaitMode::kAll);
  ASSERT_THAT(after, IsOk());
  EXPECT_TRUE(after->satisfied);
  EXPECT_THAT(after->done, ElementsAre(fast->id(), slow->id()));
  EXPECT_THAT(after->not_done, IsEmpty());
  EXPECT_THAT(slow->Get(), StatusIs(absl::StatusCode::kCancelled, "cancel"));

  // Nothing to wait for is satisfied at once; an unknown id is NOT_FOUND.
  absl::StatusOr<WaitOutcome> none = Wait(*client_, {}, WaitMode::kAll);
  ASSERT_THAT(none, IsOk());
  EXPECT_TRUE(none->satisfied);
  EXPECT_THAT(client_->Wait({"t-0000000000000000-9"}, WaitMode::kAll, absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kNotFound, "t-0000000000000000-9"));
}

TEST_F(ClientTest, CancelQueuedTaskDropsItBeforeItRuns) {
  // Two workers, both held by long tasks: the third task must queue.
  absl::StatusOr<AsyncResult> a = client_->pool().ApplyAsync("sleep", "30");
  absl::StatusOr<AsyncResult> b = client_->pool().ApplyAsync("sleep", "30");
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  AwaitRunning(*a);
  AwaitRunning(*b);
  absl::StatusOr<AsyncResult> queued = client_->pool().ApplyAsync("square", "9");
  ASSERT_THAT(queued, IsOk());
  absl::StatusOr<v1::TaskResult> before = queued->Result();
  ASSERT_THAT(before, IsOk());
  ASSERT_EQ(before->state(), v1::TASK_STATE_PENDING);

  EXPECT_THAT(queued->Cancel(), IsOkAndHolds(true));
  absl::StatusOr<v1::TaskResult> after = queued->Result(absl::Seconds(10));
  ASSERT_THAT(after, IsOk());
  EXPECT_EQ(after->state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(after->worker_pid(), 0) << "a cancelled queued task must never start";
  EXPECT_FALSE(after->has_started_at());
  EXPECT_EQ(after->attempts(), 0);
  EXPECT_THAT(queued->Get(), StatusIs(absl::StatusCode::kCancelled, "cancel"));
  EXPECT_THAT(queued->Successful(), IsOkAndHolds(false));
  // Cancelling again changes nothing.
  EXPECT_THAT(queued->Cancel(), IsOkAndHolds(false));

  // Cancelling a running task kills its worker.
  absl::StatusOr<v1::TaskResult> running = a->Result();
  ASSERT_THAT(running, IsOk());
  const pid_t worker = running->worker_pid();
  ASSERT_GT(worker, 0);
  EXPECT_THAT(a->Cancel(), IsOkAndHolds(true));
  EXPECT_THAT(a->Get(absl::Seconds(10)), StatusIs(absl::StatusCode::kCancelled, ""));
  EXPECT_TRUE(PollUntil([&] { return !ProcessAlive(worker); }));
  EXPECT_THAT(b->Cancel(), IsOkAndHolds(true));
}

TEST_F(ClientTest, SubmitManyKeepsInputOrder) {
  std::vector<std::string> inputs;
  for (int i = 0; i < 50; ++i) inputs.push_back(absl::StrCat(i));
  absl::StatusOr<std::vector<AsyncResult>> results = client_->pool().SubmitMany("square", inputs);
  ASSERT_THAT(results, IsOk());
  ASSERT_EQ(results->size(), inputs.size());
  std::set<std::string> ids;
  for (int i = 0; i < 50; ++i) {
    ids.insert((*results)[i].id());
    EXPECT_THAT((*results)[i].Get(absl::Seconds(20)),
                IsOkAndHolds(absl::StrCat(i * i)));
  }
  EXPECT_EQ(ids.size(), inputs.size());
}

TEST_F(ClientTest, SubmitManySplitsRequestsLargerThanTheDaemonAccepts) {
  // The daemon refuses requests over 4 MiB here: 10 inputs of 1 MiB pass only if the
  // client cuts them into several calls.
  DaemonOptions options;
  options.extra_flags = {"--max_message_bytes=4194304"};
  StartDaemon(options);
  const std::vector<std::string> inputs(10, std::string(1 << 20, 'x'));
  absl::StatusOr<std::vector<AsyncResult>> results = client_->pool().SubmitMany("echo", inputs);
  ASSERT_THAT(results, IsOk());
  ASSERT_EQ(results->size(), inputs.size());
  for (const AsyncResult& r : *results) {
    absl::StatusOr<std::string> out = r.Get(absl::Seconds(20));
    ASSERT_THAT(out, IsOk());
    EXPECT_EQ(out->size(), size_t{1} << 20);
  }
  // A single Submit of the same total size would have been refused.
  absl::StatusOr<AsyncResult> whole =
      client_->pool().ApplyAsync("echo", std::string(5 << 20, 'x'));
  EXPECT_THAT(whole, StatusIs(absl::StatusCode::kResourceExhausted, ""));
}

TEST_F(ClientTest, SubmitManyWithRequestIdIsIdempotent) {
  ApplyOptions options;
  options.request_id = "batch-1";
  absl::StatusOr<std::vector<AsyncResult>> first =
      client_->pool().SubmitMany("square", {"2", "3"}, options);
  absl::StatusOr<std::vector<AsyncResult>> again =
      client_->pool().SubmitMany("square", {"2", "3"}, options);
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT(again, IsOk());
  ASSERT_EQ(first->size(), 2u);
  ASSERT_EQ(again->size(), 2u);
  EXPECT_EQ((*first)[0].id(), (*again)[0].id());
  EXPECT_EQ((*first)[1].id(), (*again)[1].id());
  EXPECT_THAT((*again)[1].Get(), IsOkAndHolds(std::string("9")));
}

TEST_F(ClientTest, PoolsAndHealth) {
  EXPECT_THAT(client_->Health(), IsOk());
  absl::StatusOr<v1::ListPoolsResponse> pools = client_->ListPools();
  ASSERT_THAT(pools, IsOk());
  ASSERT_EQ(pools->pools_size(), 1);
  const v1::PoolInfo& pool = pools->pools(0);
  EXPECT_EQ(pool.settings().name(), "default");
  // Workers can take a moment to say hello; the pids the daemon reports must exist.
  ASSERT_TRUE(PollUntil([&] {
    absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("default");
    if (!info.ok() || info->workers_size() != 2) return false;
    for (const v1::WorkerInfo& w : info->workers()) {
      if (w.pid() <= 0 || !ProcessAlive(w.pid())) return false;
    }
    return true;
  }));
}

TEST_F(ClientTest, DaemonGoneIsUnavailableNamingTheAddress) {
  absl::StatusOr<AsyncResult> r = client_->pool().ApplyAsync("sleep", "30");
  ASSERT_THAT(r, IsOk());
  ASSERT_THAT(daemon_->Stop(absl::Seconds(1)), IsOk());
  absl::StatusOr<std::string> out = r->Get(absl::Seconds(5));
  EXPECT_THAT(out, StatusIs(absl::StatusCode::kUnavailable, daemon_->socket_path()));
}

// forkpool::Wait brings the ended tasks' results along: after it, every Get answers
// without the daemon (here: after the daemon has stopped).
TEST_F(ClientTest, WaitBringsResultsAlongSoGetNeedsNoRpc) {
  std::vector<std::string> inputs;
  for (int i = 0; i < 200; ++i) inputs.push_back(std::to_string(i));
  absl::StatusOr<std::vector<AsyncResult>> results = client_->pool().SubmitMany("square", inputs);
  ASSERT_THAT(results, IsOk());
  absl::StatusOr<WaitOutcome> outcome = Wait(*client_, *results, WaitMode::kAll);
  ASSERT_THAT(outcome, IsOk());
  EXPECT_TRUE(outcome->satisfied);
  ASSERT_EQ(outcome->done.size(), 200u);
  absl::StatusOr<int> stopped = daemon_->Stop(absl::Seconds(10));
  ASSERT_THAT(stopped, IsOk());
  for (int i = 0; i < 200; ++i) {
    EXPECT_THAT((*results)[i].Get(absl::ZeroDuration()), IsOkAndHolds(std::to_string(i * i)))
        << "task " << i;
  }
}

}  // namespace
}  // namespace forkpool
