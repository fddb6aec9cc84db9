// Daemon log lines on stderr (journald adds time and unit under systemd).
#ifndef FORKPOOL_SERVER_DAEMON_LOG_H_
#define FORKPOOL_SERVER_DAEMON_LOG_H_

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"

namespace forkpool {

// Writes "forkpoold: <parts>\n" with one fwrite, so lines from threads do not mix.
template <typename... Args>
void Log(const Args&... parts) {
  const std::string line = absl::StrCat("forkpoold: ", parts..., "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_LOG_H_
