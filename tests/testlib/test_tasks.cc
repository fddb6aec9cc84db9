// Task functions that exist only for tests; the default pool does not load them.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "forkpool/task.h"

// Initializer: appends "<pid>\n" to the file named by its input (O_APPEND: one
// write, so lines from several workers never mix).
FORKPOOL_TASK(append_pid, ctx, input) {
  const std::string path(input);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open(", path, ")"));
  const std::string line = absl::StrCat(::getpid(), "\n");
  const ssize_t n = ::write(fd, line.data(), line.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(line.size())) return absl::InternalError("short write");
  return std::string("ok");
}

// Initializer that always fails.
FORKPOOL_TASK(init_fail, ctx, input) {
  return absl::FailedPreconditionError("init_fail: this initializer always fails");
}

// Returns the path of the program the worker runs (/proc/self/exe).
FORKPOOL_TASK(exe, ctx, input) {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf));
  if (n <= 0) return absl::ErrnoToStatus(errno, "readlink(/proc/self/exe)");
  return std::string(buf, static_cast<size_t>(n));
}

// Waits up to the given seconds for the soft time limit; "soft limit after Ns" if it
// came, "no soft limit" otherwise.
FORKPOOL_TASK(soft_wait, ctx, input) {
  double max_seconds = 0;
  if (!absl::SimpleAtod(absl::string_view(input.data(), input.size()), &max_seconds)) {
    return absl::InvalidArgumentError("soft_wait: input must be a number of seconds");
  }
  const absl::Time start = absl::Now();
  while (absl::Now() - start < absl::Seconds(max_seconds)) {
    if (ctx.soft_limit_reached()) {
      return absl::StrCat("soft limit after ", absl::FormatDuration(absl::Now() - start));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  return std::string("no soft limit");
}

// Kills its own worker on the first attempt; succeeds on later ones.
FORKPOOL_TASK(crash_first, ctx, input) {
  if (ctx.attempt() == 1) ::kill(::getpid(), SIGKILL);
  return absl::StrCat("ok on attempt ", ctx.attempt());
}

// Fails with an error text that is not valid UTF-8 (raw bytes 0xff 0xfe).
FORKPOOL_TASK(fail_bytes, ctx, input) {
  return absl::UnknownError(std::string("bad bytes: \xff\xfe end"));
}

// Writes garbage into the worker's own socket to forkpoold (fd 3), breaking the worker
// protocol: forkpoold must kill the worker and fail the task with "protocol error".
FORKPOOL_TASK(garbage, ctx, input) {
  const char junk[] = "\x10\x00\x00\x00this is not a protobuf frame";
  [[maybe_unused]] ssize_t n = ::write(3, junk, sizeof(junk) - 1);
  ::sleep(5);  // forkpoold kills us long before this ends
  return std::string("not reached");
}

// Starts "/bin/sleep 300" that escapes its worker: a child calls setsid() (a new
// session and process group) and forks the sleep, then exits, so the sleep is
// orphaned and reparented away from the worker. Returns the sleep's pid.
FORKPOOL_TASK(escape, ctx, input) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2(escape)");
  char sleep_path[] = "/bin/sleep";
  char sleep_arg[] = "300";
  char* const argv[] = {sleep_path, sleep_arg, nullptr};
  const pid_t middle = ::fork();
  if (middle < 0) {
    const int e = errno;
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    return absl::ErrnoToStatus(e, "fork(escape)");
  }
  if (middle == 0) {
    ::setsid();
    const pid_t sleeper = ::fork();
    if (sleeper == 0) {
      const int null = ::open("/dev/null", O_RDWR);
      if (null >= 0) {
        ::dup2(null, 0);
        ::dup2(null, 1);
      }
      ::close_range(3, ~0U, 0);
      ::execv(sleep_path, argv);
      ::_exit(127);
    }
    const int32_t pid = sleeper;  // -1 when the fork failed
    [[maybe_unused]] ssize_t n = ::write(pipe_fds[1], &pid, sizeof(pid));
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  int32_t pid = -1;
  ssize_t n;
  do {
    n = ::read(pipe_fds[0], &pid, sizeof(pid));
  } while (n < 0 && errno == EINTR);
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(middle, &status, 0) < 0 && errno == EINTR) {
  }
  if (n != static_cast<ssize_t>(sizeof(pid)) || pid <= 0) {
    return absl::InternalError("escape: the sleep could not be started");
  }
  return absl::StrCat(pid);
}

// Initializer that never returns.
FORKPOOL_TASK(hang_init, ctx, input) {
  while (true) ::pause();
}

// Initializer that dies by SIGSEGV.
FORKPOOL_TASK(segv_init, ctx, input) {
  ::signal(SIGSEGV, SIG_DFL);
  ::raise(SIGSEGV);
  return std::string("not reached");
}

// Writes its input's number of MiB to stderr (lines of 1 KiB), for the log bounds.
FORKPOOL_TASK(spew, ctx, input) {
  int mib = 0;
  if (!absl::SimpleAtoi(absl::string_view(input.data(), input.size()), &mib) || mib < 0) {
    return absl::InvalidArgumentError("spew MIB");
  }
  std::string line(1023, 'x');
  line.push_back('\n');
  for (int i = 0; i < mib * 1024; ++i) {
    if (::write(2, line.data(), line.size()) < 0) return absl::ErrnoToStatus(errno, "write");
  }
  return absl::StrCat(mib);
}

// Forks a child that leaves the worker's process group (setsid) and stays, without
// exec, so it keeps the worker's name; returns its pid.
FORKPOOL_TASK(fork_stay, ctx, input) {
  const pid_t child = ::fork();
  if (child < 0) return absl::ErrnoToStatus(errno, "fork(fork_stay)");
  if (child == 0) {
    ::setsid();
    ::close_range(3, ~0U, 0);
    for (;;) ::pause();
  }
  return absl::StrCat(child);
}
