// TaskRegistry implementation: dlopen plus the library's one extern "C" table.
#include "server/worker/task_registry.h"

#include <dlfcn.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace forkpool {

absl::StatusOr<TaskRegistry> TaskRegistry::Load(
    const std::vector<std::string>& libraries) {
  TaskRegistry registry;
  for (const std::string& path : libraries) {
    // RTLD_NOW: a missing symbol is a load error now, not a worker death later.
    void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* err = ::dlerror();
      return absl::FailedPreconditionError(absl::StrCat(
          "task library '", path, "' failed to load: ", err ? err : "unknown error"));
    }
    auto get_table = reinterpret_cast<forkpool_get_task_table_v1_fn>(
        ::dlsym(handle, FORKPOOL_TASK_TABLE_SYMBOL));
    if (get_table == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("task library '", path, "' has no ", FORKPOOL_TASK_TABLE_SYMBOL,
                       " (was it built with forkpool/task.h?)"));
    }
    const forkpool_task_table_v1* table = get_table();
    if (table == nullptr || table->abi_version < FORKPOOL_TASK_ABI_MIN_VERSION ||
        table->abi_version > FORKPOOL_TASK_ABI_VERSION) {
      return absl::FailedPreconditionError(absl::StrCat(
          "task library '", path, "' speaks task ABI ",
          table ? static_cast<int>(table->abi_version) : -1, "; this forkpool speaks ",
          FORKPOOL_TASK_ABI_MIN_VERSION, " to ", FORKPOOL_TASK_ABI_VERSION));
    }
    for (uint32_t i = 0; i < table->count; ++i) {
      const forkpool_task_entry_v1& e = table->entries[i];
      if (e.name == nullptr || e.fn == nullptr) continue;
      auto [it, inserted] = registry.functions_.emplace(e.name, Entry{e.fn, path});
      if (!inserted && it->second.fn != e.fn) {
        return absl::AlreadyExistsError(
            absl::StrCat("function '", e.name, "' is defined twice: in '",
                         it->second.library, "' and in '", path, "'"));
      }
    }
  }
  return registry;
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
