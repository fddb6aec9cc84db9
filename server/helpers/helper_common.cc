// Helper pieces implementation.
#include "server/helpers/helper_common.h"

#include <dirent.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/control_message.h"

namespace forkpool {

void HelperLog(std::string_view who, std::string_view line) {
  const std::string s =
      absl::StrCat("forkpool ", absl::string_view(who.data(), who.size()), " ", ::getpid(), ": ",
                   absl::string_view(line.data(), line.size()), "\n");
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

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* abbrev = ::sigabbrev_np(sig);
    return absl::StrCat("killed by ", abbrev ? absl::StrCat("SIG", abbrev) : "a signal",
                        " (signal ", sig, ")");
  }
  return absl::StrCat("ended with wait status ", status);
}

void SendToDaemon(std::string_view who, const internal::FromHelper& reply, const int* fds,
                  int nfds) {
  std::string bytes;
  reply.SerializeToString(&bytes);
  absl::Status s = SendControlMessage(kHelperControlFd, bytes,
                                      absl::Span<const int>(fds, static_cast<size_t>(nfds)));
  if (!s.ok()) {
    HelperLog(who, absl::StrCat("cannot answer forkpoold: ", s.message()));
    ::_exit(1);
  }
}

internal::ToHelper ReceiveRequest(std::string_view who) {
  // One per process. A pool helper inherits the root helper's, empty: the root helper
  // has read the whole (one-packet) StartPoolHelper before it clones.
  static ControlReader* const reader = new ControlReader();
  absl::StatusOr<Packet> packet = reader->Next(kHelperControlFd);
  if (!packet.ok()) {
    if (!absl::IsNotFound(packet.status())) {
      HelperLog(who, absl::StrCat("control socket: ", packet.status().message()));
    }
    ::_exit(0);
  }
  internal::ToHelper request;
  if (!request.ParseFromString(packet->bytes)) {
    HelperLog(who, "unparsable control message; leaving");
    ::_exit(1);
  }
  return request;
}

void SendHello(std::string_view who, std::string_view role) {
  internal::FromHelper hello;
  hello.mutable_hello()->set_version(internal::CONTROL_VERSION_2);
  hello.mutable_hello()->set_pid(::getpid());
  hello.mutable_hello()->set_role(std::string(role));
  SendToDaemon(who, hello);
}

}  // namespace forkpool
