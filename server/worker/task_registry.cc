// TaskRegistry implementation: dlopen plus the library's one extern "C" table.
#include "server/worker/task_registry.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace forkpool {

absl::StatusOr<TaskRegistry> TaskRegistry::Load(const std::vector<std::string>& libraries) {
  TaskRegistry registry;
  for (const std::string& path : libraries) {
    absl::Status s = registry.Add(path);
    if (!s.ok()) return s;
  }
  return registry;
}

absl::Status TaskRegistry::Add(const std::string& path) {
  TaskRegistry& registry = *this;
  {
    // A FIFO or a device would block dlopen's open() (or worse) forever: only a
    // regular file is opened, and without blocking.
    // (A bare name is found by dlopen in the system's library directories, and
    // a missing file gets dlopen's own error.)
    const int fd = path.find('/') == std::string::npos
                       ? -1
                       : ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st {};
    const int r = fd < 0 ? 0 : ::fstat(fd, &st);
    if (fd >= 0) ::close(fd);
    if (fd >= 0 && (r != 0 || !S_ISREG(st.st_mode))) {
      const char* kind = r != 0                 ? "unknown"
                         : S_ISFIFO(st.st_mode) ? "a FIFO"
                         : S_ISDIR(st.st_mode)  ? "a directory"
                         : S_ISCHR(st.st_mode)  ? "a character device"
                         : S_ISBLK(st.st_mode)  ? "a block device"
                         : S_ISSOCK(st.st_mode) ? "a socket"
                                                : "not a file";
      return absl::FailedPreconditionError(absl::StrCat(path, ": not a regular file (", kind, ")"));
    }
    // RTLD_NOW: a missing symbol is a load error now, not a worker death later.
    void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* err = ::dlerror();
      return absl::FailedPreconditionError(
          absl::StrCat("task library '", path, "' failed to load: ", err ? err : "unknown error"));
    }
    auto get_table = reinterpret_cast<forkpool_get_task_table_v1_fn>(
        ::dlsym(handle, FORKPOOL_TASK_TABLE_SYMBOL));
    if (get_table == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("task library '", path, "' has no ",
                                                        FORKPOOL_TASK_TABLE_SYMBOL,
                                                        " (was it built with forkpool/task.h?)"));
    }
    const forkpool_task_table_v1* table = get_table();
    if (table == nullptr || table->abi_version < FORKPOOL_TASK_ABI_MIN_VERSION ||
        table->abi_version > FORKPOOL_TASK_ABI_VERSION) {
      return absl::FailedPreconditionError(
          absl::StrCat("task library '", path, "' speaks task ABI ",
                       table ? static_cast<int>(table->abi_version) : -1, "; this forkpool speaks ",
                       FORKPOOL_TASK_ABI_MIN_VERSION, " to ", FORKPOOL_TASK_ABI_VERSION));
    }
    for (uint32_t i = 0; i < table->count; ++i) {
      const forkpool_task_entry_v1& e = table->entries[i];
      if (e.name == nullptr || e.fn == nullptr) continue;
      auto [it, inserted] = registry.functions_.emplace(e.name, Entry{e.fn, path});
      if (!inserted && it->second.fn != e.fn) {
        return absl::AlreadyExistsError(absl::StrCat("function '", e.name,
                                                     "' is defined twice: in '", it->second.library,
                                                     "' and in '", path, "'"));
      }
    }
  }
  return absl::OkStatus();
}

forkpool_task_fn_v1 TaskRegistry::Find(const std::string& name) const {
  auto it = functions_.find(name);
  return it == functions_.end() ? nullptr : it->second.fn;
}

std::vector<std::string> TaskRegistry::Names() const {
  std::vector<std::string> names;
  names.reserve(functions_.size());
  for (const auto& [name, entry] : functions_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace forkpool
