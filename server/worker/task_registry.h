// TaskRegistry: the native task functions a pool's libraries register, loaded
// with dlopen by the fork helper and inherited by its forked workers.
#ifndef FORKPOOL_SERVER_WORKER_TASK_REGISTRY_H_
#define FORKPOOL_SERVER_WORKER_TASK_REGISTRY_H_

#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "forkpool/task_abi.h"

namespace forkpool {

// Thread-compatible. Libraries stay loaded for the life of the process.
class TaskRegistry {
 public:
  // Loads each library with dlopen(RTLD_NOW | RTLD_LOCAL) and collects its
  // functions. Errors name the file and dlerror(), or a function defined twice
  // (naming both files).
  static absl::StatusOr<TaskRegistry> Load(const std::vector<std::string>& libraries);
  // Loads one more library the same way (the pool helper reports progress
  // between libraries).
  absl::Status Add(const std::string& path);

  // The function registered as `name`, or nullptr.
  forkpool_task_fn_v1 Find(const std::string& name) const;
  // Every registered name, sorted.
  std::vector<std::string> Names() const;

 private:
  struct Entry {
    forkpool_task_fn_v1 fn;
    std::string library;
  };
  std::unordered_map<std::string, Entry> functions_;
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_WORKER_TASK_REGISTRY_H_
