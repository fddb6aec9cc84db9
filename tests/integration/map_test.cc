// Integration tests of Pool::Map / Imap / ImapUnordered through the real daemon: order,
// chunk sizes, per-item failures, streaming inputs under a window (the daemon's memory
// stays bounded), cancellation, and the CLI's `forkpool map`.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "forkpool/v1/forkpool.grpc.pb.h"
#include "map_test_util.h"
#include "packed_test_util.h"

namespace forkpool {
namespace {

using ::forkpool::testing::PackWithProto;
using ::forkpool::testing::UnpackResults;
using ::forkpool::testing::CommandResult;
using ::forkpool::testing::IsOk;
using ::forkpool::testing::IsOkAndHolds;
using ::forkpool::testing::Numbers;
using ::forkpool::testing::PollUntil;
using ::forkpool::testing::ProcStatusKiB;
using ::forkpool::testing::RunCommand;
using ::forkpool::testing::StatusIs;
using ::testing::HasSubstr;

class MapTest : public testing::MapTestBase {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartDaemon(2)); }

  // Reads `results` to the end: outputs by index ("" for failures), and how often each
  // index came. Fails the test on a map error.
  struct Drained {
    std::vector<std::string> outputs;
    std::vector<int> count;
    std::vector<uint64_t> order;
  };
  static Drained Drain(MapResults& results, size_t n) {
    Drained d;
    d.outputs.resize(n);
    d.count.resize(n);
    while (true) {
      absl::StatusOr<std::optional<MapItem>> next = results.Next();
      EXPECT_THAT(next, IsOk());
      if (!next.ok() || !next->has_value()) break;
      const MapItem& item = **next;
      EXPECT_LT(item.index, n);
      if (item.index >= n) break;
      d.order.push_back(item.index);
      ++d.count[item.index];
      if (item.output.ok()) d.outputs[item.index] = *item.output;
    }
    return d;
  }

  static std::vector<std::string> Squares(int64_t n) {
    std::vector<std::string> out;
    out.reserve(n);
    for (int64_t i = 0; i < n; ++i) out.push_back(absl::StrCat(i * i));
    return out;
  }

  CommandResult Sh(const std::string& script) {
    absl::StatusOr<CommandResult> r =
        RunCommand({"/bin/sh", "-c", script}, daemon_->dir(), {}, absl::Seconds(30));
    EXPECT_THAT(r, IsOk());
    return r.ok() ? *r : CommandResult{};
  }
  std::string Cli() const {
    return absl::StrCat("'", FORKPOOL_CLI_PATH, "' --address '", daemon_->address(), "'");
  }
};

TEST_F(MapTest, OrderedMapOf100000ItemsKeepsInputOrder) {
  const std::vector<std::string> inputs = Numbers(100000);
  MapResults results = client_->pool().Imap("square", inputs);
  Drained d = Drain(results, inputs.size());
  EXPECT_EQ(d.outputs, Squares(100000));
  ASSERT_EQ(d.order.size(), inputs.size());
  EXPECT_TRUE(std::is_sorted(d.order.begin(), d.order.end())) << "an ordered map came out of order";
  EXPECT_EQ(results.total(), 100000u);
  // Map itself, too.
  absl::StatusOr<std::vector<std::string>> mapped = client_->pool().Map("square", inputs);
  ASSERT_THAT(mapped, IsOk());
  EXPECT_EQ(*mapped, Squares(100000));
}

// Inputs too large for one request stream in batches cut by bytes before items:
// 40,000 inputs of 300 bytes make batches of about 3,400. Every one must arrive.
TEST_F(MapTest, StreamedLargeInputsAllArrive) {
  std::vector<std::string> inputs;
  for (int i = 0; i < 40000; ++i) {
    std::string in = absl::StrCat(i, ":");
    in.resize(300, 'x');
    inputs.push_back(std::move(in));
  }
  absl::StatusOr<std::vector<std::string>> mapped = client_->pool().Map("echo", inputs);
  ASSERT_THAT(mapped, IsOk());
  ASSERT_EQ(mapped->size(), inputs.size());
  EXPECT_TRUE(*mapped == inputs) << "an output differs from its input";
}

// After a busy map, SIGTERM ends forkpoold within seconds. gRPC's ~Server once held
// it about 10 s, waiting for an idle executor thread.
TEST_F(MapTest, DaemonStopsWithinSecondsAfterABusyMap) {
  client_.reset();  // a connected client holds Shutdown to its 2 s deadline
  CommandResult r = Sh(absl::StrCat("seq 1 1000000 | ", Cli(), " map square > /dev/null"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const absl::Time t0 = absl::Now();
  EXPECT_THAT(daemon_->Stop(absl::Seconds(4)), IsOkAndHolds(0)) << "killed after the grace";
  EXPECT_LT(absl::Now() - t0, absl::Seconds(4));
}

TEST_F(MapTest, UnorderedMapOf100000ItemsAnswersEachExactlyOnce) {
  const std::vector<std::string> inputs = Numbers(100000);
  MapResults results = client_->pool().ImapUnordered("square", inputs);
  Drained d = Drain(results, inputs.size());
  EXPECT_EQ(std::count(d.count.begin(), d.count.end(), 1), 100000);
  EXPECT_EQ(d.outputs, Squares(100000));
}

TEST_F(MapTest, ChunksizeOneAndTenThousandAreBothCorrect) {
  MapOptions one{1, true};
  EXPECT_THAT(client_->pool().Map("square", Numbers(5000), one), IsOkAndHolds(Squares(5000)));
  MapOptions big{10000, false};
  EXPECT_THAT(client_->pool().Map("square", Numbers(50000), big), IsOkAndHolds(Squares(50000)));
  MapOptions streamed{10000, true};
  streamed.force_stream = true;
  EXPECT_THAT(client_->pool().Map("square", Numbers(30000), streamed),
              IsOkAndHolds(Squares(30000)));
}

TEST_F(MapTest, FailingItemInTheMiddleIsReportedAtItsIndex) {
  std::vector<std::string> inputs = Numbers(1000);
  inputs[500] = "x";
  // Map: the first failing item is the error, naming its index and its error.
  EXPECT_THAT(client_->pool().Map("square", inputs),
              StatusIs(absl::StatusCode::kUnknown, "map item 500 failed (FAILED)"));
  EXPECT_THAT(client_->pool().Map("square", inputs),
              StatusIs(absl::StatusCode::kUnknown, "'x' is not a decimal integer"));
  // Imap and ImapUnordered: the failure is yielded at its place; the rest succeed.
  for (bool ordered : {true, false}) {
    MapOptions options;
    options.ordered = ordered;
    MapResults results = client_->pool().Imap("square", inputs, options);
    int failures = 0;
    int ok = 0;
    while (true) {
      absl::StatusOr<std::optional<MapItem>> next = results.Next();
      ASSERT_THAT(next, IsOk());
      if (!next->has_value()) break;
      if ((*next)->output.ok()) {
        ++ok;
        EXPECT_EQ(*(*next)->output, absl::StrCat((*next)->index * (*next)->index));
      } else {
        ++failures;
        EXPECT_EQ((*next)->index, 500u);
        EXPECT_THAT((*next)->output, StatusIs(absl::StatusCode::kUnknown, "'x'"));
      }
    }
    EXPECT_EQ(failures, 1) << "ordered=" << ordered;
    EXPECT_EQ(ok, 999) << "ordered=" << ordered;
  }
}

// A million lazily produced inputs with a window of 1,000: the window holds in the
// client and the daemon, and the daemon's peak RSS barely moves. (It once also caught
// a MapStream race that crashed the daemon mid-stream; see the next test.)
TEST_F(MapTest, StreamingMillionInputsStaysWithinTheWindowAndBoundedMemory) {
  // Warm up, so that the baseline includes the daemon's ordinary footprint.
  ASSERT_THAT(client_->pool().Map("square", Numbers(1000)), IsOk());
  const int64_t hwm_before = ProcStatusKiB(daemon_->pid(), "VmHWM");
  ASSERT_GT(hwm_before, 0);

  constexpr int64_t kItems = 1000000;
  constexpr uint32_t kWindow = 1000;
  int64_t produced = 0;
  MapOptions options;
  options.window = kWindow;
  options.chunksize = 100;
  MapResults results = client_->pool().Imap(
      "square",
      [&produced]() -> std::optional<std::string> {
        if (produced >= kItems) return std::nullopt;
        return absl::StrCat(produced++);
      },
      options);
  uint64_t expected = 0;
  uint64_t wrong_values = 0;  // checked by StreamingOutputsBelongToTheirInputs
  bool in_order = true;
  const absl::Time start = absl::Now();
  while (true) {
    absl::StatusOr<std::optional<MapItem>> next = results.Next();
    ASSERT_THAT(next, IsOk());
    if (!next->has_value()) break;
    const MapItem& item = **next;
    if (item.index != expected) {
      in_order = false;
      ADD_FAILURE() << "item " << item.index << " at position " << expected << ": "
                    << (item.output.ok() ? *item.output : item.output.status().ToString());
      break;
    }
    if (!item.output.ok() || *item.output != absl::StrCat(item.index * item.index)) {
      ++wrong_values;
    }
    ++expected;
    // The client never lets more than the window be unanswered.
    ASSERT_LE(results.sent() - std::min(results.sent(), results.done()), kWindow);
  }
  const absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(in_order);
  EXPECT_EQ(expected, static_cast<uint64_t>(kItems));
  EXPECT_EQ(results.total(), static_cast<uint64_t>(kItems));

  absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("default");
  ASSERT_THAT(info, IsOk());
  EXPECT_GT(info->map_inflight_high_water(), 0);
  EXPECT_LE(info->map_inflight_high_water(), kWindow);
  const int64_t hwm_after = ProcStatusKiB(daemon_->pid(), "VmHWM");
  // 1M inputs and outputs are ~14 MB of payload alone; with per-item overhead an
  // unbounded daemon would hold far more than this.
  EXPECT_LT(hwm_after - hwm_before, 200 * 1024)
      << "daemon peak RSS grew from " << hwm_before << " KiB to " << hwm_after << " KiB";
  RecordProperty("streaming_seconds", absl::StrCat(absl::ToDoubleSeconds(took)));
  RecordProperty("vmhwm_growth_kib", absl::StrCat(hwm_after - hwm_before));
  std::cerr << wrong_values << " outputs of other inputs; 1M streamed in " << took << "; daemon VmHWM " << hwm_before << " -> "
            << hwm_after << " KiB; high water " << info->map_inflight_high_water() << "\n";
}

// A MapStream whose window allows far more than memory should hold: 200 inputs of
// 1 MiB each (sleep returns its input), a window of a million items and a client that
// writes as fast as it can and reads nothing. The daemon stops reading once the map
// holds 32 MiB, so its peak RSS stays far below the 200 MiB sent at it (about +90 MiB
// measured, with copies in flight and malloc's retained memory; +290 MiB unbounded).
TEST_F(MapTest, StreamOfLargeItemsIsHeldToAByteBoundWhateverTheWindow) {
  ASSERT_THAT(client_->pool().Map("square", Numbers(1000)), IsOk());
  const int64_t hwm_before = ProcStatusKiB(daemon_->pid(), "VmHWM");
  ASSERT_GT(hwm_before, 0);
  auto channel = grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Tasks::NewStub(channel);
  grpc::ClientContext context;
  auto stream = stub->MapStream(&context);
  v1::MapStreamRequest open;
  open.mutable_open()->set_function("sleep");
  open.mutable_open()->set_window(1000000);
  ASSERT_TRUE(stream->Write(open));
  std::string input = "0.05";
  input.resize(1 << 20, ' ');  // sleep trims the spaces
  v1::MapStreamRequest inputs;
  inputs.mutable_inputs()->set_inputs(PackWithProto({input}));
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; i < 200; ++i) {
      if (!stream->Write(inputs)) return;
      ++written;
    }
  });
  // Long enough for every write to have gone through if nothing held them back.
  absl::SleepFor(absl::Seconds(2));
  const int64_t hwm_after = ProcStatusKiB(daemon_->pid(), "VmHWM");
  const int written_then = written.load();
  context.TryCancel();
  writer.join();
  v1::MapResponse response;
  while (stream->Read(&response)) {
  }
  (void)stream->Finish();
  EXPECT_LT(written_then, 200) << "nothing held the writer back";
  EXPECT_LT(hwm_after - hwm_before, 150 * 1024)
      << "daemon peak RSS grew from " << hwm_before << " KiB to " << hwm_after << " KiB";
  std::cerr << written_then << " of 200 MiB written in 2 s; daemon VmHWM " << hwm_before
            << " -> " << hwm_after << " KiB\n";
}

// Every output belongs to its input in a MapStream with a small window (1000) and
// chunksize 100. Guards a fixed race (a Feed on another thread started the next read
// into the message still being taken apart) that answered items with the output of
// the input 100 places later, or ran chunks on empty inputs.
TEST_F(MapTest, StreamingOutputsBelongToTheirInputs) {
  constexpr int64_t kItems = 300000;
  int64_t produced = 0;
  MapOptions options;
  options.window = 1000;
  options.chunksize = 100;
  MapResults results = client_->pool().Imap(
      "square",
      [&produced]() -> std::optional<std::string> {
        if (produced >= kItems) return std::nullopt;
        return absl::StrCat(produced++);
      },
      options);
  uint64_t wrong = 0;
  uint64_t n = 0;
  while (true) {
    absl::StatusOr<std::optional<MapItem>> next = results.Next();
    ASSERT_THAT(next, IsOk());
    if (!next->has_value()) break;
    const MapItem& item = **next;
    ASSERT_THAT(item.output, IsOk());
    if (*item.output != absl::StrCat(item.index * item.index)) {
      if (wrong++ == 0) ADD_FAILURE() << "item " << item.index << " answered " << *item.output;
    }
    ++n;
  }
  EXPECT_EQ(n, static_cast<uint64_t>(kItems));
  EXPECT_EQ(wrong, 0u);
}

TEST_F(MapTest, CancelHalfwayDropsTheQueuedItems) {
  constexpr int kItems = 200;  // 0.05 s each on 2 workers: 5 s if all ran
  std::vector<std::string> inputs(kItems, "0.05");
  MapOptions options{1, true};
  absl::StatusOr<v1::PoolInfo> before = client_->DescribePool("default");
  ASSERT_THAT(before, IsOk());
  MapResults results = client_->pool().Imap("sleep", inputs, options);
  int received = 0;
  while (received < 20) {
    absl::StatusOr<std::optional<MapItem>> next = results.Next();
    ASSERT_THAT(next, IsOk());
    ASSERT_TRUE(next->has_value());
    ++received;
  }
  results.Cancel();
  absl::Status ended;
  while (true) {
    absl::StatusOr<std::optional<MapItem>> next = results.Next();
    if (!next.ok()) {
      ended = next.status();
      break;
    }
    ASSERT_TRUE(next->has_value()) << "a cancelled map ended as if complete";
  }
  EXPECT_THAT(ended, StatusIs(absl::StatusCode::kCancelled, ""));

  // The daemon drains: nothing queued, nothing running.
  ASSERT_TRUE(PollUntil([&] {
    absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("default");
    return info.ok() && info->queued() == 0 && info->busy() == 0;
  })) << "the cancelled map's items still queue or run";
  absl::StatusOr<v1::PoolInfo> settled = client_->DescribePool("default");
  ASSERT_THAT(settled, IsOk());
  // Nothing more runs afterwards: tasks_done stays put for a while.
  const int64_t done_then = settled->tasks_done();
  EXPECT_FALSE(PollUntil(
      [&] {
        absl::StatusOr<v1::PoolInfo> info = client_->DescribePool("default");
        return info.ok() && info->tasks_done() != done_then;
      },
      absl::Milliseconds(600)))
      << "items ran after the cancel settled";
  const int64_t ran = done_then - before->tasks_done();
  EXPECT_GE(ran, 20);
  EXPECT_LT(ran, kItems) << "every item ran despite the cancel";
}

// A source that blocks does not hold back the inputs it already produced: the
// source's second call waits until the first result has arrived.
TEST_F(MapTest, ASlowSourcesInputsAreAnsweredAsTheyCome) {
  absl::Notification first_answered;
  int calls = 0;
  MapResults results = client_->pool().Imap(
      "square", [&]() -> std::optional<std::string> {
        if (++calls == 1) return "3";
        // Gives up after 10 s, which the test would then report.
        first_answered.WaitForNotificationWithTimeout(absl::Seconds(10));
        return std::nullopt;
      });
  const absl::Time t0 = absl::Now();
  absl::StatusOr<std::optional<MapItem>> first = results.Next();
  const absl::Duration waited = absl::Now() - t0;
  first_answered.Notify();
  ASSERT_THAT(first, IsOk());
  ASSERT_TRUE(first->has_value());
  EXPECT_THAT((*first)->output, IsOkAndHolds("9"));
  EXPECT_LT(waited, absl::Seconds(5)) << "the first input waited for the source's next call";
  absl::StatusOr<std::optional<MapItem>> end = results.Next();
  ASSERT_THAT(end, IsOk());
  EXPECT_FALSE(end->has_value());
}

// The CLI prints a line's result before the next line comes.
TEST_F(MapTest, CliMapAnswersEachLineAsItComes) {
  const std::string command =
      absl::StrCat("(echo 3; sleep 3; echo 4) | ", Cli(), " map square");
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  const absl::Time t0 = absl::Now();
  char line[64] = {};
  ASSERT_NE(std::fgets(line, sizeof(line), pipe), nullptr);
  const absl::Duration first = absl::Now() - t0;
  EXPECT_STREQ(line, "9\n");
  EXPECT_LT(first, absl::Seconds(2)) << "the first result waited for the next line";
  ASSERT_NE(std::fgets(line, sizeof(line), pipe), nullptr);
  EXPECT_STREQ(line, "16\n");
  EXPECT_EQ(::pclose(pipe), 0);
}

TEST_F(MapTest, CliMapPrintsSquaresInOrder) {
  CommandResult r = Sh(absl::StrCat("seq 1 100 | ", Cli(), " map square"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> want;
  for (int i = 1; i <= 100; ++i) want.push_back(absl::StrCat(i * i));
  EXPECT_EQ(r.out, absl::StrCat(absl::StrJoin(want, "\n"), "\n"));
  EXPECT_EQ(r.err, "") << "no progress bar when stderr is not a terminal";

  CommandResult u = Sh(absl::StrCat("seq 1 100 | ", Cli(), " map --unordered --chunksize 3 square"));
  EXPECT_EQ(u.exit_code, 0) << u.err;
  std::vector<std::string> got = absl::StrSplit(u.out, '\n', absl::SkipEmpty());
  std::sort(got.begin(), got.end());
  std::sort(want.begin(), want.end());
  EXPECT_EQ(got, want);
}

// A million lines, every one answered in place: the CLI reads stdin on one thread and
// writes stdout on another, and once lost lines to a flush of stdout from the input
// thread (std::cin is tied to std::cout).
TEST_F(MapTest, CliMapOfAMillionLinesAnswersEveryLineInOrder) {
  constexpr int kLines = 1000000;
  CommandResult r = Sh(absl::StrCat("seq 1 ", kLines, " | ", Cli(), " map square"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<absl::string_view> lines = absl::StrSplit(r.out, '\n');
  ASSERT_EQ(lines.size(), static_cast<size_t>(kLines) + 1) << "lines lost or added";
  EXPECT_EQ(lines.back(), "");
  for (int64_t i = 1; i <= kLines; ++i) {
    ASSERT_EQ(lines[static_cast<size_t>(i - 1)], absl::StrCat(i * i)) << "line " << i;
  }
}

TEST_F(MapTest, CliMapReportsAFailingItemAndExitsOne) {
  CommandResult r = Sh(absl::StrCat("printf '1\\nx\\n3\\n' | ", Cli(), " map square"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.out, "1\n\n9\n") << "a failed item keeps its line, empty";
  EXPECT_THAT(r.err, HasSubstr("item 1 failed"));
  EXPECT_THAT(r.err, HasSubstr("'x' is not a decimal integer"));

  const std::string file = daemon_->dir() + "/inputs.txt";
  CommandResult w = Sh(absl::StrCat("seq 1 5 > '", file, "' && ", Cli(), " map --input '", file,
                                    "' square < /dev/null"));
  EXPECT_EQ(w.exit_code, 0) << w.err;
  EXPECT_EQ(w.out, "1\n4\n9\n16\n25\n");

  CommandResult unknown = Sh(absl::StrCat("seq 1 3 | ", Cli(), " map sqaure"));
  EXPECT_EQ(unknown.exit_code, 4);
  EXPECT_THAT(unknown.err, HasSubstr("sqaure"));
}

TEST_F(MapTest, CliPoolCommandsCreateCloseJoinTerminateDelete) {
  CommandResult made = Sh(absl::StrCat(Cli(), " pool create clipool --processes 1 --library '",
                                       testing::kExampleTasksPath, "'"));
  ASSERT_EQ(made.exit_code, 0) << made.err;
  EXPECT_THAT(made.out, HasSubstr("clipool"));
  CommandResult out = Sh(absl::StrCat(Cli(), " apply --pool clipool square 6"));
  EXPECT_EQ(out.out, "36\n") << out.err;
  EXPECT_EQ(Sh(absl::StrCat(Cli(), " pool join clipool --timeout 0")).exit_code, 4)
      << "join of an open pool is refused";
  EXPECT_EQ(Sh(absl::StrCat(Cli(), " pool close clipool")).exit_code, 0);
  CommandResult refused = Sh(absl::StrCat(Cli(), " apply --pool clipool square 6"));
  EXPECT_EQ(refused.exit_code, 4);
  CommandResult joined = Sh(absl::StrCat(Cli(), " pool join clipool --timeout 20"));
  EXPECT_EQ(joined.exit_code, 0) << joined.err;
  EXPECT_EQ(Sh(absl::StrCat(Cli(), " pool terminate clipool")).exit_code, 0);
  EXPECT_EQ(Sh(absl::StrCat(Cli(), " pool delete clipool")).exit_code, 0);
  CommandResult gone = Sh(absl::StrCat(Cli(), " pool describe clipool"));
  EXPECT_EQ(gone.exit_code, 4);
  EXPECT_EQ(Sh(absl::StrCat(Cli(), " pool create x --start-method fork")).exit_code, 3);
}


// A MapStream whose results have all been taken before its inputs end still tells the
// client the total: one last (empty) response carries it.
TEST_F(MapTest, StreamThatEndsAfterItsResultsStillReportsTheTotal) {
  auto channel = grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Tasks::NewStub(channel);
  grpc::ClientContext context;
  auto stream = stub->MapStream(&context);
  v1::MapStreamRequest open;
  open.mutable_open()->set_function("square");
  open.mutable_open()->set_ordered(true);
  ASSERT_TRUE(stream->Write(open));
  v1::MapStreamRequest inputs;
  inputs.mutable_inputs()->set_inputs(PackWithProto({"1", "2", "3"}));
  ASSERT_TRUE(stream->Write(inputs));
  // Take every result before saying the inputs ended.
  std::vector<std::string> outputs;
  v1::MapResponse response;
  while (outputs.size() < 3 && stream->Read(&response)) {
    EXPECT_EQ(response.total(), 0u) << "the total is not known yet";
    for (const auto& [index, output] : UnpackResults(response)) outputs.push_back(output);
  }
  EXPECT_EQ(outputs, (std::vector<std::string>{"1", "4", "9"}));
  v1::MapStreamRequest end;
  end.mutable_end();
  ASSERT_TRUE(stream->Write(end));
  ASSERT_TRUE(stream->WritesDone());
  uint64_t total = 0;
  while (stream->Read(&response)) {
    EXPECT_EQ(response.runs_size(), 0);
    total = response.total();
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(total, 3u);
}
}  // namespace
}  // namespace forkpool
