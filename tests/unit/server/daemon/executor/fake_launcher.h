// FakeLauncher and FakeWorker: a WorkerLauncher and its WorkerProcesses with no
// process behind them. The test completes loads and starts, feeds frames in
// and reports exits; what the executor sent and killed is recorded.
#ifndef FORKPOOL_TESTS_UNIT_SERVER_DAEMON_EXECUTOR_FAKE_LAUNCHER_H_
#define FORKPOOL_TESTS_UNIT_SERVER_DAEMON_EXECUTOR_FAKE_LAUNCHER_H_

#include <sys/epoll.h>

#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/packed_items.h"
#include "server/daemon/launch/worker_launcher.h"

namespace forkpool::testing {

// Owned by the executor; the test keeps a raw pointer (valid until the
// executor drops the worker after its exit).
class FakeWorker : public WorkerProcess {
 public:
  explicit FakeWorker(pid_t pid, WorkerEvents events) : pid_(pid), events_(std::move(events)) {}

  pid_t pid() const override { return pid_; }
  absl::Status Send(const internal::ToWorker& message) override {
    sent.push_back(message);
    return absl::OkStatus();
  }
  absl::StatusOr<bool> OnReady(uint32_t, const FrameHandler& on_frame) override {
    Deliver(on_frame);
    return !eof;
  }
  void StopReading() override { reading = false; }
  ExitInfo Collect(const FrameHandler& on_frame, bool read_frames) override {
    if (read_frames) Deliver(on_frame);
    collected = true;
    return exit;
  }
  std::string OutputTail() override { return "last words\n"; }
  void Kill() override { ++kills; }
  StopChange::Kind PollStop() override {
    return std::exchange(stop_change, StopChange::Kind::kNone);
  }

  // --- The test's side ---
  // Queues a frame and tells the executor the socket is readable.
  void Say(internal::FromWorker frame) {
    frames.push_back(std::move(frame));
    events_.on_io(EPOLLIN);
  }
  void SayHello() {
    internal::FromWorker m;
    m.mutable_hello()->set_pid(pid_);
    m.mutable_hello()->set_protocol_version(internal::PROTOCOL_VERSION_1);
    Say(std::move(m));
  }
  // Answers the batch it runs with `outputs` (one per item) and says it is done.
  void Answer(const std::vector<std::string>& outputs, int64_t rss = 0) {
    const internal::RunBatch& run = last_run();
    internal::FromWorker r;
    r.mutable_results()->set_batch_id(run.batch_id());
    for (const std::string& o : outputs)
      AppendPackedItem(o, r.mutable_results()->mutable_outputs());
    internal::FromWorker d;
    d.mutable_done()->set_batch_id(run.batch_id());
    d.mutable_done()->set_rss_bytes(rss);
    frames.push_back(std::move(r));
    Say(std::move(d));
  }
  // Dies (or is reaped after a kill) with `signal`.
  void Exit(int signal) {
    exit.reaped = true;
    exit.signal = signal;
    events_.on_exit();
  }
  const internal::RunBatch& last_run() const {
    for (auto it = sent.rbegin(); it != sent.rend(); ++it) {
      if (it->has_run()) return it->run();
    }
    static const internal::RunBatch none;
    return none;
  }
  int runs() const {
    int n = 0;
    for (const auto& m : sent) n += m.has_run();
    return n;
  }
  bool sent_shutdown() const {
    for (const auto& m : sent) {
      if (m.has_shutdown()) return true;
    }
    return false;
  }

  std::vector<internal::ToWorker> sent;
  std::deque<internal::FromWorker> frames;
  int kills = 0;
  bool eof = false;
  bool reading = true;
  bool collected = false;
  ExitInfo exit;
  StopChange::Kind stop_change = StopChange::Kind::kNone;

 private:
  void Deliver(const FrameHandler& on_frame) {
    while (reading && !frames.empty()) {
      internal::FromWorker m = std::move(frames.front());
      frames.pop_front();
      on_frame(m);
    }
  }
  const pid_t pid_;
  WorkerEvents events_;
};

// Single-threaded: the test calls it and the executor, in turn.
class FakeLauncher : public WorkerLauncher {
 public:
  struct Start {
    int index;
    WorkerEvents events;
    StartDone done;
  };

  void Load(HelperEvents events, LoadDone done) override {
    ++loads;
    helper_events = std::move(events);
    load_done = std::move(done);
  }
  pid_t helper_pid() const override { return helper_up ? 4242 : 0; }
  absl::Status StartWorker(int index, WorkerEvents events, StartDone done) override {
    if (!helper_up) return absl::UnavailableError("no helper");
    starts.push_back(Start{index, std::move(events), std::move(done)});
    return absl::OkStatus();
  }
  void DropHelper(bool kill, const std::string&) override {
    helper_up = false;
    if (kill) ++helper_kills;
  }

  // --- The test's side ---
  void FinishLoad(std::set<std::string> functions = {"square", "sleep"}) {
    helper_up = true;
    LoadDone done = std::exchange(load_done, nullptr);
    done(LoadResult{std::move(functions)});
  }
  void FailLoad(absl::Status status) {
    LoadDone done = std::exchange(load_done, nullptr);
    done(std::move(status));
  }
  void LoseHelper(const std::string& why) {
    helper_up = false;
    helper_events.on_lost(why);
  }
  // Completes the oldest start request with a new FakeWorker.
  FakeWorker* FinishStart() {
    Start s = std::move(starts.front());
    starts.pop_front();
    auto worker = std::make_unique<FakeWorker>(next_pid++, std::move(s.events));
    FakeWorker* raw = worker.get();
    s.done(std::unique_ptr<WorkerProcess>(std::move(worker)));
    return raw;
  }
  // Completes every start request and has each worker say hello.
  std::vector<FakeWorker*> StartAll() {
    std::vector<FakeWorker*> out;
    while (!starts.empty()) {
      FakeWorker* w = FinishStart();
      w->SayHello();
      out.push_back(w);
    }
    return out;
  }

  int loads = 0;
  int helper_kills = 0;
  bool helper_up = false;
  HelperEvents helper_events;
  LoadDone load_done;
  std::deque<Start> starts;
  pid_t next_pid = 1000;
};

}  // namespace forkpool::testing

#endif  // FORKPOOL_TESTS_UNIT_SERVER_DAEMON_EXECUTOR_FAKE_LAUNCHER_H_
