// Line input and output for `forkpool map`: lines read from an fd in whatever blocks
// it offers (so a slow producer's lines go out at once), and output gathered into
// large writes. iostreams cost more per line than the map itself.
#ifndef FORKPOOL_CLIENT_CLI_LINE_IO_H_
#define FORKPOOL_CLIENT_CLI_LINE_IO_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace forkpool::cli {

// Splits what an fd delivers into lines (without their '\n'; a last line without one
// counts). Thread-compatible; does not own the fd.
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd), buf_(64 * 1024, '\0') {}

  // The next line; nullopt at the end of input. Blocks only when no complete line is
  // buffered. A read error ends the input and is kept in status().
  std::optional<std::string> Next();
  const absl::Status& status() const { return status_; }

 private:
  const int fd_;
  std::string buf_;  // [pos_, len_) not yet returned
  size_t pos_ = 0;
  size_t len_ = 0;
  bool eof_ = false;
  absl::Status status_;
};

// Gathers output for one fd and writes it in large blocks. Thread-compatible; does
// not own the fd.
class OutputBuffer {
 public:
  explicit OutputBuffer(int fd) : fd_(fd) {}

  // Appends `text`, then '\n' unless it already ends with one.
  void AddLine(std::string_view text);
  // Writes what is buffered (retrying short writes and EINTR).
  absl::Status Flush();

 private:
  const int fd_;
  std::string buf_;
};

}  // namespace forkpool::cli

#endif  // FORKPOOL_CLIENT_CLI_LINE_IO_H_
