// StableHash: a 64-bit hash that is the same in every process, run and daemon
// (unlike absl::Hash, which is seeded per process), for keys a shared task
// store must agree on. FNV-1a over length-prefixed parts, so ("ab", "c") and
// ("a", "bc") differ. Not for adversarial inputs where a collision would
// cross an owner: callers compare the full key as well.
#ifndef FORKPOOL_COMMON_STABLE_HASH_H_
#define FORKPOOL_COMMON_STABLE_HASH_H_

#include <cstdint>
#include <initializer_list>
#include <string_view>

namespace forkpool {

class StableHash {
 public:
  // Adds one part.
  StableHash& Add(std::string_view part) {
    const uint64_t n = part.size();
    for (int i = 0; i < 8; ++i) Byte(static_cast<unsigned char>(n >> (8 * i)));
    for (unsigned char c : part) Byte(c);
    return *this;
  }
  uint64_t value() const { return h_; }

  // The hash of `parts`, in order.
  static uint64_t Of(std::initializer_list<std::string_view> parts) {
    StableHash h;
    for (std::string_view p : parts) h.Add(p);
    return h.value();
  }

 private:
  void Byte(unsigned char c) {
    h_ ^= c;
    h_ *= 0x100000001b3ull;
  }
  uint64_t h_ = 0xcbf29ce484222325ull;
};

}  // namespace forkpool

#endif  // FORKPOOL_COMMON_STABLE_HASH_H_
