// Integration tests of forkpoold's connection handling, through the real daemon: the
// HTTP/2 handshake timeout, the idle timeout, the per-uid cap with its admin reserve,
// and the accept back-off when the daemon runs out of fds. What the daemon holds is
// read from /proc (its fds, and /proc/net/unix for which of them are client
// connections), never from its own bookkeeping.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "daemon_fixture.h"
#include "forkpool/client.h"
#include "forkpool/queue.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "status_matchers.h"

namespace forkpool::testing {
namespace {

using ::testing::HasSubstr;

// The preface and an empty SETTINGS frame: what a gRPC client sends first.
constexpr char kClientStart[] =
    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    "\x00\x00\x00\x04\x00\x00\x00\x00\x00";
constexpr size_t kClientStartBytes = sizeof(kClientStart) - 1;
static_assert(kClientStartBytes == 33);

// A client-side socket of the test. Move-only.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Socket& operator=(Socket&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

sockaddr_un AddressOf(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), std::min(path.size() + 1, sizeof(addr.sun_path)));
  return addr;
}

// A plain AF_UNIX connection to `path` that sends nothing (invalid on failure).
Socket ConnectRaw(const std::string& path) {
  Socket s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return s;
  const sockaddr_un addr = AddressOf(path);
  if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Socket();
  }
  return s;
}

bool SendStart(const Socket& s) {
  return ::send(s.get(), kClientStart, kClientStartBytes, MSG_NOSIGNAL) ==
         static_cast<ssize_t>(kClientStartBytes);
}

// What the daemon did with a connection, as its client sees it.
enum class Seen { kNothing, kData, kClosed };

// Waits up to `timeout` for the first byte (or the end) on `s` and reads nothing.
Seen AwaitFirst(const Socket& s, absl::Duration timeout) {
  pollfd p{s.get(), POLLIN, 0};
  const int r = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  if (r <= 0) return Seen::kNothing;
  char c;
  const ssize_t n = ::recv(s.get(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n > 0 ? Seen::kData : Seen::kClosed;
}

// True when the daemon has closed `s` (all that it sent has been read and the end
// follows), within `timeout`. Collects the HTTP/2 frame types the daemon sent.
bool AwaitClosed(const Socket& s, absl::Duration timeout, std::vector<int>* frame_types = nullptr) {
  std::string bytes;
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    pollfd p{s.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::recv(s.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      bytes.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EAGAIN) continue;
    break;  // 0: the end (or ECONNRESET)
  }
  if (frame_types != nullptr) {
    for (size_t at = 0; at + 9 <= bytes.size();) {
      const size_t length = (static_cast<unsigned char>(bytes[at]) << 16) |
                            (static_cast<unsigned char>(bytes[at + 1]) << 8) |
                            static_cast<unsigned char>(bytes[at + 2]);
      frame_types->push_back(static_cast<unsigned char>(bytes[at + 3]));
      at += 9 + length;
    }
  }
  return true;
}

// The daemon's fds that are connections accepted on `socket_path`: /proc/net/unix
// names the socket path of each accepted connection (and of the listening socket,
// left out by its accept flag); /proc/PID/fd says which the daemon has open.
int DaemonClientConnections(pid_t daemon, const std::string& socket_path) {
  std::set<std::string> accepted;
  for (absl::string_view line : absl::StrSplit(ReadFile("/proc/net/unix"), '\n')) {
    // Num RefCount Protocol Flags Type St Inode Path
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 8 || f[7] != socket_path || f[3] == "00010000") continue;
    accepted.insert(absl::StrCat("socket:[", f[6], "]"));
  }
  int n = 0;
  for (int fd : OpenFds(daemon)) {
    if (accepted.count(ReadLink(absl::StrCat("/proc/", daemon, "/fd/", fd)))) ++n;
  }
  return n;
}

// utime + stime of `pid` from /proc/PID/stat.
absl::Duration CpuTimeOf(pid_t pid) {
  const std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return absl::ZeroDuration();
  // After "pid (comm) ": state is field 3; utime and stime are 14 and 15.
  std::vector<absl::string_view> f = absl::StrSplit(absl::string_view(stat).substr(paren + 2), ' ');
  int64_t utime = 0, stime = 0;
  if (f.size() < 13 || !absl::SimpleAtoi(f[11], &utime) || !absl::SimpleAtoi(f[12], &stime)) {
    return absl::ZeroDuration();
  }
  return absl::Seconds(1) * static_cast<double>(utime + stime) / ::sysconf(_SC_CLK_TCK);
}

// Raises this process's fd limit to at least `n` (root may raise the hard one too).
void RaiseFdLimit(rlim_t n) {
  rlimit lim{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
  if (lim.rlim_cur >= n) return;
  lim.rlim_cur = std::max(n, lim.rlim_cur);
  lim.rlim_max = std::max(lim.rlim_max, lim.rlim_cur);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lim), 0)
      << "cannot raise RLIMIT_NOFILE to " << n << ": " << std::strerror(errno);
}

int CountOf(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

class ConnectionsTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> flags) {
    DaemonOptions options;
    options.processes = 1;
    options.extra_flags = std::move(flags);
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(options);
    ASSERT_THAT(daemon, IsOk());
    daemon_ = std::move(*daemon);
  }

  int ClientConnections() const {
    return DaemonClientConnections(daemon_->pid(), daemon_->socket_path());
  }

  // A client's first call, retried (a refused connection makes gRPC back off, 1 s
  // and more) until it works or `timeout` passes.
  absl::Status ServeNewClient(absl::Duration timeout) {
    absl::Status last = absl::DeadlineExceededError("never tried");
    PollUntil(
        [&] {
          ConnectOptions connect;
          connect.connect_timeout = absl::Seconds(1);
          absl::StatusOr<std::unique_ptr<Client>> client =
              Client::Connect(daemon_->address(), connect);
          if (!client.ok()) {
            last = client.status();
            return false;
          }
          absl::StatusOr<std::string> nine = (*client)->pool().Apply("square", "3");
          last = nine.status();
          return nine.ok() && *nine == "9";
        },
        timeout);
    return last;
  }

  std::unique_ptr<Daemon> daemon_;
};

// Issue 19's lock-out: 1,100 connections that send nothing fill --max_connections
// (1,024), and a new client is refused. The handshake timeout closes them, although
// the test still holds every one of them open, and the new client is served.
TEST_F(ConnectionsTest, SilentConnectionsAreClosedAtTheHandshakeTimeout) {
  ASSERT_NO_FATAL_FAILURE(RaiseFdLimit(4096));
  constexpr absl::Duration kHandshake = absl::Seconds(3);
  ASSERT_NO_FATAL_FAILURE(StartDaemon({"--handshake_timeout=3s"}));
  const absl::Time opened = absl::Now();
  std::vector<Socket> silent;
  for (int i = 0; i < 1100; ++i) {
    Socket s = ConnectRaw(daemon_->socket_path());
    ASSERT_TRUE(s.valid()) << "connection " << i << ": " << std::strerror(errno);
    silent.push_back(std::move(s));
  }
  // The cap is full: the daemon holds 1,024 of them (less what the fixture's health
  // check left) and closes the next one at once.
  int held = 0;
  ASSERT_TRUE(PollUntil([&] { return (held = ClientConnections()) >= 1000; }, kHandshake))
      << "the daemon holds only " << held << " connections";
  EXPECT_LE(held, 1024);
  EXPECT_LT(absl::Now() - opened, kHandshake) << "too slow to see the full cap";
  Socket late = ConnectRaw(daemon_->socket_path());
  ASSERT_TRUE(late.valid());
  EXPECT_EQ(AwaitFirst(late, absl::Seconds(5)), Seen::kClosed) << "not refused";
  EXPECT_THAT(daemon_->ReadLog(), HasSubstr("--max_connections"));

  // A real client: served once the silent connections are gone, while the test
  // still holds them.
  EXPECT_THAT(ServeNewClient(absl::Seconds(12)), IsOk());
  EXPECT_GE(absl::Now() - opened, kHandshake) << "served before the silent ones timed out?";
  // The daemon holds none of them any more (at most the new client's, closing).
  EXPECT_TRUE(PollUntil([&] { return (held = ClientConnections()) <= 1; }, absl::Seconds(10)))
      << held << " connections still held";
  int closed = 0;
  for (const Socket& s : silent) closed += AwaitFirst(s, absl::ZeroDuration()) == Seen::kClosed;
  EXPECT_EQ(closed, 1100);
  EXPECT_THAT(daemon_->ReadLog(), HasSubstr("(--handshake_timeout)"));
}

// --idle_timeout (gRPC's grpc.max_connection_idle_ms, which applies to fds forkpoold
// hands to gRPC): a connection that sent the preface and nothing more gets a GOAWAY
// and is closed; one with a call open (a queue get waiting) is kept, and its call
// completes. The C++ client closes its own idle connection first (its idle_timeout
// is below the daemon's, as by default) and connects again at its next call.
TEST_F(ConnectionsTest, IdleConnectionsAreClosedButNotOnesWithAnOpenCall) {
  constexpr absl::Duration kIdle = absl::Seconds(2);
  ASSERT_NO_FATAL_FAILURE(StartDaemon({"--idle_timeout=2s"}));
  ConnectOptions options;
  options.idle_timeout = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(daemon_->address(), options);
  ASSERT_THAT(client, IsOk());
  ASSERT_THAT((*client)->CreateQueue("q"), IsOk());
  absl::StatusOr<std::string> got;
  std::thread getter([&] { got = (*client)->queue("q").Get(absl::Seconds(60)); });
  ASSERT_TRUE(PollUntil([&] {
    absl::StatusOr<v1::QueueInfo> info = (*client)->queue("q").Info();
    return info.ok() && info->waiting_getters() == 1;
  })) << "the get never waited";
  // From here on, no call but the get on the client's connection (clients in one
  // process share it): it has been without another call for as long as each
  // connection opened below.
  for (int round = 0; round < 2; ++round) {
    Socket idle = ConnectRaw(daemon_->socket_path());
    ASSERT_TRUE(idle.valid());
    ASSERT_TRUE(SendStart(idle));
    const absl::Time started = absl::Now();
    ASSERT_EQ(AwaitFirst(idle, absl::Seconds(5)), Seen::kData) << "gRPC never took it";
    std::vector<int> frames;
    ASSERT_TRUE(AwaitClosed(idle, absl::Seconds(15), &frames)) << "an idle connection stayed";
    EXPECT_GE(absl::Now() - started, kIdle - absl::Milliseconds(50));
    EXPECT_THAT(frames, ::testing::Contains(7)) << "closed without a GOAWAY";
  }
  // The get's connection is still open in the daemon and its call still waits.
  // (gRPC may shut a connection down a moment before it closes the fd.)
  int held = 0;
  EXPECT_TRUE(PollUntil([&] { return (held = ClientConnections()) == 1; }, absl::Seconds(5)))
      << held << " connections";
  ASSERT_THAT((*client)->queue("q").Put("kept"), IsOk());
  getter.join();
  EXPECT_THAT(got, IsOkAndHolds(std::string("kept")));
  // Now idle, it is closed too; the client connects again at its next call.
  EXPECT_TRUE(PollUntil([&] { return ClientConnections() == 0; }, absl::Seconds(15)));
  EXPECT_THAT((*client)->pool().Apply("square", "4"), IsOkAndHolds(std::string("16")));
}

// A child process that drops to `uid` (and its gid, no supplementary groups) and
// opens connections one after another, each sending the client's start; it writes
// one letter per connection to a pipe — A (admitted: gRPC answered), R (refused:
// closed without a byte), N (no answer), E (connect failed) — and holds them open
// until its stdin-like pipe `hold` closes. Only async-signal-safe calls after fork.
class ConnectionsAsUser {
 public:
  ConnectionsAsUser(uid_t uid, const std::string& path, int n) {
    int report[2], hold[2];
    if (::pipe2(report, O_CLOEXEC) != 0 || ::pipe2(hold, O_CLOEXEC) != 0) return;
    const sockaddr_un addr = AddressOf(path);
    pid_ = ::fork();
    if (pid_ == 0) {
      // Keep only the two pipe ends: a copy of another child's hold pipe would
      // keep that child from ever seeing it close.
      const unsigned lo = static_cast<unsigned>(std::min(report[1], hold[0]));
      const unsigned hi = static_cast<unsigned>(std::max(report[1], hold[0]));
      ::syscall(SYS_close_range, 3u, lo - 1, 0u);
      ::syscall(SYS_close_range, lo + 1, hi - 1, 0u);
      ::syscall(SYS_close_range, hi + 1, ~0u, 0u);
      // Raw system calls: they change only this (single) thread's credentials.
      if (::syscall(SYS_setgroups, 0, nullptr) != 0 ||
          ::syscall(SYS_setresgid, uid, uid, uid) != 0 ||
          ::syscall(SYS_setresuid, uid, uid, uid) != 0) {
        ::_exit(2);
      }
      int fds[64];
      char letters[64];
      for (int i = 0; i < n && i < 64; ++i) {
        fds[i] = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds[i] < 0 ||
            ::connect(fds[i], reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
          letters[i] = 'E';
          continue;
        }
        (void)::send(fds[i], kClientStart, kClientStartBytes, MSG_NOSIGNAL);
        pollfd p{fds[i], POLLIN, 0};
        char c;
        if (::poll(&p, 1, 10000) <= 0) {
          letters[i] = 'N';
        } else {
          letters[i] = ::recv(fds[i], &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0 ? 'A' : 'R';
        }
      }
      (void)::write(report[1], letters, static_cast<size_t>(std::min(n, 64)));
      ::close(report[1]);
      char c;
      while (::read(hold[0], &c, 1) > 0) {
      }
      ::_exit(0);
    }
    ::close(report[1]);
    ::close(hold[0]);
    report_ = report[0];
    hold_ = hold[1];
  }
  ~ConnectionsAsUser() { Release(); }

  // The letters, once every connection has its answer.
  std::string Outcomes() {
    std::string out;
    char buf[64];
    ssize_t n;
    while ((n = ::read(report_, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
  }
  // Closes its connections (the child exits) and reaps it.
  void Release() {
    if (pid_ <= 0) return;
    ::close(hold_);
    ::close(report_);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int report_ = -1;
  int hold_ = -1;
};

// --max_connections_per_uid and --admin_reserved_connections: a user's connections
// past its cap are refused; users together stop short of the admin reserve; root
// still connects; a user's slots free when its connections close.
TEST_F(ConnectionsTest, EachUidHasACapAndAdminsKeepAReserve) {
  // Users together: 12 - 4 = 8 connections; each at most 5.
  ASSERT_NO_FATAL_FAILURE(StartDaemon(
      {"--max_connections=12", "--max_connections_per_uid=5", "--admin_reserved_connections=4"}));
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as other users";
  // Reachable for other users (forkpoold makes it 0660 in a 0700 directory).
  ASSERT_EQ(::chmod(daemon_->dir().c_str(), 0711), 0);
  ASSERT_EQ(::chmod(daemon_->socket_path().c_str(), 0666), 0);

  ConnectionsAsUser nobody(65534, daemon_->socket_path(), 6);
  EXPECT_EQ(nobody.Outcomes(), "AAAAAR");
  EXPECT_THAT(daemon_->ReadLog(), HasSubstr("uid 65534 holds 5 connections"));
  ConnectionsAsUser other(65533, daemon_->socket_path(), 5);
  EXPECT_EQ(other.Outcomes(), "AAARR");
  // Root: a real client is served, and raw connections are admitted up to the
  // reserve (this process's one connection plus these two: 8 + 3 <= 12).
  absl::StatusOr<std::unique_ptr<Client>> admin = Client::Connect(daemon_->address());
  ASSERT_THAT(admin, IsOk());
  EXPECT_THAT((*admin)->pool().Apply("square", "5"), IsOkAndHolds(std::string("25")));
  std::vector<Socket> root_raw;
  for (int i = 0; i < 2; ++i) {
    root_raw.push_back(ConnectRaw(daemon_->socket_path()));
    ASSERT_TRUE(SendStart(root_raw.back()));
    EXPECT_EQ(AwaitFirst(root_raw.back(), absl::Seconds(5)), Seen::kData) << "root refused";
  }
  EXPECT_EQ(ClientConnections(), 5 + 3 + 1 + 2);
  // nobody's connections close: its slots free.
  nobody.Release();
  EXPECT_TRUE(PollUntil([&] { return ClientConnections() == 3 + 1 + 2; }));
  ConnectionsAsUser again(65534, daemon_->socket_path(), 2);
  EXPECT_EQ(again.Outcomes(), "AA") << daemon_->ReadLog();
}

// accept4 failing with EMFILE: forkpoold stops watching its socket for 100 ms at a
// time instead of spinning on it (the queued connection keeps it readable), logs at
// most once a second, and serves again once fds are free.
TEST_F(ConnectionsTest, AcceptBacksOffWhenOutOfFdsAndRecovers) {
  ASSERT_NO_FATAL_FAILURE(RaiseFdLimit(4096));
  ASSERT_NO_FATAL_FAILURE(StartDaemon({}));
  const pid_t pid = daemon_->pid();
  const std::vector<int> fds = OpenFds(pid);
  // (The daemon's fds have gaps: some 25 open, the highest about 250.)
  ASSERT_FALSE(fds.empty());
  ASSERT_LT(fds.back(), 3000);
  rlimit original{};
  ASSERT_EQ(::prlimit(pid, RLIMIT_NOFILE, nullptr, &original), 0) << std::strerror(errno);
  // Room for three fds above the highest open one (and whatever gaps there are
  // below it): the connections below fill them.
  rlimit lowered = original;
  lowered.rlim_cur = static_cast<rlim_t>(fds.back() + 4);
  ASSERT_EQ(::prlimit(pid, RLIMIT_NOFILE, &lowered, nullptr), 0) << std::strerror(errno);
  const std::string emfile = "Too many open files";
  std::vector<Socket> fillers;
  Socket stuck;
  for (int i = 0; i < 3000 && !stuck.valid(); ++i) {
    Socket s = ConnectRaw(daemon_->socket_path());
    ASSERT_TRUE(s.valid());
    ASSERT_TRUE(SendStart(s));
    // Admitted (gRPC answers), or left in the backlog while accept4 fails.
    absl::Time quiet_since = absl::Now();
    Seen seen = Seen::kNothing;
    ASSERT_TRUE(PollUntil([&] {
      seen = AwaitFirst(s, absl::Milliseconds(20));
      if (seen != Seen::kNothing) return true;
      if (!absl::StrContains(daemon_->ReadLog(), emfile)) quiet_since = absl::Now();
      return absl::Now() - quiet_since > absl::Milliseconds(500);
    })) << "connection "
        << i << " neither served nor stuck";
    ASSERT_NE(seen, Seen::kClosed) << "connection " << i << " refused";
    if (seen == Seen::kData) {
      fillers.push_back(std::move(s));
    } else {
      stuck = std::move(s);
    }
  }
  ASSERT_TRUE(stuck.valid()) << "accept4 never failed (" << fillers.size() << " connections)";
  // A spin would take a core; retrying every 100 ms takes next to nothing.
  const int lines_before = CountOf(daemon_->ReadLog(), emfile);
  const absl::Duration cpu_before = CpuTimeOf(pid);
  const absl::Time window = absl::Now();
  EXPECT_EQ(AwaitFirst(stuck, absl::Seconds(1)), Seen::kNothing) << "accepted: no EMFILE";
  const absl::Duration cpu = CpuTimeOf(pid) - cpu_before;
  const absl::Duration wall = absl::Now() - window;
  EXPECT_LT(cpu, wall / 4) << "forkpoold used " << cpu << " of CPU in " << wall;
  EXPECT_LE(CountOf(daemon_->ReadLog(), emfile) - lines_before, 2) << "logged more than 1/s";
  EXPECT_TRUE(
      absl::StrContains(daemon_->ReadLog(), "Too many open files; not accepting for 100ms"));
  // Free the fds: the stuck connection is accepted, a new client is served.
  fillers.clear();
  EXPECT_EQ(AwaitFirst(stuck, absl::Seconds(10)), Seen::kData) << "never accepted";
  EXPECT_THAT(ServeNewClient(absl::Seconds(10)), IsOk());
  ASSERT_EQ(::prlimit(pid, RLIMIT_NOFILE, &original, nullptr), 0);
}

}  // namespace
}  // namespace forkpool::testing
