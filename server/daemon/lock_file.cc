// LockFile implementation.
#include "server/daemon/lock_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace forkpool {

absl::StatusOr<LockFile> LockFile::Acquire(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd.valid()) {
    return absl::ErrnoToStatus(errno, absl::StrCat("open(lock file ", path, ")"));
  }
  if (RetryOnEintr([&] { return ::flock(fd.get(), LOCK_EX | LOCK_NB); }) != 0) {
    if (errno != EWOULDBLOCK) {
      return absl::ErrnoToStatus(errno, absl::StrCat("flock(", path, ")"));
    }
    char buf[32] = {0};
    const ssize_t n = ::pread(fd.get(), buf, sizeof(buf) - 1, 0);
    const std::string holder =
        n > 0 ? std::string(absl::StripAsciiWhitespace(std::string(buf, n))) : "unknown";
    return absl::FailedPreconditionError(
        absl::StrCat("another forkpoold (pid ", holder, ") holds the lock ", path,
                     "; it serves this socket"));
  }
  const std::string pid = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(fd.get(), 0) != 0 ||
      ::pwrite(fd.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return absl::ErrnoToStatus(errno, absl::StrCat("write(lock file ", path, ")"));
  }
  return LockFile(std::move(fd), path);
}

}  // namespace forkpool
