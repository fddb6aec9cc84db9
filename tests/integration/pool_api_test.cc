// Integration tests of the multiprocessing.Pool-shaped C++ API (Map, ImapUnordered,
// ApplyAsync, MapAsync, Starmap, ScopedPool, close / join / terminate) against a real
// forkpoold: the Python multiprocessing seed example, translated.
#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "map_test_util.h"

namespace forkpool {
namespace {

using ::forkpool::testing::ChildrenOf;
using ::forkpool::testing::IsOk;
using ::forkpool::testing::IsOkAndHolds;
using ::forkpool::testing::Numbers;
using ::forkpool::testing::OpenFds;
using ::forkpool::testing::PollUntil;
using ::forkpool::testing::ProcessAlive;
using ::forkpool::testing::SpareHelperPidsOf;
using ::forkpool::testing::StatusIs;
using ::forkpool::testing::WorkerPids;
using ::testing::UnorderedElementsAreArray;

class PoolApiTest : public testing::MapTestBase {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartDaemon(2)); }
};

// with Pool(processes=4) as pool: the example from multiprocessing's documentation.
TEST_F(PoolApiTest, MultiprocessingSeedExample) {
  std::set<pid_t> workers;
  {
    absl::StatusOr<ScopedPool> made = ScopedPool::Create(*client_, ExamplePool("seed", 4));
    ASSERT_THAT(made, IsOk());
    ScopedPool& pool = *made;
    workers = AwaitIdleWorkers("seed", 4);
    ASSERT_EQ(workers.size(), 4u);

    // print(pool.map(f, range(10)))
    std::vector<int64_t> range10;
    for (int64_t i = 0; i < 10; ++i) range10.push_back(i);
    EXPECT_THAT(pool->Map<int64_t>("square", range10),
                IsOkAndHolds(std::vector<int64_t>{0, 1, 4, 9, 16, 25, 36, 49, 64, 81}));

    // for i in pool.imap_unordered(f, range(10)): print(i)
    MapResults unordered = pool->ImapUnordered("square", Numbers(10));
    std::vector<std::string> seen;
    while (true) {
      absl::StatusOr<std::optional<MapItem>> next = unordered.Next();
      ASSERT_THAT(next, IsOk());
      if (!next->has_value()) break;
      ASSERT_THAT((*next)->output, IsOk());
      seen.push_back(*(*next)->output);
    }
    EXPECT_THAT(
        seen, UnorderedElementsAreArray({"0", "1", "4", "9", "16", "25", "36", "49", "64", "81"}));

    // res = pool.apply_async(f, (20,)); print(res.get(timeout=1))
    absl::StatusOr<AsyncResult> r20 = pool->ApplyAsync("square", "20");
    ASSERT_THAT(r20, IsOk());
    EXPECT_THAT(r20->Get(absl::Seconds(1)), IsOkAndHolds(std::string("400")));

    // res = pool.apply_async(os.getpid, ()); print(res.get(timeout=1))
    absl::StatusOr<AsyncResult> pid = pool->ApplyAsync("getpid", "");
    ASSERT_THAT(pid, IsOk());
    absl::StatusOr<std::string> pid_text = pid->Get(absl::Seconds(1));
    ASSERT_THAT(pid_text, IsOk());
    pid_t worker_pid = 0;
    ASSERT_TRUE(absl::SimpleAtoi(*pid_text, &worker_pid)) << *pid_text;
    EXPECT_TRUE(workers.count(worker_pid)) << worker_pid << " is not a worker of the pool";
    EXPECT_TRUE(ProcessAlive(worker_pid));

    // multiple_results = [pool.apply_async(os.getpid, ()) for i in range(4)]
    std::vector<AsyncResult> pids;
    for (int i = 0; i < 8; ++i) {
      absl::StatusOr<AsyncResult> r = pool->ApplyAsync("getpid", "");
      ASSERT_THAT(r, IsOk());
      pids.push_back(*r);
    }
    std::set<pid_t> used;
    for (const AsyncResult& r : pids) {
      absl::StatusOr<std::string> text = r.Get(absl::Seconds(5));
      ASSERT_THAT(text, IsOk());
      pid_t p = 0;
      ASSERT_TRUE(absl::SimpleAtoi(*text, &p));
      EXPECT_TRUE(workers.count(p)) << p << " is not a worker of the pool";
      used.insert(p);
    }
    EXPECT_GE(used.size(), 1u);  // "may" use several: not guaranteed on a busy machine

    // res = pool.apply_async(time.sleep, (10,)); res.get(timeout=1) -> TimeoutError
    absl::StatusOr<AsyncResult> sleeper = pool->ApplyAsync("sleep", "10");
    ASSERT_THAT(sleeper, IsOk());
    const absl::Status not_ready = sleeper->Get(absl::Seconds(1)).status();
    EXPECT_THAT(not_ready, StatusIs(absl::StatusCode::kDeadlineExceeded, "not ready"));
    EXPECT_FALSE(TaskResultFromStatus(not_ready).has_value()) << "a timeout is not a failure";
    // The pool is still usable: another task succeeds at once.
    const absl::Time start = absl::Now();
    EXPECT_THAT(pool->Apply("square", "12"), IsOkAndHolds(std::string("144")));
    EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  }
  // Leaving the scope terminated the pool: its workers are gone (the sleeper's too).
  EXPECT_TRUE(PollUntil([&] {
    for (pid_t p : workers) {
      if (ProcessAlive(p)) return false;
    }
    return true;
  })) << "workers of a terminated pool still run";
  EXPECT_THAT(client_->DescribePool("seed"), StatusIs(absl::StatusCode::kNotFound, "seed"));
}

TEST_F(PoolApiTest, CloseThenJoinWaitsForRunningWorkAndRefusesNewWork) {
  absl::StatusOr<ScopedPool> made = ScopedPool::Create(*client_, ExamplePool("closing", 2));
  ASSERT_THAT(made, IsOk());
  ScopedPool& pool = *made;
  const std::set<pid_t> workers = AwaitIdleWorkers("closing", 2);

  // join before close is refused, as in multiprocessing (ValueError there).
  EXPECT_THAT(pool.Join(absl::ZeroDuration()), StatusIs(absl::StatusCode::kFailedPrecondition, ""));

  const absl::Time submitted = absl::Now();
  std::vector<AsyncResult> sleepers;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<AsyncResult> r = pool->ApplyAsync("sleep", "0.5");
    ASSERT_THAT(r, IsOk());
    sleepers.push_back(*r);
  }
  ASSERT_TRUE(PollUntil([&] {
    absl::StatusOr<v1::PoolInfo> info = pool->Describe();
    return info.ok() && info->busy() == 2;
  })) << "the sleeps never both ran";

  absl::StatusOr<v1::PoolInfo> closed = pool.Close();
  ASSERT_THAT(closed, IsOk());
  EXPECT_TRUE(closed->closed());
  // New work of every kind is refused.
  EXPECT_THAT(pool->ApplyAsync("square", "2"), StatusIs(absl::StatusCode::kFailedPrecondition, ""));
  EXPECT_THAT(pool->Map("square", Numbers(3)), StatusIs(absl::StatusCode::kFailedPrecondition, ""));
  // A join with a zero timeout sees the work still running.
  EXPECT_THAT(pool.Join(absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "not joined"));

  absl::StatusOr<v1::PoolInfo> joined = pool.Join(absl::Seconds(20));
  ASSERT_THAT(joined, IsOk());
  EXPECT_GE(absl::Now() - submitted, absl::Milliseconds(500)) << "join did not wait for the sleeps";
  for (const AsyncResult& r : sleepers) {
    EXPECT_THAT(r.Get(absl::ZeroDuration()), IsOkAndHolds(std::string("0.5")));
  }
  EXPECT_EQ(joined->workers_size(), 0);
  for (pid_t p : workers) {
    EXPECT_TRUE(PollUntil([&] { return !ProcessAlive(p); })) << "worker " << p << " outlived join";
  }
}

TEST_F(PoolApiTest, TerminatePoolCancelsRunningWorkAndKillsWorkers) {
  absl::StatusOr<ScopedPool> made = ScopedPool::Create(*client_, ExamplePool("doomed", 1));
  ASSERT_THAT(made, IsOk());
  const std::set<pid_t> workers = AwaitIdleWorkers("doomed", 1);
  absl::StatusOr<AsyncResult> sleeper = (*made)->ApplyAsync("sleep", "30");
  ASSERT_THAT(sleeper, IsOk());
  ASSERT_TRUE(PollUntil([&] {
    absl::StatusOr<v1::TaskResult> r = sleeper->Result();
    return r.ok() && r->state() == v1::TASK_STATE_RUNNING;
  }));
  ASSERT_THAT(made->Terminate(), IsOk());
  EXPECT_THAT(sleeper->Get(absl::Seconds(10)), StatusIs(absl::StatusCode::kCancelled, ""));
  for (pid_t p : workers) {
    EXPECT_TRUE(PollUntil([&] { return !ProcessAlive(p); })) << "worker " << p << " survived";
  }
  EXPECT_THAT(made->Release(), IsOk());
  EXPECT_THAT(client_->DescribePool("doomed"), StatusIs(absl::StatusCode::kNotFound, ""));
}

TEST_F(PoolApiTest, MapAsyncIsNotReadyUntilItsItemsEnd) {
  MapAsyncResult r = client_->pool().MapAsync("sleep", {"0.3", "0.3", "0.3"});
  EXPECT_FALSE(r.Ready());
  EXPECT_THAT(r.Get(absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "not ready"));
  EXPECT_THAT(r.Get(absl::Seconds(20)),
              IsOkAndHolds(std::vector<std::string>{"0.3", "0.3", "0.3"}));
  EXPECT_TRUE(r.Ready());
}

TEST_F(PoolApiTest, StarmapEncodesArgumentTuplesPerCodec) {
  MapOptions text;
  EXPECT_THAT(client_->pool().Starmap("echo", {{"a", "b"}, {"1", "2", "3"}}, text),
              IsOkAndHolds(std::vector<std::string>{"a\tb", "1\t2\t3"}));
  MapOptions json;
  json.codec = "json";
  EXPECT_THAT(client_->pool().Starmap("echo", {{"1", JsonQuote("x y")}}, json),
              IsOkAndHolds(std::vector<std::string>{"[1,\"x y\"]"}));
  EXPECT_THAT(client_->pool().Starmap("echo", {{"ok"}, {"a\tb"}}, text),
              StatusIs(absl::StatusCode::kInvalidArgument, "argument tuple 1"));
}

TEST_F(PoolApiTest, MapOfUnknownFunctionIsNotFound) {
  EXPECT_THAT(client_->pool().Map("sqaure", Numbers(3)),
              StatusIs(absl::StatusCode::kNotFound, "sqaure"));
  MapOptions stream;
  stream.force_stream = true;
  EXPECT_THAT(client_->pool().Map("sqaure", Numbers(3), stream),
              StatusIs(absl::StatusCode::kNotFound, "sqaure"));
}

// Pools are capped (--max_pools, default 256, the default pool included): 500
// CreatePools from 4 threads make exactly 255 pools and are refused past that,
// naming the flag. Deleting them gives back every process and fd they took.
TEST_F(PoolApiTest, PoolCountIsCappedAndDeletingThePoolsGivesBackFdsAndProcesses) {
  const pid_t daemon = daemon_->pid();
  ASSERT_EQ(AwaitIdleWorkers("default", 2).size(), 2u);
  // The spare pool helper forkpoold keeps made is part of the baseline: wait for it.
  ASSERT_TRUE(PollUntil([&] { return SpareHelperPidsOf(daemon).size() == 1; }));
  const size_t fds_before = OpenFds(daemon).size();
  const size_t children_before = ChildrenOf(daemon).size();
  ASSERT_GT(fds_before, 0u);
  ASSERT_GT(children_before, 0u);

  constexpr int kCalls = 500;
  constexpr int kThreads = 4;
  std::atomic<int> next{0}, made{0}, refused{0}, other{0};
  absl::Mutex mu;
  std::string other_error;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = next++; i < kCalls; i = next++) {
        absl::StatusOr<v1::PoolInfo> info =
            client_->CreatePool(ExamplePool(absl::StrCat("p", i), 1));
        if (info.ok()) {
          ++made;
        } else if (info.status().code() == absl::StatusCode::kResourceExhausted &&
                   absl::StrContains(info.status().message(), "--max_pools=256")) {
          ++refused;
        } else {
          ++other;
          absl::MutexLock lock(&mu);
          other_error = std::string(info.status().message());
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(made.load(), 255);
  EXPECT_EQ(refused.load(), kCalls - 255);
  EXPECT_EQ(other.load(), 0) << other_error;
  absl::StatusOr<v1::ListPoolsResponse> list = client_->ListPools();
  ASSERT_THAT(list, IsOk());
  EXPECT_EQ(list->pools_size(), 256);
  // The cap is real: each pool has its helper and its worker, as the OS sees them.
  EXPECT_GE(ChildrenOf(daemon).size(), children_before + 2 * 255);
  EXPECT_THAT(client_->CreatePool(ExamplePool("one-more", 1)),
              StatusIs(absl::StatusCode::kResourceExhausted, "--max_pools"));

  for (const v1::PoolInfo& pool : list->pools()) {
    if (pool.settings().name() == "default") continue;
    ASSERT_THAT(client_->DeletePool(pool.settings().name()), IsOk());
  }
  // Every helper and worker of the deleted pools is gone, and every fd forkpoold
  // held for them (sockets, pidfds, output pipes) is closed.
  EXPECT_TRUE(
      PollUntil([&] { return ChildrenOf(daemon).size() == children_before; }, absl::Seconds(60)))
      << ChildrenOf(daemon).size() << " children; " << children_before << " before";
  EXPECT_TRUE(PollUntil([&] { return OpenFds(daemon).size() == fds_before; }, absl::Seconds(60)))
      << OpenFds(daemon).size() << " fds; " << fds_before << " before";
  // Room again.
  EXPECT_THAT(client_->CreatePool(ExamplePool("again", 1)), IsOk());
}

// A status message that echoes a client's huge string is cut at the service edge:
// the client gets the real status, not its transport's complaint about the
// trailer (percent-encoded, a non-ASCII byte takes 3).
TEST_F(PoolApiTest, StatusMessagesEchoingHugeInputKeepTheirCode) {
  std::string accented;
  for (int i = 0; i < 50000; ++i) accented += "\xc3\xa9";
  for (const std::string& name : {std::string(100000, 'x'), accented}) {
    const absl::Status status = client_->DescribePool(name).status();
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound, "unknown pool '"))
        << status.ToString().substr(0, 300);
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound,
                                 absl::StrCat("[truncated: ", name.size() + 15, " bytes in all]")));
    EXPECT_LT(status.message().size(), 4096u);
  }
}

// Pool settings are checked at CreatePool, each error naming the field and value.
TEST_F(PoolApiTest, CreatePoolRefusesBadNamesDurationsAndMemoryCaps) {
  for (const char* name : {".", "..", "-", "-rf"}) {
    EXPECT_THAT(
        client_->CreatePool(ExamplePool(name, 1)),
        StatusIs(absl::StatusCode::kInvalidArgument, absl::StrCat("pool name '", name, "'")));
  }
  v1::PoolSettings negative = ExamplePool("neg", 1);
  negative.mutable_task_defaults()->mutable_time_limit()->set_seconds(-5);
  EXPECT_THAT(client_->CreatePool(negative),
              StatusIs(absl::StatusCode::kInvalidArgument, "task_defaults: time_limit"));
  v1::PoolSettings nanos = ExamplePool("nanos", 1);
  nanos.mutable_task_defaults()->mutable_queue_deadline()->set_nanos(1'000'000'000);
  EXPECT_THAT(client_->CreatePool(nanos),
              StatusIs(absl::StatusCode::kInvalidArgument, "nanos 1000000000"));
  v1::PoolSettings tiny = ExamplePool("tiny", 1);
  tiny.set_memory_limit_bytes(1 << 20);
  EXPECT_THAT(client_->CreatePool(tiny),
              StatusIs(absl::StatusCode::kInvalidArgument, "memory_limit_bytes"));
  v1::PoolSettings minus = ExamplePool("minus", 1);
  minus.set_max_memory_per_child_bytes(-1);
  EXPECT_THAT(client_->CreatePool(minus),
              StatusIs(absl::StatusCode::kInvalidArgument, "max_memory_per_child_bytes"));
  absl::StatusOr<v1::ListPoolsResponse> list = client_->ListPools();
  ASSERT_THAT(list, IsOk());
  EXPECT_EQ(list->pools_size(), 1) << "a refused pool was left";
}

}  // namespace
}  // namespace forkpool
