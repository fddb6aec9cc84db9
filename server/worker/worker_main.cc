// forkpool-worker: the worker program of `spawn` pools. The fork helper forks it as a
// child of forkpoold and execs it with its socket on fd 3; it loads the pool's task
// libraries itself and serves the worker protocol.
//
//   forkpool-worker --pool P --index N [--library L]... [--initializer F]
//                   [--initargs-hex HEX]
//   forkpool-worker --list-functions [--library L]...   (prints one name per line)
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "server/worker/task_registry.h"
#include "server/worker/worker_loop.h"

namespace {

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr, "forkpool-worker: %s\n", why.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  forkpool::WorkerIdentity identity;
  std::vector<std::string> libraries;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--list-functions") {
      list = true;
    } else if (arg == "--pool") {
      identity.pool = value();
    } else if (arg == "--index") {
      if (!absl::SimpleAtoi(value(), &identity.worker_index)) Usage("--index needs a number");
    } else if (arg == "--library") {
      libraries.push_back(value());
    } else if (arg == "--initializer") {
      identity.initializer = value();
    } else if (arg == "--initargs-hex") {
      identity.initargs = absl::HexStringToBytes(value());
    } else {
      Usage("unknown argument '" + arg + "'");
    }
  }
  absl::StatusOr<forkpool::TaskRegistry> registry = forkpool::TaskRegistry::Load(libraries);
  if (!registry.ok()) {
    std::fprintf(stderr, "forkpool-worker: %s\n", std::string(registry.status().message()).c_str());
    return 1;
  }
  if (list) {
    for (const std::string& name : registry->Names()) std::printf("%s\n", name.c_str());
    return 0;
  }
  if (::fcntl(3, F_GETFD) < 0) Usage("no worker socket on fd 3 (forkpool-worker is started by forkpoold)");
  return forkpool::RunWorkerLoop(identity, *registry, forkpool::UniqueFd(3));
}
