// Caps on the texts forkpoold sends back: error texts in reply bodies and status
// messages, which may echo what a client or a task sent.
#ifndef FORKPOOL_COMMON_TEXT_LIMIT_H_
#define FORKPOOL_COMMON_TEXT_LIMIT_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace forkpool {

// Default cap (--max_error_bytes) on an error text that travels in a reply's body:
// TaskResult.error, MapItemError.error, PoolInfo.last_error.
inline constexpr size_t kDefaultMaxErrorBytes = size_t{16} << 10;

// Cap on a status message. It travels in the grpc-message trailer, percent-encoded
// (every byte outside printable ASCII, and '%', takes 3), and clients accept about
// 8 KiB of trailers by default (gRPC C++, Java, grpcio): 2 KiB is at most 6 KiB
// there. A longer message would cost the client the real status (it sees
// RESOURCE_EXHAUSTED or INTERNAL from its own transport instead).
inline constexpr size_t kMaxStatusMessageBytes = size_t{2} << 10;

// `text` as valid UTF-8 of at most `max_bytes` bytes: every byte that is not part of
// a valid UTF-8 sequence becomes U+FFFD (as ValidUtf8 does); a text that is still
// longer is cut at a character boundary and ends with the marker
// "… [truncated: N bytes in all]", N being text.size(), within `max_bytes`. When
// `max_bytes` is too small for the marker, the text is only cut.
std::string CapText(std::string_view text, size_t max_bytes);

}  // namespace forkpool

#endif  // FORKPOOL_COMMON_TEXT_LIMIT_H_
