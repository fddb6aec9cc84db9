// The fork helper's loop: one request at a time, exit when forkpoold goes away.
#include "server/fork_helper/fork_helper.h"

#include <dirent.h>
#include <spawn.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <algorithm>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/fd_passing.h"
#include "common/proto_status.h"
#include "forkpool/internal/control.pb.h"
#include "server/fork_helper/worker_forker.h"

extern char** environ;

namespace forkpool {
namespace {

using internal::FromHelper;
using internal::ToHelper;

struct LoadedPool {
  TaskRegistry registry;    // empty for spawn pools
  WorkerIdentity identity;  // worker_index set per fork
};

// forkpool-worker beside the daemon's binary (the helper runs the same binary).
std::string WorkerBinary() {
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return "forkpool-worker";
  std::string path(exe, static_cast<size_t>(n));
  const size_t slash = path.rfind('/');
  return path.substr(0, slash + 1) + "forkpool-worker";
}

// Runs `binary --list-functions --library ...` and returns the names it prints.
absl::StatusOr<std::vector<std::string>> ListFunctions(const std::string& binary,
                                                       const std::vector<std::string>& libs) {
  if (::access(binary.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("spawn needs the worker program '", binary, "', which is missing"));
  }
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2(function probe)");
  UniqueFd read_end(out[0]), write_end(out[1]);
  std::vector<std::string> args = {binary, "--list-functions"};
  for (const std::string& lib : libs) {
    args.push_back("--library");
    args.push_back(lib);
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
  pid_t pid = -1;
  const int err = ::posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) return absl::ErrnoToStatus(err, absl::StrCat("posix_spawn(", binary, ")"));
  write_end.reset();
  std::string text;
  char buf[4096];
  while (true) {
    const ssize_t n = RetryOnEintr([&] { return ::read(read_end.get(), buf, sizeof(buf)); });
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  RetryOnEintr([&] { return ::waitpid(pid, &status, 0); });
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the worker program could not load the task libraries (", absl::StrJoin(libs, ", "),
        "); its error is in forkpoold's log"));
  }
  std::vector<std::string> names;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    names.emplace_back(line);
  }
  return names;
}

// Raw write: no locks or allocation-heavy logging in the helper.
void Log(const std::string& line) {
  const std::string s = absl::StrCat("forkpool fork helper ", ::getpid(), ": ", line, "\n");
  [[maybe_unused]] ssize_t n = ::write(2, s.data(), s.size());
}

int CountThreads() {
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(dir);
  return n;
}

absl::Status CheckSingleThreaded(const std::string& when) {
  const int n = CountThreads();
  if (n != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the fork helper must stay single-threaded but has ", n, " threads ", when,
        "; forking now could deadlock the workers"));
  }
  return absl::OkStatus();
}

class Helper {
 public:
  Helper(UniqueFd control, pid_t daemon_pid)
      : control_(std::move(control)), daemon_pid_(daemon_pid) {}

  [[noreturn]] void Run() {
    while (true) {
      absl::StatusOr<Packet> packet = ReceivePacket(control_.get());
      if (!packet.ok()) {
        if (!absl::IsNotFound(packet.status())) {
          Log(absl::StrCat("control socket: ", packet.status().message()));
        }
        ::_exit(0);  // forkpoold is gone or broke the protocol
      }
      ToHelper request;
      if (!request.ParseFromString(packet->bytes)) {
        Log("unparsable control packet; leaving");
        ::_exit(1);
      }
      Handle(request);
    }
  }

 private:
  void Handle(const ToHelper& request) {
    FromHelper reply;
    reply.set_request_id(request.request_id());
    switch (request.kind_case()) {
      case ToHelper::kLoadPool: {
        absl::Status s = LoadPool(request.load_pool(), reply.mutable_pool_loaded());
        StatusToProto(s, reply.mutable_status());
        Send(reply, {});
        return;
      }
      case ToHelper::kForkWorker: {
        absl::StatusOr<ForkedWorker> w = Fork(request.fork_worker());
        if (!w.ok()) {
          StatusToProto(w.status(), reply.mutable_status());
          Send(reply, {});
          return;
        }
        reply.mutable_worker_forked()->set_pid(w->pid);
        const int fds[] = {w->socket.get(), w->pidfd.get(), w->stderr_read.get()};
        Send(reply, fds);
        return;  // our copies of the fds close here
      }
      default:
        StatusToProto(absl::InvalidArgumentError(absl::StrCat(
                          "unknown control request kind ",
                          static_cast<int>(request.kind_case()))),
                      reply.mutable_status());
        Send(reply, {});
    }
  }

  absl::Status LoadPool(const internal::LoadPool& load, internal::PoolLoaded* out) {
    std::vector<std::string> libs(load.libraries().begin(), load.libraries().end());
    LoadedPool pool;
    pool.identity.pool = load.pool();
    pool.identity.initializer = load.initializer();
    pool.identity.initargs = load.initargs();
    pool.identity.memory_limit_bytes = load.memory_limit_bytes();
    std::vector<std::string> functions;
    if (load.start_method() == "spawn") {
      // The helper stays clean: a probe of the worker program lists the functions.
      pool.identity.spawn_binary = WorkerBinary();
      pool.identity.libraries = libs;
      absl::StatusOr<std::vector<std::string>> listed =
          ListFunctions(pool.identity.spawn_binary, libs);
      if (!listed.ok()) {
        return absl::Status(listed.status().code(),
                            absl::StrCat("pool '", load.pool(), "': ", listed.status().message()));
      }
      functions = std::move(*listed);
    } else if (load.start_method() == "forkserver") {
      absl::StatusOr<TaskRegistry> registry = TaskRegistry::Load(libs);
      if (!registry.ok()) {
        return absl::Status(registry.status().code(),
                            absl::StrCat("pool '", load.pool(), "': ",
                                         registry.status().message()));
      }
      // Some libraries start threads in their constructors (OpenBLAS).
      if (absl::Status s = CheckSingleThreaded(
              absl::StrCat("after loading ", absl::StrJoin(libs, ", ")));
          !s.ok()) {
        return s;
      }
      pool.registry = std::move(*registry);
      functions = pool.registry.Names();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "pool '", load.pool(), "': unknown start method '", load.start_method(), "'"));
    }
    if (!load.initializer().empty() &&
        std::find(functions.begin(), functions.end(), load.initializer()) == functions.end()) {
      return absl::NotFoundError(absl::StrCat("pool '", load.pool(),
                                              "': initializer '", load.initializer(),
                                              "' not found in its task libraries"));
    }
    for (const std::string& name : functions) out->add_functions(name);
    pools_.insert_or_assign(load.pool(), std::move(pool));
    return absl::OkStatus();
  }

  absl::StatusOr<ForkedWorker> Fork(const internal::ForkWorker& request) {
    auto it = pools_.find(request.pool());
    if (it == pools_.end()) {
      return absl::NotFoundError(
          absl::StrCat("pool '", request.pool(), "' is not loaded in the fork helper"));
    }
    WorkerIdentity identity = it->second.identity;
    identity.worker_index = request.worker_index();
    return ForkWorker(identity, it->second.registry, daemon_pid_);
  }

  void Send(const FromHelper& reply, absl::Span<const int> fds) {
    std::string bytes;
    reply.SerializeToString(&bytes);
    if (absl::Status s = SendPacket(control_.get(), bytes, fds); !s.ok()) {
      Log(absl::StrCat("cannot answer forkpoold: ", s.message()));
      ::_exit(1);
    }
  }

  UniqueFd control_;
  const pid_t daemon_pid_;
  std::map<std::string, LoadedPool> pools_;
};

}  // namespace

void RunForkHelper(UniqueFd control, pid_t daemon_pid) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != daemon_pid) ::_exit(1);
  ::prctl(PR_SET_NAME, "forkpool-helper");
  // A terminal's Ctrl-C reaches the whole process group; the helper leaves when its
  // control socket closes instead.
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGTERM, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // Keep stdio and the control socket; nothing else of the daemon's (its lock file,
  // its listening socket).
  const int fd = control.release();
  if (fd != kHelperControlFd) {
    if (::dup2(fd, kHelperControlFd) < 0) ::_exit(1);
    ::close(fd);
  }
  ::close_range(kHelperControlFd + 1, ~0U, 0);
  ::fcntl(kHelperControlFd, F_SETFD, FD_CLOEXEC);
  if (absl::Status s = CheckSingleThreaded("at start"); !s.ok()) {
    Log(std::string(s.message()));
    ::_exit(1);
  }
  Helper helper(UniqueFd(kHelperControlFd), daemon_pid);
  helper.Run();
}

}  // namespace forkpool
