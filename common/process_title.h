// Process titles: what /proc/PID/cmdline and /proc/PID/comm show for helpers
// and workers, which otherwise show forkpoold's own command line.
#ifndef FORKPOOL_COMMON_PROCESS_TITLE_H_
#define FORKPOOL_COMMON_PROCESS_TITLE_H_

#include <string_view>

namespace forkpool {

// Remembers main()'s argv area; call first thing in main().
void SaveArgvForTitle(int argc, char** argv);
// Overwrites the argv area with `title` (cut to fit, NUL-padded) and sets the
// comm name to `comm` (at most 15 bytes). Single-threaded processes only.
void SetProcessTitle(std::string_view title, std::string_view comm);

}  // namespace forkpool

#endif  // FORKPOOL_COMMON_PROCESS_TITLE_H_
