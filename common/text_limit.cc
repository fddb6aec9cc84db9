// CapText: bounded, valid UTF-8 copies of texts.
#include "common/text_limit.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/utf8.h"

namespace forkpool {
namespace {

constexpr std::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD

}  // namespace

std::string CapText(std::string_view text, size_t max_bytes) {
  const std::string marker =
      absl::StrCat("\xe2\x80\xa6 [truncated: ", text.size(), " bytes in all]");
  // Room for the kept text when a marker has to follow it.
  const size_t budget = max_bytes >= marker.size() ? max_bytes - marker.size() : 0;
  std::string out;
  out.reserve(std::min(text.size(), max_bytes));
  size_t keep = 0;  // out's length at its last character boundary within `budget`
  while (!text.empty()) {
    const size_t n = Utf8SequenceLength(absl::string_view(text.data(), text.size()));
    const std::string_view piece = n == 0 ? kReplacement : text.substr(0, n);
    if (out.size() + piece.size() > max_bytes) break;
    out.append(piece.data(), piece.size());
    if (out.size() <= budget) keep = out.size();
    text.remove_prefix(n == 0 ? 1 : n);
  }
  if (text.empty()) return out;  // all of it fits
  if (marker.size() > max_bytes) return out;
  out.resize(keep);
  out.append(marker);
  return out;
}

}  // namespace forkpool
