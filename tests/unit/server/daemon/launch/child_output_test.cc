// Tests for server/daemon/launch/child_output.h over real pipes: tagged lines, partial
// and long lines, the tail, the rate limit and cap (fake clock), and a child
// writing 1 GiB that must never be blocked.
#include "server/daemon/launch/child_output.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/status_matchers.h"
#include "tests/unit/test_util.h"

namespace forkpool {
namespace {

using ::forkpool::testing::IsOk;
using ::forkpool::testing::MakePipe;
using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kTag[] = "[pool/3 pid 1234]";
constexpr char kPrefix[] = "forkpoold: [pool/3 pid 1234] ";

std::string Logged(std::string_view text) { return absl::StrCat(kPrefix, std::string(text)); }

// Writes all of `data` to a blocking pipe.
void WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    ASSERT_GT(n, 0) << std::strerror(errno);
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// A line of `n` bytes with its newline: "<index>xxxx...\n".
std::string Line(int index, size_t n) {
  std::string line = absl::StrCat(index, ":");
  line.resize(n - 1, 'x');
  line.push_back('\n');
  return line;
}

class ChildOutputTest : public ::testing::Test {
 protected:
  // A ChildOutput over a fresh pipe, with a recording sink and the fake clock.
  void Make(ChildOutput::Limits limits = {}) {
    auto [r, w] = MakePipe();
    writer_ = std::move(w);
    auto out = ChildOutput::Create(
        std::move(r), kTag,
        [this](std::string_view line) {
          absl::MutexLock lock(&mu_);
          lines_.emplace_back(line);
        },
        [this] { return now_; }, limits);
    ASSERT_THAT(out, IsOk());
    out_ = std::move(*out);
  }

  std::vector<std::string> TakeLines() {
    absl::MutexLock lock(&mu_);
    return std::exchange(lines_, {});
  }

  void Write(std::string_view data) { WriteAll(writer_.get(), data); }

  absl::Time now_ = absl::UnixEpoch() + absl::Hours(1);
  UniqueFd writer_;
  std::unique_ptr<ChildOutput> out_;
  absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

TEST_F(ChildOutputTest, CompleteLinesAreTaggedAndAPartialLineWaitsForItsNewline) {
  Make();
  Write("hello\nwor");
  ASSERT_THAT(out_->Drain(), IsOk());
  EXPECT_THAT(TakeLines(), ElementsAre(Logged("hello")));
  ASSERT_THAT(out_->Drain(), IsOk());  // nothing new: EAGAIN, not a block
  EXPECT_THAT(TakeLines(), IsEmpty());
  Write("ld\n\nlast");
  ASSERT_THAT(out_->Drain(), IsOk());
  EXPECT_THAT(TakeLines(), ElementsAre(Logged("world"), Logged("")));
  EXPECT_FALSE(out_->eof());
  // EOF: the unterminated line goes out too.
  writer_.reset();
  ASSERT_THAT(out_->Drain(), IsOk());
  EXPECT_THAT(TakeLines(), ElementsAre(Logged("last")));
  EXPECT_TRUE(out_->eof());
  // Bytes as the child wrote them: 6 + 6 + 1 + 4 (no newline after "last").
  EXPECT_EQ(out_->counts().forwarded, 17u);
  EXPECT_EQ(out_->counts().read, 17u);
  // Draining after EOF is harmless.
  ASSERT_THAT(out_->Drain(), IsOk());
  EXPECT_THAT(TakeLines(), IsEmpty());
}

TEST_F(ChildOutputTest, TheFdIsMadeNonBlocking) {
  Make();
  const int flags = ::fcntl(out_->fd(), F_GETFL);
  ASSERT_GE(flags, 0);
  EXPECT_TRUE(flags & O_NONBLOCK);
}

TEST_F(ChildOutputTest, LongLinesAreCutAtFourKiB) {
  Make();
  const std::string exact(4096, 'e');
  const std::string long_line(6000, 'a');
  Write(exact + "\n");
  // Written in pieces, so the cut happens across reads.
  Write(long_line.substr(0, 3000));
  ASSERT_THAT(out_->Drain(), IsOk());
  Write(long_line.substr(3000) + "\nnext\n");
  ASSERT_THAT(out_->Drain(), IsOk());
  EXPECT_THAT(
      TakeLines(),
      ElementsAre(Logged(exact), Logged(std::string(4096, 'a') + " [line cut]"), Logged("next")));
  EXPECT_EQ(out_->counts().cut, 6000u - 4096u + 1u);
}

TEST_F(ChildOutputTest, TailHoldsTheLastFourKiBOfEverything) {
  Make();
  std::string all;
  for (int i = 0; i < 500; ++i) all += Line(i, 37);
  Write(all);
  ASSERT_THAT(out_->Drain(), IsOk());
  EXPECT_EQ(out_->Tail(), all.substr(all.size() - 4096));
  // Short output: the tail is all of it.
  Make();
  Write("abc\n");
  ASSERT_THAT(out_->Drain(), IsOk());
  EXPECT_EQ(out_->Tail(), "abc\n");
}

TEST_F(ChildOutputTest, RateLimitDropsWholeLinesAndReportsEachEpisodeOnce) {
  ChildOutput::Limits limits;
  limits.rate_bytes_per_second = 100;
  limits.burst_bytes = 1000;
  Make(limits);
  // 12 lines of 100 bytes: the burst lets exactly 10 through.
  std::string batch;
  for (int i = 0; i < 12; ++i) batch += Line(i, 100);
  Write(batch);
  ASSERT_THAT(out_->Drain(), IsOk());
  std::vector<std::string> lines = TakeLines();
  ASSERT_EQ(lines.size(), 10u);
  EXPECT_EQ(lines[9], Logged(Line(9, 100).substr(0, 99)));
  EXPECT_EQ(out_->counts().dropped, 200u);

  // 2 s refill 200 bytes: below half the burst, so the episode goes on.
  now_ += absl::Seconds(2);
  Write(Line(12, 100));
  ASSERT_THAT(out_->Drain(), IsOk());
  EXPECT_THAT(TakeLines(), IsEmpty());

  // 3 s more: 500 bytes, half the burst. One report for the whole episode, then
  // the line.
  now_ += absl::Seconds(3);
  Write(Line(13, 100));
  ASSERT_THAT(out_->Drain(), IsOk());
  EXPECT_THAT(TakeLines(), ElementsAre(Logged("300 bytes of output dropped (rate limit)"),
                                       Logged(Line(13, 100).substr(0, 99))));

  // A new episode, still open at EOF, is reported there.
  std::string flood;
  for (int i = 0; i < 10; ++i) flood += Line(100 + i, 100);
  Write(flood);
  writer_.reset();
  ASSERT_THAT(out_->Drain(), IsOk());
  lines = TakeLines();
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), Logged("600 bytes of output dropped (rate limit)"));
  EXPECT_EQ(lines.size(), 5u);  // 400 tokens left: 4 lines, then the report
  const ChildOutput::Counts c = out_->counts();
  EXPECT_EQ(c.read, c.forwarded + c.dropped + c.cut);
}

TEST_F(ChildOutputTest, LifetimeCapStopsForwardingForGood) {
  ChildOutput::Limits limits;
  limits.lifetime_bytes = 1000;
  Make(limits);
  std::string batch;
  for (int i = 0; i < 15; ++i) batch += Line(i, 100);
  Write(batch);
  ASSERT_THAT(out_->Drain(), IsOk());
  std::vector<std::string> lines = TakeLines();
  ASSERT_EQ(lines.size(), 11u);
  EXPECT_EQ(lines[10], Logged("100 bytes of output dropped (cap reached: later "
                              "output is dropped)"));
  // Later output, even after a long quiet time, is read and dropped silently.
  now_ += absl::Hours(1);
  Write("later\n");
  writer_.reset();
  ASSERT_THAT(out_->Drain(), IsOk());
  EXPECT_THAT(TakeLines(), IsEmpty());
  EXPECT_TRUE(out_->eof());
  EXPECT_EQ(out_->counts().forwarded, 1000u);
  EXPECT_EQ(out_->counts().dropped, 506u);
  // The tail still sees it: it is for crash reports.
  EXPECT_THAT(out_->Tail(), EndsWith("later\n"));
}

TEST_F(ChildOutputTest, TheSinkRunsWithoutTheLockTailNeeds) {
  // A sink that calls Tail() and eof(): had Drain held their lock around the
  // sink, this would deadlock (absl::Mutex is not reentrant).
  auto [r, w] = MakePipe();
  ChildOutput* self = nullptr;
  std::vector<std::string> tails;
  auto out = ChildOutput::Create(std::move(r), kTag, [&](std::string_view) {
    tails.push_back(self->Tail());
    (void)self->eof();
    (void)self->counts();
  });
  ASSERT_THAT(out, IsOk());
  self = out->get();
  WriteAll(w.get(), "one\ntwo\n");
  ASSERT_THAT((*out)->Drain(), IsOk());
  EXPECT_THAT(tails, ElementsAre("one\ntwo\n", "one\ntwo\n"));
}

// Forks a child that writes `total` bytes of 1 KiB lines and then "the end\n"
// to `write_end` with blocking writes, and exits 0. The child closes
// `close_in_child` (the daemon's read end).
pid_t StartWriter(int close_in_child, const UniqueFd& write_end, uint64_t total) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  ::close(close_in_child);
  std::string chunk;
  for (int i = 0; i < 64; ++i) {
    chunk.append(1023, static_cast<char>('a' + i % 26));
    chunk.push_back('\n');
  }
  auto write_all = [&](std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::write(write_end.get(), data.data(), data.size());
      if (n <= 0) ::_exit(2);
      data.remove_prefix(static_cast<size_t>(n));
    }
  };
  for (uint64_t sent = 0; sent < total; sent += chunk.size()) write_all(chunk);
  write_all("the end\n");
  ::_exit(0);
}

// Drains `out` as the I/O loop would (poll, then Drain) until EOF or
// `deadline`, then reaps `child`. Returns its wait status, or -1 if the output
// did not reach EOF in time (the child is then killed).
int DrainUntilEof(ChildOutput& out, pid_t child, absl::Time deadline) {
  while (!out.eof() && absl::Now() < deadline) {
    pollfd p{out.fd(), POLLIN, 0};
    ::poll(&p, 1, 100);
    if (!out.Drain().ok()) break;
  }
  const bool finished = out.eof();
  if (!finished) ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  return finished ? status : -1;
}

struct SinkTotals {
  uint64_t bytes = 0;  // line content after the prefix, without the tag
  uint64_t lines = 0;
  std::vector<std::string> reports;
};

TEST(ChildOutputChildTest, OneGiBFromAChildIsReadToTheEndAndMostlyDropped) {
  constexpr uint64_t kTotal = uint64_t{1} << 30;
  auto [r, w] = MakePipe();
  SinkTotals totals;
  const ChildOutput::Limits limits;  // the defaults: 64 KiB/s, 256 KiB burst, 4 MiB
  auto out = ChildOutput::Create(std::move(r), kTag, [&](std::string_view line) {
    if (line.find("bytes of output dropped") != std::string_view::npos) {
      totals.reports.emplace_back(line);
      return;
    }
    ++totals.lines;
    totals.bytes += line.size() - std::strlen(kPrefix) + 1;
  });
  ASSERT_THAT(out, IsOk());
  const absl::Time start = absl::Now();
  const pid_t child = StartWriter((*out)->fd(), w, kTotal);
  ASSERT_GT(child, 0);
  w.reset();  // the child holds the only write end: its exit is our EOF
  const int status = DrainUntilEof(**out, child, start + absl::Seconds(50));
  const absl::Duration took = absl::Now() - start;

  // The child wrote everything and exited: it was never left blocked on the
  // pipe.
  ASSERT_NE(status, -1) << "the writer did not finish within 50 s";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  const ChildOutput::Counts c = (*out)->counts();
  EXPECT_EQ(c.read, kTotal + 8);

  // What reached the log: at least the burst, at most what the bucket allowed
  // in the time taken, and never more than the cap.
  EXPECT_GE(totals.bytes, limits.burst_bytes - 1024);
  EXPECT_LE(
      totals.bytes,
      limits.burst_bytes + limits.rate_bytes_per_second * absl::ToDoubleSeconds(took) + 64 * 1024);
  EXPECT_LE(totals.bytes, limits.burst_bytes + limits.lifetime_bytes);
  EXPECT_EQ(c.forwarded, totals.bytes);
  EXPECT_EQ(c.read, c.forwarded + c.dropped + c.cut);
  ASSERT_FALSE(totals.reports.empty());
  EXPECT_THAT(totals.reports.back(), HasSubstr("(rate limit)"));
  // The tail holds the very end, though that was dropped from the log.
  EXPECT_THAT((*out)->Tail(), EndsWith("the end\n"));
  EXPECT_EQ((*out)->Tail().size(), limits.tail_bytes);
  std::printf("1 GiB drained in %s; %llu bytes in %llu lines logged, %zu reports\n",
              absl::FormatDuration(took).c_str(), static_cast<unsigned long long>(totals.bytes),
              static_cast<unsigned long long>(totals.lines), totals.reports.size());
}

TEST(ChildOutputChildTest, CapHoldsAgainstAChildWhenTheRateNeverBinds) {
  constexpr uint64_t kTotal = uint64_t{64} << 20;
  auto [r, w] = MakePipe();
  SinkTotals totals;
  bool line_after_cap = false;
  const ChildOutput::Limits limits;
  // A clock that jumps an hour at every read: the bucket is always full, so
  // only the lifetime cap stands between the child and the log.
  absl::Time fake = absl::UnixEpoch();
  auto out = ChildOutput::Create(
      std::move(r), kTag,
      [&](std::string_view line) {
        if (line.find("bytes of output dropped") != std::string_view::npos) {
          totals.reports.emplace_back(line);
          return;
        }
        if (!totals.reports.empty()) line_after_cap = true;
        totals.bytes += line.size() - std::strlen(kPrefix) + 1;
      },
      [&] { return fake += absl::Hours(1); });
  ASSERT_THAT(out, IsOk());
  const pid_t child = StartWriter((*out)->fd(), w, kTotal);
  ASSERT_GT(child, 0);
  w.reset();
  const int status = DrainUntilEof(**out, child, absl::Now() + absl::Seconds(50));
  ASSERT_NE(status, -1) << "the writer did not finish within 50 s";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  // Up to the cap, less than one line short of it, then one report and silence.
  EXPECT_LE(totals.bytes, limits.lifetime_bytes);
  EXPECT_GT(totals.bytes, limits.lifetime_bytes - 1024);
  ASSERT_EQ(totals.reports.size(), 1u);
  EXPECT_THAT(totals.reports[0],
              HasSubstr("bytes of output dropped (cap reached: later output is dropped)"));
  EXPECT_FALSE(line_after_cap);
  EXPECT_THAT((*out)->Tail(), EndsWith("the end\n"));
  const ChildOutput::Counts c = (*out)->counts();
  EXPECT_EQ(c.read, kTotal + 8);
  EXPECT_EQ(c.dropped, kTotal + 8 - c.forwarded);
}

}  // namespace
}  // namespace forkpool

namespace forkpool {
namespace {

TEST(LogBudgetTest, TakesWhatTheBucketHoldsAndRefillsAtItsRate) {
  LogBudget budget(/*rate_bytes_per_second=*/1000, /*burst_bytes=*/5000);
  const absl::Time t0 = absl::FromUnixSeconds(100);
  EXPECT_TRUE(budget.TryTake(5000, t0));
  EXPECT_FALSE(budget.TryTake(1, t0)) << "the burst is spent";
  EXPECT_FALSE(budget.TryTake(600, t0 + absl::Milliseconds(500)));  // 500 earned
  EXPECT_TRUE(budget.TryTake(500, t0 + absl::Milliseconds(500)));
  // Never more than the burst, however long it rested.
  EXPECT_FALSE(budget.TryTake(5001, t0 + absl::Hours(1)));
  EXPECT_TRUE(budget.TryTake(5000, t0 + absl::Hours(1)));
}

}  // namespace
}  // namespace forkpool
