// Peer connection helpers.
#include "server/daemon/net/peer_connection.h"

#include <poll.h>
#include <signal.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace forkpool {

int PeerFd(const std::string& peer) {
  int fd = -1;
  if (peer.rfind("fd:", 0) != 0 || !absl::SimpleAtoi(absl::string_view(peer).substr(3), &fd)) {
    return -1;
  }
  return fd;
}

bool PeerHungUp(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

void PeerRegistry::Record(int fd, const Peer& peer) {
  absl::MutexLock lock(&mu_);
  if (auto it = peers_.find(fd); it != peers_.end()) EraseLocked(it);
  peers_.emplace(fd, peer);
  ++per_uid_[peer.uid];
  if (!peer.admin) ++non_admin_;
}

void PeerRegistry::Forget(int fd) {
  absl::MutexLock lock(&mu_);
  if (auto it = peers_.find(fd); it != peers_.end()) EraseLocked(it);
}

void PeerRegistry::EraseLocked(std::map<int, Peer>::iterator it) {
  auto uid = per_uid_.find(it->second.uid);
  if (uid != per_uid_.end() && --uid->second <= 0) per_uid_.erase(uid);
  if (!it->second.admin) --non_admin_;
  peers_.erase(it);
}

ConnectionCounts PeerRegistry::Counts(uid_t uid) const {
  absl::MutexLock lock(&mu_);
  ConnectionCounts counts;
  counts.total = static_cast<int>(peers_.size());
  counts.non_admin = non_admin_;
  if (auto it = per_uid_.find(uid); it != per_uid_.end()) counts.same_uid = it->second;
  return counts;
}

std::optional<PeerRegistry::Peer> PeerRegistry::Find(int fd) const {
  absl::MutexLock lock(&mu_);
  auto it = peers_.find(fd);
  if (it == peers_.end()) return std::nullopt;
  struct stat st;
  if (::fstat(fd, &st) != 0 || st.st_ino != it->second.inode) return std::nullopt;
  return it->second;
}

int PeerRegistry::Prune() {
  absl::MutexLock lock(&mu_);
  for (auto it = peers_.begin(); it != peers_.end();) {
    struct stat st;
    const bool same = ::fstat(it->first, &st) == 0 && st.st_ino == it->second.inode;
    if (same) {
      ++it;
    } else {
      EraseLocked(it++);
    }
  }
  return static_cast<int>(peers_.size());
}

namespace {

// False when /proc says `pid` is gone, dying, or has SIGKILL pending.
bool ProcessRuns(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  // Unreadable is no answer when forkpoold is out of fds (EMFILE): then only a
  // process that kill() does not find is gone.
  if (!status) return ::kill(pid, 0) == 0 || errno == EPERM;
  std::string line;
  constexpr uint64_t kKillBit = uint64_t{1} << (9 - 1);  // SIGKILL
  while (std::getline(status, line)) {
    if (line.rfind("State:\t", 0) == 0) {
      const char state = line.size() > 7 ? line[7] : '?';
      if (state == 'Z' || state == 'X') return false;
    } else if (line.rfind("ShdPnd:\t", 0) == 0 || line.rfind("SigPnd:\t", 0) == 0) {
      uint64_t pending = 0;
      if (absl::SimpleHexAtoi(absl::string_view(line).substr(8), &pending) &&
          (pending & kKillBit) != 0) {
        return false;
      }
    }
  }
  return true;
}

}  // namespace

bool ClientGone(const std::string& peer, const PeerRegistry* registry) {
  const int fd = PeerFd(peer);
  if (PeerHungUp(fd)) return true;
  if (registry == nullptr || fd < 0) return false;
  std::optional<PeerRegistry::Peer> p = registry->Find(fd);
  return p.has_value() && p->pid > 0 && !ProcessRuns(p->pid);
}

}  // namespace forkpool
