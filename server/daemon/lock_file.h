// LockFile: the flock that makes one forkpoold per socket path.
#ifndef FORKPOOL_SERVER_DAEMON_LOCK_FILE_H_
#define FORKPOOL_SERVER_DAEMON_LOCK_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace forkpool {

// Holds an exclusive flock on a file for its lifetime. Thread-compatible.
class LockFile {
 public:
  // Takes the lock without blocking and writes our pid into the file.
  // FailedPrecondition naming the file (and the holder's pid) if it is held.
  static absl::StatusOr<LockFile> Acquire(const std::string& path);
  // The lock fd (close it in children: a flock follows the open file description).
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }

 private:
  LockFile(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_LOCK_FILE_H_
