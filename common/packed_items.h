// Packed items: many byte strings in one buffer, as the map's hot path carries them
// (client <-> daemon <-> worker). The form is the wire form of the proto message
// `forkpool.v1.PackedItems { repeated bytes items = 1; }`: per item the tag byte 0x0A,
// its length as a varint, then its bytes. Any protobuf library can read and write it;
// forkpool's C++ code scans it in place, with no object per item.
#ifndef FORKPOOL_COMMON_PACKED_ITEMS_H_
#define FORKPOOL_COMMON_PACKED_ITEMS_H_

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace forkpool {

// Bytes one item of `size` bytes takes when packed.
size_t PackedItemBytes(size_t size);

// Appends one item to a packed buffer.
inline void AppendPackedItem(std::string_view item, std::string* packed) {
  // Tag, then the length as a varint (at most 10 bytes).
  char head[11];
  size_t n = 0;
  head[n++] = 0x0A;
  uint64_t v = item.size();
  while (v >= 0x80) {
    head[n++] = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  head[n++] = static_cast<char>(v);
  packed->append(head, n).append(item.data(), item.size());
}

// Builds a packed buffer item by item with one copy per item: the buffer grows in
// large steps and each item is written in place (AppendPackedItem pays a size check
// and two appends per item). Thread-compatible.
class PackedWriter {
 public:
  // Appends one item.
  void Add(std::string_view item) {
    const size_t need = used_ + 11 + item.size();
    if (need > buf_.size()) Grow(need);
    char* p = buf_.data() + used_;
    *p++ = 0x0A;
    uint64_t v = item.size();
    while (v >= 0x80) {
      *p++ = static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    *p++ = static_cast<char>(v);
    CopyItem(p, item.data(), item.size());
    used_ = static_cast<size_t>(p - buf_.data()) + item.size();
  }
  // Bytes written so far.
  size_t size() const { return used_; }
  bool empty() const { return used_ == 0; }
  // Drops what was written after the first `size` bytes.
  void Truncate(size_t size) {
    if (size < used_) used_ = size;
  }
  // The packed bytes written so far; the writer is then empty.
  std::string Take() {
    buf_.resize(used_);
    used_ = 0;
    return std::move(buf_);
  }
  // Hands a string back for its storage to be reused; its bytes are dropped.
  void Recycle(std::string storage) {
    buf_ = std::move(storage);
    buf_.resize(buf_.capacity());
    used_ = 0;
  }

 private:
  void Grow(size_t need) { buf_.resize(std::max(need, 2 * buf_.size() + 4096)); }

  // memcpy, with small items (the usual map item) copied by two overlapping
  // fixed-size moves: a libc call per item cost a third of a worker's time.
  static void CopyItem(char* dst, const char* src, size_t n) {
    if (n >= 8 && n <= 16) {
      std::memcpy(dst, src, 8);
      std::memcpy(dst + n - 8, src + n - 8, 8);
    } else if (n >= 4 && n < 8) {
      std::memcpy(dst, src, 4);
      std::memcpy(dst + n - 4, src + n - 4, 4);
    } else if (n > 16) {
      std::memcpy(dst, src, n);
    } else {
      for (size_t i = 0; i < n; ++i) dst[i] = src[i];
    }
  }

  std::string buf_;  // [0, used_) written; the rest is room
  size_t used_ = 0;
};

// Reads items from a packed buffer in order, without copying. Thread-compatible.
class PackedItemReader {
 public:
  explicit PackedItemReader(std::string_view packed) : data_(packed) {}

  // The next item, or false at the end or at malformed bytes (then status() says
  // where). The view points into the buffer.
  bool Next(std::string_view* item) {
    // Inline for the common case, an item under 128 bytes: tag, one length byte.
    if (pos_ + 2 <= data_.size() && data_[pos_] == 0x0A &&
        static_cast<unsigned char>(data_[pos_ + 1]) < 0x80 && status_.ok()) {
      const size_t size = static_cast<unsigned char>(data_[pos_ + 1]);
      if (size <= data_.size() - pos_ - 2) {
        *item = data_.substr(pos_ + 2, size);
        pos_ += 2 + size;
        return true;
      }
    }
    return NextSlow(item);
  }
  // OK unless Next stopped at malformed bytes.
  const absl::Status& status() const { return status_; }
  // Bytes consumed so far.
  size_t offset() const { return pos_; }
  // True when every byte has been read (or reading stopped at malformed bytes).
  bool at_end() const { return pos_ >= data_.size() || !status_.ok(); }

 private:
  bool NextSlow(std::string_view* item);

  std::string_view data_;
  size_t pos_ = 0;
  absl::Status status_;
};

// Counts the items of a packed buffer. InvalidArgument naming the byte offset of
// the first malformed item; ResourceExhausted naming the index of the first item
// longer than `max_item_bytes`. `what` names the buffer in errors ("map inputs").
absl::StatusOr<size_t> CountPackedItems(std::string_view packed, size_t max_item_bytes,
                                        std::string_view what);

// A validated packed buffer with the offset of every item, so that ranges of items
// can be cut in O(1). Immutable, so thread-safe once built. Either owns its bytes or
// views bytes that the caller keeps alive for its lifetime.
class PackedItems {
 public:
  // Owns `packed`. Errors as CountPackedItems; also InvalidArgument past 4 GiB.
  static absl::StatusOr<std::shared_ptr<const PackedItems>> Own(std::string packed,
                                                                size_t max_item_bytes,
                                                                std::string_view what);
  // Packs `items` and indexes them in the same pass (no per-item limit).
  // InvalidArgument past 4 GiB.
  static absl::StatusOr<std::shared_ptr<const PackedItems>> Pack(
      const std::vector<std::string>& items);
  // Views `packed`, which must outlive the returned object.
  static absl::StatusOr<std::shared_ptr<const PackedItems>> View(std::string_view packed,
                                                                 size_t max_item_bytes,
                                                                 std::string_view what);
  PackedItems(const PackedItems&) = delete;
  PackedItems& operator=(const PackedItems&) = delete;

  size_t size() const { return offsets_.size() - 1; }
  // The packed bytes of items [begin, end), themselves a packed buffer.
  std::string_view Range(size_t begin, size_t end) const {
    return data_.substr(offsets_[begin], offsets_[end] - offsets_[begin]);
  }
  // Packed bytes of items [begin, end) (Range(begin, end).size(), from the offsets
  // alone: safe on a view whose bytes are gone).
  size_t RangeBytes(size_t begin, size_t end) const { return offsets_[end] - offsets_[begin]; }
  // Index of the first item at or after `from` whose Range(from, i + 1) would pass
  // `max_bytes`, but at least from + 1 (an item larger than the cap goes alone), at
  // most size() (which it is when `from` is size()).
  size_t EndWithin(size_t from, size_t max_bytes) const;

 private:
  PackedItems() = default;
  absl::Status Index(size_t max_item_bytes, std::string_view what);

  std::string owned_;
  std::string_view data_;
  std::vector<uint32_t> offsets_;  // size() + 1 entries; the last is data_.size()
};

}  // namespace forkpool

#endif  // FORKPOOL_COMMON_PACKED_ITEMS_H_
