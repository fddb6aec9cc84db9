// Integration tests of Core II-b through the real daemon: idempotency keys that
// hold when a caller leaves, a pool deleted and made again during its load, and
// maps whose memory stays bounded whatever the client does (a unary map nobody
// reads, a stream fed for a minute).
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "forkpool/v1/forkpool.grpc.pb.h"
#include "map_test_util.h"

namespace forkpool {
namespace {

using ::forkpool::Queue;
using ::forkpool::testing::Daemon;
using ::forkpool::testing::DaemonOptions;
using ::forkpool::testing::IsOk;

using ::forkpool::testing::kExampleTasksPath;
using ::forkpool::testing::PollUntil;
using ::forkpool::testing::ProcessAlive;
using ::forkpool::testing::ProcStatusKiB;
using ::forkpool::testing::StatusIs;
using ::testing::HasSubstr;

class CoreLimitsTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> flags = {}, int processes = 2) {
    DaemonOptions options;
    options.processes = processes;
    options.extra_flags = std::move(flags);
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(options);
    ASSERT_THAT(daemon, IsOk());
    daemon_ = *std::move(daemon);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(daemon_->address());
    ASSERT_THAT(client, IsOk());
    client_ = *std::move(client);
  }
  // A stub whose connection takes little unread data (no window growth by
  // BDP probing): what a client that does not read makes the daemon hold is
  // then the daemon's own bound, reached within seconds.
  std::unique_ptr<v1::Tasks::Stub> Stub() {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 * 1024);
    args.SetMaxReceiveMessageSize(64 << 20);
    return v1::Tasks::NewStub(
        grpc::CreateCustomChannel(daemon_->address(), grpc::InsecureChannelCredentials(), args));
  }
  // A raw Get of `task_id` waiting up to 30 s (the client library's Get
  // would hide the reply's shape).
  absl::StatusOr<v1::GetResponse> RawGet(const std::string& task_id) {
    auto stub = Stub();
    grpc::ClientContext ctx;
    v1::GetRequest request;
    request.set_task_id(task_id);
    request.mutable_timeout()->set_seconds(30);
    v1::GetResponse response;
    grpc::Status s = stub->Get(&ctx, request, &response);
    if (!s.ok()) return absl::UnknownError(s.error_message());
    return response;
  }
  // The daemon's resident set now.
  int64_t RssKiB() { return ProcStatusKiB(daemon_->pid(), "VmRSS"); }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(CoreLimitsTest, RetriedApplyByKeyAfterItsCallerLeftGetsTheOutput) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ApplyOptions first;
  first.request_id = "retry-me";
  first.apply_timeout = absl::Milliseconds(300);
  // The caller gives up while the task runs: the daemon cancels it.
  EXPECT_THAT(client_->pool().Apply("sleep", "1", first),
              StatusIs(absl::StatusCode::kDeadlineExceeded, ""));
  ApplyOptions retry;
  retry.request_id = "retry-me";
  // The retry runs anew and gets the output, not the cancellation.
  absl::StatusOr<std::string> out = client_->pool().Apply("sleep", "1", retry);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(*out, "1");
}

TEST_F(CoreLimitsTest, AnApplyThatJoinsByKeyLeavingDoesNotCancelTheFirstCallersTask) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ApplyOptions opts;
  opts.request_id = "shared";
  absl::StatusOr<std::string> first_out;
  std::thread first([&] { first_out = client_->pool().Apply("sleep", "1.5", opts); });
  // The second caller joins the same task, then gives up.
  ASSERT_TRUE(PollUntil([&] {
    absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("default");
    return info.ok() && info->busy() == 1;
  }));
  ApplyOptions joiner = opts;
  joiner.apply_timeout = absl::Milliseconds(200);
  EXPECT_THAT(client_->pool().Apply("sleep", "1.5", joiner),
              StatusIs(absl::StatusCode::kDeadlineExceeded, ""));
  first.join();
  ASSERT_THAT(first_out, IsOk());
  EXPECT_EQ(*first_out, "1.5");
}

TEST_F(CoreLimitsTest, APoolDeletedAndMadeAgainDuringItsLoadIsNeverConfusedWithIt) {
  ASSERT_NO_FATAL_FAILURE(Start({"--load_timeout=20s"}));
  v1::PoolSettings hanging;
  hanging.set_name("x");
  hanging.set_processes(1);
  hanging.add_libraries(FORKPOOL_BAD_LOAD_HANG_PATH);
  absl::StatusOr<v1::PoolInfo> first_answer;
  absl::Notification answered;
  std::thread loader([&] {
    absl::StatusOr<std::unique_ptr<Client>> other = Client::Connect(daemon_->address());
    if (!other.ok()) {
      first_answer = other.status();
    } else {
      first_answer = (*other)->CreatePool(hanging);
    }
    answered.Notify();
  });
  pid_t hanging_helper = 0;
  ASSERT_TRUE(PollUntil([&] {
    absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("x");
    if (!info.ok() || info->state() != v1::POOL_STATE_LOADING) return false;
    hanging_helper = info->helper_pid();
    return hanging_helper != 0;
  })) << "pool 'x' never showed its loading helper";
  ASSERT_THAT(client_->DeletePool("x"), IsOk());
  ASSERT_TRUE(answered.WaitForNotificationWithTimeout(absl::Seconds(5)));
  loader.join();
  EXPECT_THAT(first_answer, StatusIs(absl::StatusCode::kNotFound, "deleted while"));
  // The same name again, now with a library that loads: its own helper, its
  // own workers, nothing of the first.
  v1::PoolSettings good = hanging;
  good.clear_libraries();
  good.add_libraries(kExampleTasksPath);
  absl::StatusOr<v1::PoolInfo> created = absl::UnavailableError("not yet");
  ASSERT_TRUE(PollUntil([&] {
    created = client_->CreatePool(good);
    return created.ok() || created.status().code() != absl::StatusCode::kAlreadyExists;
  }));
  ASSERT_THAT(created, IsOk());
  EXPECT_NE(created->helper_pid(), hanging_helper);
  EXPECT_EQ(created->state(), v1::POOL_STATE_READY);
  absl::StatusOr<std::string> out = client_->pool("x").Apply("square", "9");
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(*out, "81");
  EXPECT_TRUE(PollUntil([&] { return !ProcessAlive(hanging_helper); }))
      << "the first helper (pid " << hanging_helper << ") still runs";
}

TEST_F(CoreLimitsTest, AHugeInvalidErrorTextComesBackCappedAndValid) {
  ASSERT_NO_FATAL_FAILURE(Start());
  // 15 MiB of bytes that are not UTF-8 as a task's error (a task, and a map
  // item); escaped byte by byte it came back as some 45 MiB before.
  const std::string junk(15 << 20, '\xff');
  absl::StatusOr<AsyncResult> task = client_->pool().ApplyAsync("fail", junk);
  ASSERT_THAT(task, IsOk());
  absl::StatusOr<v1::GetResponse> response = RawGet(task->id());
  ASSERT_THAT(response, IsOk());
  EXPECT_EQ(response->result().state(), v1::TASK_STATE_FAILED);
  const std::string& error = response->result().error();
  EXPECT_LE(error.size(), (16u << 10) + 200);
  EXPECT_GT(error.size(), 1000u);
  EXPECT_THAT(error, HasSubstr("truncated"));
  EXPECT_EQ(error.find('\xff'), std::string::npos);  // repaired, not passed on

  absl::StatusOr<std::vector<std::string>> mapped = client_->pool().Map("fail", {junk});
  ASSERT_FALSE(mapped.ok());
  EXPECT_LE(mapped.status().message().size(), 20u << 10);
}

TEST_F(CoreLimitsTest, OneByteBudgetBoundsQueuesAndTasksTogether) {
  // 24 MiB for everything clients make the daemon hold.
  ASSERT_NO_FATAL_FAILURE(Start({"--max_client_bytes=25165824"}));
  ASSERT_THAT(client_->CreateQueue("q"), IsOk());
  Queue q = client_->queue("q");
  const std::string item(3 << 20, 'i');
  int put = 0;
  absl::Status refused;
  for (; put < 20; ++put) {
    refused = q.Put(item, absl::ZeroDuration());
    if (!refused.ok()) break;
  }
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kResourceExhausted, "--max_client_bytes"));
  EXPECT_GE(put, 6);
  EXPECT_LE(put, 8);
  // A task's input draws on the same budget.
  EXPECT_THAT(client_->pool().ApplyAsync("echo", std::string(4 << 20, 't')).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, "--max_client_bytes"));
  // What is taken out is given back.
  ASSERT_THAT(q.Get(absl::Seconds(1)), IsOk());
  ASSERT_THAT(q.Get(absl::Seconds(1)), IsOk());
  EXPECT_THAT(q.Put(item, absl::ZeroDuration()), IsOk());
  ASSERT_THAT(client_->DeleteQueue("q"), IsOk());
  absl::StatusOr<std::string> out = client_->pool().Apply("echo", std::string(4 << 20, 't'));
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->size(), 4u << 20);
}

TEST_F(CoreLimitsTest, SixtyGetsOfOneBigResultCostOneCopy) {
  ASSERT_NO_FATAL_FAILURE(Start({}, /*processes=*/1));
  // The only worker is busy, so the big task waits and all 60 Gets wait on it.
  absl::StatusOr<AsyncResult> blocker = client_->pool().ApplyAsync("sleep", "1.5");
  ASSERT_THAT(blocker, IsOk());
  const std::string big(15 << 20, 'x');
  absl::StatusOr<AsyncResult> task = client_->pool().ApplyAsync("echo", big);
  ASSERT_THAT(task, IsOk());
  const int64_t before = RssKiB();
  constexpr int kGets = 60;
  std::vector<std::thread> getters;
  std::atomic<int> right{0};
  std::atomic<int64_t> peak{before};
  for (int i = 0; i < kGets; ++i) {
    getters.emplace_back([&] {
      absl::StatusOr<v1::GetResponse> r = RawGet(task->id());
      if (r.ok() && r->ready() && r->result().output().data() == big &&
          r->result().state() == v1::TASK_STATE_SUCCEEDED && r->result().task_id() == task->id()) {
        right.fetch_add(1);
      }
    });
  }
  std::atomic<bool> sampling{true};
  std::thread sampler([&] {
    while (sampling.load()) {
      peak.store(std::max(peak.load(), RssKiB()));
      absl::SleepFor(absl::Milliseconds(5));
    }
  });
  for (std::thread& t : getters) t.join();
  sampling.store(false);
  sampler.join();
  EXPECT_EQ(right.load(), kGets);
  // The input (held until it ran) and the result: some 30 MiB, plus gRPC's
  // buffers; 60 copies of the result would be 900 MiB.
  EXPECT_LT(peak.load() - before, 120 * 1024)
      << "daemon RSS grew from " << before << " KiB to " << peak.load() << " KiB";
  std::cerr << kGets << " Gets of a 15 MiB result: daemon RSS " << before << " -> peak "
            << peak.load() << " KiB\n";
}

TEST_F(CoreLimitsTest, AUnaryMapWhoseClientDoesNotReadHoldsABoundedAmount) {
  // max_queued above the map's size: the bound under test is the unsent
  // results', not the queue's; a small one, so that it is reached within
  // seconds even at chunksize 1.
  constexpr int kItems = 8'000'000;
  ASSERT_NO_FATAL_FAILURE(Start({"--max_queued=9000000", "--max_map_unsent_bytes=4194304"}));
  ASSERT_THAT(client_->pool().Map("square", {"1", "2"}), IsOk());  // warm up
  const int64_t before = RssKiB();
  v1::MapRequest request;
  request.set_function("echo");
  request.set_chunksize(1);
  std::string* inputs = request.mutable_inputs();
  inputs->reserve(2 * kItems);
  // Each empty item packed: the field tag 0x0A and a length of 0.
  for (int i = 0; i < kItems; ++i) inputs->append("\x0A\x00", 2);
  auto stub = Stub();
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<v1::MapResponse>> reader = stub->Map(&ctx, request);
  // Nothing is read: the daemon runs what fits in its bound (and what the
  // connection's flow-control windows take), then stops dispatching.
  int64_t peak = before;
  int64_t done = -1;
  absl::Time still_since = absl::Now();
  const absl::Time start = absl::Now();
  while (absl::Now() - start < absl::Seconds(60) && absl::Now() - still_since < absl::Seconds(2)) {
    peak = std::max(peak, RssKiB());
    absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("default");
    ASSERT_THAT(info, IsOk());
    if (info->tasks_done() != done) {
      done = info->tasks_done();
      still_since = absl::Now();
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_GE(absl::Now() - still_since, absl::Seconds(2))
      << "the map kept running for 60 s with nobody reading (" << done << " items ran)";
  EXPECT_GT(done, 1000);
  EXPECT_LT(done, kItems / 2);
  // 16 MB of request and its index, 4 MiB of unsent results and their runs;
  // before the bound (every chunk queued at once) it grew by over 1 GB.
  EXPECT_LT(peak - before, 160 * 1024)
      << "daemon RSS grew from " << before << " KiB to " << peak << " KiB";
  std::cerr << "unary map of " << kItems << " unread: RSS " << before << " -> peak " << peak
            << " KiB; stopped after " << done << " items\n";
  // The client reads again: the map goes on (the first responses arrive).
  v1::MapResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_GT(response.done(), 0u);
  ctx.TryCancel();
  (void)reader->Finish();
  // The daemon lets go of the cancelled map and serves on.
  ASSERT_TRUE(PollUntil([&] {
    absl::StatusOr<v1::PoolInfo> i = client_->DescribePool("default");
    return i.ok() && i->queued() == 0;
  }));
  EXPECT_THAT(client_->pool().Apply("square", "3"), IsOk());
}

TEST_F(CoreLimitsTest, AMapStreamFedForAMinuteKeepsTheDaemonsMemoryFlat) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> produced{0};
  MapOptions options;
  options.window = 4096;
  options.chunksize = 256;
  options.ordered = false;
  MapResults results = client_->pool().Imap(
      "echo",
      [&]() -> std::optional<std::string> {
        if (stop.load()) return std::nullopt;
        produced.fetch_add(1);
        return std::string();
      },
      options);
  int64_t received = 0;
  int64_t rss_at_10s = -1;
  int64_t produced_at_10s = 0;
  const absl::Time start = absl::Now();
  while (true) {
    absl::StatusOr<std::optional<MapItem>> next = results.Next();
    ASSERT_THAT(next, IsOk());
    if (!next->has_value()) break;
    ++received;
    if ((received & 0xffff) != 0) continue;
    const absl::Duration t = absl::Now() - start;
    if (rss_at_10s < 0 && t > absl::Seconds(10)) {
      rss_at_10s = RssKiB();
      produced_at_10s = produced.load();
    }
    if (t > absl::Seconds(60)) stop.store(true);
  }
  const int64_t rss_at_end = RssKiB();
  const int64_t items = produced.load() - produced_at_10s;
  std::cerr << "MapStream: " << produced.load() << " items in 60 s; RSS " << rss_at_10s
            << " KiB at 10 s, " << rss_at_end << " KiB at the end (" << items
            << " items between)\n";
  EXPECT_EQ(received, produced.load());
  ASSERT_GT(rss_at_10s, 0);
  // Millions of items passed between the two readings; one bit per item ever
  // accepted (the old answered-set) would be several MB, per-item state far
  // more.
  EXPECT_GT(items, 2'000'000);
  EXPECT_LT(rss_at_end - rss_at_10s, 8 * 1024);
}

}  // namespace
}  // namespace forkpool
