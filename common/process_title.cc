// Process titles: overwrite the argv area (as setproctitle does) and
// PR_SET_NAME.
#include "common/process_title.h"

#include <errno.h>  // program_invocation_name (a GNU extension)
#include <sys/prctl.h>

#include <algorithm>
#include <cstring>

namespace forkpool {
namespace {

// Written once by SaveArgvForTitle, before threads exist; plain globals so that
// SetProcessTitle needs no lock (it may run right after fork).
char* g_area = nullptr;
size_t g_area_size = 0;  // including the final NUL

}  // namespace

void SaveArgvForTitle(int argc, char** argv) {
  if (g_area != nullptr || argc <= 0 || argv == nullptr || argv[0] == nullptr)
    return;
  // The kernel lays the argument strings out back to back; stop at the first
  // one that is not where that layout puts it (someone moved it before us).
  char* const start = argv[0];
  char* end = start + std::strlen(start) + 1;
  for (int i = 1; i < argc && argv[i] == end; ++i)
    end += std::strlen(argv[i]) + 1;

  // Copies that live as long as the process: flag parsers, error messages and
  // re-execs may read argv or program_invocation_name after a title replaced
  // them.
  for (int i = 0; i < argc; ++i) {
    if (argv[i] == nullptr) break;
    char* copy = ::strdup(argv[i]);
    if (copy == nullptr)
      return;  // out of memory at start-up: no titles, no harm
    if (i == 0) {
      program_invocation_name = copy;
      char* slash = std::strrchr(copy, '/');
      program_invocation_short_name = slash == nullptr ? copy : slash + 1;
    }
    argv[i] = copy;
  }
  g_area = start;
  g_area_size = static_cast<size_t>(end - start);
}

size_t ProcessTitleCapacity() { return g_area_size == 0 ? 0 : g_area_size - 1; }

void SetProcessTitle(std::string_view title,
                     std::optional<std::string_view> comm) {
  if (g_area != nullptr) {
    const size_t n = std::min(title.size(), g_area_size - 1);
    std::memcpy(g_area, title.data(), n);
    // NULs to the end: with the area's last byte NUL, the kernel shows the
    // whole area (title and padding) as cmdline; a non-NUL last byte would make
    // it read on into the environment.
    std::memset(g_area + n, 0, g_area_size - n);
  }
  const std::string_view name = comm.value_or(title);
  if (name.empty()) return;
  // PR_SET_NAME takes up to 16 bytes with the NUL and cuts longer names itself;
  // copy so that a string_view without a NUL is safe to pass.
  char buf[16] = {};
  std::memcpy(buf, name.data(), std::min(name.size(), sizeof(buf) - 1));
  ::prctl(PR_SET_NAME, buf, 0, 0, 0);
}

}  // namespace forkpool
