// Small pieces both fork helpers use: raw logging, thread counting, the control
// socket's fd number, exit descriptions. Fork helper only.
#ifndef FORKPOOL_SERVER_HELPERS_HELPER_COMMON_H_
#define FORKPOOL_SERVER_HELPERS_HELPER_COMMON_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "forkpool/internal/control.pb.h"

namespace forkpool {

// The fd number of a helper's control socket.
inline constexpr int kHelperControlFd = 3;

// One line on stderr with a raw write: no locks or buffered stdio in a helper.
void HelperLog(std::string_view who, std::string_view line);
// Threads of this process (/proc/self/task); -1 when it cannot tell.
int CountThreads();
// "exited with code 3", "killed by SIGABRT (signal 6)" from a wait status.
std::string DescribeWaitStatus(int status);
// Serialises and sends `reply` (with `fds`); exits the helper if forkpoold is
// gone.
void SendToDaemon(std::string_view who, const internal::FromHelper& reply, const int* fds = nullptr,
                  int nfds = 0);
// The next request from forkpoold; leaves the helper (exit 0) when forkpoold is gone or
// closed the socket, and (exit 1) when it breaks the protocol.
internal::ToHelper ReceiveRequest(std::string_view who);
// Sends this helper's HelperHello.
void SendHello(std::string_view who, std::string_view role);

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_HELPERS_HELPER_COMMON_H_
