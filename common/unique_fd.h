// UniqueFd: sole owner of a file descriptor; RetryOnEintr for blocking syscalls.
#ifndef FORKPOOL_COMMON_UNIQUE_FD_H_
#define FORKPOOL_COMMON_UNIQUE_FD_H_

#include <cerrno>
#include <utility>

namespace forkpool {

// Owns one fd and closes it on destruction. Move-only; thread-compatible.
class UniqueFd {
 public:
  UniqueFd() = default;
  // Takes ownership of `fd` (-1 for none).
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  // The fd, still owned; -1 if none.
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership and returns the fd.
  int release() { return std::exchange(fd_, -1); }
  // Closes the owned fd (never retried on EINTR) and takes `fd`.
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Calls `f` again while it fails with EINTR; returns its last result.
template <typename F>
auto RetryOnEintr(F f) -> decltype(f()) {
  decltype(f()) r;
  do {
    r = f();
  } while (r == -1 && errno == EINTR);
  return r;
}

}  // namespace forkpool

#endif  // FORKPOOL_COMMON_UNIQUE_FD_H_
