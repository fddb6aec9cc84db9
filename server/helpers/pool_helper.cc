// The pool helper's loop: hello, one LoadPool, then ForkWorker requests until
// forkpoold closes the control socket.
#include "server/helpers/pool_helper.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/control_message.h"
#include "common/frame.h"
#include "common/process_title.h"
#include "common/proto_status.h"
#include "common/status_macros.h"
#include "forkpool/internal/control.pb.h"
#include "forkpool/internal/worker.pb.h"
#include "server/helpers/helper_common.h"
#include "server/helpers/worker_forker.h"

namespace forkpool {
namespace {

using internal::FromHelper;
using internal::ToHelper;

constexpr char kWho[] = "pool helper";
constexpr size_t kProbeTailBytes = 2048;

// Runs the spawn pool's worker program as a probe: it gets an Init with probe
// set on its socket and answers with Hello.functions. Errors say how the
// program ended and the last it wrote.
absl::StatusOr<std::vector<std::string>> ProbeWorkerCommand(const internal::LoadPool& load) {
  const std::vector<std::string> argv_strings(load.worker_command().begin(),
                                              load.worker_command().end());
  const std::string& program = argv_strings.front();
  if (::access(program.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("pool '", load.pool(),
                                                      "': the worker program '", program,
                                                      "' cannot be run: ", std::strerror(errno)));
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return absl::ErrnoToStatus(errno, "socketpair(probe)");
  }
  UniqueFd mine(sv[0]), theirs(sv[1]);
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) != 0)
    return absl::ErrnoToStatus(errno, "pipe2(probe)");
  UniqueFd err_read(pipefd[0]), err_write(pipefd[1]);
  std::vector<std::string> args = argv_strings;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t self = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return absl::ErrnoToStatus(errno, "fork(probe)");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != self) ::_exit(1);
    const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const int flags = ::fcntl(err_write.get(), F_GETFL);
    ::fcntl(err_write.get(), F_SETFL, flags & ~O_NONBLOCK);
    if (devnull < 0 || ::dup2(devnull, 0) < 0 || ::dup2(err_write.get(), 1) < 0 ||
        ::dup2(err_write.get(), 2) < 0 || ::dup2(theirs.get(), kWorkerSocketFd) < 0) {
      ::_exit(2);
    }
    ::close_range(kWorkerSocketFd + 1, ~0U, 0);
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
    }
    ::execv(argv[0], argv.data());
    std::fprintf(stderr, "execv(%s): %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  theirs.reset();
  err_write.reset();
  internal::ToWorker init_msg;
  internal::Init* init = init_msg.mutable_init();
  init->set_pool(load.pool());
  init->set_probe(true);
  for (const auto& lib : load.libraries()) init->add_libraries(lib);
  std::string out;
  AppendFrame(init_msg, &out);
  // The probe reads its Init before anything else; a program that does not
  // leaves the write in the socket buffer, and forkpoold's load deadline ends
  // the wait.
  (void)WriteAll(mine.get(), out);
  ::shutdown(mine.get(), SHUT_WR);
  // Read its answer and its output together, so that a chatty probe cannot
  // block on a full stderr pipe while we wait on its socket.
  std::string tail;
  FrameDecoder decoder;
  std::optional<internal::FromWorker> answer;
  bool socket_open = true, err_open = true;
  while (socket_open || err_open) {
    pollfd fds[2] = {{socket_open ? mine.get() : -1, POLLIN, 0},
                     {err_open ? err_read.get() : -1, POLLIN, 0}};
    if (RetryOnEintr([&] { return ::poll(fds, 2, -1); }) < 0) break;
    if (fds[1].revents) {
      char buf[4096];
      const ssize_t n = ::read(err_read.get(), buf, sizeof(buf));
      if (n > 0) {
        tail.append(buf, static_cast<size_t>(n));
        if (tail.size() > 2 * kProbeTailBytes) tail.erase(0, tail.size() - kProbeTailBytes);
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        err_open = false;
      }
    }
    if (fds[0].revents) {
      absl::StatusOr<size_t> n = decoder.ReadFrom(mine.get());
      if (!n.ok() || *n == 0) {
        socket_open = false;
      } else if (!answer) {
        absl::StatusOr<std::optional<std::string_view>> frame = decoder.Next();
        if (!frame.ok()) {
          socket_open = false;
        } else if (frame->has_value()) {
          internal::FromWorker m;
          if (m.ParseFromArray((*frame)->data(), static_cast<int>((*frame)->size()))) {
            answer = std::move(m);
          }
          socket_open = false;
        }
      }
    }
  }
  mine.reset();
  int status = 0;
  RetryOnEintr([&] { return ::waitpid(pid, &status, 0); });
  if (tail.size() > kProbeTailBytes) tail.erase(0, tail.size() - kProbeTailBytes);
  while (!tail.empty() && tail.back() == '\n') tail.pop_back();
  if (answer && answer->has_hello()) {
    const internal::Hello& hello = answer->hello();
    if (hello.has_init_error() && hello.init_error().code() != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("pool '", load.pool(), "': the worker program '", program,
                       "' could not load the pool: ", hello.init_error().message()));
    }
    return std::vector<std::string>(hello.functions().begin(), hello.functions().end());
  }
  return absl::FailedPreconditionError(
      absl::StrCat("pool '", load.pool(), "': the worker program '", program, "' ",
                   DescribeWaitStatus(status), " before it listed its functions",
                   tail.empty() ? "" : absl::StrCat("; its last output: ", tail)));
}

class PoolHelper {
 public:
  PoolHelper(pid_t daemon_pid) : daemon_pid_(daemon_pid) {}

  [[noreturn]] void Run() {
    SendHello(kWho, "pool");
    while (true) {
      const ToHelper request = ReceiveRequest(kWho);
      Handle(request);
    }
  }

 private:
  void Handle(const ToHelper& request) {
    FromHelper reply;
    reply.set_request_id(request.request_id());
    switch (request.kind_case()) {
      case ToHelper::kLoadPool: {
        absl::Status s = Load(request.load_pool(), reply.mutable_pool_loaded());
        StatusToProto(s, reply.mutable_status());
        SendToDaemon(kWho, reply);
        // A thread (or whatever else broke the load) stays in this process:
        // forkpoold discards it; leave rather than wait to be killed.
        if (!s.ok()) ::_exit(1);
        return;
      }
      case ToHelper::kForkWorker: {
        if (!loaded_) {
          StatusToProto(absl::FailedPreconditionError("the pool helper has not loaded a pool"),
                        reply.mutable_status());
          SendToDaemon(kWho, reply);
          return;
        }
        WorkerIdentity identity = identity_;
        identity.worker_index = request.fork_worker().worker_index();
        absl::StatusOr<ForkedWorker> w = ForkWorker(identity, registry_, daemon_pid_);
        if (!w.ok()) {
          StatusToProto(w.status(), reply.mutable_status());
          SendToDaemon(kWho, reply);
          return;
        }
        reply.mutable_worker_forked()->set_pid(w->pid);
        const int fds[] = {w->socket.get(), w->pidfd.get(), w->stderr_read.get()};
        SendToDaemon(kWho, reply, fds, 3);
        return;  // our copies of the fds close here
      }
      default:
        StatusToProto(absl::InvalidArgumentError(
                          absl::StrCat("a pool helper does not take control request kind ",
                                       static_cast<int>(request.kind_case()))),
                      reply.mutable_status());
        SendToDaemon(kWho, reply);
    }
  }

  absl::Status Load(const internal::LoadPool& load, internal::PoolLoaded* out) {
    if (loaded_) return absl::FailedPreconditionError("a pool helper loads one pool only");
    SetProcessTitle(absl::StrCat("forkpool-helper: pool ", load.pool()), "forkpool-helper");
    identity_.pool = load.pool();
    identity_.initializer = load.initializer();
    identity_.initargs = load.initargs();
    identity_.memory_limit_bytes = load.memory_limit_bytes();
    identity_.nofile_soft_limit = load.nofile_soft_limit();
    std::vector<std::string> functions;
    if (load.start_method() == "spawn") {
      if (load.worker_command().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("pool '", load.pool(), "': no worker command"));
      }
      identity_.spawn_command.assign(load.worker_command().begin(), load.worker_command().end());
      identity_.libraries.assign(load.libraries().begin(), load.libraries().end());
      FORKPOOL_ASSIGN_OR_RETURN(functions, ProbeWorkerCommand(load));
    } else if (load.start_method() == "forkserver") {
      for (const std::string& lib : load.libraries()) {
        // Said before the open: if the library kills or hangs this process,
        // forkpoold knows which one did.
        FromHelper progress;
        progress.mutable_progress()->set_library(lib);
        SendToDaemon(kWho, progress);
        absl::Status s = registry_.Add(lib);
        if (!s.ok()) {
          return absl::Status(s.code(), absl::StrCat("pool '", load.pool(), "': ", s.message()));
        }
        // Some libraries start threads in their constructors (OpenBLAS):
        // forking workers from a threaded process can deadlock them.
        if (const int threads = CountThreads(); threads != 1) {
          return absl::FailedPreconditionError(
              absl::StrCat(lib, ": started a thread while loading (the pool helper has ", threads,
                           " threads); a fork helper must stay single-threaded, so pool '",
                           load.pool(), "' cannot preload it (use the spawn start method)"));
        }
      }
      functions = registry_.Names();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "pool '", load.pool(), "': unknown start method '", load.start_method(), "'"));
    }
    if (!load.initializer().empty() &&
        std::find(functions.begin(), functions.end(), load.initializer()) == functions.end()) {
      return absl::NotFoundError(absl::StrCat("pool '", load.pool(), "': initializer '",
                                              load.initializer(),
                                              "' not found in its task libraries"));
    }
    for (const std::string& name : functions) out->add_functions(name);
    loaded_ = true;
    return absl::OkStatus();
  }

  const pid_t daemon_pid_;
  bool loaded_ = false;
  WorkerIdentity identity_;
  TaskRegistry registry_;
};

}  // namespace

void RunPoolHelper(pid_t daemon_pid, const std::string& pool) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != daemon_pid) ::_exit(1);
  // Made in advance, it learns its pool from LoadPool.
  SetProcessTitle(pool.empty() ? std::string("forkpool-helper: spare")
                               : absl::StrCat("forkpool-helper: pool ", pool),
                  "forkpool-helper");
  if (const int threads = CountThreads(); threads != 1) {
    HelperLog(kWho, absl::StrCat("started with ", threads, " threads; leaving"));
    ::_exit(1);
  }
  PoolHelper helper(daemon_pid);
  helper.Run();
}

}  // namespace forkpool
