// LineReader and OutputBuffer implementation.
#include "client/cli/line_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/unique_fd.h"

namespace forkpool::cli {

std::optional<std::string> LineReader::Next() {
  while (true) {
    const char* start = buf_.data() + pos_;
    if (const void* nl = std::memchr(start, '\n', len_ - pos_)) {
      const char* end = static_cast<const char*>(nl);
      std::string line(start, end);
      pos_ += line.size() + 1;
      return line;
    }
    if (eof_) {
      if (pos_ == len_) return std::nullopt;
      std::string line(start, len_ - pos_);
      pos_ = len_;
      return line;
    }
    // Keep the partial line at the front; grow only for a line longer than the buffer.
    std::memmove(buf_.data(), start, len_ - pos_);
    len_ -= pos_;
    pos_ = 0;
    if (len_ == buf_.size()) buf_.resize(buf_.size() * 2);
    const ssize_t n = RetryOnEintr([&] { return ::read(fd_, buf_.data() + len_, buf_.size() - len_); });
    if (n < 0) {
      status_ = absl::ErrnoToStatus(errno, "read(map input)");
      eof_ = true;
    } else if (n == 0) {
      eof_ = true;
    } else {
      len_ += static_cast<size_t>(n);
    }
  }
}

void OutputBuffer::AddLine(std::string_view text) {
  buf_.append(text.data(), text.size());
  if (text.empty() || text.back() != '\n') buf_.push_back('\n');
}

absl::Status OutputBuffer::Flush() {
  std::string_view rest = buf_;
  while (!rest.empty()) {
    const ssize_t n = RetryOnEintr([&] { return ::write(fd_, rest.data(), rest.size()); });
    if (n < 0) {
      const int err = errno;
      buf_.clear();
      return absl::ErrnoToStatus(err, "write(map output)");
    }
    rest.remove_prefix(static_cast<size_t>(n));
  }
  buf_.clear();
  return absl::OkStatus();
}

}  // namespace forkpool::cli
