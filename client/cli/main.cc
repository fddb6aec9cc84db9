// forkpool: the command-line client of forkpoold, built on the C++ client library.
//
// Usage: forkpool [--address ADDR] COMMAND ...
//   apply  [--pool P] [--time-limit S] FUNCTION INPUT   run a task, print its output
//   submit [--pool P] [--request-id ID] FUNCTION INPUT  submit a task, print its id
//   get    ID [--timeout S]                             print a task's output
//   wait   ID... [--any] [--timeout S]                  wait for tasks to end
//   cancel ID                                           cancel a task
//   pools  [--json]                                     list pools and workers
//   health                                              check the daemon answers
//   map    [--pool P] [--chunksize N] [--unordered] [--input FILE] FUNCTION
//                                                       one input per line in, one output
//                                                       per line out, streamed
//   pool   create|delete|describe|close|join|terminate NAME ...   manage pools
//   queue  create NAME [--maxsize N] [--exist-ok]      create a shared queue
//   queue  put NAME ITEM... [--timeout S]              put items (all or none)
//   queue  get NAME [-n N] [--timeout S]               print up to N items, one a line
//   queue  size NAME | ls [--json] | delete NAME       inspect and delete queues
//
// Address: --address, else $FORKPOOL_ADDRESS, else the first of
// $XDG_RUNTIME_DIR/forkpool/forkpoold.sock and /tmp/forkpool-$UID/forkpoold.sock that
// exists, else /run/forkpool/forkpoold.sock.
//
// Exit codes (also in docs/cli.md and docs/errors.md):
//   0  success
//   1  the task ran and did not succeed (FAILED, WORKER_LOST, CANCELLED, TIMED_OUT,
//      EXPIRED); stderr says "task <id> failed: <its error>"
//   2  not ready within --timeout (get, wait); the task keeps running; for queue
//      get / put: the queue stayed empty / full for --timeout
//   3  usage error (unknown command or option, missing or malformed argument)
//   4  connection or RPC error (no daemon, NOT_FOUND, INVALID_ARGUMENT, ...); stderr
//      has the daemon's message, e.g. "pool 'default' has no function 'sqaure'"
#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/cli/line_io.h"
#include "forkpool/client.h"

namespace forkpool {
namespace {

enum ExitCode : int {
  kExitOk = 0,
  kExitTaskFailed = 1,
  kExitNotReady = 2,
  kExitUsage = 3,
  kExitRpcError = 4,
};

// The exit code for a non-OK status of the client library.
int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  if (TaskResultFromStatus(status).has_value()) return kExitTaskFailed;
  return kExitRpcError;
}

int Fail(const absl::Status& status) {
  std::cerr << "forkpool: " << status.message() << "\n";
  return ExitCodeFor(status);
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Connects to --address, else $FORKPOOL_ADDRESS, else to the first of the usual
// socket paths that exists (/run/forkpool/forkpoold.sock when none does). The error
// names every address tried and every path looked at.
absl::StatusOr<std::unique_ptr<Client>> ConnectAny(const std::string& flag) {
  if (!flag.empty()) return Client::Connect(flag);
  if (const char* env = std::getenv("FORKPOOL_ADDRESS"); env != nullptr && *env != '\0') {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(env);
    if (client.ok()) return client;
    return absl::Status(client.status().code(),
                        absl::StrCat(client.status().message(), " (from $FORKPOOL_ADDRESS)"));
  }
  std::vector<std::string> looked_at;
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0') {
    looked_at.push_back(absl::StrCat(xdg, "/forkpool/forkpoold.sock"));
  }
  looked_at.push_back(absl::StrCat("/tmp/forkpool-", ::geteuid(), "/forkpoold.sock"));
  looked_at.push_back("/run/forkpool/forkpoold.sock");
  std::vector<std::string> tried;
  for (const std::string& path : looked_at) {
    if (Exists(path)) tried.push_back(path);
  }
  if (tried.empty()) tried.push_back(looked_at.back());
  std::vector<std::string> errors;
  for (const std::string& address : tried) {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(address);
    if (client.ok()) return client;
    errors.push_back(std::string(client.status().message()));
  }
  return absl::UnavailableError(absl::StrCat(
      absl::StrJoin(errors, "; "), " (tried ", absl::StrJoin(tried, ", "), "; looked for ",
      absl::StrJoin(looked_at, ", "), "; set --address or FORKPOOL_ADDRESS)"));
}

// Seconds as a Duration; nullopt when the flag was not given (negative is rejected by
// the option's check).
std::optional<absl::Duration> Seconds(const CLI::Option* option, double seconds) {
  if (option->count() == 0) return std::nullopt;
  return absl::Seconds(seconds);
}

void PrintOutput(const std::string& output) {
  std::cout << output;
  if (output.empty() || output.back() != '\n') std::cout << "\n";
  std::cout.flush();
}

std::string WorkerStateName(v1::WorkerState state) {
  const std::string& full = v1::WorkerState_Name(state);
  constexpr absl::string_view kPrefix = "WORKER_STATE_";
  if (absl::string_view(full).substr(0, kPrefix.size()) == kPrefix) {
    return full.substr(kPrefix.size());
  }
  return full.empty() ? absl::StrCat(static_cast<int>(state)) : full;
}

void PrintPoolTable(const v1::ListPoolsResponse& pools) {
  std::cout << absl::StrFormat("%-16s %7s %5s %5s %7s %9s %7s\n", "POOL", "WORKERS", "IDLE", "BUSY",
                               "QUEUED", "DONE", "FAILED");
  for (const v1::PoolInfo& pool : pools.pools()) {
    std::cout << absl::StrFormat("%-16s %7d %5d %5d %7d %9d %7d%s\n", pool.settings().name(),
                                 pool.workers_size(), pool.idle(), pool.busy(), pool.queued(),
                                 pool.tasks_done(), pool.tasks_failed(),
                                 pool.closed() ? "  (closed)" : "");
    for (const v1::WorkerInfo& w : pool.workers()) {
      std::cout << absl::StrFormat("  worker %-3d pid %-8d %-9s tasks %-6d %s\n", w.index(),
                                   w.pid(), WorkerStateName(w.state()), w.tasks_done(),
                                   w.task_id());
    }
    if (!pool.last_error().empty()) {
      std::cout << "  last error: " << pool.last_error() << "\n";
    }
  }
}

// A progress line on stderr, redrawn at most every 100 ms: done/total (or done of sent
// while the input is still being read), rate and, once the total is known, an ETA.
class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled), start_(absl::Now()) {}

  void Update(const MapResults& results, bool force = false) {
    if (!enabled_) return;
    const absl::Time now = absl::Now();
    if (!force && now - last_ < absl::Milliseconds(100)) return;
    last_ = now;
    const uint64_t done = results.done(), total = results.total(), sent = results.sent();
    const double seconds = absl::ToDoubleSeconds(now - start_);
    const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
    std::string line;
    if (total > 0) {
      const int width = 30;
      const int filled = static_cast<int>(width * static_cast<double>(done) / total);
      std::string eta = "?";
      if (rate > 0) eta = absl::StrFormat("%.0fs", static_cast<double>(total - done) / rate);
      line = absl::StrFormat("[%s%s] %d/%d  %.0f/s  ETA %s", std::string(filled, '#'),
                             std::string(width - filled, '.'), done, total, rate, eta);
    } else {
      line = absl::StrFormat("%d done, %d sent  %.0f/s", done, sent, rate);
    }
    std::cerr << "\r\033[K" << line << std::flush;
    drawn_ = true;
  }

  // Erases the line.
  void Clear() {
    if (enabled_ && drawn_) std::cerr << "\r\033[K" << std::flush;
    drawn_ = false;
  }

 private:
  const bool enabled_;
  const absl::Time start_;
  absl::Time last_ = absl::InfinitePast();
  bool drawn_ = false;
};

// `forkpool map`: streams the lines of `input_fd` through MapStream and prints each
// output on a line of its own as it arrives. Ordered: a failed item prints an empty line
// in its place (so output line i always belongs to input line i); unordered: nothing.
// Every failure also prints "forkpool: item <i> failed: ..." on stderr (i counts input
// lines from 0). Output is written whenever the results received so far are printed.
int RunMap(const Pool& pool, const std::string& function, int input_fd, const MapOptions& options) {
  auto lines = std::make_shared<cli::LineReader>(input_fd);
  InputSource source = [lines]() { return lines->Next(); };
  MapResults results = pool.Imap(function, std::move(source), options);
  cli::OutputBuffer out(STDOUT_FILENO);
  auto flush = [&out] {
    if (absl::Status s = out.Flush(); !s.ok()) {
      std::cerr << "forkpool: " << s.message() << "\n";
      std::_Exit(kExitRpcError);
    }
  };
  Progress progress(::isatty(STDERR_FILENO) == 1);
  uint64_t failed = 0;
  while (true) {
    absl::StatusOr<std::optional<MapItem>> next = results.Next();
    if (!next.ok()) {
      flush();
      progress.Clear();
      std::cerr << "forkpool: " << next.status().message() << "\n";
      std::cerr.flush();
      // The input thread may be blocked reading stdin; do not wait for it.
      std::_Exit(kExitRpcError);
    }
    if (!next->has_value()) break;
    const MapItem& item = **next;
    if (item.output.ok()) {
      out.AddLine(*item.output);
    } else {
      ++failed;
      if (options.ordered) out.AddLine("");
      flush();
      progress.Clear();
      std::cerr << "forkpool: item " << item.index << " failed: " << item.output.status().message()
                << "\n";
    }
    if (!results.HasPending()) flush();  // lines leave as results come
    progress.Update(results);
  }
  flush();
  progress.Clear();
  if (!lines->status().ok()) {
    // The map ended early because the input did; say so rather than pass it off as done.
    std::cerr << "forkpool: " << lines->status().message() << "\n";
    return kExitUsage;
  }
  if (failed > 0) {
    std::cerr << "forkpool: " << failed << " of " << results.done() << " items failed\n";
    return kExitTaskFailed;
  }
  return kExitOk;
}

// Prints `message` as JSON (proto field names, every field); false when it cannot.
bool PrintJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string text;
  const auto status = google::protobuf::util::MessageToJsonString(message, &text, options);
  if (!status.ok()) {
    std::cerr << "forkpool: cannot print JSON: " << status.ToString() << "\n";
    return false;
  }
  std::cout << text;
  if (text.empty() || text.back() != '\n') std::cout << "\n";
  return true;
}

void PrintQueueTable(const std::vector<v1::QueueInfo>& queues) {
  std::cout << absl::StrFormat("%-24s %8s %8s %7s %8s %8s %10s %9s\n", "QUEUE", "MAXSIZE", "SIZE",
                               "LEASED", "GETTERS", "PUTTERS", "BYTES", "REQUEUED");
  for (const v1::QueueInfo& q : queues) {
    std::cout << absl::StrFormat("%-24s %8d %8d %7d %8d %8d %10d %9d\n", q.name(), q.maxsize(),
                                 q.size(), q.leased(), q.waiting_getters(), q.waiting_putters(),
                                 q.bytes(), q.requeued());
  }
  std::cout.flush();
}

// Arguments of `forkpool queue ...`.
struct QueueArgs {
  std::string name;
  int64_t maxsize = 0;
  bool exist_ok = false;
  std::vector<std::string> items;
  int count = 1;
  std::optional<absl::Duration> timeout;
  bool json = false;
};

int RunQueuePut(const Client& c, const QueueArgs& a) {
  absl::Status s = c.queue(a.name).PutMany(a.items, a.timeout);
  if (IsQueueFull(s)) {
    std::cerr << "forkpool: " << s.message() << "\n";
    return kExitNotReady;
  }
  if (!s.ok()) return Fail(s);
  return kExitOk;
}

int RunQueueGet(const Client& c, const QueueArgs& a) {
  absl::StatusOr<std::vector<std::string>> items = c.queue(a.name).GetMany(a.count, a.timeout);
  if (!items.ok()) {
    if (IsQueueEmpty(items.status())) {
      std::cerr << "forkpool: " << items.status().message() << "\n";
      return kExitNotReady;
    }
    return Fail(items.status());
  }
  for (const std::string& item : *items) PrintOutput(item);
  return kExitOk;
}

void PrintPool(const v1::PoolInfo& info) {
  v1::ListPoolsResponse one;
  *one.add_pools() = info;
  PrintPoolTable(one);
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{"forkpool: run tasks in the process pools of forkpoold", "forkpool"};
  app.require_subcommand(1);
  std::string address;
  app.add_option("--address", address,
                 "forkpoold address: unix:/path, /path or host:port (default: "
                 "$FORKPOOL_ADDRESS, then the usual socket paths)");
  app.footer(
      "Exit codes: 0 success, 1 task did not succeed, 2 not ready within --timeout, "
      "3 usage error, 4 connection or RPC error.");
  const auto non_negative = CLI::Range(0.0, 1e12);

  std::string pool = "default", function, input, request_id, task_id;
  std::vector<std::string> task_ids;
  double timeout = 0, time_limit = 0;
  bool any = false, json = false;

  CLI::App* apply = app.add_subcommand("apply", "run FUNCTION on INPUT and print its output");
  apply->add_option("--pool", pool, "pool name")->capture_default_str();
  CLI::Option* apply_limit =
      apply->add_option("--time-limit", time_limit, "hard time limit in seconds")
          ->check(non_negative);
  apply->add_option("FUNCTION", function, "function name")->required();
  apply->add_option("INPUT", input, "the input (text)")->required();

  CLI::App* submit = app.add_subcommand("submit", "submit FUNCTION on INPUT; print the task id");
  submit->add_option("--pool", pool, "pool name")->capture_default_str();
  submit->add_option("--request-id", request_id, "idempotency key");
  CLI::Option* submit_limit =
      submit->add_option("--time-limit", time_limit, "hard time limit in seconds")
          ->check(non_negative);
  submit->add_option("FUNCTION", function, "function name")->required();
  submit->add_option("INPUT", input, "the input (text)")->required();

  CLI::App* get = app.add_subcommand("get", "print a task's output, waiting for it to end");
  get->add_option("ID", task_id, "task id")->required();
  CLI::Option* get_timeout =
      get->add_option("--timeout", timeout, "seconds to wait (default: until it ends)")
          ->check(non_negative);

  CLI::App* wait = app.add_subcommand("wait", "wait until all (or --any) of the tasks end");
  wait->add_option("ID", task_ids, "task ids")->required();
  wait->add_flag("--any", any, "return when the first task ends");
  CLI::Option* wait_timeout =
      wait->add_option("--timeout", timeout, "seconds to wait (default: until done)")
          ->check(non_negative);

  CLI::App* cancel = app.add_subcommand("cancel", "cancel a task");
  cancel->add_option("ID", task_id, "task id")->required();

  CLI::App* pools = app.add_subcommand("pools", "list pools, their workers and counts");
  pools->add_flag("--json", json, "print the ListPools answer as JSON");

  CLI::App* health = app.add_subcommand("health", "check that the daemon is serving");

  uint32_t chunksize = 0;
  bool unordered = false;
  std::string input_file;
  CLI::App* map = app.add_subcommand(
      "map", "apply FUNCTION to each line of stdin (or --input), one output line each");
  map->add_option("--pool", pool, "pool name")->capture_default_str();
  map->add_option("--chunksize", chunksize, "items per chunk (0: chosen by the daemon)");
  map->add_flag("--unordered", unordered, "print outputs as they complete");
  map->add_option("--input", input_file, "read inputs from FILE instead of stdin");
  map->add_option("FUNCTION", function, "function name")->required();

  CLI::App* pool_cmd = app.add_subcommand("pool", "create, inspect and stop pools");
  pool_cmd->require_subcommand(1);
  std::string pool_name;
  int processes = 0, max_tasks_per_child = 0;
  std::string start_method = "forkserver", initializer, initargs;
  std::vector<std::string> libraries, worker_command;
  CLI::App* pool_create = pool_cmd->add_subcommand("create", "create a pool");
  pool_create->add_option("NAME", pool_name, "pool name")->required();
  pool_create->add_option("--processes", processes, "workers (0: the number of CPUs)")
      ->check(CLI::NonNegativeNumber);
  pool_create->add_option("--start-method", start_method, "forkserver or spawn")
      ->check(CLI::IsMember({"forkserver", "spawn"}))
      ->capture_default_str();
  pool_create->add_option("--library", libraries, "task library to load (repeatable)");
  pool_create->add_option("--worker-command", worker_command,
                          "spawn pools: the worker program and its arguments (repeat for each "
                          "argument; default: forkpool-worker)");
  pool_create
      ->add_option("--max-tasks-per-child", max_tasks_per_child,
                   "recycle a worker after N tasks (0: never)")
      ->check(CLI::NonNegativeNumber);
  CLI::Option* initializer_opt =
      pool_create->add_option("--initializer", initializer, "function run once per worker");
  pool_create->add_option("--initargs", initargs, "the initializer's argument (text)")
      ->needs(initializer_opt);
  CLI::App* pool_delete = pool_cmd->add_subcommand("delete", "delete a pool");
  CLI::App* pool_describe = pool_cmd->add_subcommand("describe", "show a pool and its workers");
  CLI::App* pool_close = pool_cmd->add_subcommand("close", "accept no new work");
  CLI::App* pool_join =
      pool_cmd->add_subcommand("join", "wait until a closed pool has no work and no workers");
  CLI::Option* join_timeout =
      pool_join->add_option("--timeout", timeout, "seconds to wait (default: until joined)")
          ->check(non_negative);
  CLI::App* pool_terminate =
      pool_cmd->add_subcommand("terminate", "cancel the pool's work and kill its workers");
  for (CLI::App* sub : {pool_delete, pool_describe, pool_close, pool_join, pool_terminate}) {
    sub->add_option("NAME", pool_name, "pool name")->required();
  }

  CLI::App* queue_cmd = app.add_subcommand("queue", "create, use and delete shared queues");
  queue_cmd->require_subcommand(1);
  QueueArgs qa;
  double queue_timeout = 0;
  CLI::App* queue_create = queue_cmd->add_subcommand("create", "create a shared queue");
  queue_create->add_option("--maxsize", qa.maxsize, "most items (0: unbounded)")
      ->check(CLI::NonNegativeNumber);
  queue_create->add_flag("--exist-ok", qa.exist_ok, "succeed if it exists with the same maxsize");
  CLI::App* queue_put =
      queue_cmd->add_subcommand("put", "put ITEMs in order (all or none), waiting for room");
  CLI::Option* queue_put_timeout =
      queue_put
          ->add_option("--timeout", queue_timeout, "seconds to wait for room (default: no limit)")
          ->check(non_negative);
  CLI::App* queue_get =
      queue_cmd->add_subcommand("get", "take up to N items and print one per line");
  queue_get->add_option("-n,--count", qa.count, "most items to take")->check(CLI::Range(1, 10000));
  CLI::Option* queue_get_timeout =
      queue_get
          ->add_option("--timeout", queue_timeout,
                       "seconds to wait for an item (default: no limit)")
          ->check(non_negative);
  CLI::App* queue_size = queue_cmd->add_subcommand("size", "print the number of queued items");
  CLI::App* queue_ls = queue_cmd->add_subcommand("ls", "list queues and their counters");
  queue_ls->add_flag("--json", qa.json, "print the ListQueues answer as JSON");
  CLI::App* queue_delete =
      queue_cmd->add_subcommand("delete", "delete a queue; its blocked calls fail");
  for (CLI::App* sub : {queue_create, queue_put, queue_get, queue_size, queue_delete}) {
    sub->add_option("NAME", qa.name, "queue name")->required();
  }
  queue_put->add_option("ITEM", qa.items, "items (text)")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }

  absl::StatusOr<std::unique_ptr<Client>> client = ConnectAny(address);
  if (!client.ok()) return Fail(client.status());
  Client& c = **client;

  if (apply->parsed()) {
    ApplyOptions options;
    options.time_limit = Seconds(apply_limit, time_limit);
    absl::StatusOr<std::string> out = c.pool(pool).Apply(function, input, options);
    if (!out.ok()) return Fail(out.status());
    PrintOutput(*out);
    return kExitOk;
  }
  if (submit->parsed()) {
    ApplyOptions options;
    options.request_id = request_id;
    options.time_limit = Seconds(submit_limit, time_limit);
    absl::StatusOr<AsyncResult> r = c.pool(pool).ApplyAsync(function, input, options);
    if (!r.ok()) return Fail(r.status());
    std::cout << r->id() << std::endl;
    return kExitOk;
  }
  if (get->parsed()) {
    const std::optional<absl::Duration> t = Seconds(get_timeout, timeout);
    AsyncResult r = c.Task(task_id);
    absl::StatusOr<std::string> out = r.Get(t);
    if (!out.ok()) {
      // Not ready: a DeadlineExceeded without a task result attached.
      if (absl::IsDeadlineExceeded(out.status()) &&
          !TaskResultFromStatus(out.status()).has_value()) {
        std::cerr << "forkpool: " << out.status().message() << "\n";
        return kExitNotReady;
      }
      return Fail(out.status());
    }
    PrintOutput(*out);
    return kExitOk;
  }
  if (wait->parsed()) {
    absl::StatusOr<WaitOutcome> outcome =
        c.Wait(task_ids, any ? WaitMode::kFirst : WaitMode::kAll, Seconds(wait_timeout, timeout));
    if (!outcome.ok()) return Fail(outcome.status());
    for (const std::string& id : outcome->done) std::cout << id << "\tdone\n";
    for (const std::string& id : outcome->not_done) std::cout << id << "\tnot done\n";
    std::cout.flush();
    if (!outcome->satisfied) {
      std::cerr << "forkpool: " << outcome->not_done.size() << " of " << task_ids.size()
                << " tasks not done within the timeout\n";
      return kExitNotReady;
    }
    return kExitOk;
  }
  if (cancel->parsed()) {
    AsyncResult r = c.Task(task_id);
    absl::StatusOr<bool> cancelled = r.Cancel();
    if (!cancelled.ok()) return Fail(cancelled.status());
    if (*cancelled) {
      std::cout << task_id << "\tcancelled\n";
    } else {
      absl::StatusOr<v1::TaskResult> result = r.Result();
      std::cout << task_id << "\talready ended"
                << (result.ok() ? absl::StrCat(" (", TaskStateName(result->state()), ")") : "")
                << "\n";
    }
    return kExitOk;
  }
  if (pools->parsed()) {
    absl::StatusOr<v1::ListPoolsResponse> list = c.ListPools();
    if (!list.ok()) return Fail(list.status());
    if (json) {
      google::protobuf::util::JsonPrintOptions options;
      options.add_whitespace = true;
      options.always_print_primitive_fields = true;
      options.preserve_proto_field_names = true;
      std::string text;
      const auto status = google::protobuf::util::MessageToJsonString(*list, &text, options);
      if (!status.ok()) {
        std::cerr << "forkpool: cannot print JSON: " << status.ToString() << "\n";
        return kExitRpcError;
      }
      std::cout << text;
      if (text.empty() || text.back() != '\n') std::cout << "\n";
    } else {
      PrintPoolTable(*list);
    }
    return kExitOk;
  }
  if (health->parsed()) {
    absl::Status s = c.Health();
    if (!s.ok()) return Fail(s);
    std::cout << "SERVING (" << c.address() << ")\n";
    return kExitOk;
  }
  if (map->parsed()) {
    MapOptions options;
    options.chunksize = chunksize;
    options.ordered = !unordered;
    if (!input_file.empty()) {
      const int fd = ::open(input_file.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        std::cerr << "forkpool: cannot read " << input_file << ": " << std::strerror(errno) << "\n";
        return kExitUsage;
      }
      return RunMap(c.pool(pool), function, fd, options);  // the fd lives as long as we do
    }
    return RunMap(c.pool(pool), function, STDIN_FILENO, options);
  }
  if (pool_create->parsed()) {
    v1::PoolSettings settings;
    settings.set_name(pool_name);
    settings.set_processes(processes);
    settings.set_start_method(start_method == "spawn" ? v1::START_METHOD_SPAWN
                                                      : v1::START_METHOD_FORKSERVER);
    // Paths are the user's, relative to where the CLI runs; forkpoold's working
    // directory is another.
    auto absolute = [](const std::string& path) {
      if (path.empty() || path[0] == '/' || path.find('/') == std::string::npos) return path;
      std::error_code error;
      const std::filesystem::path full = std::filesystem::absolute(path, error);
      return error ? path : full.lexically_normal().string();
    };
    for (const std::string& l : libraries) settings.add_libraries(absolute(l));
    for (size_t i = 0; i < worker_command.size(); ++i) {
      settings.add_worker_command(i == 0 ? absolute(worker_command[i]) : worker_command[i]);
    }
    settings.set_max_tasks_per_child(max_tasks_per_child);
    if (!initializer.empty()) {
      settings.set_initializer(initializer);
      settings.mutable_initargs()->set_data(initargs);
      settings.mutable_initargs()->set_codec("text");
    }
    absl::StatusOr<v1::PoolInfo> info = c.CreatePool(settings);
    if (!info.ok()) return Fail(info.status());
    PrintPool(*info);
    return kExitOk;
  }
  if (pool_delete->parsed()) {
    absl::Status s = c.DeletePool(pool_name);
    if (!s.ok()) return Fail(s);
    std::cout << pool_name << "\tdeleted\n";
    return kExitOk;
  }
  if (pool_describe->parsed() || pool_close->parsed() || pool_terminate->parsed()) {
    absl::StatusOr<v1::PoolInfo> info = pool_describe->parsed() ? c.DescribePool(pool_name)
                                        : pool_close->parsed()  ? c.ClosePool(pool_name)
                                                                : c.TerminatePool(pool_name);
    if (!info.ok()) return Fail(info.status());
    PrintPool(*info);
    return kExitOk;
  }
  if (pool_join->parsed()) {
    absl::StatusOr<v1::PoolInfo> info = c.JoinPool(pool_name, Seconds(join_timeout, timeout));
    if (!info.ok()) {
      if (absl::IsDeadlineExceeded(info.status())) {
        std::cerr << "forkpool: " << info.status().message() << "\n";
        return kExitNotReady;
      }
      return Fail(info.status());
    }
    PrintPool(*info);
    return kExitOk;
  }
  if (queue_create->parsed()) {
    absl::StatusOr<v1::QueueInfo> info = c.CreateQueue(qa.name, qa.maxsize, qa.exist_ok);
    if (!info.ok()) return Fail(info.status());
    PrintQueueTable({*info});
    return kExitOk;
  }
  if (queue_put->parsed()) {
    qa.timeout = Seconds(queue_put_timeout, queue_timeout);
    return RunQueuePut(c, qa);
  }
  if (queue_get->parsed()) {
    qa.timeout = Seconds(queue_get_timeout, queue_timeout);
    return RunQueueGet(c, qa);
  }
  if (queue_size->parsed()) {
    absl::StatusOr<int64_t> size = c.queue(qa.name).Size();
    if (!size.ok()) return Fail(size.status());
    std::cout << *size << std::endl;
    return kExitOk;
  }
  if (queue_ls->parsed()) {
    absl::StatusOr<std::vector<v1::QueueInfo>> list = c.ListQueues();
    if (!list.ok()) return Fail(list.status());
    if (qa.json) {
      v1::ListQueuesResponse response;
      for (const v1::QueueInfo& q : *list) *response.add_queues() = q;
      return PrintJson(response) ? kExitOk : kExitRpcError;
    }
    PrintQueueTable(*list);
    return kExitOk;
  }
  if (queue_delete->parsed()) {
    absl::Status s = c.DeleteQueue(qa.name);
    if (!s.ok()) return Fail(s);
    std::cout << qa.name << "\tdeleted\n";
    return kExitOk;
  }
  std::cerr << app.help();
  return kExitUsage;
}

}  // namespace forkpool

int main(int argc, char** argv) { return forkpool::Main(argc, argv); }
