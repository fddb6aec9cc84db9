// forkpool-worker: the worker program of `spawn` pools. The pool's helper forks
// it as a child of forkpoold and execs it with its socket on fd 3. Its first
// frame there is an Init naming the pool, its libraries and initializer (never
// the command line, which /proc shows to everyone); it loads the libraries
// itself and serves the worker protocol. An Init with `probe` set only lists
// the functions (Hello.functions).
//
//   forkpool-worker                                    (started by forkpoold)
//   forkpool-worker --list-functions [--library L]...  (prints one name per
//   line)
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/frame.h"
#include "common/proto_status.h"
#include "forkpool/internal/worker.pb.h"
#include "server/worker/task_registry.h"
#include "server/worker/worker_loop.h"

namespace {

constexpr int kSocketFd = 3;

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr, "forkpool-worker: %s\n", why.c_str());
  std::exit(2);
}

int ListFunctions(const std::vector<std::string>& libraries) {
  absl::StatusOr<forkpool::TaskRegistry> registry = forkpool::TaskRegistry::Load(libraries);
  if (!registry.ok()) {
    std::fprintf(stderr, "forkpool-worker: %s\n", std::string(registry.status().message()).c_str());
    return 1;
  }
  for (const std::string& name : registry->Names()) std::printf("%s\n", name.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> libraries;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--list-functions") {
      list = true;
    } else if (arg == "--library") {
      if (i + 1 >= argc) Usage("--library needs a value");
      libraries.push_back(argv[++i]);
    } else {
      Usage("unknown argument '" + arg + "'");
    }
  }
  if (list) return ListFunctions(libraries);
  if (::fcntl(kSocketFd, F_GETFD) < 0) {
    Usage("no worker socket on fd 3 (forkpool-worker is started by forkpoold)");
  }
  forkpool::FrameDecoder decoder;
  forkpool::internal::ToWorker first;
  if (absl::Status s = forkpool::ReadMessage(kSocketFd, decoder, &first);
      !s.ok() || !first.has_init()) {
    std::fprintf(stderr, "forkpool-worker: expected an Init frame first: %s\n",
                 s.ok() ? "got another message" : std::string(s.message()).c_str());
    return 2;
  }
  const forkpool::internal::Init& init = first.init();
  forkpool::WorkerIdentity identity;
  identity.pool = init.pool();
  identity.worker_index = init.worker_index();
  identity.initializer = init.initializer();
  identity.initargs = init.initargs();
  absl::StatusOr<forkpool::TaskRegistry> registry = forkpool::TaskRegistry::Load(
      std::vector<std::string>(init.libraries().begin(), init.libraries().end()));
  if (init.probe() || !registry.ok()) {
    forkpool::internal::FromWorker hello_msg;
    forkpool::internal::Hello* hello = hello_msg.mutable_hello();
    hello->set_pid(::getpid());
    hello->set_protocol_version(forkpool::internal::PROTOCOL_VERSION_1);
    hello->set_runtime("native");
    if (registry.ok()) {
      for (const std::string& name : registry->Names()) hello->add_functions(name);
    } else {
      forkpool::StatusToProto(registry.status(), hello->mutable_init_error());
    }
    std::string out;
    forkpool::AppendFrame(hello_msg, &out);
    (void)forkpool::WriteAll(kSocketFd, out);
    return registry.ok() ? 0 : 1;
  }
  return forkpool::RunWorkerLoop(identity, *registry, forkpool::UniqueFd(kSocketFd));
}
