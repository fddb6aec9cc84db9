// UniqueFd implementation.
#include "common/unique_fd.h"

#include <unistd.h>

namespace forkpool {

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);  // close() is never retried: the fd is gone either way.
  fd_ = fd;
}

}  // namespace forkpool
