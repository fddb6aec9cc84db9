// PoolRegistry implementation.
#include "server/daemon/executor/pool_registry.h"

#include "absl/strings/str_cat.h"
#include "server/daemon/executor/pool_settings.h"
#include "server/daemon/log.h"

namespace forkpool {
namespace {

absl::Status UnknownPool(const std::string& name) {
  return absl::NotFoundError(
      absl::StrCat("unknown pool '", name.empty() ? kDefaultPoolName : name, "'"));
}

}  // namespace

PoolRegistry::PoolRegistry(Clock* clock, TaskBroker* broker, WorkerCensus* census,
                           RegistryOptions options, ExecutorOptions executor_options,
                           LauncherFactory launchers)
    : clock_(clock),
      broker_(broker),
      census_(census),
      options_(std::move(options)),
      executor_options_(executor_options),
      launchers_(std::move(launchers)) {}

std::shared_ptr<PoolExecutor> PoolRegistry::Find(const std::string& name) {
  std::shared_ptr<PoolExecutor> e;
  {
    absl::MutexLock lock(&mu_);
    auto it = pools_.find(name.empty() ? std::string(kDefaultPoolName) : name);
    if (it == pools_.end() || it->second.deleting) return nullptr;
    e = it->second.executor;
  }
  // A pool whose first load failed winds down on its own.
  return e->deleting() ? nullptr : e;
}

std::vector<std::shared_ptr<PoolExecutor>> PoolRegistry::All() {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<PoolExecutor>> all;
  for (const auto& [name, e] : pools_) all.push_back(e.executor);
  return all;
}

void PoolRegistry::Remove(const std::string& name, uint64_t generation) {
  absl::MutexLock lock(&mu_);
  auto it = pools_.find(name);
  if (it != pools_.end() && it->second.executor->generation() == generation) pools_.erase(it);
}

void PoolRegistry::CreatePool(v1::PoolSettings settings, PoolExecutor::CreateDone done) {
  if (settings.libraries().empty()) {
    for (const auto& lib : options_.default_libraries) settings.add_libraries(lib);
  }
  absl::Status valid = NormalizePoolSettings(&settings, options_.max_initargs_bytes);
  if (!valid.ok()) {
    done(valid);
    return;
  }
  std::shared_ptr<PoolExecutor> executor;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) {
      done(absl::UnavailableError("forkpoold is shutting down"));
      return;
    }
    if (auto it = pools_.find(settings.name()); it != pools_.end()) {
      done(absl::AlreadyExistsError(absl::StrCat(
          "pool '", settings.name(), "' already exists",
          it->second.deleting ? " (it is being deleted; try again when it is gone)" : "")));
      return;
    }
    // The cap counts the workers every pool asks for, so that one CreatePool
    // cannot take the machine and a thousand at once are refused, not
    // half-started.
    int64_t in_use = 0;
    for (const auto& [name, e] : pools_) {
      if (!e.deleting) in_use += e.executor->settings().processes();
    }
    if (in_use + settings.processes() > options_.max_workers) {
      done(absl::ResourceExhaustedError(
          absl::StrCat("pool '", settings.name(), "' asks for ", settings.processes(),
                       " workers; forkpoold runs at most ", options_.max_workers,
                       " (--max_workers) and ", in_use, " are taken by other pools")));
      return;
    }
    const uint64_t gen = next_generation_++;
    ExecutorDeps deps;
    deps.clock = clock_;
    deps.broker = broker_;
    deps.launcher = launchers_(settings);
    deps.census = census_;
    deps.request_handler = handler_;
    executor = PoolExecutor::Create(gen, settings, std::move(deps), executor_options_);
    pools_[settings.name()] = Entry{executor, false};
    PoolEntry entry;
    entry.name = settings.name();
    entry.consumer = executor;
    entry.processes = settings.processes();
    entry.task_defaults = settings.task_defaults();
    entry.max_queued = settings.max_queued();
    broker_->AddPool(gen, std::move(entry));
  }
  const std::string name = settings.name();
  const uint64_t gen = executor->generation();
  executor->Start(std::move(done), [this, name, gen] { Remove(name, gen); });
}

absl::StatusOr<v1::PoolInfo> PoolRegistry::ClosePool(const std::string& name) {
  std::shared_ptr<PoolExecutor> e = Find(name);
  if (e == nullptr) return UnknownPool(name);
  return e->Close();
}

absl::StatusOr<v1::PoolInfo> PoolRegistry::TerminatePool(const std::string& name) {
  std::shared_ptr<PoolExecutor> e = Find(name);
  if (e == nullptr) return UnknownPool(name);
  return e->Terminate(absl::StrCat("cancelled: pool '", name, "' was terminated"));
}

absl::Status PoolRegistry::DeletePool(const std::string& name) {
  std::shared_ptr<PoolExecutor> e;
  {
    absl::MutexLock lock(&mu_);
    auto it = pools_.find(name.empty() ? std::string(kDefaultPoolName) : name);
    if (it == pools_.end() || it->second.deleting) return UnknownPool(name);
    e = it->second.executor;
  }
  if (e->deleting()) return UnknownPool(name);
  {
    absl::MutexLock lock(&mu_);
    auto it = pools_.find(name.empty() ? std::string(kDefaultPoolName) : name);
    if (it != pools_.end() && it->second.executor == e) it->second.deleting = true;
  }
  e->Delete();
  return absl::OkStatus();
}

absl::Status PoolRegistry::JoinPool(const std::string& name, std::function<void()> done) {
  std::shared_ptr<PoolExecutor> e = Find(name);
  if (e == nullptr) return UnknownPool(name);
  return e->Join(std::move(done));
}

std::vector<v1::PoolInfo> PoolRegistry::ListPools() {
  std::vector<std::shared_ptr<PoolExecutor>> live;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, e] : pools_) {
      if (!e.deleting) live.push_back(e.executor);
    }
  }
  std::vector<v1::PoolInfo> out;
  for (const auto& e : live) {
    if (e->deleting()) continue;
    out.push_back(e->Info());
    // The list stays small whatever the pools hold; DescribePool shows
    // initargs.
    out.back().mutable_settings()->mutable_initargs()->clear_data();
  }
  return out;
}

absl::StatusOr<v1::PoolInfo> PoolRegistry::DescribePool(const std::string& name) {
  std::shared_ptr<PoolExecutor> e = Find(name);
  if (e == nullptr) return UnknownPool(name);
  return e->Info();
}

bool PoolRegistry::AwaitWorkersReady(const std::string& name, int count, absl::Time deadline) {
  std::shared_ptr<PoolExecutor> e = Find(name);
  return e == nullptr || e->AwaitReady(count, deadline);
}

void PoolRegistry::BeginDrain() {
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
  }
  broker_->BeginDrain();
  for (const auto& e : All()) e->BeginDrain();
}

bool PoolRegistry::AwaitRunning(absl::Time deadline) { return census_->AwaitNoneRunning(deadline); }

void PoolRegistry::KillAll(absl::Time deadline) {
  for (const auto& e : All()) e->KillAll();
  if (!census_->AwaitNoneLive(deadline)) {
    Log("shutdown: ", census_->live(), " workers not reaped in time");
  }
}

void PoolRegistry::CloseHelpers() {
  for (const auto& e : All()) e->CloseHelper();
}

}  // namespace forkpool
