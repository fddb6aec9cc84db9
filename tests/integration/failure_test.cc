// Fault-injection tests of task failures: crashing workers, memory caps, time
// limits, retries and poison tasks, queue deadlines, workers killed mid-map and
// clients that leave mid-map. Every killed or crashed worker is checked gone in
// /proc and replaced.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "fault_test_base.h"
#include "forkpool/v1/forkpool.grpc.pb.h"
#include "packed_test_util.h"

extern char** environ;

namespace forkpool::testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

// --- 4. crashes and the memory cap
// ------------------------------------------------------

class CrashTest : public FaultTest {
 protected:
  // Runs `crash how`, checks it ended WORKER_LOST and that its worker is gone
  // and replaced; returns the result.
  v1::TaskResult CrashAndCheckReplaced(const std::string& how) {
    const std::set<pid_t> before = AwaitIdleWorkers("default", 2);
    absl::StatusOr<v1::TaskResult> result = client_->pool().ApplyResult("crash", how);
    EXPECT_THAT(result, IsOk());
    if (!result.ok()) return {};
    EXPECT_EQ(result->state(), v1::TASK_STATE_WORKER_LOST) << result->ShortDebugString();
    const pid_t dead = result->worker_loss().pid();
    EXPECT_EQ(before.count(dead), 1u)
        << "lost worker " << dead << " was not one of " << Pids(before);
    EXPECT_THAT(AwaitGone({dead}), IsEmpty());
    const std::set<pid_t> after = AwaitIdleWorkers("default", 2, {dead});
    EXPECT_EQ(after.size(), 2u);
    return *result;
  }
};

TEST_F(CrashTest, SegvAbortAndExitAreWorkerLostWithHowTheWorkerDied) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(2));

  const v1::TaskResult segv = CrashAndCheckReplaced("segv");
  EXPECT_EQ(segv.worker_loss().signal(), SIGSEGV);
  EXPECT_EQ(segv.worker_loss().signal_name(), "SIGSEGV");
  EXPECT_THAT(segv.worker_loss().stderr_tail(), HasSubstr("raising SIGSEGV"));
  EXPECT_THAT(segv.error(), HasSubstr("SIGSEGV"));

  const v1::TaskResult abort = CrashAndCheckReplaced("abort");
  EXPECT_EQ(abort.worker_loss().signal(), SIGABRT);
  EXPECT_EQ(abort.worker_loss().signal_name(), "SIGABRT");
  EXPECT_THAT(abort.worker_loss().stderr_tail(), HasSubstr("aborting as asked"));

  const v1::TaskResult exit3 = CrashAndCheckReplaced("exit");
  EXPECT_EQ(exit3.worker_loss().signal(), 0);
  EXPECT_EQ(exit3.worker_loss().exit_code(), 3);
  EXPECT_THAT(exit3.error(), HasSubstr("3"));

  // The client sees WORKER_LOST as kAborted, and the pool goes on.
  EXPECT_THAT(client_->pool().Apply("crash", "segv"), StatusIs(absl::StatusCode::kAborted, ""));
  EXPECT_THAT(client_->pool().Apply("square", "7"), IsOkAndHolds(std::string("49")));
}

TEST_F(CrashTest, AllocationPastTheMemoryCapFailsAsOutOfMemory) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(1));
  v1::PoolSettings settings;
  settings.set_name("capped");
  settings.set_processes(1);
  settings.set_memory_limit_bytes(int64_t{256} << 20);
  absl::StatusOr<v1::PoolInfo> made = client_->CreatePool(settings);
  // Never run a big alloc without the cap in force.
  ASSERT_THAT(made, IsOk());
  ASSERT_EQ(made->settings().memory_limit_bytes(), int64_t{256} << 20);
  const std::set<pid_t> workers = AwaitIdleWorkers("capped", 1);
  ASSERT_EQ(workers.size(), 1u);
  // The cap is in the worker's limits, as the kernel sees them.
  EXPECT_THAT(ReadFile(absl::StrCat("/proc/", *workers.begin(), "/limits")),
              ::testing::ContainsRegex("Max address space +268435456 +268435456"));

  absl::StatusOr<v1::TaskResult> result = client_->pool("capped").ApplyResult("alloc", "1024");
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(result->state(), v1::TASK_STATE_FAILED) << result->ShortDebugString();
  EXPECT_THAT(result->error(), HasSubstr("out of memory"));
  // A small allocation still works there.
  EXPECT_THAT(client_->pool("capped").Apply("alloc", "16"), IsOkAndHolds(std::string("ok")));
}

// --- 8. time limits, retries, poison tasks, queue deadlines
// --------------------------

TEST_F(FaultTest, HardTimeLimitKillsAndReplacesTheWorker) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(2));
  ApplyOptions options;
  options.time_limit = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  absl::StatusOr<AsyncResult> task = client_->pool().ApplyAsync("sleep", "5", options);
  ASSERT_THAT(task, IsOk());
  absl::StatusOr<v1::TaskResult> result = task->Result(absl::Seconds(10));
  const absl::Duration took = absl::Now() - start;
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(result->state(), v1::TASK_STATE_TIMED_OUT) << result->ShortDebugString();
  EXPECT_LT(took, absl::Seconds(3));
  EXPECT_GE(Between(result->started_at(), result->finished_at()), absl::Milliseconds(300));
  EXPECT_THAT(task->Get(absl::ZeroDuration()), StatusIs(absl::StatusCode::kDeadlineExceeded, ""));

  const pid_t victim = result->worker_pid();
  ASSERT_NE(victim, 0);
  EXPECT_THAT(AwaitGone({victim}), IsEmpty()) << "timed-out worker still runs";
  EXPECT_EQ(AwaitIdleWorkers("default", 2, {victim}).size(), 2u);
}

TEST_F(FaultTest, SoftTimeLimitTellsTheTask) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(1));
  ApplyOptions options;
  options.soft_time_limit = absl::Milliseconds(200);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> out = client_->pool().Apply("soft_wait", "3", options);
  ASSERT_THAT(out, IsOk());
  EXPECT_THAT(*out, StartsWith("soft limit after"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2.5));
}

TEST_F(FaultTest, WorkerLossIsRetriedWhenAskedAndNotOtherwise) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(2));
  ApplyOptions retry;
  retry.max_retries = 1;
  absl::StatusOr<v1::TaskResult> retried = client_->pool().ApplyResult("crash_first", "", retry);
  ASSERT_THAT(retried, IsOk());
  EXPECT_EQ(retried->state(), v1::TASK_STATE_SUCCEEDED) << retried->ShortDebugString();
  EXPECT_EQ(retried->attempts(), 2);
  EXPECT_EQ(retried->output().data(), "ok on attempt 2");

  absl::StatusOr<v1::TaskResult> once = client_->pool().ApplyResult("crash_first", "");
  ASSERT_THAT(once, IsOk());
  EXPECT_EQ(once->state(), v1::TASK_STATE_WORKER_LOST) << once->ShortDebugString();
  EXPECT_EQ(once->attempts(), 1);
  EXPECT_EQ(once->worker_loss().signal(), SIGKILL);
  EXPECT_THAT(AwaitGone({once->worker_loss().pid()}), IsEmpty());
}

TEST_F(FaultTest, TaskThatKillsThreeWorkersIsPoison) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(2));
  absl::StatusOr<v1::PoolInfo> before = client_->DescribePool("default");
  ASSERT_THAT(before, IsOk());
  ApplyOptions options;
  options.max_retries = 10;
  absl::StatusOr<v1::TaskResult> result = client_->pool().ApplyResult("crash", "segv", options);
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(result->state(), v1::TASK_STATE_FAILED) << result->ShortDebugString();
  EXPECT_THAT(result->error(), HasSubstr("poison task"));
  EXPECT_EQ(result->attempts(), 3);
  // It really killed three workers, and the pool is whole again.
  absl::StatusOr<v1::PoolInfo> after = client_->DescribePool("default");
  ASSERT_THAT(after, IsOk());
  EXPECT_EQ(after->workers_lost() - before->workers_lost(), 3);
  EXPECT_EQ(AwaitIdleWorkers("default", 2).size(), 2u);
  EXPECT_THAT(client_->pool().Apply("square", "3"), IsOkAndHolds(std::string("9")));
}

TEST_F(FaultTest, QueueDeadlineExpiresATaskThatCouldNotStart) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(1));
  absl::StatusOr<AsyncResult> busy = client_->pool().ApplyAsync("sleep", "1.5");
  ASSERT_THAT(busy, IsOk());
  AwaitRunning(*busy);

  ApplyOptions options;
  options.queue_deadline = absl::Milliseconds(200);
  absl::StatusOr<AsyncResult> late = client_->pool().ApplyAsync("echo", "late", options);
  ASSERT_THAT(late, IsOk());
  absl::StatusOr<v1::TaskResult> result = late->Result(absl::Seconds(10));
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(result->state(), v1::TASK_STATE_EXPIRED) << result->ShortDebugString();
  EXPECT_EQ(result->attempts(), 0);
  EXPECT_EQ(result->worker_pid(), 0);
  EXPECT_GE(Between(result->submitted_at(), result->finished_at()), absl::Milliseconds(200));
  EXPECT_THAT(late->Get(absl::ZeroDuration()), StatusIs(absl::StatusCode::kDeadlineExceeded, ""));
  // The busy task was not disturbed.
  EXPECT_THAT(busy->Get(absl::Seconds(10)), IsOkAndHolds(std::string("1.5")));
}

// --- 9, 10. map with a killed worker, and a client that leaves mid-map
// --------------

std::unique_ptr<v1::Tasks::Stub> TasksStub(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return v1::Tasks::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

TEST_F(FaultTest, MapAnswersEveryItemOnceWhenABusyWorkerIsKilled) {
  constexpr int kItems = 2000;
  ASSERT_NO_FATAL_FAILURE(StartDaemon(8));
  const pid_t daemon = daemon_->pid();
  std::unique_ptr<v1::Tasks::Stub> stub = TasksStub(daemon_->address());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(40));
  v1::MapRequest request;
  request.set_pool("default");
  request.set_function("sleep");
  request.set_inputs(PackWithProto(std::vector<std::string>(kItems, "0.01")));
  request.set_chunksize(10);
  request.set_ordered(false);
  std::unique_ptr<grpc::ClientReader<v1::MapResponse>> reader = stub->Map(&context, request);

  std::map<uint64_t, int> answered;
  std::vector<v1::MapItemError> errors;
  pid_t victim = 0;
  uint64_t last_done = 0;
  v1::MapResponse response;
  while (reader->Read(&response)) {
    std::set<uint64_t> failed;
    for (const v1::MapItemError& e : response.errors()) {
      errors.push_back(e);
      failed.insert(e.index());
    }
    for (const auto& [index, output] : UnpackResults(response)) {
      ++answered[index];
      if (!failed.count(index)) EXPECT_EQ(output, "0.01") << "item " << index;
    }
    last_done = response.done();
    if (victim == 0 && answered.size() >= 100) {
      // Kill a worker the daemon says is busy and /proc says is its live
      // worker.
      absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("default");
      ASSERT_THAT(info, IsOk());
      for (const v1::WorkerInfo& w : info->workers()) {
        if (w.state() == v1::WORKER_STATE_BUSY && WorkerPidsOf(daemon).count(w.pid())) {
          victim = w.pid();
          break;
        }
      }
      ASSERT_NE(victim, 0) << "no busy worker mid-map: " << info->ShortDebugString();
      ASSERT_EQ(::kill(victim, SIGKILL), 0);
    }
  }
  const grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  ASSERT_NE(victim, 0) << "the map ended before a worker could be killed";

  // Every index exactly once.
  EXPECT_EQ(answered.size(), static_cast<size_t>(kItems));
  for (const auto& [index, times] : answered) {
    EXPECT_LT(index, static_cast<uint64_t>(kItems));
    EXPECT_EQ(times, 1) << "item " << index;
  }
  EXPECT_EQ(last_done, static_cast<uint64_t>(kItems));
  // At least one item was lost with the worker; every error is that loss.
  EXPECT_GE(errors.size(), 1u);
  for (const v1::MapItemError& e : errors) {
    EXPECT_EQ(e.state(), v1::TASK_STATE_WORKER_LOST) << e.ShortDebugString();
    EXPECT_EQ(e.worker_loss().pid(), victim) << e.ShortDebugString();
    EXPECT_EQ(e.worker_loss().signal(), SIGKILL);
  }
  EXPECT_THAT(AwaitGone({victim}), IsEmpty());
  EXPECT_EQ(AwaitIdleWorkers("default", 8, {victim}).size(), 8u);
}

TEST_F(FaultTest, ClientLeavingMidMapStopsItsWork) {
  constexpr int kItems = 400;
  ASSERT_NO_FATAL_FAILURE(StartDaemon(2));
  std::unique_ptr<v1::Tasks::Stub> stub = TasksStub(daemon_->address());
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(40));
  v1::MapRequest request;
  request.set_function("sleep");
  request.set_inputs(PackWithProto(std::vector<std::string>(kItems, "0.05")));
  request.set_chunksize(2);
  request.set_ordered(false);
  std::unique_ptr<grpc::ClientReader<v1::MapResponse>> reader = stub->Map(context.get(), request);

  size_t answered = 0;
  v1::MapResponse response;
  while (answered < 10 && reader->Read(&response)) answered += UnpackResults(response).size();
  ASSERT_GE(answered, 10u);
  absl::StatusOr<v1::PoolInfo> mid = client_->DescribePool("default");
  ASSERT_THAT(mid, IsOk());
  ASSERT_GE(mid->busy(), 1) << "the map was not running: " << mid->ShortDebugString();

  context->TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  reader.reset();

  // Nothing queued or running is left of it...
  v1::PoolInfo settled;
  EXPECT_TRUE(PollUntil(
      [&] {
        absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("default");
        if (!info.ok()) return false;
        settled = *info;
        return info->queued() == 0 && info->busy() == 0;
      },
      absl::Seconds(5)))
      << settled.ShortDebugString();
  // ...and no more of it runs (a bounded look: one second, twenty items'
  // worth).
  const int64_t done = settled.tasks_done();
  const absl::Time look_until = absl::Now() + absl::Seconds(1);
  while (absl::Now() < look_until) {
    absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("default");
    ASSERT_THAT(info, IsOk());
    EXPECT_EQ(info->tasks_done(), done);
    EXPECT_EQ(info->busy(), 0);
    if (info->tasks_done() != done || info->busy() != 0) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_LT(done, kItems);
  // The pool serves the next caller at once.
  EXPECT_THAT(client_->pool().Apply("square", "2"), IsOkAndHolds(std::string("4")));
}

// A cancelled map whose running item never gets back to the worker's loop (a task
// that sleeps through its StopBatch): after the 5 s grace its worker is killed and
// replaced, instead of holding a worker for nobody.
TEST_F(FaultTest, CancelledMapItemThatDoesNotStopHasItsWorkerKilled) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(1));
  std::unique_ptr<v1::Tasks::Stub> stub = TasksStub(daemon_->address());
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::MapRequest request;
  request.set_function("sleep");
  request.set_inputs(PackWithProto(std::vector<std::string>(2, "60")));
  request.set_chunksize(2);
  std::unique_ptr<grpc::ClientReader<v1::MapResponse>> reader = stub->Map(context.get(), request);
  pid_t busy = 0;
  ASSERT_TRUE(PollUntil([&] {
    absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("default");
    if (!info.ok() || info->busy() != 1) return false;
    busy = info->workers(0).pid();
    return busy != 0;
  })) << "the map never ran";
  const absl::Time cancelled = absl::Now();
  context->TryCancel();
  v1::MapResponse response;
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // Not before the grace (it was told to stop and may yet), well before the item's
  // own 60 s.
  EXPECT_THAT(AwaitGone({busy}, absl::Seconds(15)), IsEmpty());
  const absl::Duration took = absl::Now() - cancelled;
  EXPECT_GE(took, absl::Seconds(4)) << "killed before its grace";
  EXPECT_LT(took, absl::Seconds(15));
  EXPECT_EQ(AwaitIdleWorkers("default", 1, {busy}).size(), 1u);
  EXPECT_THAT(daemon_->ReadLog(), HasSubstr("did not stop its cancelled map item"));
}

}  // namespace

// --max_connections: past the cap a new connection is closed at once, and a
// slot frees when a client goes away. (Clients in one process share one
// connection, so the extra connections are separate CLI processes blocked in a
// queue get.)
TEST_F(FaultTest, ConnectionsPastTheCapAreRefusedUntilOneCloses) {
  StartDaemon(1, {"--max_connections=3"});  // client_ holds one connection
  ASSERT_THAT(client_->CreateQueue("hold"), IsOk());
  auto spawn_getter = [&]() -> pid_t {
    const std::string address = daemon_->address();
    const char* argv[] = {
        FORKPOOL_CLI_PATH, "--address", address.c_str(), "queue", "get", "hold", nullptr};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid = -1;
    const int err = ::posix_spawn(&pid, FORKPOOL_CLI_PATH, &actions, nullptr,
                                  const_cast<char* const*>(argv), environ);
    posix_spawn_file_actions_destroy(&actions);
    return err == 0 ? pid : -1;
  };
  auto waiting_getters = [&]() -> int64_t {
    absl::StatusOr<v1::QueueInfo> info = client_->queue("hold").Info();
    return info.ok() ? info->waiting_getters() : -1;
  };
  auto await_getters = [&](int64_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(15);
    while (waiting_getters() != n && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
    return waiting_getters() == n;
  };
  const pid_t a = spawn_getter();
  const pid_t b = spawn_getter();
  ASSERT_GT(a, 0);
  ASSERT_GT(b, 0);
  ASSERT_TRUE(await_getters(2)) << "two CLI getters never blocked";
  // A third connection (another process) is refused: the CLI cannot reach the
  // daemon.
  absl::StatusOr<CommandResult> health =
      RunCommand({FORKPOOL_CLI_PATH, "--address", daemon_->address(), "health"}, daemon_->dir());
  ASSERT_THAT(health, IsOk());
  EXPECT_EQ(health->exit_code, 4) << health->out << health->err;
  EXPECT_THAT(daemon_->ReadLog(), HasSubstr("--max_connections"));
  // The admitted connections still work.
  EXPECT_THAT(client_->pool().Apply("square", "3"), IsOkAndHolds(std::string("9")));
  // One getter goes away: its slot frees.
  ASSERT_EQ(::kill(a, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(a, &status, 0), a);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  do {
    health =
        RunCommand({FORKPOOL_CLI_PATH, "--address", daemon_->address(), "health"}, daemon_->dir());
  } while (health.ok() && health->exit_code != 0 && absl::Now() < deadline);
  ASSERT_THAT(health, IsOk());
  EXPECT_EQ(health->exit_code, 0) << "no slot freed after a client died: " << health->err;
  ::kill(b, SIGKILL);
  ::waitpid(b, &status, 0);
}

// The root helper (which loads nothing, so only something outside can kill it)
// that keeps dying is not restarted forever: past 10 losses in 30 s forkpoold
// exits 1 with a clear message (so that systemd restarts it whole), and its
// workers go with it.
TEST_F(FaultTest, HelperThatKeepsDyingMakesTheDaemonExitOne) {
  StartDaemon(1);
  const std::set<pid_t> workers = WorkerPidsOf(daemon_->pid());
  std::set<pid_t> killed;
  for (int i = 0; i < 11; ++i) {
    pid_t helper = 0;
    ASSERT_TRUE(PollUntil([&] {
      for (pid_t h : HelperPidsOf(daemon_->pid())) {
        const bool root = absl::StartsWith(ReadFile(absl::StrCat("/proc/", h, "/cmdline")),
                                           "forkpool-helper: root");
        if (root && !killed.count(h)) helper = h;
      }
      return helper != 0 || !ProcessAlive(daemon_->pid());
    })) << "no new fork helper after "
        << i << " kills";
    if (!ProcessAlive(daemon_->pid())) break;
    ASSERT_EQ(::kill(helper, SIGKILL), 0);
    killed.insert(helper);
  }
  absl::StatusOr<int> status = daemon_->AwaitExit(absl::Seconds(10));
  ASSERT_THAT(status, IsOk());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << "wait status " << *status;
  EXPECT_THAT(daemon_->ReadLog(), HasSubstr("giving up, exiting with status 1"));
  EXPECT_THAT(AwaitGone(workers), IsEmpty());
}

// A worker that writes garbage into its socket is killed; its task fails with
// "protocol error" and the pool goes on with a new worker.
TEST_F(FaultTest, GarbageFromAWorkerFailsItsTaskAndReplacesIt) {
  StartDaemon(1);
  const std::set<pid_t> before = AwaitIdleWorkers("default", 1);
  absl::StatusOr<v1::TaskResult> r = client_->pool().ApplyResult("garbage", "");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->state(), v1::TASK_STATE_FAILED) << r->ShortDebugString();
  EXPECT_THAT(r->error(), HasSubstr("protocol error"));
  EXPECT_THAT(AwaitGone(before), IsEmpty());
  EXPECT_THAT(client_->pool().Apply("square", "6"), IsOkAndHolds(std::string("36")));
}

// An error text that is not UTF-8 reaches the client (made valid), and the
// worker that produced it lives on.
TEST_F(FaultTest, NonUtf8ErrorTextIsDeliveredAndTheWorkerLives) {
  StartDaemon(1);
  const std::set<pid_t> before = AwaitIdleWorkers("default", 1);
  absl::StatusOr<v1::TaskResult> r = client_->pool().ApplyResult("fail_bytes", "");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->state(), v1::TASK_STATE_FAILED) << r->ShortDebugString();
  EXPECT_THAT(r->error(), HasSubstr("bad bytes: \xef\xbf\xbd\xef\xbf\xbd end"));
  EXPECT_EQ(before.count(r->worker_pid()), 1u) << "the task ran on another worker";
  EXPECT_TRUE(ProcessAlive(r->worker_pid()));
}

// --max_queued: past it, submits are RESOURCE_EXHAUSTED naming the limit and
// its value.
TEST_F(FaultTest, FullPoolQueueIsResourceExhaustedNamingTheLimit) {
  StartDaemon(1, {"--max_queued=3"});
  absl::StatusOr<AsyncResult> busy = client_->pool().ApplyAsync("sleep", "2");
  ASSERT_THAT(busy, IsOk());
  AwaitRunning(*busy);
  absl::StatusOr<std::vector<AsyncResult>> three =
      client_->pool().SubmitMany("echo", {"a", "b", "c"});
  ASSERT_THAT(three, IsOk());
  absl::StatusOr<AsyncResult> fourth = client_->pool().ApplyAsync("echo", "d");
  EXPECT_THAT(fourth, StatusIs(absl::StatusCode::kResourceExhausted, "the limit is 3"));
  EXPECT_THAT(busy->Cancel(), IsOk());
  for (const AsyncResult& r : *three) EXPECT_THAT(r.Get(absl::Seconds(10)), IsOk());
}

// --max_result_bytes: past it the oldest results go before their TTL, and a Get
// says they expired.
TEST_F(FaultTest, ResultsPastTheSizeCapExpireOldestFirst) {
  StartDaemon(1, {"--max_result_bytes=1500"});
  const std::string big(600, 'x');
  absl::StatusOr<AsyncResult> first = client_->pool().ApplyAsync("echo", big);
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT(client_->Task(first->id()).Get(absl::Seconds(10)), IsOk());
  for (int i = 0; i < 3; ++i) ASSERT_THAT(client_->pool().Apply("echo", big), IsOk());
  // A fresh handle, so that nothing cached answers.
  EXPECT_THAT(client_->Task(first->id()).Get(absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kNotFound, "expired"));
}

// The helper under `daemon` whose /proc/PID/maps mentions `library`, polled for; 0
// if none appears.
pid_t AwaitHelperMappingOf(pid_t daemon, const std::string& library) {
  pid_t found = 0;
  PollUntil([&] {
    for (pid_t h : HelperPidsOf(daemon)) {
      if (ReadFile(absl::StrCat("/proc/", h, "/maps")).find(library) != std::string::npos) {
        found = h;
      }
    }
    return found != 0;
  });
  return found;
}

// The root helper killed while a pool loads (a library that takes a second to
// load): the pool's own helper is forkpoold's child, not the root helper's, so
// the load goes on and CreatePool succeeds; a new root helper serves later
// pools.
TEST_F(FaultTest, RootHelperKilledWhileAPoolLoadsTheLoadGoesOn) {
  StartDaemon(1);
  const pid_t root = daemon_->first_helper_pid();
  ASSERT_GT(root, 0);
  v1::PoolSettings settings;
  settings.set_name("slow");
  settings.set_processes(1);
  settings.add_libraries(FORKPOOL_SLOW_LOAD_TASKS_PATH);
  absl::StatusOr<v1::PoolInfo> created;
  std::thread create([&] { created = client_->CreatePool(settings); });
  // Its helper is inside dlopen once the library is mapped (its constructor then
  // sleeps for a second).
  const pid_t loading = AwaitHelperMappingOf(daemon_->pid(), "slow_load_tasks");
  ASSERT_GT(loading, 0) << "no helper started loading the slow library";
  EXPECT_NE(loading, root);
  EXPECT_EQ(ReadFile(absl::StrCat("/proc/", root, "/maps")).find("slow_load_tasks"),
            std::string::npos);
  ASSERT_EQ(::kill(root, SIGKILL), 0);
  create.join();
  ASSERT_THAT(created, IsOk());
  EXPECT_EQ(created->helper_pid(), loading);
  EXPECT_THAT(client_->pool("slow").Apply("slow_loaded", ""), IsOkAndHolds(std::string("loaded")));
  v1::PoolSettings later;
  later.set_name("later");
  later.set_processes(1);
  EXPECT_THAT(client_->CreatePool(later), IsOk());
  EXPECT_THAT(daemon_->ReadLog(), HasSubstr("starting a new root helper"));
}

// A pool's own helper killed while it loads fails that CreatePool, naming the
// library and the signal, and leaves no pool behind; the daemon serves on.
TEST_F(FaultTest, PoolHelperKilledWhileLoadingFailsOnlyThatCreatePool) {
  StartDaemon(1);
  v1::PoolSettings settings;
  settings.set_name("slow");
  settings.set_processes(1);
  settings.add_libraries(FORKPOOL_SLOW_LOAD_TASKS_PATH);
  absl::StatusOr<v1::PoolInfo> created;
  std::thread create([&] { created = client_->CreatePool(settings); });
  const pid_t loading = AwaitHelperMappingOf(daemon_->pid(), "slow_load_tasks");
  ASSERT_GT(loading, 0);
  ASSERT_EQ(::kill(loading, SIGKILL), 0);
  create.join();
  ASSERT_THAT(created, StatusIs(absl::StatusCode::kFailedPrecondition, "while loading"));
  EXPECT_THAT(std::string(created.status().message()),
              AllOf(HasSubstr(FORKPOOL_SLOW_LOAD_TASKS_PATH), HasSubstr("SIGKILL")));
  EXPECT_THAT(client_->DescribePool("slow"), StatusIs(absl::StatusCode::kNotFound, "slow"));
  EXPECT_THAT(client_->pool().Apply("square", "3"), IsOkAndHolds(std::string("9")));
}
}  // namespace forkpool::testing
