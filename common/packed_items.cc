// Packed items implementation.
#include "common/packed_items.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace forkpool {
namespace {

// Field 1, wire type 2 (length-delimited).
constexpr char kItemTag = 0x0A;

// Debian's Abseil has its own string_view, which StrCat takes.
absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

size_t PackedItemBytes(size_t size) {
  size_t varint = 1;
  for (size_t v = size; v >= 0x80; v >>= 7) ++varint;
  return 1 + varint + size;
}

bool PackedItemReader::NextSlow(std::string_view* item) {
  if (pos_ >= data_.size() || !status_.ok()) return false;
  const size_t start = pos_;
  if (data_[pos_] != kItemTag) {
    status_ = absl::InvalidArgumentError(
        absl::StrCat("malformed packed items at byte ", start, ": tag ",
                     static_cast<int>(static_cast<unsigned char>(data_[pos_])),
                     " where 10 (field 1, bytes) was expected"));
    return false;
  }
  ++pos_;
  // As protobuf reads a length: at most 5 bytes, below 2 GiB.
  uint64_t size = 0;
  for (int i = 0;; ++i) {
    if (pos_ >= data_.size() || i == 5) {
      status_ = absl::InvalidArgumentError(absl::StrCat(
          "malformed packed items at byte ", start, ": truncated or over-long length"));
      return false;
    }
    const auto b = static_cast<unsigned char>(data_[pos_++]);
    if (i == 4 && b >= 8) {
      status_ = absl::InvalidArgumentError(
          absl::StrCat("malformed packed items at byte ", start, ": length of 2 GiB or more"));
      return false;
    }
    size |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) break;
  }
  if (size > data_.size() - pos_) {
    status_ = absl::InvalidArgumentError(
        absl::StrCat("malformed packed items at byte ", start, ": an item of ", size,
                     " bytes runs past the end (", data_.size() - pos_, " bytes left)"));
    return false;
  }
  *item = data_.substr(pos_, size);
  pos_ += size;
  return true;
}

namespace {

// Validates `packed` as CountPackedItems does, calling `on_item(begin_offset)` for
// each item.
template <typename F>
absl::StatusOr<size_t> ScanPacked(std::string_view packed, size_t max_item_bytes,
                                  std::string_view what, F on_item) {
  PackedItemReader reader(packed);
  size_t n = 0;
  std::string_view item;
  while (true) {
    const size_t begin = reader.offset();
    if (!reader.Next(&item)) break;
    if (item.size() > max_item_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat(Absl(what), ": item ", n, " has ", item.size(),
                       " bytes, more than the limit of ", max_item_bytes, " bytes"));
    }
    on_item(begin);
    ++n;
  }
  if (!reader.status().ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Absl(what), ": ", reader.status().message()));
  }
  return n;
}

}  // namespace

absl::StatusOr<size_t> CountPackedItems(std::string_view packed, size_t max_item_bytes,
                                        std::string_view what) {
  return ScanPacked(packed, max_item_bytes, what, [](size_t) {});
}

absl::StatusOr<std::shared_ptr<const PackedItems>> PackedItems::Own(std::string packed,
                                                                    size_t max_item_bytes,
                                                                    std::string_view what) {
  std::shared_ptr<PackedItems> items(new PackedItems());
  items->owned_ = std::move(packed);
  items->data_ = items->owned_;
  if (absl::Status s = items->Index(max_item_bytes, what); !s.ok()) return s;
  return items;
}

absl::StatusOr<std::shared_ptr<const PackedItems>> PackedItems::View(std::string_view packed,
                                                                     size_t max_item_bytes,
                                                                     std::string_view what) {
  std::shared_ptr<PackedItems> items(new PackedItems());
  items->data_ = packed;
  if (absl::Status s = items->Index(max_item_bytes, what); !s.ok()) return s;
  return items;
}

absl::Status PackedItems::Index(size_t max_item_bytes, std::string_view what) {
  if (data_.size() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Absl(what), ": ", data_.size(), " bytes of packed items; at most 4 GiB"));
  }
  absl::StatusOr<size_t> n = ScanPacked(data_, max_item_bytes, what, [this](size_t begin) {
    offsets_.push_back(static_cast<uint32_t>(begin));
  });
  if (!n.ok()) return n.status();
  offsets_.push_back(static_cast<uint32_t>(data_.size()));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const PackedItems>> PackedItems::Pack(
    const std::vector<std::string>& items) {
  size_t bytes = 0;
  for (const std::string& item : items) bytes += PackedItemBytes(item.size());
  if (bytes > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat(bytes, " bytes of packed items; at most 4 GiB"));
  }
  std::shared_ptr<PackedItems> packed(new PackedItems());
  PackedWriter writer;
  // PackedWriter::Add wants room for the longest header; this keeps it from growing.
  writer.Recycle(std::string(bytes + 11, '\0'));
  packed->offsets_.reserve(items.size() + 1);
  for (const std::string& item : items) {
    packed->offsets_.push_back(static_cast<uint32_t>(writer.size()));
    writer.Add(item);
  }
  packed->offsets_.push_back(static_cast<uint32_t>(writer.size()));
  packed->owned_ = writer.Take();
  packed->data_ = packed->owned_;
  return packed;
}

size_t PackedItems::EndWithin(size_t from, size_t max_bytes) const {
  if (from >= size()) return size();
  const uint64_t limit = static_cast<uint64_t>(offsets_[from]) + max_bytes;
  // The first offset past the limit ends the range before it.
  auto it = std::upper_bound(offsets_.begin() + static_cast<std::ptrdiff_t>(from) + 1,
                             offsets_.end(), limit);
  const size_t end = static_cast<size_t>(it - offsets_.begin()) - 1;
  return std::clamp(end, from + 1, size());
}

}  // namespace forkpool
