// Codec<T>: how a C++ value becomes a task's input payload and back, so that typed call
// sites stay short: pool.Map<int64_t>("square", std::vector<int64_t>{1, 2, 3}).
// Also the encoding of starmap's argument tuples (docs/api.md).
#ifndef FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_CODEC_H_
#define FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_CODEC_H_

#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace forkpool {

// Codec<T> has:
//   static constexpr const char* kName;                  // the payload's codec name
//   static std::string Encode(const T& value);
//   static absl::StatusOr<T> Decode(const std::string& data);  // kInvalidArgument on junk
// Specialise it for your own types. Provided: std::string (as is) and integers (decimal
// text, as the example task library reads and writes them).
template <typename T, typename Enable = void>
struct Codec;

template <>
struct Codec<std::string> {
  static constexpr const char* kName = "text";
  static std::string Encode(const std::string& value) { return value; }
  static absl::StatusOr<std::string> Decode(const std::string& data) { return data; }
};

template <typename T>
struct Codec<T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>> {
  static constexpr const char* kName = "text";
  static std::string Encode(const T& value) { return absl::StrCat(value); }
  static absl::StatusOr<T> Decode(const std::string& data) {
    T value{};
    if (!absl::SimpleAtoi(absl::string_view(data), &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot decode '", data.substr(0, 64), "' as an integer"));
    }
    return value;
  }
};

// One argument tuple of a starmap: its fields, each already encoded as text (for
// "text") or as a JSON value (for "json").
using ArgTuple = std::vector<std::string>;

// Encodes `args` as one payload of codec `codec` (docs/api.md): "text" or "" — the
// fields joined by a tab (kInvalidArgument when a field holds a tab or a newline);
// "json" — a JSON array whose elements are the fields as written (so each field must
// be a JSON value: `7`, `"a b"`; see JsonQuote). Other codecs: kInvalidArgument.
absl::StatusOr<std::string> EncodeArgTuple(const std::string& codec, const ArgTuple& args);

// `s` as a JSON string literal, quotes and escapes included.
std::string JsonQuote(absl::string_view s);

}  // namespace forkpool

#endif  // FORKPOOL_CLIENT_CPP_INCLUDE_FORKPOOL_CODEC_H_
