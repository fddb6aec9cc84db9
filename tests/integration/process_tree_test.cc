// Fault-injection tests of forkpoold's process tree, checked in /proc: who is
// whose child, what a worker holds open, what survives a killed helper or
// daemon, and how workers are recycled, spawned and initialised.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "fault_test_base.h"

namespace forkpool::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// --- 1. the tree
// -------------------------------------------------------------------

TEST_F(FaultTest, WorkersAreTheDaemonsChildrenInTheirOwnGroups) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(3));
  const pid_t daemon = daemon_->pid();
  const pid_t root = daemon_->first_helper_pid();
  ASSERT_GT(root, 0) << "no root helper pid in the log:\n" << daemon_->ReadLog();
  absl::StatusOr<v1::PoolInfo> described_pool = client_->DescribePool("default");
  ASSERT_THAT(described_pool, IsOk());
  const pid_t helper = described_pool->helper_pid();
  ASSERT_GT(helper, 0);

  // The root helper and the pool's own helper: live children of the daemon,
  // named forkpool-helper, with titles that say which is which.
  for (pid_t h : {root, helper}) {
    std::optional<ProcInfo> helper_info = ReadProc(h);
    ASSERT_TRUE(helper_info.has_value());
    EXPECT_EQ(helper_info->ppid, daemon);
    EXPECT_EQ(helper_info->comm, "forkpool-helper");
  }
  EXPECT_THAT(ReadFile(absl::StrCat("/proc/", root, "/cmdline")),
              ::testing::StartsWith("forkpool-helper: root"));
  EXPECT_THAT(ReadFile(absl::StrCat("/proc/", helper, "/cmdline")),
              ::testing::StartsWith("forkpool-helper: pool default"));
  EXPECT_EQ(HelperPidsOf(daemon), (std::set<pid_t>{root, helper}));

  // Exactly three live forkpool-worker children, the same pids DescribePool
  // reports.
  const std::set<pid_t> workers = WorkerPidsOf(daemon);
  ASSERT_EQ(workers.size(), 3u) << Pids(workers);
  absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("default");
  ASSERT_THAT(info, IsOk());
  std::set<pid_t> described;
  for (const v1::WorkerInfo& w : info->workers()) described.insert(w.pid());
  EXPECT_EQ(described, workers);
  // Nothing of the helper's making is its own child (CLONE_PARENT).
  EXPECT_TRUE(ChildrenOf(helper).empty());

  const std::optional<ProcInfo> daemon_info = ReadProc(daemon);
  ASSERT_TRUE(daemon_info.has_value());
  std::set<pid_t> groups;
  for (pid_t w : workers) {
    SCOPED_TRACE(absl::StrCat("worker ", w));
    EXPECT_NE(w, daemon);
    EXPECT_NE(w, helper);
    std::optional<ProcInfo> p = ReadProc(w);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->ppid, daemon);
    // Its own process group, led by itself.
    EXPECT_EQ(p->pgid, w);
    EXPECT_NE(p->pgid, daemon_info->pgid);
    groups.insert(p->pgid);
    // stdin is /dev/null, fd 3 its socket (that nothing else is open: see
    // below).
    EXPECT_EQ(ReadLink(absl::StrCat("/proc/", w, "/fd/0")), "/dev/null");
    EXPECT_THAT(ReadLink(absl::StrCat("/proc/", w, "/fd/3")), HasSubstr("socket:"));
  }
  EXPECT_EQ(groups.size(), 3u);

  // Tasks run in those processes.
  std::set<pid_t> ran_in;
  for (int i = 0; i < 12; ++i) {
    absl::StatusOr<std::string> out = client_->pool().Apply("getpid", "");
    ASSERT_THAT(out, IsOk());
    pid_t pid = 0;
    ASSERT_TRUE(absl::SimpleAtoi(*out, &pid)) << *out;
    ran_in.insert(pid);
  }
  for (pid_t pid : ran_in) EXPECT_EQ(workers.count(pid), 1u) << pid;
}

// docs/architecture.md promises a worker "no fds but 0, 1, 2 and its socket (fd
// 3)" (a worker once kept /proc/self/statm open as fd 4 for its RSS reports).
TEST_F(FaultTest, WorkersHoldOnlyFdsZeroToThree) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(2));
  v1::PoolSettings settings;
  settings.set_name("spawned");
  settings.set_processes(1);
  settings.set_start_method(v1::START_METHOD_SPAWN);
  settings.add_libraries(kExampleTasksPath);
  ASSERT_THAT(client_->CreatePool(settings), IsOk());
  std::set<pid_t> workers = AwaitIdleWorkers("spawned", 1);
  ASSERT_EQ(workers.size(), 1u);
  // Both kinds of worker, after they have run a task.
  ASSERT_THAT(client_->pool("spawned").Apply("square", "2"), IsOk());
  ASSERT_THAT(client_->pool().Apply("square", "2"), IsOk());
  ASSERT_THAT(client_->pool().Apply("square", "3"), IsOk());
  const std::set<pid_t> forkserver = AwaitIdleWorkers("default", 2);
  workers.insert(forkserver.begin(), forkserver.end());
  ASSERT_EQ(workers.size(), 3u);
  for (pid_t w : workers) {
    SCOPED_TRACE(absl::StrCat("worker ", w));
    EXPECT_THAT(OpenFds(w), ElementsAre(0, 1, 2, 3));
    for (int fd : OpenFds(w)) {
      if (fd > 3) {
        ADD_FAILURE() << "extra fd " << fd << " -> "
                      << ReadLink(absl::StrCat("/proc/", w, "/fd/", fd));
      }
    }
  }
}

// --- 2. dispatch only to idle workers
// ---------------------------------------------

TEST_F(FaultTest, ShortTasksDoNotWaitBehindALongOne) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(2));
  absl::StatusOr<AsyncResult> slow = client_->pool().ApplyAsync("sleep", "3");
  ASSERT_THAT(slow, IsOk());
  const v1::TaskResult slow_running = AwaitRunning(*slow);
  ASSERT_NE(slow_running.worker_pid(), 0);

  const absl::Time start = absl::Now();
  std::vector<std::string> inputs;
  for (int i = 0; i < 20; ++i) inputs.push_back(absl::StrCat("e", i));
  absl::StatusOr<std::vector<AsyncResult>> echos = client_->pool().SubmitMany("echo", inputs);
  ASSERT_THAT(echos, IsOk());
  std::vector<std::string> ids;
  for (const AsyncResult& r : *echos) ids.push_back(r.id());
  absl::StatusOr<WaitOutcome> waited = client_->Wait(ids, WaitMode::kAll, absl::Seconds(2.5));
  const absl::Duration took = absl::Now() - start;
  ASSERT_THAT(waited, IsOk());
  EXPECT_TRUE(waited->satisfied) << waited->not_done.size() << " echos not done after " << took;
  EXPECT_LT(took, absl::Seconds(1)) << "20 echos took " << took << " beside a 3 s sleep";

  // The long task still runs: the echos did not wait for it.
  absl::StatusOr<v1::TaskResult> still = slow->Result();
  ASSERT_THAT(still, IsOk());
  EXPECT_EQ(still->state(), v1::TASK_STATE_RUNNING);
  for (size_t i = 0; i < echos->size(); ++i) {
    absl::StatusOr<v1::TaskResult> r = (*echos)[i].Result();
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->state(), v1::TASK_STATE_SUCCEEDED);
    EXPECT_EQ(r->output().data(), inputs[i]);
    EXPECT_NE(r->worker_pid(), slow_running.worker_pid());
  }
}

// --- 3. cancel of a running task
// ----------------------------------------------------

TEST_F(FaultTest, CancelKillsTheRunningWorkerAndThePoolIsWholeAgain) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(2));
  const pid_t daemon = daemon_->pid();
  absl::StatusOr<AsyncResult> task = client_->pool().ApplyAsync("sleep", "30");
  ASSERT_THAT(task, IsOk());
  const pid_t victim = AwaitRunning(*task).worker_pid();
  ASSERT_TRUE(ProcessAlive(victim));
  ASSERT_EQ(WorkerPidsOf(daemon).count(victim), 1u);

  EXPECT_THAT(task->Cancel(), IsOkAndHolds(true));
  EXPECT_THAT(task->Get(absl::Seconds(5)), StatusIs(absl::StatusCode::kCancelled, ""));
  absl::StatusOr<v1::TaskResult> result = task->Result();
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(result->state(), v1::TASK_STATE_CANCELLED);

  EXPECT_THAT(AwaitGone({victim}), ::testing::IsEmpty()) << "cancelled worker still runs";
  const std::set<pid_t> workers = AwaitIdleWorkers("default", 2, {victim});
  EXPECT_EQ(workers.size(), 2u);
  EXPECT_EQ(WorkerPidsOf(daemon), workers);

  // Both workers take work at once.
  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<AsyncResult>> sleeps = client_->pool().SubmitMany("sleep", {"1", "1"});
  ASSERT_THAT(sleeps, IsOk());
  absl::StatusOr<WaitOutcome> waited = Wait(*client_, *sleeps, WaitMode::kAll, absl::Seconds(5));
  const absl::Duration took = absl::Now() - start;
  ASSERT_THAT(waited, IsOk());
  ASSERT_TRUE(waited->satisfied);
  EXPECT_GE(took, absl::Seconds(1));
  EXPECT_LT(took, absl::Seconds(2.5)) << "two 1 s sleeps on two workers took " << took;
  absl::StatusOr<v1::TaskResult> a = (*sleeps)[0].Result();
  absl::StatusOr<v1::TaskResult> b = (*sleeps)[1].Result();
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ(a->state(), v1::TASK_STATE_SUCCEEDED);
  EXPECT_EQ(b->state(), v1::TASK_STATE_SUCCEEDED);
  EXPECT_NE(a->worker_pid(), b->worker_pid());
  EXPECT_LT(absl::AbsDuration(Between(a->started_at(), b->started_at())), absl::Seconds(0.5));
}

// --- 5. SIGKILL of the fork helper
// ----------------------------------------------------

TEST_F(FaultTest, KilledHelperIsReplacedAndRunningWorkersSurvive) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(2));
  const pid_t daemon = daemon_->pid();
  const pid_t root = daemon_->first_helper_pid();
  absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("default");
  ASSERT_THAT(info, IsOk());
  const pid_t old_helper = info->helper_pid();
  ASSERT_GT(old_helper, 0);
  ASSERT_EQ(HelperPidsOf(daemon), (std::set<pid_t>{root, old_helper}));

  absl::StatusOr<AsyncResult> task = client_->pool().ApplyAsync("sleep", "1.5");
  ASSERT_THAT(task, IsOk());
  const pid_t runner = AwaitRunning(*task).worker_pid();
  ASSERT_EQ(::kill(old_helper, SIGKILL), 0);
  EXPECT_THAT(AwaitGone({old_helper}), ::testing::IsEmpty());

  // The running task finishes in the worker it started in.
  absl::StatusOr<v1::TaskResult> result = task->Result(absl::Seconds(10));
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(result->state(), v1::TASK_STATE_SUCCEEDED) << result->ShortDebugString();
  EXPECT_EQ(result->output().data(), "1.5");
  EXPECT_EQ(result->worker_pid(), runner);
  EXPECT_EQ(result->attempts(), 1);

  // A new helper for the pool, child of the daemon; the root helper is
  // untouched.
  pid_t new_helper = 0;
  EXPECT_TRUE(PollUntil([&] {
    absl::StatusOr<v1::PoolInfo> now = client_->DescribePool("default");
    if (!now.ok() || now->state() != v1::POOL_STATE_READY) return false;
    new_helper = now->helper_pid();
    return new_helper != 0 && new_helper != old_helper;
  })) << "log:\n"
      << daemon_->ReadLog();
  ASSERT_GT(new_helper, 0);
  EXPECT_EQ(ReadProc(new_helper)->ppid, daemon);
  EXPECT_EQ(HelperPidsOf(daemon), (std::set<pid_t>{root, new_helper}));

  // A worker killed now is replaced (only the new helper can make it).
  const std::set<pid_t> before = AwaitIdleWorkers("default", 2);
  ASSERT_EQ(before.size(), 2u);
  const pid_t killed = *before.begin();
  ASSERT_EQ(::kill(killed, SIGKILL), 0);
  EXPECT_THAT(AwaitGone({killed}), ::testing::IsEmpty());
  const std::set<pid_t> after = AwaitIdleWorkers("default", 2, {killed});
  const std::set<pid_t> fresh = [&] {
    std::set<pid_t> out;
    std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                        std::inserter(out, out.begin()));
    return out;
  }();
  ASSERT_EQ(fresh.size(), 1u) << "before " << Pids(before) << " after " << Pids(after);
  EXPECT_EQ(ReadProc(*fresh.begin())->ppid, daemon);
  EXPECT_EQ(ReadProc(*fresh.begin())->comm, "forkpool-worker");

  // New pools start, each with a helper of its own, and the default pool
  // serves.
  v1::PoolSettings settings;
  settings.set_name("after-helper-crash");
  settings.set_processes(1);
  ASSERT_THAT(client_->CreatePool(settings), IsOk());
  EXPECT_THAT(client_->pool("after-helper-crash").Apply("square", "6"),
              IsOkAndHolds(std::string("36")));
  EXPECT_THAT(client_->pool().Apply("square", "5"), IsOkAndHolds(std::string("25")));
  EXPECT_EQ(HelperPidsOf(daemon).size(), 3u);
}

// --- 6. daemon death
// -------------------------------------------------------------------

// The daemon's helpers (the spare too, once there is one) and workers, as /proc
// shows them.
std::set<pid_t> Descendants(pid_t daemon) {
  EXPECT_TRUE(PollUntil([&] { return SpareHelperPidsOf(daemon).size() == 1; }))
      << "no spare pool helper";
  std::set<pid_t> out = WorkerPidsOf(daemon);
  for (pid_t h : HelperPidsOf(daemon)) out.insert(h);
  for (pid_t h : SpareHelperPidsOf(daemon)) out.insert(h);
  return out;
}

TEST_F(FaultTest, SigtermDrainsARunningTaskThenExitsZeroLeavingNothing) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(2, {"--grace=5s"}));
  const pid_t daemon = daemon_->pid();
  absl::StatusOr<AsyncResult> task = client_->pool().ApplyAsync("sleep", "1");
  ASSERT_THAT(task, IsOk());
  const v1::TaskResult running = AwaitRunning(*task);
  const std::set<pid_t> recorded = Descendants(daemon);
  ASSERT_EQ(recorded.size(), 5u) << Pids(recorded);  // 2 workers, root, pool, spare
  ASSERT_EQ(recorded.count(running.worker_pid()), 1u);

  // A waiter parked in the daemon before the signal gets the drained task's
  // result.
  absl::StatusOr<std::string> waited = absl::UnknownError("not run");
  std::thread waiter([&] { waited = task->Get(absl::Seconds(20)); });

  const absl::Time signalled = absl::Now();
  ASSERT_EQ(::kill(daemon, SIGTERM), 0);
  absl::StatusOr<int> status = daemon_->AwaitExit(absl::Seconds(15));
  const absl::Time exited = absl::Now();
  waiter.join();
  // (With a client connected, the daemon takes its 2 s gRPC shutdown deadline
  // in full, so no tight upper bound here.)
  EXPECT_LT(exited - signalled, absl::Seconds(10));
  ASSERT_THAT(status, IsOk()) << daemon_->ReadLog();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
      << "wait status " << *status << "; log:\n"
      << daemon_->ReadLog();
  // It waited for the sleep: it exited at least 1 s after the task started.
  EXPECT_GE(exited - ToTime(running.started_at()), absl::Seconds(1));
  const std::string log = daemon_->ReadLog();
  EXPECT_THAT(log, HasSubstr("draining"));
  EXPECT_THAT(log, Not(HasSubstr("grace period over")));
  EXPECT_THAT(waited, IsOkAndHolds(std::string("1"))) << log;

  EXPECT_THAT(AwaitGone(recorded), ::testing::IsEmpty()) << "left behind after SIGTERM";
  struct stat st;
  EXPECT_NE(::stat(daemon_->socket_path().c_str(), &st), 0) << "socket file left behind";
}

TEST_F(FaultTest, SigkillOfTheDaemonLeavesNoHelperOrWorkerBehind) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(3));
  const pid_t daemon = daemon_->pid();
  // One busy worker (in its own process group), the others idle.
  absl::StatusOr<AsyncResult> task = client_->pool().ApplyAsync("sleep", "30");
  ASSERT_THAT(task, IsOk());
  AwaitRunning(*task);
  const std::set<pid_t> recorded = Descendants(daemon);
  ASSERT_EQ(recorded.size(), 6u) << Pids(recorded);  // 3 workers, root, pool, spare

  ASSERT_EQ(::kill(daemon, SIGKILL), 0);
  absl::StatusOr<int> status = daemon_->AwaitExit(absl::Seconds(10));
  ASSERT_THAT(status, IsOk());
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << *status;
  EXPECT_THAT(AwaitGone(recorded), ::testing::IsEmpty()) << "orphans outlived the daemon";
}

// --- 7. one daemon per socket
// ---------------------------------------------------------

TEST_F(FaultTest, SecondDaemonOnTheSameSocketExitsNamingTheLock) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(1));
  struct stat before;
  ASSERT_EQ(::stat(daemon_->socket_path().c_str(), &before), 0);

  absl::StatusOr<CommandResult> second = RunCommand(
      {ForkpooldPath(), absl::StrCat("--socket=", daemon_->socket_path()), "--processes=1"},
      daemon_->dir(), {}, absl::Seconds(20));
  ASSERT_THAT(second, IsOk());
  EXPECT_NE(second->exit_code, 0);
  EXPECT_THAT(second->err, HasSubstr(daemon_->socket_path() + ".lock"));

  // The first one still owns the same socket file and answers on it.
  struct stat after;
  ASSERT_EQ(::stat(daemon_->socket_path().c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino) << "the socket was replaced";
  EXPECT_TRUE(ProcessAlive(daemon_->pid()));
  absl::StatusOr<std::unique_ptr<Client>> again = Client::Connect(daemon_->address());
  ASSERT_THAT(again, IsOk());
  EXPECT_THAT((*again)->pool().Apply("square", "9"), IsOkAndHolds(std::string("81")));
}

// --- 11. recycling, spawn, initializers
// -------------------------------------------------

TEST_F(FaultTest, MaxTasksPerChildRecyclesAfterTwoTasks) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(1));
  v1::PoolSettings settings;
  settings.set_name("recycle");
  settings.set_processes(1);
  settings.set_max_tasks_per_child(2);
  ASSERT_THAT(client_->CreatePool(settings), IsOk());

  std::vector<pid_t> pids;
  for (int i = 0; i < 6; ++i) {
    absl::StatusOr<std::string> out = client_->pool("recycle").Apply("getpid", "");
    ASSERT_THAT(out, IsOk());
    pid_t pid = 0;
    ASSERT_TRUE(absl::SimpleAtoi(*out, &pid)) << *out;
    pids.push_back(pid);
  }
  EXPECT_EQ(pids[0], pids[1]);
  EXPECT_EQ(pids[2], pids[3]);
  EXPECT_EQ(pids[4], pids[5]);
  EXPECT_EQ(std::set<pid_t>({pids[0], pids[2], pids[4]}).size(), 3u)
      << pids[0] << "," << pids[2] << "," << pids[4];
  // The recycled ones are gone.
  EXPECT_THAT(AwaitGone({pids[0], pids[2]}), ::testing::IsEmpty());
}

TEST_F(FaultTest, SpawnPoolWorkersRunTheWorkerProgram) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(1));
  const pid_t daemon = daemon_->pid();
  v1::PoolSettings settings;
  settings.set_name("spawned");
  settings.set_processes(2);
  settings.set_start_method(v1::START_METHOD_SPAWN);
  settings.add_libraries(kExampleTasksPath);
  settings.add_libraries(kTestTasksPath);
  ASSERT_THAT(client_->CreatePool(settings), IsOk());
  const std::set<pid_t> spawned = AwaitIdleWorkers("spawned", 2);
  ASSERT_EQ(spawned.size(), 2u);

  const std::string real_worker = std::filesystem::canonical(ForkpooldWorkerPath()).string();
  for (pid_t pid : spawned) {
    SCOPED_TRACE(absl::StrCat("spawn worker ", pid));
    std::optional<ProcInfo> p = ReadProc(pid);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->ppid, daemon);
    EXPECT_EQ(p->comm, "forkpool-worker");
    EXPECT_EQ(ReadLink(absl::StrCat("/proc/", pid, "/exe")), real_worker);
  }
  // The forkserver pool's workers, by contrast, run forkpoold's image.
  absl::StatusOr<v1::PoolInfo> def = client_->DescribePool("default");
  ASSERT_THAT(def, IsOk());
  ASSERT_EQ(def->workers_size(), 1);
  EXPECT_EQ(ReadLink(absl::StrCat("/proc/", def->workers(0).pid(), "/exe")),
            std::filesystem::canonical(FORKPOOLD_PATH).string());

  // Tasks run there, and see themselves as the worker program.
  absl::StatusOr<std::string> exe = client_->pool("spawned").Apply("exe", "");
  ASSERT_THAT(exe, IsOk());
  EXPECT_EQ(*exe, real_worker);
  EXPECT_THAT(client_->pool("spawned").Apply("square", "8"), IsOkAndHolds(std::string("64")));
}

TEST_F(FaultTest, InitializerRunsExactlyOncePerWorker) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(1));
  const std::string marks = daemon_->dir() + "/init-pids.txt";
  v1::PoolSettings settings;
  settings.set_name("initialised");
  settings.set_processes(3);
  settings.set_initializer("append_pid");
  settings.mutable_initargs()->set_data(marks);
  ASSERT_THAT(client_->CreatePool(settings), IsOk());
  const std::set<pid_t> workers = AwaitIdleWorkers("initialised", 3);
  ASSERT_EQ(workers.size(), 3u);
  // Work on every worker, more than once each.
  absl::StatusOr<std::vector<AsyncResult>> tasks =
      client_->pool("initialised").SubmitMany("sleep", std::vector<std::string>(9, "0.05"));
  ASSERT_THAT(tasks, IsOk());
  absl::StatusOr<WaitOutcome> waited = Wait(*client_, *tasks, WaitMode::kAll, absl::Seconds(10));
  ASSERT_THAT(waited, IsOk());
  ASSERT_TRUE(waited->satisfied);

  auto lines = [&] {
    std::vector<pid_t> out;
    for (absl::string_view line : absl::StrSplit(ReadFile(marks), '\n', absl::SkipEmpty())) {
      pid_t pid = 0;
      EXPECT_TRUE(absl::SimpleAtoi(line, &pid)) << line;
      out.push_back(pid);
    }
    return out;
  };
  std::vector<pid_t> written = lines();
  std::sort(written.begin(), written.end());
  EXPECT_EQ(written, std::vector<pid_t>(workers.begin(), workers.end()));

  // A replacement worker runs it once too.
  const pid_t killed = *workers.begin();
  ASSERT_EQ(::kill(killed, SIGKILL), 0);
  const std::set<pid_t> now = AwaitIdleWorkers("initialised", 3, {killed});
  ASSERT_EQ(now.size(), 3u);
  written = lines();
  std::sort(written.begin(), written.end());
  std::set<pid_t> all = workers;
  all.insert(now.begin(), now.end());
  EXPECT_EQ(written, std::vector<pid_t>(all.begin(), all.end()));
}

TEST_F(FaultTest, FailingInitializerIsReportedAndDoesNotSpin) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(1));
  v1::PoolSettings settings;
  settings.set_name("badinit");
  settings.set_processes(2);
  settings.set_initializer("init_fail");
  const absl::Time created = absl::Now();
  ASSERT_THAT(client_->CreatePool(settings), IsOk());
  std::string last_error;
  EXPECT_TRUE(PollUntil([&] {
    absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("badinit");
    if (info.ok()) last_error = info->last_error();
    return absl::StrContains(last_error, "init_fail");
  })) << "last_error: '"
      << last_error << "'";

  // Two seconds after creation, it has not started workers in a tight loop.
  absl::SleepFor(created + absl::Seconds(2) - absl::Now());
  absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("badinit");
  ASSERT_THAT(info, IsOk());
  EXPECT_GE(info->workers_started(), 2);
  EXPECT_LT(info->workers_started(), 15) << info->ShortDebugString();
  EXPECT_THAT(info->last_error(), HasSubstr("init_fail"));
  // And the daemon is fine.
  EXPECT_THAT(client_->pool().Apply("square", "4"), IsOkAndHolds(std::string("16")));
}

}  // namespace
}  // namespace forkpool::testing
