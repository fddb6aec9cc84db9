// Process titles by overwriting the argv area, as setproctitle does.
#include "common/process_title.h"

#include <sys/prctl.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace forkpool {
namespace {

char* g_area = nullptr;
size_t g_area_size = 0;

}  // namespace

void SaveArgvForTitle(int argc, char** argv) {
  if (argc <= 0 || argv == nullptr || argv[0] == nullptr) return;
  char* end = argv[0] + std::strlen(argv[0]) + 1;
  for (int i = 1; i < argc; ++i) {
    if (argv[i] != end) break;  // not contiguous: stop at what is
    end = argv[i] + std::strlen(argv[i]) + 1;
  }
  g_area = argv[0];
  g_area_size = static_cast<size_t>(end - argv[0]);
}

void SetProcessTitle(std::string_view title, std::string_view comm) {
  if (g_area != nullptr && g_area_size > 1) {
    const size_t n = std::min(title.size(), g_area_size - 1);
    std::memcpy(g_area, title.data(), n);
    std::memset(g_area + n, 0, g_area_size - n);
  }
  char name[16] = {};
  std::memcpy(name, comm.data(), std::min(comm.size(), sizeof(name) - 1));
  ::prctl(PR_SET_NAME, name);
}

}  // namespace forkpool
