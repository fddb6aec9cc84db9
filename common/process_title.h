// Process titles: what ps and /proc/PID/cmdline show for this process, and its
// comm (/proc/PID/comm, top, the kernel's messages).
#ifndef FORKPOOL_COMMON_PROCESS_TITLE_H_
#define FORKPOOL_COMMON_PROCESS_TITLE_H_

#include <cstddef>
#include <optional>
#include <string_view>

namespace forkpool {

// Remembers the area that holds main's argument strings, from argv[0] to the
// end of the last argument that follows contiguously, for SetProcessTitle.
// Copies every argument first and points argv[i] (and glibc's
// program_invocation_name) at the copies, so argv stays readable after a title
// overwrites the original area. Call once, first thing in main: before any
// thread starts, and before anything removes arguments from argv
// (InitGoogleTest does; absl::ParseCommandLine does not), which would hide the
// rest of the area. Later calls do nothing.
void SaveArgvForTitle(int argc, char** argv);

// Writes `title` over the saved argument area, cut to fit it (the area's size -
// 1 bytes), and fills the rest with NULs, so /proc/PID/cmdline and ps show the
// title. The title cannot grow past the original arguments (the environment is
// not moved); without SaveArgvForTitle it is not shown anywhere. Sets the comm
// (PR_SET_NAME, 15 bytes at most) to the first 15 bytes of `title`, or of
// `comm` if given; an empty `comm` leaves it alone. Allocates nothing and takes
// no lock, so a process forked from a threaded one may call it; not safe to
// call from two threads at once.
void SetProcessTitle(std::string_view title,
                     std::optional<std::string_view> comm = std::nullopt);

// How many bytes of a title SetProcessTitle can show; 0 before
// SaveArgvForTitle.
size_t ProcessTitleCapacity();

}  // namespace forkpool

#endif  // FORKPOOL_COMMON_PROCESS_TITLE_H_
