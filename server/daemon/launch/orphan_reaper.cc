// OrphanReaper implementation.
#include "server/daemon/launch/orphan_reaper.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/daemon/launch/process_util.h"
#include "server/daemon/log.h"

namespace forkpool {
namespace {

// ppid and pgid of `pid` from /proc/PID/stat; false if it is gone.
bool ReadParent(pid_t pid, pid_t* ppid, pid_t* pgid, pid_t* sid, std::string* comm) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[512];
  const ssize_t n = RetryOnEintr([&] { return ::read(fd, buf, sizeof(buf) - 1); });
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = 0;
  // "pid (comm) S ppid pgid ...": comm may hold spaces and parentheses.
  char* open_paren = std::strchr(buf, '(');
  char* close_paren = std::strrchr(buf, ')');
  if (open_paren == nullptr || close_paren == nullptr) return false;
  comm->assign(open_paren + 1, close_paren);
  char state = 0;
  int parent = 0, group = 0, session = 0;
  if (std::sscanf(close_paren + 1, " %c %d %d %d", &state, &parent, &group, &session) != 4) {
    return false;
  }
  *sid = session;
  // A zombie that is ours and unknown (adopted already dead) is reaped the same
  // way.
  *ppid = parent;
  *pgid = group;
  return true;
}

}  // namespace

OrphanReaper::OrphanReaper(IoLoop* loop, ChildRegistry* children)
    : loop_(loop),
      children_(children),
      self_(::getpid()),
      self_pgid_(::getpgrp()),
      self_sid_(::getsid(0)) {}

OrphanReaper::~OrphanReaper() {
  absl::MutexLock lock(&mu_);
  stopped_ = true;
  loop_->CancelTimer(timer_);
  for (auto& [pid, fd] : ending_) loop_->Unwatch(fd.get());
}

void OrphanReaper::Start() {
  absl::MutexLock lock(&mu_);
  timer_ = loop_->AddTimerAfter(kInterval, [this] { Scan(); });
}

void OrphanReaper::Scan() {
  std::map<pid_t, bool> unknown;  // pid -> named like one of ours
  if (DIR* dir = ::opendir("/proc")) {
    while (dirent* e = ::readdir(dir)) {
      int pid = 0;
      if (!absl::SimpleAtoi(e->d_name, &pid) || pid <= 0 || pid == self_) continue;
      pid_t ppid = 0, pgid = 0, sid = 0;
      std::string comm;
      if (!ReadParent(pid, &ppid, &pgid, &sid, &comm) || ppid != self_) continue;
      if (children_->Contains(pid)) continue;
      // Just made, a helper is still in forkpoold's process group and session, and a
      // worker in its own group in forkpoold's session; a task's forked child of the
      // same name (no exec) is in its dead worker's group (which forkpoold kills
      // anyway) or, after setsid, in a session of its own.
      const bool group_like_ours = (pgid == pid || pgid == self_pgid_) && sid == self_sid_;
      unknown.emplace(pid, group_like_ours && comm.rfind("forkpool-", 0) == 0);
    }
    ::closedir(dir);
  }
  absl::MutexLock lock(&mu_);
  if (stopped_) return;
  const MonoTime now = MonotonicNow();
  std::map<pid_t, MonoTime> seen;
  for (const auto& [pid, ours] : unknown) {
    auto it = suspects_.find(pid);
    const MonoTime first = it == suspects_.end() ? now : it->second;
    seen.emplace(pid, first);
    // Unknown in two scans in a row; one named like a helper or worker gets longer:
    // it may be one just made whose helper's report the loop has not read yet (a
    // busy machine can hold a helper that long), and killing it would fail a start.
    const absl::Duration wait = ours ? kOwnNameGrace : kInterval;
    if (it == suspects_.end() || now - first < wait || ending_.count(pid) ||
        children_->Contains(pid)) {
      continue;
    }
    absl::StatusOr<UniqueFd> pidfd = PidfdOpen(pid);
    if (!pidfd.ok()) continue;  // gone meanwhile
    Log("ending process ", pid,
        ": a child of forkpoold that no pool owns (escaped from a "
        "worker or helper, or a worker made for a pool that is gone)");
    (void)PidfdSignal(pidfd->get(), SIGKILL);
    ::kill(-pid, SIGKILL);  // a session or group leader takes its group along
    const int fd = pidfd->get();
    absl::Status watched = loop_->Watch(fd, EPOLLIN, [this, pid](uint32_t) { Reap(pid); });
    if (!watched.ok()) {
      Log("cannot watch adopted process ", pid, ": ", watched.message());
      continue;
    }
    ending_.emplace(pid, *std::move(pidfd));
  }
  suspects_ = std::move(seen);
  timer_ = loop_->AddTimerAfter(kInterval, [this] { Scan(); });
}

void OrphanReaper::Reap(pid_t pid) {
  absl::MutexLock lock(&mu_);
  auto it = ending_.find(pid);
  if (it == ending_.end()) return;
  (void)ReapPidfd(it->second.get());
  loop_->Unwatch(it->second.get());
  ending_.erase(it);
}

}  // namespace forkpool
