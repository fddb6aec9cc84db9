// Tests for common/packed_items.h: the packed form is PackedItems' wire form, bad bytes
// are refused naming where, and PackedItems cuts ranges and byte-capped slices.
#include "common/packed_items.h"

#include <string>
#include <string_view>
#include <vector>

#include "forkpool/v1/forkpool.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/status_matchers.h"

namespace forkpool {
namespace {

using ::forkpool::testing::IsOk;
using ::forkpool::testing::IsOkAndHolds;
using ::forkpool::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Pack(const std::vector<std::string>& items) {
  std::string packed;
  for (const std::string& item : items) AppendPackedItem(item, &packed);
  return packed;
}

std::vector<std::string> Read(std::string_view packed) {
  PackedItemReader reader(packed);
  std::vector<std::string> items;
  std::string_view item;
  while (reader.Next(&item)) items.emplace_back(item);
  EXPECT_THAT(reader.status(), IsOk());
  return items;
}

TEST(PackedItemsTest, IsTheWireFormOfThePackedItemsMessage) {
  const std::vector<std::string> items = {"", "a", std::string(300, 'x'),
                                          std::string("\0\xff", 2)};
  v1::PackedItems proto;
  for (const std::string& item : items) proto.add_items(item);
  EXPECT_EQ(Pack(items), proto.SerializeAsString());
  v1::PackedItems parsed;
  ASSERT_TRUE(parsed.ParseFromString(Pack(items)));
  EXPECT_THAT(parsed.items(), ElementsAre("", "a", std::string(300, 'x'), std::string("\0\xff", 2)));
  EXPECT_THAT(Read(proto.SerializeAsString()), ElementsAre("", "a", std::string(300, 'x'),
                                                           std::string("\0\xff", 2)));
  EXPECT_EQ(PackedItemBytes(300), Pack({std::string(300, 'x')}).size());
  EXPECT_EQ(PackedItemBytes(0), 2u);
}

TEST(PackedItemsTest, MalformedBytesAreRefusedNamingWhere) {
  const std::string good = Pack({"abc", "de"});
  // A truncated last item.
  EXPECT_THAT(CountPackedItems(good.substr(0, good.size() - 1), 100, "map inputs"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("map inputs"), HasSubstr("at byte 5"),
                             HasSubstr("runs past the end"))));
  // Another field than 1.
  EXPECT_THAT(CountPackedItems(std::string("\x12\x01x", 3), 100, "map inputs"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tag 18")));
  // A length cut off, and one longer than protobuf allows.
  EXPECT_THAT(CountPackedItems(std::string("\x0a\x80", 2), 100, "x"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("over-long length")));
  EXPECT_THAT(CountPackedItems(std::string("\x0a\xff\xff\xff\xff\x0f", 6), 100, "x"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 GiB")));
  // An item over the limit names its index.
  EXPECT_THAT(CountPackedItems(Pack({"a", "bbbb"}), 3, "map inputs"),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("item 1 has 4 bytes"), HasSubstr("limit of 3"))));
  EXPECT_THAT(CountPackedItems(good, 3, "x"), IsOkAndHolds(2u));
  EXPECT_THAT(CountPackedItems("", 3, "x"), IsOkAndHolds(0u));
}

TEST(PackedItemsTest, RangesAreThemselvesPackedItems) {
  const std::vector<std::string> items = {"zero", "", "two", std::string(200, 'y'), "four"};
  absl::StatusOr<std::shared_ptr<const PackedItems>> packed =
      PackedItems::Own(Pack(items), 1000, "inputs");
  ASSERT_THAT(packed, IsOk());
  ASSERT_EQ((*packed)->size(), 5u);
  EXPECT_THAT(Read((*packed)->Range(1, 4)), ElementsAre("", "two", std::string(200, 'y')));
  EXPECT_THAT(Read((*packed)->Range(4, 5)), ElementsAre("four"));
  EXPECT_EQ((*packed)->Range(2, 2), "");
  EXPECT_EQ((*packed)->Range(0, 5), Pack(items));

  std::string view_bytes = Pack(items);
  absl::StatusOr<std::shared_ptr<const PackedItems>> view =
      PackedItems::View(view_bytes, 1000, "inputs");
  ASSERT_THAT(view, IsOk());
  EXPECT_EQ((*view)->Range(0, 5).data(), view_bytes.data()) << "a view must not copy";

  EXPECT_THAT(PackedItems::Own(Pack({"abc"}), 2, "MapStream inputs"),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("MapStream inputs")));
}

TEST(PackedItemsTest, WriterAndPackGiveTheSameBytesAsAppendForEverySize) {
  // Sizes around the writer's small-copy cases (0-3, 4-7, 8-16, more) and the varint
  // length's one/two-byte boundary.
  std::vector<std::string> items;
  for (size_t n : {0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 127, 128, 300, 70000}) {
    std::string item(n, '\0');
    for (size_t i = 0; i < n; ++i) item[i] = static_cast<char>('a' + (i * 7 + n) % 26);
    items.push_back(item);
  }
  PackedWriter writer;
  for (const std::string& item : items) writer.Add(item);
  const std::string written = writer.Take();
  EXPECT_EQ(written, Pack(items));
  EXPECT_TRUE(writer.empty());
  absl::StatusOr<std::shared_ptr<const PackedItems>> packed = PackedItems::Pack(items);
  ASSERT_THAT(packed, IsOk());
  EXPECT_EQ((*packed)->Range(0, items.size()), Pack(items));
  EXPECT_EQ(Read((*packed)->Range(0, items.size())), items);

  // Truncate drops a partly written item; Recycle keeps storage, not bytes.
  writer.Add("keep");
  const size_t mark = writer.size();
  writer.Add("drop me");
  writer.Truncate(mark);
  EXPECT_EQ(writer.Take(), Pack({"keep"}));
  writer.Recycle(std::string(100, 'z'));
  EXPECT_TRUE(writer.empty());
  writer.Add("x");
  EXPECT_EQ(writer.Take(), Pack({"x"}));
}

TEST(PackedItemsTest, EndWithinCutsAtTheByteCapButTakesAtLeastOneItem) {
  // Items of 10 bytes take 12 packed.
  absl::StatusOr<std::shared_ptr<const PackedItems>> packed =
      PackedItems::Own(Pack(std::vector<std::string>(10, std::string(10, 'a'))), 100, "x");
  ASSERT_THAT(packed, IsOk());
  EXPECT_EQ((*packed)->EndWithin(0, 36), 3u);
  EXPECT_EQ((*packed)->EndWithin(0, 35), 2u);
  EXPECT_EQ((*packed)->EndWithin(2, 24), 4u);
  EXPECT_EQ((*packed)->EndWithin(5, 1), 6u) << "an item over the cap goes alone";
  EXPECT_EQ((*packed)->EndWithin(7, 1000), 10u);
}

}  // namespace
}  // namespace forkpool
