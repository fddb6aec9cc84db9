// Small helpers shared by the unit tests: socketpairs and pipes as UniqueFds.
#ifndef FORKPOOL_TESTS_UNIT_TEST_UTIL_H_
#define FORKPOOL_TESTS_UNIT_TEST_UTIL_H_

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "common/unique_fd.h"
#include "gtest/gtest.h"

namespace forkpool::testing {

// A connected socketpair of `type` (SOCK_STREAM, SOCK_SEQPACKET); fails the test on
// error.
inline std::pair<UniqueFd, UniqueFd> MakeSocketPair(int type) {
  int fds[2] = {-1, -1};
  const int rc = ::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds);
  EXPECT_EQ(rc, 0) << "socketpair: " << std::strerror(errno);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// A pipe: {read end, write end}, with `flags` (O_CLOEXEC is always added).
inline std::pair<UniqueFd, UniqueFd> MakePipe(int flags = 0) {
  int fds[2] = {-1, -1};
  const int rc = ::pipe2(fds, flags | O_CLOEXEC);
  EXPECT_EQ(rc, 0) << "pipe2: " << std::strerror(errno);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// Sets O_NONBLOCK on `fd`.
inline void SetNonBlocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  ASSERT_GE(flags, 0) << std::strerror(errno);
  ASSERT_EQ(::fcntl(fd, F_SETFL, flags | O_NONBLOCK), 0) << std::strerror(errno);
}

}  // namespace forkpool::testing

#endif  // FORKPOOL_TESTS_UNIT_TEST_UTIL_H_
