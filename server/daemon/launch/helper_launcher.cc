// HelperLauncher implementation.
#include "server/daemon/launch/helper_launcher.h"

#include <signal.h>

#include "absl/strings/str_cat.h"
#include "common/proto_status.h"
#include "server/daemon/executor/pool_settings.h"
#include "server/daemon/launch/connected_worker.h"
#include "server/daemon/launch/process_util.h"
#include "server/daemon/log.h"

namespace forkpool {

std::shared_ptr<HelperLauncher> HelperLauncher::Create(HelperLauncherDeps deps,
                                                       v1::PoolSettings settings,
                                                       HelperLauncherOptions options) {
  return std::shared_ptr<HelperLauncher>(
      new HelperLauncher(deps, std::move(settings), std::move(options)));
}

HelperLauncher::~HelperLauncher() {
  absl::MutexLock lock(&mu_);
  if (helper_) helper_->Close();
}

pid_t HelperLauncher::helper_pid() const {
  absl::MutexLock lock(&mu_);
  return helper_ ? helper_->pid() : 0;
}

void HelperLauncher::DropHelper(bool kill, const std::string& why) {
  std::shared_ptr<HelperChannel> helper;
  {
    absl::MutexLock lock(&mu_);
    helper = std::move(helper_);
    ++attempt_;  // whatever the old helper still says is stale
  }
  if (!helper) return;
  if (kill) {
    helper->Kill(why);
  }
  // Closed either way: no callback of it runs any more. Its channel still
  // reaps it; so are the processes its libraries started, which forkpoold then
  // adopts and ends.
  helper->Close();
}

void HelperLauncher::Load(HelperEvents events, LoadDone done) {
  DropHelper(/*kill=*/false, "replaced");
  uint64_t attempt;
  {
    absl::MutexLock lock(&mu_);
    attempt = ++attempt_;
    loading_library_.clear();
  }
  AskRoot(attempt, /*root_tries=*/3, std::move(events), std::move(done));
}

void HelperLauncher::AskRoot(uint64_t attempt, int root_tries, HelperEvents events, LoadDone done) {
  std::weak_ptr<HelperLauncher> weak = weak_from_this();
  deps_.root->StartPoolHelper([weak, attempt, root_tries, events = std::move(events),
                               done = std::move(done)](absl::StatusOr<HelperProcess> p) mutable {
    if (auto self = weak.lock()) {
      self->OnHelperStarted(attempt, std::move(p), root_tries, std::move(events), std::move(done));
    }
  });
}

internal::ToHelper HelperLauncher::LoadRequest() const {
  internal::ToHelper request;
  internal::LoadPool* load = request.mutable_load_pool();
  load->set_pool(settings_.name());
  for (const auto& lib : settings_.libraries()) load->add_libraries(lib);
  load->set_start_method(StartMethodName(settings_.start_method()));
  load->set_initializer(settings_.initializer());
  load->set_initargs(settings_.initargs().data());
  load->set_memory_limit_bytes(settings_.memory_limit_bytes());
  for (const auto& arg : settings_.worker_command()) load->add_worker_command(arg);
  if (settings_.worker_command().empty()) load->add_worker_command(options_.worker_program);
  load->set_nofile_soft_limit(options_.nofile_soft_limit);
  return request;
}

void HelperLauncher::OnHelperStarted(uint64_t attempt, absl::StatusOr<HelperProcess> process,
                                     int root_tries, HelperEvents events, LoadDone done) {
  const std::string name = settings_.name();
  if (!process.ok()) {
    {
      absl::MutexLock lock(&mu_);
      if (attempt != attempt_) return;
    }
    if (absl::IsUnavailable(process.status()) && root_tries > 0) {
      // The root helper was lost; a new one is on its way.
      std::weak_ptr<HelperLauncher> weak = weak_from_this();
      deps_.loop->AddTimerAfter(
          absl::Milliseconds(200), [weak, attempt, root_tries, events, done]() mutable {
            auto self = weak.lock();
            if (!self) return;
            {
              absl::MutexLock lock(&self->mu_);
              if (attempt != self->attempt_) return;
            }
            self->AskRoot(attempt, root_tries - 1, std::move(events), std::move(done));
          });
      return;
    }
    done(process.status());
    return;
  }
  const pid_t pid = process->pid;
  std::weak_ptr<HelperLauncher> weak = weak_from_this();
  HelperChannel::Callbacks callbacks;
  callbacks.on_progress = [weak, attempt](const internal::LoadProgress& p) {
    auto self = weak.lock();
    if (!self) return;
    absl::MutexLock lock(&self->mu_);
    if (attempt == self->attempt_) self->loading_library_ = p.library();
  };
  callbacks.on_exit = [weak, attempt, on_lost = events.on_lost](const std::string& why) {
    auto self = weak.lock();
    if (!self) return;
    {
      absl::MutexLock lock(&self->mu_);
      if (attempt != self->attempt_) return;
      self->helper_.reset();
    }
    if (on_lost) on_lost(why);
  };
  absl::StatusOr<std::shared_ptr<HelperChannel>> channel =
      HelperChannel::Start(deps_.loop, deps_.children, absl::StrCat("pool helper '", name, "'"),
                           *std::move(process), std::move(callbacks));
  if (!channel.ok()) {
    Log("pool '", name, "': cannot watch its helper (pid ", pid, "): ", channel.status().message());
    done(channel.status());
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    if (attempt != attempt_) {
      (*channel)->Close();  // nobody wants it any more; it leaves and is reaped
      return;
    }
    helper_ = *channel;
  }
  absl::Status sent =
      (*channel)->Request(LoadRequest(), options_.load_timeout,
                          [weak, attempt, done](absl::StatusOr<internal::FromHelper> reply,
                                                std::vector<UniqueFd>) mutable {
                            if (auto self = weak.lock())
                              self->OnLoaded(attempt, std::move(reply), std::move(done));
                          });
  if (!sent.ok()) {
    DropHelper(/*kill=*/true, "its load could not be sent");
    done(sent);
  }
}

void HelperLauncher::OnLoaded(uint64_t attempt, absl::StatusOr<internal::FromHelper> reply,
                              LoadDone done) {
  std::string library;
  {
    absl::MutexLock lock(&mu_);
    if (attempt != attempt_) return;
    library = loading_library_;
  }
  absl::Status s = reply.ok() ? StatusFromProto(reply->status()) : reply.status();
  if (!reply.ok()) {
    // The helper died or hung inside a library (or before it said which).
    const std::string what =
        library.empty() ? absl::StrCat("pool '", settings_.name(), "': its fork helper") : library;
    if (absl::IsDeadlineExceeded(s)) {
      s = absl::FailedPreconditionError(absl::StrCat(what, ": did not finish loading within ",
                                                     absl::FormatDuration(options_.load_timeout),
                                                     " (--load_timeout); its helper was killed"));
    } else {
      s = absl::FailedPreconditionError(absl::StrCat(what, ": ", s.message(), " while loading"));
    }
  }
  if (!s.ok()) {
    // Never reused: whatever broke the load (a thread, a half-run constructor)
    // is still in it.
    DropHelper(/*kill=*/true, "its load failed");
    done(s);
    return;
  }
  LoadResult result;
  for (const auto& f : reply->pool_loaded().functions()) result.functions.insert(f);
  done(std::move(result));
}

absl::Status HelperLauncher::StartWorker(int index, WorkerEvents events, StartDone done) {
  std::shared_ptr<HelperChannel> helper;
  {
    absl::MutexLock lock(&mu_);
    helper = helper_;
  }
  if (!helper) return absl::UnavailableError("the pool has no helper");
  internal::ToHelper request;
  request.mutable_fork_worker()->set_worker_index(index);
  std::weak_ptr<HelperLauncher> weak = weak_from_this();
  LateReaper* reaper = deps_.reaper;
  return helper->Request(
      request, options_.fork_timeout,
      [weak, reaper, index, events = std::move(events), done = std::move(done)](
          absl::StatusOr<internal::FromHelper> reply, std::vector<UniqueFd> fds) mutable {
        auto self = weak.lock();
        if (!self) {
          // Its pool is gone: a worker made anyway is ended and reaped.
          if (reply.ok() && fds.size() == 3) reaper->Reap(std::move(fds[1]), /*kill=*/true);
          return;
        }
        self->OnForked(std::move(reply), std::move(fds), index, std::move(events), std::move(done));
      });
}

void HelperLauncher::OnForked(absl::StatusOr<internal::FromHelper> reply, std::vector<UniqueFd> fds,
                              int index, WorkerEvents events, StartDone done) {
  if (!reply.ok()) {
    done(reply.status());
    return;
  }
  absl::Status s = StatusFromProto(reply->status());
  const bool forked = s.ok() && fds.size() == 3;
  if (s.ok() && !forked) {
    s = absl::InternalError(
        absl::StrCat("pool helper passed ", fds.size(), " fds for a worker; expected 3"));
  }
  if (!s.ok()) {
    done(s);
    return;
  }
  const pid_t pid = reply->worker_forked().pid();
  absl::StatusOr<std::unique_ptr<WorkerConnection>> conn = WorkerConnection::Create(
      pid, std::move(fds[0]), std::move(fds[1]), std::move(fds[2]), options_.max_frame_bytes,
      absl::StrCat("[", settings_.name(), "/", index, " pid ", pid, "]"));
  if (!conn.ok()) {
    // Made but not servable, and still our child: ended and reaped.
    if (absl::StatusOr<UniqueFd> fd = PidfdOpen(pid); fd.ok()) {
      deps_.reaper->Reap(*std::move(fd), /*kill=*/true);
    }
    done(conn.status());
    return;
  }
  absl::StatusOr<std::unique_ptr<ConnectedWorker>> worker = ConnectedWorker::Start(
      deps_.loop, deps_.children, deps_.reaper, *std::move(conn), std::move(events));
  if (!worker.ok()) {
    done(worker.status());
    return;
  }
  done(std::unique_ptr<WorkerProcess>(std::move(*worker)));
}

}  // namespace forkpool
