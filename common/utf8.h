// UTF-8 validation for text that crosses into protobuf `string` fields.
#ifndef FORKPOOL_COMMON_UTF8_H_
#define FORKPOOL_COMMON_UTF8_H_

#include <string>

#include "absl/strings/string_view.h"

namespace forkpool {

// `text` with every byte that is not part of a valid UTF-8 sequence replaced by
// U+FFFD, so that it may go into a protobuf `string` field (proto3 refuses to parse
// invalid UTF-8 there).
std::string ValidUtf8(absl::string_view text);

// Length (1 to 4) of the valid UTF-8 sequence `text` starts with; 0 when `text` is
// empty or starts with a byte that begins no valid sequence (a stray continuation
// byte, an overlong form, a surrogate, past U+10FFFF, or a sequence cut short).
size_t Utf8SequenceLength(absl::string_view text);

}  // namespace forkpool

#endif  // FORKPOOL_COMMON_UTF8_H_
