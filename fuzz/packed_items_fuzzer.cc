// Fuzzes the packed-items scanner (common/packed_items.h) against protobuf's own parser
// of the PackedItems message it claims to read: whatever forkpool accepts, protobuf
// must parse to the same items, and PackedItems' index must cut the same items. Then
// re-packing the items (AppendPackedItem, PackedWriter) must give protobuf's bytes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/packed_items.h"
#include "forkpool/v1/forkpool.pb.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  forkpool::PackedItemReader reader(bytes);
  std::vector<std::string_view> items;
  std::string_view item;
  while (reader.Next(&item)) {
    FUZZ_CHECK(item.data() >= bytes.data() && item.data() + item.size() <= bytes.data() + size,
               "item view outside the buffer");
    items.push_back(item);
  }
  absl::StatusOr<size_t> count = forkpool::CountPackedItems(bytes, ~size_t{0}, "fuzz");
  FUZZ_CHECK(count.ok() == reader.status().ok(), "CountPackedItems and the reader disagree");
  if (!count.ok()) return 0;
  FUZZ_CHECK(*count == items.size(), "count differs from the items read");
  FUZZ_CHECK(reader.offset() == size, "accepted without consuming every byte");

  forkpool::v1::PackedItems proto;
  FUZZ_CHECK(proto.ParseFromArray(data, static_cast<int>(size)),
             "forkpool accepted bytes protobuf does not parse");
  FUZZ_CHECK(static_cast<size_t>(proto.items_size()) == items.size(), "protobuf item count differs");
  std::string repacked;
  forkpool::PackedWriter writer;
  for (size_t i = 0; i < items.size(); ++i) {
    FUZZ_CHECK(proto.items(static_cast<int>(i)) == items[i], "protobuf item differs");
    forkpool::AppendPackedItem(items[i], &repacked);
    writer.Add(items[i]);
  }
  FUZZ_CHECK(writer.Take() == repacked, "PackedWriter and AppendPackedItem differ");
  // Varints may be over-long in the input; re-packed bytes use the shortest form, which
  // protobuf writes too.
  FUZZ_CHECK(repacked == proto.SerializeAsString(), "re-packed bytes differ from protobuf's");

  absl::StatusOr<std::shared_ptr<const forkpool::PackedItems>> indexed =
      forkpool::PackedItems::View(bytes, ~size_t{0}, "fuzz");
  FUZZ_CHECK(indexed.ok(), "PackedItems refused what the reader accepted");
  FUZZ_CHECK((*indexed)->size() == items.size(), "PackedItems size differs");
  for (size_t i = 0; i < items.size(); ++i) {
    // The range holds the item as it was encoded, which may be over-long: compare items.
    forkpool::PackedItemReader range((*indexed)->Range(i, i + 1));
    std::string_view back;
    FUZZ_CHECK(range.Next(&back) && back == items[i], "Range(i, i+1) is not item i");
    FUZZ_CHECK(!range.Next(&back), "Range(i, i+1) holds more than one item");
  }
  if (!items.empty()) {
    const size_t cap = size / 2;
    const size_t end = (*indexed)->EndWithin(0, cap);
    FUZZ_CHECK(end >= 1 && end <= items.size(), "EndWithin out of range");
    FUZZ_CHECK(end == 1 || (*indexed)->Range(0, end).size() <= cap, "EndWithin passed the cap");
    FUZZ_CHECK(end == items.size() || (*indexed)->Range(0, end + 1).size() > cap,
               "EndWithin stopped early");
  }
  return 0;
}
