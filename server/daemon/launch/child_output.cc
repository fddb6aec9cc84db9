// ChildOutput implementation: line splitting, token bucket, lifetime cap, tail.
#include "server/daemon/launch/child_output.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"

namespace forkpool {

void ChildOutput::StderrSink(std::string_view line) {
  std::string out;
  out.reserve(line.size() + 1);
  out.append(line);
  out.push_back('\n');
  // One fwrite, as Log() does, so lines from threads do not mix.
  std::fwrite(out.data(), 1, out.size(), stderr);
}

absl::Time ChildOutput::MonotonicNow() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return absl::UnixEpoch() + absl::DurationFromTimespec(ts);
}

absl::StatusOr<std::unique_ptr<ChildOutput>> ChildOutput::Create(UniqueFd read_end, std::string tag,
                                                                 Sink sink, Clock clock,
                                                                 Limits limits) {
  const int flags = ::fcntl(read_end.get(), F_GETFL);
  if (flags < 0 || ::fcntl(read_end.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("fcntl(O_NONBLOCK, stderr of ", tag, ")"));
  }
  if (!sink) sink = &ChildOutput::StderrSink;
  LogBudget* budget = nullptr;
  if (!clock) {
    clock = &ChildOutput::MonotonicNow;
    budget = &LogBudget::Daemon();
  }
  return std::unique_ptr<ChildOutput>(new ChildOutput(
      std::move(read_end), std::move(tag), std::move(sink), std::move(clock), limits, budget));
}

namespace {

// Limits that would stall the reader (a zero budget) or never let a line
// through (a zero burst or line length) are raised to the smallest that work.
ChildOutput::Limits Sane(ChildOutput::Limits limits) {
  limits.burst_bytes = std::max<size_t>(limits.burst_bytes, 1);
  limits.max_line_bytes = std::max<size_t>(limits.max_line_bytes, 1);
  limits.max_bytes_per_drain = std::max<size_t>(limits.max_bytes_per_drain, 1);
  return limits;
}

}  // namespace

ChildOutput::ChildOutput(UniqueFd read_end, std::string tag, Sink sink, Clock clock, Limits limits,
                         LogBudget* budget)
    : fd_(std::move(read_end)),
      tag_(std::move(tag)),
      sink_(std::move(sink)),
      clock_(std::move(clock)),
      limits_(Sane(limits)),
      budget_(budget),
      tokens_(static_cast<double>(limits_.burst_bytes)),
      refilled_at_(clock_()) {}

absl::Status ChildOutput::Drain() {
  absl::MutexLock drain(&drain_mu_);
  if (finished_) return absl::OkStatus();
  absl::Status status;
  size_t budget = limits_.max_bytes_per_drain;
  // 64 KiB: one read empties a default-sized pipe.
  char buf[64 * 1024];
  bool more = true;
  while (more && budget > 0) {
    std::vector<std::string> out;
    const ssize_t n =
        RetryOnEintr([&] { return ::read(fd_.get(), buf, std::min(sizeof(buf), budget)); });
    std::string_view data;
    if (n > 0) {
      data = std::string_view(buf, static_cast<size_t>(n));
      budget -= data.size();
      RefillLocked(clock_());
      ProcessLocked(data, &out);
    } else if (n == 0) {
      RefillLocked(clock_());
      FinishLocked(&out);
      more = false;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      more = false;
    } else {
      status = absl::ErrnoToStatus(errno, absl::StrCat("read(stderr of ", tag_, ")"));
      FinishLocked(&out);
      more = false;
    }
    {
      absl::MutexLock lock(&mu_);
      // Only the chunk's last tail_bytes can matter.
      const size_t keep = std::min(data.size(), limits_.tail_bytes);
      tail_.append(data.substr(data.size() - keep));
      if (tail_.size() > 2 * limits_.tail_bytes) {
        tail_.erase(0, tail_.size() - limits_.tail_bytes);
      }
      counts_ = totals_;
      eof_ = finished_;
    }
    // The sink may block (stderr to a slow journal); Tail() must not wait for
    // it.
    for (const std::string& line : out) sink_(line);
  }
  return status;
}

bool LogBudget::TryTake(double bytes, absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (refilled_at_ == absl::InfinitePast()) refilled_at_ = now;
  if (now > refilled_at_) {
    tokens_ = std::min(burst_, tokens_ + rate_ * absl::ToDoubleSeconds(now - refilled_at_));
    refilled_at_ = now;
  }
  if (tokens_ < bytes) return false;
  tokens_ -= bytes;
  return true;
}

LogBudget& LogBudget::Daemon() {
  static LogBudget* const budget = new LogBudget(1u << 20, 8u << 20);
  return *budget;
}

void ChildOutput::RefillLocked(absl::Time now) {
  // A clock that goes back (only a fake one can) adds nothing.
  if (now <= refilled_at_) return;
  const double earned = static_cast<double>(limits_.rate_bytes_per_second) *
                        absl::ToDoubleSeconds(now - refilled_at_);
  tokens_ = std::min(static_cast<double>(limits_.burst_bytes), tokens_ + earned);
  refilled_at_ = now;
}

void ChildOutput::DropLocked(uint64_t bytes) { totals_.dropped += bytes; }

void ChildOutput::ProcessLocked(std::string_view data, std::vector<std::string>* out) {
  totals_.read += data.size();
  const double resume_level = static_cast<double>(limits_.burst_bytes) / 2;
  while (!data.empty()) {
    if (capped_) {
      DropLocked(data.size());
      return;
    }
    if (skipping_) {
      const size_t nl = data.find('\n');
      if (nl == std::string_view::npos) {
        totals_.cut += data.size();
        return;
      }
      totals_.cut += nl + 1;
      data.remove_prefix(nl + 1);
      skipping_ = false;
      continue;
    }
    // While suppressed, the bucket cannot refill within one chunk (the clock is
    // read once per read), so every line that ends in this chunk is dropped: no
    // need to look at them one by one. This keeps a child writing 1 GiB cheap
    // to discard.
    if (suppressing_ && tokens_ < resume_level) {
      const size_t last = data.rfind('\n');
      if (last != std::string_view::npos) {
        const uint64_t bytes = partial_.size() + last + 1;
        suppressed_bytes_ += bytes;
        DropLocked(bytes);
        partial_.clear();
        data.remove_prefix(last + 1);
        continue;
      }
    }
    const size_t nl = data.find('\n');
    const size_t content = nl == std::string_view::npos ? data.size() : nl;
    if (partial_.size() + content > limits_.max_line_bytes) {
      // Too long: the first max_line_bytes go out as a line of their own, the
      // rest up to the newline is skipped.
      const size_t room = limits_.max_line_bytes - partial_.size();
      partial_.append(data.substr(0, room));
      data.remove_prefix(room);
      OfferLineLocked(partial_, /*cut=*/true, out);
      partial_.clear();
      skipping_ = true;
      continue;
    }
    if (nl == std::string_view::npos) {
      partial_.append(data);
      return;
    }
    if (partial_.empty()) {
      OfferLineLocked(data.substr(0, nl), /*cut=*/false, out);
    } else {
      partial_.append(data.substr(0, nl));
      OfferLineLocked(partial_, /*cut=*/false, out);
      partial_.clear();
    }
    data.remove_prefix(nl + 1);
  }
}

void ChildOutput::OfferLineLocked(std::string_view content, bool cut,
                                  std::vector<std::string>* out) {
  // The child's bytes this line stands for: a cut head has no newline of its
  // own (the skipped rest carries it), nor has the last line before EOF when
  // the child did not end it; a line completed by '\n' counts it.
  const uint64_t bytes = content.size() + (cut || finished_ ? 0 : 1);
  if (capped_) {
    DropLocked(bytes);
    return;
  }
  if (totals_.forwarded + bytes > limits_.lifetime_bytes) {
    capped_ = true;
    const uint64_t dropped = suppressed_bytes_ + bytes;
    DropLocked(bytes);
    suppressing_ = false;
    suppressed_bytes_ = 0;
    out->push_back(Format(
        absl::StrCat(dropped, " bytes of output dropped (cap reached: later output is dropped)")));
    return;
  }
  // A line longer than the bucket could never pass; it costs a full bucket
  // instead.
  const double cost =
      std::min(static_cast<double>(bytes), static_cast<double>(limits_.burst_bytes));
  const double needed =
      suppressing_ ? std::max(cost, static_cast<double>(limits_.burst_bytes) / 2) : cost;
  if (tokens_ < needed || (budget_ != nullptr && !budget_->TryTake(cost, clock_()))) {
    suppressing_ = true;
    suppressed_bytes_ += bytes;
    DropLocked(bytes);
    return;
  }
  if (suppressing_) {
    out->push_back(
        Format(absl::StrCat(suppressed_bytes_, " bytes of output dropped (rate limit)")));
    suppressing_ = false;
    suppressed_bytes_ = 0;
  }
  tokens_ -= cost;
  totals_.forwarded += bytes;
  std::string line = Format(content);
  if (cut) line.append(" [line cut]");
  out->push_back(std::move(line));
}

void ChildOutput::FinishLocked(std::vector<std::string>* out) {
  if (finished_) return;
  finished_ = true;
  // (A cut line leaves partial_ empty: what follows its head is skipped, not
  // kept.)
  if (!partial_.empty()) {
    OfferLineLocked(partial_, /*cut=*/false, out);
    partial_.clear();
  }
  if (suppressing_) {
    out->push_back(
        Format(absl::StrCat(suppressed_bytes_, " bytes of output dropped (rate limit)")));
    suppressing_ = false;
    suppressed_bytes_ = 0;
  }
}

std::string ChildOutput::Format(std::string_view text) const {
  constexpr std::string_view kPrefix = "forkpoold: ";
  std::string line;
  line.reserve(kPrefix.size() + tag_.size() + 1 + text.size());
  line.append(kPrefix).append(tag_).push_back(' ');
  line.append(text);
  return line;
}

std::string ChildOutput::Tail() const {
  absl::MutexLock lock(&mu_);
  if (tail_.size() <= limits_.tail_bytes) return tail_;
  return tail_.substr(tail_.size() - limits_.tail_bytes);
}

bool ChildOutput::eof() const {
  absl::MutexLock lock(&mu_);
  return eof_;
}

ChildOutput::Counts ChildOutput::counts() const {
  absl::MutexLock lock(&mu_);
  return counts_;
}

}  // namespace forkpool
