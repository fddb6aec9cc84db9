// Tests for server/daemon/broker/map_job.h: runs of results leave in input order (ordered) or
// as they come, duplicates are dropped, and responses stay under the byte cap.
#include "server/daemon/broker/map_job.h"

#include <string>
#include <utility>
#include <vector>

#include "common/packed_items.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forkpool {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

// A run of items first..first+n-1 whose outputs are their indexes in decimal.
MapRun MakeRun(uint64_t first, uint64_t n, size_t pad = 0) {
  MapRun run;
  run.first_index = first;
  run.count = n;
  for (uint64_t i = first; i < first + n; ++i) {
    AppendPackedItem(std::to_string(i) + std::string(pad, '.'), &run.outputs);
  }
  return run;
}

struct Taken {
  std::vector<uint64_t> indexes;
  std::vector<std::string> outputs;
  std::vector<uint64_t> errors;
  int responses = 0;
  size_t largest = 0;
};

// Takes every batch ready now.
Taken TakeAll(MapJob& job) {
  Taken t;
  while (std::optional<v1::MapResponse> r = job.TakeBatch()) {
    ++t.responses;
    t.largest = std::max(t.largest, r->ByteSizeLong());
    for (const v1::MapResultRun& run : r->runs()) {
      PackedItemReader reader(run.outputs());
      std::string_view out;
      for (uint64_t i = run.first_index(); reader.Next(&out); ++i) {
        t.indexes.push_back(i);
        t.outputs.emplace_back(out);
      }
      EXPECT_TRUE(reader.status().ok()) << reader.status();
    }
    for (const v1::MapItemError& e : r->errors()) t.errors.push_back(e.index());
  }
  return t;
}

TEST(MapJobTest, OrderedRunsLeaveInInputOrderOnlyOnceTheGapIsFilled) {
  int wakes = 0;
  MapJob job("m1", "default", "square", "text", /*ordered=*/true, [&] { ++wakes; });
  job.AddAccepted(9, /*end=*/true);
  job.AddRun(MakeRun(6, 3));
  job.AddRun(MakeRun(3, 3));
  EXPECT_EQ(job.TakeBatch(), std::nullopt) << "items 0..2 are missing";
  EXPECT_EQ(job.InFlight(), 9u);
  job.AddRun(MakeRun(0, 3));
  Taken t = TakeAll(job);
  EXPECT_THAT(t.indexes, ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8));
  EXPECT_THAT(t.outputs, ElementsAre("0", "1", "2", "3", "4", "5", "6", "7", "8"));
  EXPECT_EQ(wakes, 3);
  EXPECT_TRUE(job.Finished());
  EXPECT_EQ(job.InFlight(), 0u);
}

TEST(MapJobTest, UnorderedRunsLeaveAsTheyCome) {
  MapJob job("m2", "default", "square", "text", /*ordered=*/false, [] {});
  job.AddAccepted(6, /*end=*/true);
  job.AddRun(MakeRun(3, 3));
  Taken first = TakeAll(job);
  EXPECT_THAT(first.indexes, ElementsAre(3, 4, 5));
  EXPECT_FALSE(job.Finished());
  job.AddRun(MakeRun(0, 3));
  EXPECT_THAT(TakeAll(job).indexes, ElementsAre(0, 1, 2));
  EXPECT_TRUE(job.Finished());
}

TEST(MapJobTest, ItemsAnsweredTwiceAreDroppedAndTheRestKept) {
  MapJob job("m3", "default", "square", "text", /*ordered=*/true, [] {});
  job.AddAccepted(10, /*end=*/true);
  job.AddRun(MakeRun(2, 3));           // 2, 3, 4
  MapRun overlapping = MakeRun(0, 6);  // 0..5: 2..4 again
  v1::MapItemError& e = overlapping.errors.emplace_back();
  e.set_index(1);
  e.set_state(v1::TASK_STATE_FAILED);
  v1::MapItemError& dup = overlapping.errors.emplace_back();
  dup.set_index(3);  // already answered: must not reappear
  dup.set_state(v1::TASK_STATE_FAILED);
  job.AddRun(std::move(overlapping));
  job.AddRun(MakeRun(8, 5));  // 10..12 were never accepted
  job.AddRun(MakeRun(6, 2));
  Taken t = TakeAll(job);
  EXPECT_THAT(t.indexes, ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9));
  EXPECT_THAT(t.errors, ElementsAre(1));
  EXPECT_TRUE(job.Finished());
}

TEST(MapJobTest, ResponsesStayUnderTheByteCapEvenForOneLargeRun) {
  MapJob job("m4", "default", "echo", "text", /*ordered=*/true, [] {});
  // 4,000 outputs of about 1 KiB: one run of about 4 MiB.
  job.AddAccepted(4000, /*end=*/true);
  job.AddRun(MakeRun(0, 4000, 1024));
  Taken t = TakeAll(job);
  ASSERT_EQ(t.indexes.size(), 4000u);
  for (uint64_t i = 0; i < 4000; ++i) ASSERT_EQ(t.indexes[i], i);
  EXPECT_GE(t.responses, 4);
  EXPECT_LE(t.largest, kMaxMapResponseBytes);
  EXPECT_TRUE(job.Finished());
}

TEST(MapJobTest, ErrorsTravelWithTheirPartOfASplitRun) {
  MapJob job("m5", "default", "echo", "text", /*ordered=*/false, [] {});
  job.AddAccepted(3000, /*end=*/true);
  MapRun run = MakeRun(0, 3000, 1024);
  std::vector<uint64_t> failed = {5, 1500, 2999};
  for (uint64_t i : failed) {
    v1::MapItemError& e = run.errors.emplace_back();
    e.set_index(i);
    e.set_state(v1::TASK_STATE_FAILED);
  }
  job.AddRun(std::move(run));
  int responses = 0;
  std::vector<uint64_t> seen_errors;
  while (std::optional<v1::MapResponse> r = job.TakeBatch()) {
    ++responses;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (const v1::MapResultRun& run : r->runs()) {
      const uint64_t n = *CountPackedItems(run.outputs(), ~size_t{0}, "outputs");
      lo = std::min(lo, run.first_index());
      hi = std::max(hi, run.first_index() + n);
    }
    for (const v1::MapItemError& e : r->errors()) {
      EXPECT_GE(e.index(), lo);
      EXPECT_LT(e.index(), hi) << "error " << e.index() << " left without its item";
      seen_errors.push_back(e.index());
    }
  }
  EXPECT_GE(responses, 3);
  EXPECT_THAT(seen_errors, ElementsAreArray(failed));
}

// A lost worker fails its chunk's items with long errors and empty outputs: the
// errors, not the outputs, then make the bulk of a response.
TEST(MapJobTest, ManyFailedItemsAreSplitByTheSizeOfTheirErrors) {
  MapJob job("m7", "default", "echo", "text", /*ordered=*/true, [] {});
  constexpr uint64_t kItems = 20000;
  job.AddAccepted(kItems, /*end=*/true);
  MapRun run;
  run.count = kItems;
  for (uint64_t i = 0; i < kItems; ++i) {
    AppendPackedItem("", &run.outputs);
    v1::MapItemError& e = run.errors.emplace_back();
    e.set_index(i);
    e.set_state(v1::TASK_STATE_WORKER_LOST);
    e.set_error(std::string(200, 'e'));
  }
  job.AddRun(std::move(run));
  Taken t = TakeAll(job);
  EXPECT_EQ(t.indexes.size(), kItems);
  EXPECT_EQ(t.errors.size(), kItems);
  EXPECT_GE(t.responses, 4);
  EXPECT_LE(t.largest, kMaxMapResponseBytes);
}

TEST(MapJobTest, CancelDropsWhatWasWaiting) {
  MapJob job("m6", "default", "square", "text", /*ordered=*/true, [] {});
  job.AddAccepted(6, /*end=*/true);
  job.AddRun(MakeRun(3, 3));
  job.Cancel();
  job.AddRun(MakeRun(0, 3));
  EXPECT_EQ(job.TakeBatch(), std::nullopt);
  EXPECT_TRUE(job.cancelled());
}

}  // namespace
}  // namespace forkpool
