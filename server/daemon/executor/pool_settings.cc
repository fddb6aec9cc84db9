// Pool settings validation.
#include "server/daemon/executor/pool_settings.h"

#include <unistd.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/daemon/broker/task_options.h"

namespace forkpool {

absl::Status ValidateName(const std::string& what, const std::string& name) {
  if (name.empty() || name.size() > kMaxNameBytes) {
    // Not echoed: it may be megabytes.
    return absl::InvalidArgumentError(absl::StrCat(what, " name of ", name.size(),
                                                   " bytes; it must have 1 to ", kMaxNameBytes,
                                                   " characters"));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " name '", absl::CHexEscape(name),
                       "' may only hold letters, digits, '_', '-' and '.'"));
    }
  }
  // Names become file and directory names (logs, cgroups) and command-line
  // arguments: no "." or "..", nothing an option parser would take for a flag.
  if (name == "." || name == ".." || name[0] == '-') {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " name '", name, "' is refused: a name may not be '.' or '..' nor start with '-'"));
  }
  return absl::OkStatus();
}

std::string StartMethodName(v1::StartMethod method) {
  switch (method) {
    case v1::START_METHOD_SPAWN:
      return "spawn";
    case v1::START_METHOD_FORK:
      return "fork";
    default:
      return "forkserver";
  }
}

absl::Status NormalizePoolSettings(v1::PoolSettings* s, size_t max_initargs_bytes) {
  if (absl::Status st = ValidateName("pool", s->name()); !st.ok()) return st;
  const std::string pool = absl::StrCat("pool '", s->name(), "': ");
  if (s->processes() < 0 || s->processes() > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat(pool, "processes must be 0 (one per CPU) to 4096, not ", s->processes()));
  }
  if (s->processes() == 0) {
    const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    s->set_processes(cpus > 0 ? static_cast<int>(cpus) : 1);
  }
  if (s->max_tasks_per_child() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(pool, "max_tasks_per_child must be 0 (never recycle) or more, not ",
                     s->max_tasks_per_child()));
  }
  if (s->max_queued() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(pool, "max_queued must not be negative, not ", s->max_queued()));
  }
  FORKPOOL_RETURN_IF_ERROR(
      ValidateTaskOptions(s->task_defaults(), absl::StrCat(pool, "task_defaults")));
  if (s->memory_limit_bytes() != 0 && s->memory_limit_bytes() < kMinMemoryLimitBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        pool, "memory_limit_bytes must be 0 (no cap) or at least ", kMinMemoryLimitBytes,
        " (32 MiB: a forkserver worker needs that much address space to run), not ",
        s->memory_limit_bytes()));
  }
  if (s->max_memory_per_child_bytes() != 0 &&
      s->max_memory_per_child_bytes() < kMinMemoryPerChildBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(pool, "max_memory_per_child_bytes must be 0 (never recycle) or at least ",
                     kMinMemoryPerChildBytes,
                     " (16 MiB: below it every worker is replaced after every task), not ",
                     s->max_memory_per_child_bytes()));
  }
  switch (s->start_method()) {
    case v1::START_METHOD_UNSPECIFIED:
      s->set_start_method(v1::START_METHOD_FORKSERVER);
      break;
    case v1::START_METHOD_FORKSERVER:
      break;
    case v1::START_METHOD_FORK:
      return absl::InvalidArgumentError(
          absl::StrCat(pool,
                       "start method 'fork' is refused: forking the multi-threaded daemon can "
                       "deadlock the child (a lock held by another thread at fork time is never "
                       "released); use 'forkserver' (the default) or 'spawn'"));
    case v1::START_METHOD_SPAWN:
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(pool, "unknown start method ", static_cast<int>(s->start_method())));
  }
  if (s->libraries().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(pool, "no task libraries given"));
  }
  if (s->libraries_size() > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat(pool, s->libraries_size(), " task libraries; at most 256"));
  }
  for (const std::string& lib : s->libraries()) {
    if (lib.empty() || lib.size() > 4096 || lib.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(pool, "a task library path must have 1 to 4096 bytes and no NUL"));
    }
    // A relative path would be read against forkpoold's working directory, which the
    // client knows nothing of (a bare name like "libtasks.so" is dlopen's search of the
    // system's library directories, and stays allowed).
    if (lib[0] != '/' && lib.find('/') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(pool, "task library '", lib.substr(0, 200),
                       "' is a relative path; give an absolute one (or a bare library name)"));
    }
  }
  if (s->initargs().data().size() > max_initargs_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        pool, "initargs of ", s->initargs().data().size(), " bytes; at most ", max_initargs_bytes,
        " (--max_initargs_bytes; pass large data through a queue or a file)"));
  }
  if (!s->worker_command().empty()) {
    if (s->start_method() != v1::START_METHOD_SPAWN) {
      return absl::InvalidArgumentError(
          absl::StrCat(pool,
                       "worker_command is for spawn pools; forkserver workers are forked "
                       "from the pool's helper"));
    }
    if (s->worker_command_size() > 256) {
      return absl::InvalidArgumentError(absl::StrCat(
          pool, "worker_command has ", s->worker_command_size(), " arguments; at most 256"));
    }
    if (s->worker_command(0).empty() || s->worker_command(0)[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat(pool, "worker_command[0] must be an absolute path, not '",
                       s->worker_command(0).substr(0, 200), "'"));
    }
    for (const std::string& arg : s->worker_command()) {
      if (arg.size() > 4096 || arg.find('\0') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            pool, "a worker_command argument must have at most 4096 bytes and no NUL"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace forkpool
