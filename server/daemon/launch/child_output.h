// ChildOutput: forkpoold's reader of one child process's stderr pipe. It
// forwards the child's lines to the daemon's log, tagged and rate-limited, and
// keeps the last bytes for crash reports.
#ifndef FORKPOOL_SERVER_DAEMON_LAUNCH_CHILD_OUTPUT_H_
#define FORKPOOL_SERVER_DAEMON_LAUNCH_CHILD_OUTPUT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"

namespace forkpool {

// A token bucket shared by every child's output: per-child limits alone let a client
// flood the log through many short-lived children (a library that prints megabytes,
// loaded by one failing CreatePool after another, each helper with a fresh allowance).
// Thread-safe.
class LogBudget {
 public:
  LogBudget(size_t rate_bytes_per_second, size_t burst_bytes)
      : rate_(static_cast<double>(rate_bytes_per_second)),
        burst_(static_cast<double>(burst_bytes)),
        tokens_(burst_) {}
  // Takes `bytes` if the bucket holds them at `now`; false (taking nothing) if not.
  bool TryTake(double bytes, absl::Time now);
  // forkpoold's: 1 MiB/s, bursts of 8 MiB, for all children together.
  static LogBudget& Daemon();

 private:
  absl::Mutex mu_;
  const double rate_;
  const double burst_;
  double tokens_ ABSL_GUARDED_BY(mu_);
  absl::Time refilled_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

// ChildOutput's limits, per child.
struct ChildOutputLimits {
  // Token bucket over forwarded bytes (a line costs its length + 1).
  size_t rate_bytes_per_second = 64 * 1024;
  size_t burst_bytes = 256 * 1024;
  // Bytes forwarded over the child's whole life.
  size_t lifetime_bytes = 4 * 1024 * 1024;
  // Longer lines are cut to this many bytes.
  size_t max_line_bytes = 4096;
  // What Tail() keeps.
  size_t tail_bytes = 4096;
  // One Drain reads at most this much, so a child that writes without pause
  // cannot hold the loop's thread; with level-triggered epoll the loop calls
  // again.
  size_t max_bytes_per_drain = 1024 * 1024;
};

// Thread-safe. Drain is meant for the I/O loop's thread (calls are serialised
// if made from several); Tail, eof and counts may be called from any thread at
// any time and never wait for the sink.
//
// The child's pipe never fills because of the daemon: everything is read, and
// what is over the limits is discarded and counted. A line goes to the log
// whole or not at all. Limits:
//  - a token bucket over the bytes forwarded (rate per second, burst). Once it
//    runs dry, output is dropped until the bucket is half full again, so a
//    child writing without pause produces one "dropped" line every burst/2/rate
//    seconds rather than one per line that got through;
//  - a lifetime cap on the bytes forwarded; past it everything is dropped;
//  - lines longer than max_line_bytes are cut there (" [line cut]"); the rest
//  of
//    such a line is discarded.
class ChildOutput {
 public:
  // Receives one log line, without its '\n'. Must not call Drain.
  using Sink = std::function<void(std::string_view line)>;
  // A monotonic time (only differences matter).
  using Clock = std::function<absl::Time()>;

  // Defined outside the class: GCC cannot use a nested struct's default member
  // initializers in a default argument of the enclosing class.
  using Limits = ChildOutputLimits;

  // What happened to the child's bytes so far (bytes as the child wrote them).
  struct Counts {
    uint64_t read = 0;       // everything read from the pipe
    uint64_t forwarded = 0;  // in lines given to the sink (with their '\n')
    uint64_t dropped = 0;    // discarded by the rate limit or the cap
    uint64_t cut = 0;        // discarded from lines longer than max_line_bytes
  };

  // Writes `line` and '\n' to stderr with one fwrite.
  static void StderrSink(std::string_view line);
  // CLOCK_MONOTONIC as an absl::Time (the epoch is the clock's zero).
  static absl::Time MonotonicNow();

  // Takes ownership of `read_end` and makes it non-blocking. `tag` names the
  // child in each line ("[pool/3 pid 1234]"). A null sink is StderrSink; a null
  // clock is MonotonicNow. Errors: fcntl on `read_end` failed.
  static absl::StatusOr<std::unique_ptr<ChildOutput>> Create(UniqueFd read_end, std::string tag,
                                                             Sink sink = nullptr,
                                                             Clock clock = nullptr,
                                                             Limits limits = {});

  // Reads what is available now, until EAGAIN, EOF or max_bytes_per_drain, and
  // passes complete lines to the sink ("forkpoold: <tag> <line>"). At EOF also
  // the last unterminated line and the report of a suppression still open.
  // Never blocks on the pipe; blocks as long as the sink does. A read error
  // other than EAGAIN ends the output like EOF (eof() turns true) and is
  // returned.
  absl::Status Drain();

  // The last tail_bytes bytes the child wrote, dropped output included.
  std::string Tail() const;
  // True once the pipe reported EOF (or failed): stop watching fd().
  bool eof() const;
  Counts counts() const;
  // The pipe's read end, still owned.
  int fd() const { return fd_.get(); }
  const std::string& tag() const { return tag_; }

 private:
  ChildOutput(UniqueFd read_end, std::string tag, Sink sink, Clock clock, Limits limits,
              LogBudget* budget);

  // Splits `data` into lines and decides each one's fate, appending the log
  // lines to `out`.
  void ProcessLocked(std::string_view data, std::vector<std::string>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(drain_mu_);
  // Forwards or drops one line of content (no '\n'); `cut` if it was cut.
  void OfferLineLocked(std::string_view content, bool cut, std::vector<std::string>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(drain_mu_);
  // At EOF: the unterminated line and any open suppression report.
  void FinishLocked(std::vector<std::string>* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(drain_mu_);
  void RefillLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(drain_mu_);
  void DropLocked(uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(drain_mu_);
  std::string Format(std::string_view text) const;

  const UniqueFd fd_;
  const std::string tag_;
  const Sink sink_;
  const Clock clock_;
  const Limits limits_;
  LogBudget* const budget_;  // null: per-child limits only (tests' fake clocks)

  // Serialises Drain and guards the line state; held while the sink runs, which
  // is why what other threads read lives under mu_ instead.
  absl::Mutex drain_mu_;
  std::string partial_ ABSL_GUARDED_BY(drain_mu_);    // unterminated line so far
  bool skipping_ ABSL_GUARDED_BY(drain_mu_) = false;  // rest of a cut line
  double tokens_ ABSL_GUARDED_BY(drain_mu_);
  absl::Time refilled_at_ ABSL_GUARDED_BY(drain_mu_);
  // A rate-limit suppression is open while this is true; its bytes so far.
  bool suppressing_ ABSL_GUARDED_BY(drain_mu_) = false;
  uint64_t suppressed_bytes_ ABSL_GUARDED_BY(drain_mu_) = 0;
  bool capped_ ABSL_GUARDED_BY(drain_mu_) = false;
  bool finished_ ABSL_GUARDED_BY(drain_mu_) = false;
  Counts totals_ ABSL_GUARDED_BY(drain_mu_);  // published to counts_ after each read

  // Never held while the sink runs.
  mutable absl::Mutex mu_;
  std::string tail_ ABSL_GUARDED_BY(mu_);  // up to 2 * tail_bytes, trimmed lazily
  bool eof_ ABSL_GUARDED_BY(mu_) = false;
  Counts counts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace forkpool

#endif  // FORKPOOL_SERVER_DAEMON_LAUNCH_CHILD_OUTPUT_H_
