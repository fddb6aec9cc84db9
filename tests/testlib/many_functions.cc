// A task library that registers 20,000 functions, f00000 .. f19999, all the same echo
// (returns its input): a function table far larger than any real library's.
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "forkpool/task.h"

namespace {

constexpr int kFunctions = 20000;

absl::StatusOr<std::string> Echo(forkpool::TaskContext&, std::string_view input) {
  return std::string(input);
}

// The names outlive the table, which points into them; filled once, never resized.
std::vector<std::string>& Names() {
  static std::vector<std::string> names;
  return names;
}

[[maybe_unused]] const bool kRegistered = [] {
  std::vector<std::string>& names = Names();
  names.reserve(kFunctions);
  for (int i = 0; i < kFunctions; ++i) {
    char name[16];
    std::snprintf(name, sizeof(name), "f%05d", i);
    names.emplace_back(name);
  }
  for (const std::string& name : names) {
    forkpool::sdk_internal::Register(name.c_str(), &forkpool::sdk_internal::Trampoline<&Echo>);
  }
  return true;
}();

}  // namespace
