// forkpoold: takes the lock, forks the fork helper before any thread exists,
// then serves forkpool.v1 over gRPC on its Unix socket until SIGTERM or SIGINT.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/process_title.h"
#include "common/text_limit.h"
#include "server/daemon/api/pool_service.h"
#include "server/daemon/api/queue_service.h"
#include "server/daemon/api/task_service.h"
#include "server/daemon/broker/memory_task_store.h"
#include "server/daemon/broker/task_broker.h"
#include "server/daemon/executor/pool_registry.h"
#include "server/daemon/executor/pool_settings.h"
#include "server/daemon/executor/worker_census.h"
#include "server/daemon/launch/child_registry.h"
#include "server/daemon/launch/helper_launcher.h"
#include "server/daemon/launch/late_reaper.h"
#include "server/daemon/launch/orphan_reaper.h"
#include "server/daemon/launch/process_util.h"
#include "server/daemon/launch/root_helper_client.h"
#include "server/daemon/lock_file.h"
#include "server/daemon/log.h"
#include "server/daemon/net/io_loop.h"
#include "server/daemon/net/listener.h"
#include "server/daemon/queues/memory_queue_manager.h"
#include "server/daemon/queues/worker_requests.h"
#include "server/helpers/helper_common.h"
#include "server/helpers/root_helper.h"

ABSL_FLAG(std::string, socket, "",
          "Unix socket to serve on (default: /run/forkpool/forkpoold.sock as root, "
          "$XDG_RUNTIME_DIR/forkpool/forkpoold.sock otherwise)");
ABSL_FLAG(int, processes, 0, "workers in the default pool (0: one per CPU)");
ABSL_FLAG(std::vector<std::string>, task_library, {},
          "task libraries the default pool loads, comma-separated (default: the "
          "example library installed beside forkpoold)");
ABSL_FLAG(int, max_tasks_per_child, 0, "recycle default-pool workers after N tasks (0: never)");
ABSL_FLAG(absl::Duration, result_ttl, absl::Hours(1), "how long finished results are kept");
ABSL_FLAG(int64_t, max_result_bytes, int64_t{1} << 30,
          "most bytes of finished results kept; past it the oldest are dropped "
          "before "
          "their TTL (a later Get says they expired)");
ABSL_FLAG(absl::Duration, grace, absl::Seconds(10),
          "on SIGTERM, how long running tasks may take to finish before they "
          "are killed");
ABSL_FLAG(int64_t, max_queued, 1000000, "most pending tasks and queued map items per pool");
ABSL_FLAG(int64_t, max_map_unsent_bytes, 64 << 20,
          "most bytes of results one map may hold for a client that does not read them; past "
          "it the map's chunks wait");
ABSL_FLAG(int64_t, max_client_bytes, int64_t{4} << 30,
          "most bytes clients may make forkpoold hold in all (queued task inputs, kept results, "
          "map inputs and unsent results); past it new work is refused (0: no bound)");
ABSL_FLAG(int64_t, max_results, 1000000,
          "most finished tasks whose results are kept; past it the oldest go before their TTL");
ABSL_FLAG(int, poison_threshold, 3,
          "a task that has killed this many workers fails as a poison task");
ABSL_FLAG(int64_t, max_queue_item_bytes, 4 << 20, "largest item a shared queue accepts");
ABSL_FLAG(int64_t, max_queue_bytes, 256 << 20, "most bytes one shared queue may hold");
ABSL_FLAG(int, max_connections, 1024,
          "most client connections open at once; more are closed at once (0: "
          "no cap)");
ABSL_FLAG(int, max_connections_per_uid, 256,
          "most connections one uid other than root and forkpoold's own may hold open "
          "(0: no cap)");
ABSL_FLAG(int, admin_reserved_connections, -1,
          "of --max_connections, how many only root and forkpoold's own uid may use "
          "(-1: a sixteenth of --max_connections)");
ABSL_FLAG(absl::Duration, handshake_timeout, absl::Seconds(5),
          "a connection that has not sent the HTTP/2 preface and its first SETTINGS frame "
          "by then is closed (inf: never)");
ABSL_FLAG(absl::Duration, idle_timeout, absl::Minutes(10),
          "a connection with no call open for this long is closed (gRPC GOAWAY; a client "
          "reconnects at its next call) (0 or inf: never)");
ABSL_FLAG(int64_t, max_message_bytes, 16 << 20, "largest request a client may send");
ABSL_FLAG(absl::Duration, load_timeout, absl::Seconds(30),
          "a pool whose helper has not loaded its libraries by then fails to "
          "load (its "
          "helper is killed)");
ABSL_FLAG(absl::Duration, start_timeout, absl::Seconds(60),
          "a worker not ready by then (its initializer still runs) is killed");
ABSL_FLAG(absl::Duration, stopped_grace, absl::Seconds(10),
          "a worker stopped (SIGSTOP) longer than this is killed and replaced; "
          "a stopped "
          "worker gets no work meanwhile");
ABSL_FLAG(int, max_workers, 2048, "most workers of all pools together");
ABSL_FLAG(int64_t, max_initargs_bytes, 1 << 20,
          "largest initializer argument a pool may hold (kept with the pool, sent to each "
          "spawned worker)");
ABSL_FLAG(int, max_pools, forkpool::kDefaultMaxPools,
          "most pools at once, the default pool included; CreatePool past it is "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_queues, forkpool::kDefaultMaxQueues,
          "most shared queues at once; CreateQueue past it is RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_blocked_per_stream, forkpool::kDefaultMaxBlockedPerStream,
          "most operations of one queue stream waiting at once (for an item or for room); "
          "one more that would wait is RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_error_bytes, int64_t{forkpool::kDefaultMaxErrorBytes},
          "longest error text of a task or a map item kept and sent (a longer one is cut, "
          "saying how long it was)");
ABSL_FLAG(std::vector<std::string>, env_deny, {},
          "environment variables helpers and workers do not inherit, comma-separated "
          "(systemd's NOTIFY_SOCKET, LISTEN_* and WATCHDOG_* never are)");

namespace forkpool {
namespace {

std::string DefaultSocketPath() {
  if (::geteuid() == 0) return "/run/forkpool/forkpoold.sock";
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && *xdg) {
    return absl::StrCat(xdg, "/forkpool/forkpoold.sock");
  }
  return absl::StrCat("/tmp/forkpool-", ::geteuid(), "/forkpoold.sock");
}

std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::Status MakeDirs(const std::string& dir, mode_t mode) {
  if (dir.empty() || dir == "/" || dir == ".") return absl::OkStatus();
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat("'", dir, "' is not a directory"));
    }
    return absl::OkStatus();
  }
  FORKPOOL_RETURN_IF_ERROR(MakeDirs(DirName(dir), mode));
  if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) {
    return absl::ErrnoToStatus(errno, absl::StrCat("mkdir(", dir, ")"));
  }
  return absl::OkStatus();
}

// The example task library beside the binary (build tree) or in
// ../lib/forkpool.
std::string DefaultTaskLibrary() {
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return "";
  const std::string dir = DirName(std::string(exe, static_cast<size_t>(n)));
  for (const std::string& candidate :
       {absl::StrCat(dir, "/libforkpool_example_tasks.so"),
        absl::StrCat(dir, "/../lib/forkpool/libforkpool_example_tasks.so")}) {
    if (::access(candidate.c_str(), R_OK) == 0) return candidate;
  }
  return "";
}

// Raises the soft fd limit to the hard one; returns the soft limit it had.
uint64_t RaiseFileLimit() {
  rlimit lim;
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return 0;
  const uint64_t original = lim.rlim_cur;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  return original;
}

// forkpool-worker beside forkpoold: the default worker program of spawn pools.
std::string WorkerProgram() {
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return "forkpool-worker";
  return absl::StrCat(DirName(std::string(exe, static_cast<size_t>(n))), "/forkpool-worker");
}

// True once every child forkpoold owns has been reaped (workers by KillAll, helpers by
// their channels on the loop thread).
bool HelperPidsGone(const ChildRegistry& children) { return children.empty(); }

[[noreturn]] void Fail(const std::string& what, const absl::Status& status) {
  Log(what, ": ", status.message());
  std::exit(1);
}

// The Listener's options from the flags; InvalidArgument for a reserve that leaves
// other users nothing or a handshake timeout that is not positive.
absl::StatusOr<ListenerOptions> ListenerOptionsFromFlags() {
  ListenerOptions options;
  options.limits.max_connections = std::max(0, absl::GetFlag(FLAGS_max_connections));
  options.limits.max_per_uid = std::max(0, absl::GetFlag(FLAGS_max_connections_per_uid));
  const int reserved = absl::GetFlag(FLAGS_admin_reserved_connections);
  options.limits.admin_reserved = reserved < 0 ? options.limits.max_connections / 16 : reserved;
  if (options.limits.max_connections > 0 &&
      options.limits.admin_reserved >= options.limits.max_connections) {
    return absl::InvalidArgumentError(
        absl::StrCat("--admin_reserved_connections=", options.limits.admin_reserved,
                     " leaves no connection for other users: it must be below --max_connections=",
                     options.limits.max_connections));
  }
  options.limits.daemon_uid = ::geteuid();
  options.handshake_timeout = absl::GetFlag(FLAGS_handshake_timeout);
  if (options.handshake_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--handshake_timeout must be positive (or inf), not ",
                     absl::FormatDuration(options.handshake_timeout)));
  }
  return options;
}

int Serve() {
  const absl::Time started = absl::Now();
  absl::StatusOr<ListenerOptions> listener_flags = ListenerOptionsFromFlags();
  if (!listener_flags.ok()) Fail("bad flags", listener_flags.status());
  const ListenerOptions listener_options = *listener_flags;
  std::string socket_path = absl::GetFlag(FLAGS_socket);
  if (socket_path.empty()) socket_path = DefaultSocketPath();
  const bool system_dir = socket_path.rfind("/run/", 0) == 0;
  if (absl::Status s = MakeDirs(DirName(socket_path), system_dir ? 0755 : 0700); !s.ok()) {
    Fail("creating the socket directory", s);
  }
  // The lock comes before the socket: gRPC-style rebinding would steal a live
  // daemon's socket path.
  absl::StatusOr<LockFile> lock = LockFile::Acquire(socket_path + ".lock");
  if (!lock.ok()) Fail("cannot start", lock.status());
  const uint64_t nofile_soft_limit = RaiseFileLimit();
  // What escapes a worker (fork, setsid) is re-parented to forkpoold and ended
  // here, rather than left to PID 1.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listener::Bind(socket_path, 0660);
  if (!listener.ok()) Fail("cannot listen", listener.status());

  // Still single-threaded: the root helper must be forked before anything
  // starts a thread. It loads nothing; every pool gets a helper of its own from
  // it.
  const std::vector<std::string> env_deny = absl::GetFlag(FLAGS_env_deny);
  absl::StatusOr<HelperProcess> helper = ForkRootHelper(env_deny);
  if (!helper.ok()) Fail("cannot start the root helper", helper.status());

  // Every thread created from here on inherits this mask; main waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::vector<std::string> libraries = absl::GetFlag(FLAGS_task_library);
  // Relative to where forkpoold was started, as the user meant.
  for (std::string& lib : libraries) {
    if (!lib.empty() && lib[0] != '/' && lib.find('/') != std::string::npos) {
      char cwd[4096];
      if (::getcwd(cwd, sizeof(cwd)) != nullptr) lib = absl::StrCat(cwd, "/", lib);
    }
  }
  if (libraries.empty()) {
    const std::string lib = DefaultTaskLibrary();
    if (lib.empty()) {
      Fail("cannot start the default pool",
           absl::NotFoundError("no --task_library given and the example library "
                               "libforkpool_example_tasks.so is not installed "
                               "beside forkpoold"));
    }
    libraries.push_back(lib);
  }
  absl::StatusOr<std::unique_ptr<IoLoop>> loop = IoLoop::Create();
  if (!loop.ok()) Fail("cannot start the I/O loop", loop.status());
  BrokerOptions broker_options;
  broker_options.result_ttl = absl::GetFlag(FLAGS_result_ttl);
  broker_options.max_result_bytes =
      static_cast<size_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_max_result_bytes)));
  broker_options.max_results =
      static_cast<size_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_max_results)));
  broker_options.max_queued_per_pool = absl::GetFlag(FLAGS_max_queued);
  broker_options.max_error_bytes =
      static_cast<size_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_max_error_bytes)));
  broker_options.poison_threshold = std::max(1, absl::GetFlag(FLAGS_poison_threshold));
  broker_options.max_map_unsent_bytes =
      static_cast<size_t>(std::max<int64_t>(1 << 20, absl::GetFlag(FLAGS_max_map_unsent_bytes)));
  MemoryBudget client_bytes(
      static_cast<uint64_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_max_client_bytes))));
  TaskBroker broker(loop->get(), broker_options, std::make_unique<MemoryTaskStore>(),
                    &client_bytes);
  ChildRegistry children;
  auto root_helper = std::make_unique<RootHelperClient>(loop->get(), &children, env_deny);
  if (absl::Status s = root_helper->Start(*std::move(helper)); !s.ok()) {
    Fail("cannot watch the root helper", s);
  }
  LateReaper late_reaper(loop->get(), &children);
  HelperLauncherDeps launcher_deps{loop->get(), root_helper.get(), &children, &late_reaper};
  HelperLauncherOptions launcher_options;
  launcher_options.load_timeout = absl::GetFlag(FLAGS_load_timeout);
  launcher_options.nofile_soft_limit = nofile_soft_limit;
  launcher_options.worker_program = WorkerProgram();
  RegistryOptions registry_options;
  registry_options.default_libraries = libraries;
  registry_options.max_workers = std::max(1, absl::GetFlag(FLAGS_max_workers));
  registry_options.max_initargs_bytes =
      static_cast<size_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_max_initargs_bytes)));
  ExecutorOptions executor_options;
  executor_options.start_timeout = absl::GetFlag(FLAGS_start_timeout);
  executor_options.stopped_grace = absl::GetFlag(FLAGS_stopped_grace);
  executor_options.max_error_bytes = broker_options.max_error_bytes;
  WorkerCensus census;
  PoolRegistry pools(loop->get(), &broker, &census, registry_options, executor_options,
                     [&](const v1::PoolSettings& settings) -> std::shared_ptr<WorkerLauncher> {
                       return HelperLauncher::Create(launcher_deps, settings, launcher_options);
                     });
  QueueLimits queue_limits;
  queue_limits.max_queues = absl::GetFlag(FLAGS_max_queues);
  queue_limits.max_item_bytes = absl::GetFlag(FLAGS_max_queue_item_bytes);
  queue_limits.max_queue_bytes = absl::GetFlag(FLAGS_max_queue_bytes);
  MemoryQueueManager queues(loop->get(), queue_limits, &client_bytes);
  pools.SetWorkerRequestHandler(MakeWorkerRequestHandler(&queues));
  OrphanReaper orphans(loop->get(), &children);
  orphans.Start();
  (*loop)->Start();

  v1::PoolSettings settings;
  settings.set_name(kDefaultPoolName);
  settings.set_processes(absl::GetFlag(FLAGS_processes));
  settings.set_max_tasks_per_child(absl::GetFlag(FLAGS_max_tasks_per_child));
  for (const auto& lib : libraries) settings.add_libraries(lib);
  absl::Notification loaded;
  absl::Status pool_status;
  v1::PoolInfo pool_info;
  pools.CreatePool(settings, [&](absl::StatusOr<v1::PoolInfo> info) {
    pool_status = info.status();
    if (info.ok()) pool_info = *info;
    loaded.Notify();
  });
  loaded.WaitForNotification();
  if (!pool_status.ok()) Fail("cannot start the default pool", pool_status);

  TaskService task_service(&broker, loop->get());
  PoolService pool_service(&pools, loop->get(), absl::GetFlag(FLAGS_max_pools));
  PeerRegistry peers;
  QueueService queue_service(&queues, &peers, absl::GetFlag(FLAGS_max_blocked_per_stream));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.RegisterService(&task_service);
  builder.RegisterService(&pool_service);
  builder.RegisterService(&queue_service);
  builder.SetMaxReceiveMessageSize(static_cast<int>(absl::GetFlag(FLAGS_max_message_bytes)));
  // gRPC's grpc.server_handshake_timeout_ms does not apply to fds given to
  // AddInsecureChannelFromFd: the Listener's HandshakeGate times the handshake.
  // grpc.max_connection_idle_ms does apply to them (checked with gRPC 1.51: a
  // GOAWAY, then the fd closes) and counts open calls, so a connection waiting in a
  // long Get or queue get is not idle.
  const absl::Duration idle_timeout = absl::GetFlag(FLAGS_idle_timeout);
  if (idle_timeout > absl::ZeroDuration() && idle_timeout != absl::InfiniteDuration()) {
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_IDLE_MS,
        static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(idle_timeout), INT32_MAX)));
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) Fail("cannot start the gRPC server", absl::InternalError("BuildAndStart failed"));
  server->GetHealthCheckService()->SetServingStatus(true);
  if (absl::Status s = (*listener)->Start(loop->get(), server.get(), listener_options, &peers);
      !s.ok()) {
    Fail("cannot accept connections", s);
  }
  Log("serving on unix:", socket_path, " (pid ", ::getpid(), ", root helper pid ",
      root_helper->pid(), ", default pool's helper pid ", pool_info.helper_pid(),
      ", default pool: ", pool_info.settings().processes(), " workers)");
  // Under systemd (Type=notify); a no-op without NOTIFY_SOCKET.
  sd_notifyf(0, "READY=1\nMAINPID=%d\nSTATUS=serving on unix:%s", static_cast<int>(::getpid()),
             socket_path.c_str());

  int sig = 0;
  while (::sigwait(&stop_signals, &sig) == 0 && sig == SIGHUP) {
    Log("SIGHUP: configuration reload is not supported yet; ignoring");
  }
  Log("received ", SignalName(sig), "; draining (grace ",
      absl::FormatDuration(absl::GetFlag(FLAGS_grace)), ")");
  (void)started;

  // Drain: say NOT_SERVING, refuse new work, let running tasks finish in the
  // grace period, kill what is left, then stop gRPC, the helper and the loop,
  // in that order.
  sd_notify(0, "STOPPING=1\nSTATUS=draining");
  server->GetHealthCheckService()->SetServingStatus(false);
  const absl::Time drain_start = absl::Now();
  pools.BeginDrain();
  if (!pools.AwaitRunning(absl::Now() + absl::GetFlag(FLAGS_grace))) {
    Log("grace period over; killing the tasks still running");
  }
  const absl::Time drained = absl::Now();
  pools.KillAll(absl::Now() + absl::Seconds(5));
  (*listener)->Stop();
  const absl::Time killed = absl::Now();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server->Wait();
  const absl::Time grpc_stopped = absl::Now();
  pools.CloseHelpers();
  root_helper->Stop();
  // Helpers leave on EOF and the loop reaps them; what is left dies with
  // forkpoold (PR_SET_PDEATHSIG).
  const absl::Time helpers_deadline = absl::Now() + absl::Seconds(2);
  while (absl::Now() < helpers_deadline && !HelperPidsGone(children)) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  (*loop)->Stop();
  Log("shutdown: tasks drained in ", absl::FormatDuration(drained - drain_start),
      ", workers stopped in ", absl::FormatDuration(killed - drained), ", gRPC stopped in ",
      absl::FormatDuration(grpc_stopped - killed), ", the rest in ",
      absl::FormatDuration(absl::Now() - grpc_stopped));
  Log("stopped");
  // Every call, worker and the helper are over, and nothing is kept on disk, so
  // the process leaves without destroying the server: ~Server (grpc_shutdown)
  // joins gRPC's executor threads, and after a busy stream one of them can sit
  // in epoll_wait for about 10 s before it notices (measured with gRPC 1.51:
  // "the rest in 9.84s").
  std::fflush(nullptr);
  std::_Exit(0);
}

}  // namespace
}  // namespace forkpool

int main(int argc, char** argv) {
  forkpool::SaveArgvForTitle(argc, argv);
  // A root helper restarted by fork+exec after a crash
  // (RootHelperClient::Respawn).
  if (argc >= 3 && std::string(argv[1]) == forkpool::kRootHelperModeFlag) {
    const pid_t parent = static_cast<pid_t>(std::atoi(argv[2]));
    std::vector<std::string> deny;
    if (argc >= 4) deny = absl::StrSplit(argv[3], ',', absl::SkipEmpty());
    forkpool::RunRootHelper(forkpool::UniqueFd(forkpool::kHelperControlFd), parent, deny);
  }
  absl::SetProgramUsageMessage(
      "forkpoold: process pools as a service.\n"
      "  forkpoold [--socket PATH] [--processes N] [--task_library LIB,...]");
  absl::ParseCommandLine(argc, argv);
  // Debian's Abseil keeps mutex deadlock detection on (a cycle graph updated on
  // every lock): measurable on the map path and of no use in production.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return forkpool::Serve();
}
