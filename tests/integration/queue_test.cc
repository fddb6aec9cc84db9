// Integration tests of the daemon's shared queues (the daemon as multiprocessing's
// Manager) through the real forkpoold, the C++ client (Queue, QueueStream), the
// generated async stub and the forkpool CLI.
#include "forkpool/queue.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "daemon_fixture.h"
#include "forkpool/client.h"
#include "forkpool/v1/forkpool.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "status_matchers.h"

extern char** environ;

namespace forkpool {
namespace {

using ::forkpool::testing::CommandResult;
using ::forkpool::testing::Daemon;
using ::forkpool::testing::DaemonOptions;
using ::forkpool::testing::IsOk;
using ::forkpool::testing::IsOkAndHolds;
using ::forkpool::testing::PollUntil;
using ::forkpool::testing::ProcessAlive;
using ::forkpool::testing::ReadFile;
using ::forkpool::testing::RunCommand;
using ::forkpool::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Threads: of process `pid` according to /proc/PID/status; -1 when unreadable.
int ThreadCount(pid_t pid) {
  const std::string status = ReadFile(absl::StrCat("/proc/", pid, "/status"));
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    if (absl::ConsumePrefix(&line, "Threads:")) {
      int n = -1;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &n)) return n;
    }
  }
  return -1;
}

class QueueTest : public ::testing::Test {
 protected:
  // More forkpoold flags for a fixture's daemon.
  virtual std::vector<std::string> ExtraFlags() const { return {}; }

  void SetUp() override {
    DaemonOptions options;
    options.processes = 2;
    options.extra_flags = ExtraFlags();
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(options);
    ASSERT_THAT(daemon, IsOk());
    daemon_ = std::move(*daemon);
    client_ = Connect();
    ASSERT_NE(client_, nullptr);
  }

  std::unique_ptr<Client> Connect() {
    absl::StatusOr<std::unique_ptr<Client>> c = Client::Connect(daemon_->address());
    EXPECT_THAT(c, IsOk());
    return c.ok() ? std::move(*c) : nullptr;
  }

  // The queue's counters; a default QueueInfo (and a test failure) on error.
  v1::QueueInfo Info(const std::string& name) {
    absl::StatusOr<v1::QueueInfo> info = client_->queue(name).Info();
    EXPECT_THAT(info, IsOk());
    return info.ok() ? *info : v1::QueueInfo();
  }

  // Polls until the daemon reports `n` blocked getters on `name`.
  bool AwaitGetters(const std::string& name, int64_t n,
                    absl::Duration timeout = absl::Seconds(20)) {
    return PollUntil(
        [&] {
          absl::StatusOr<v1::QueueInfo> info = client_->queue(name).Info();
          return info.ok() && info->waiting_getters() == n;
        },
        timeout);
  }

  CommandResult Cli(std::vector<std::string> args) {
    std::vector<std::string> argv = {FORKPOOL_CLI_PATH, "--address", daemon_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<CommandResult> r = RunCommand(argv, daemon_->dir());
    EXPECT_THAT(r, IsOk());
    return r.ok() ? *r : CommandResult{};
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<Client> client_;
};

// The Manager example: a task puts "Hello" into a queue the client made; the client
// gets it.
//   q = manager.Queue(); p = Process(target=f, args=(q,)); ...; print(q.get())
TEST_F(QueueTest, TaskPutsClientGets) {
  ASSERT_THAT(client_->CreateQueue("results"), IsOk());
  EXPECT_THAT(client_->pool().Apply("produce", "results Hello"), IsOkAndHolds(std::string("1")));
  EXPECT_THAT(client_->queue("results").Get(absl::Seconds(10)), IsOkAndHolds(std::string("Hello")));
  // And back: the client puts, a task takes.
  ASSERT_THAT(client_->queue("results").Put("from client"), IsOk());
  EXPECT_THAT(client_->pool().Apply("consume", "results"),
              IsOkAndHolds(std::string("from client")));
  EXPECT_EQ(Info("results").size(), 0);
}

TEST_F(QueueTest, CreateListDeleteAndErrors) {
  ASSERT_THAT(client_->CreateQueue("a", 5), IsOk());
  EXPECT_THAT(client_->CreateQueue("a", 5), StatusIs(absl::StatusCode::kAlreadyExists, "a"));
  EXPECT_THAT(client_->CreateQueue("a", 5, /*exist_ok=*/true), IsOk());
  ASSERT_THAT(client_->CreateQueue("b"), IsOk());
  absl::StatusOr<std::vector<v1::QueueInfo>> list = client_->ListQueues();
  ASSERT_THAT(list, IsOk());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name(), "a");
  EXPECT_EQ((*list)[0].maxsize(), 5);
  EXPECT_EQ((*list)[1].name(), "b");
  EXPECT_THAT(client_->queue("nope").Put("x"),
              StatusIs(absl::StatusCode::kNotFound, "unknown queue 'nope'"));
  EXPECT_THAT(client_->queue("nope").Get(absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kNotFound, "unknown queue 'nope'"));
  EXPECT_THAT(client_->queue("a").Get(absl::Seconds(-1)),
              StatusIs(absl::StatusCode::kInvalidArgument, "negative"));
  ASSERT_THAT(client_->DeleteQueue("a"), IsOk());
  EXPECT_THAT(client_->DeleteQueue("a"), StatusIs(absl::StatusCode::kNotFound, "'a'"));
  EXPECT_THAT(client_->queue("a").Size(), StatusIs(absl::StatusCode::kNotFound, "'a'"));
  // An item over the daemon's 4 MiB item limit.
  EXPECT_THAT(client_->queue("b").Put(std::string((4 << 20) + 1, 'x')),
              StatusIs(absl::StatusCode::kResourceExhausted, ""));
  EXPECT_EQ(Info("b").size(), 0);
}

// PutMany / GetMany keep order; the stream's pipelined ops complete with their items.
TEST_F(QueueTest, BatchesAndStreamKeepOrder) {
  ASSERT_THAT(client_->CreateQueue("q"), IsOk());
  Queue q = client_->queue("q");
  ASSERT_THAT(q.PutMany({"a", "b", "c", "d"}), IsOk());
  EXPECT_THAT(q.GetMany(3, absl::ZeroDuration()),
              IsOkAndHolds(std::vector<std::string>{"a", "b", "c"}));
  absl::StatusOr<std::unique_ptr<QueueStream>> stream = q.OpenStream();
  ASSERT_THAT(stream, IsOk());
  std::vector<std::string> items;
  for (int i = 0; i < 500; ++i) items.push_back(absl::StrCat("s", i));
  std::vector<QueueOp> puts = (*stream)->StartPuts("q", items);
  for (QueueOp& op : puts) ASSERT_THAT(op.Wait().status, IsOk());
  EXPECT_THAT((*stream)->Get("q", absl::ZeroDuration()), IsOkAndHolds(std::string("d")));
  std::vector<std::string> got;
  for (int i = 0; i < 5; ++i) {
    const QueueOpResult& r = (*stream)->StartGet("q", 100, absl::ZeroDuration()).Wait();
    ASSERT_THAT(r.status, IsOk());
    for (const QueueItem& item : r.items) got.push_back(item.data);
  }
  EXPECT_EQ(got, items);
  EXPECT_THAT((*stream)->Get("q", absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "queue 'q' is empty"));
  EXPECT_THAT((*stream)->Close(), IsOk());
}

// 4 producers x 10,000 items, 4 consumers, each with its own stream or client: every
// item arrives exactly once, and each consumer sees each producer's items in order.
TEST_F(QueueTest, ManyProducersManyConsumersExactlyOnceInOrder) {
  constexpr int kProducers = 4, kConsumers = 4, kPerProducer = 10000;
  constexpr int kTotal = kProducers * kPerProducer;
  // Bounded, so that producers also block and wait for room.
  ASSERT_THAT(client_->CreateQueue("work", 1000), IsOk());
  std::atomic<int> received{0};
  absl::Mutex mu;
  std::vector<std::vector<int>> seen(kProducers);  // per producer: how often each seq came
  for (auto& s : seen) s.assign(kPerProducer, 0);
  std::vector<std::string> errors;
  auto error = [&](std::string e) {
    absl::MutexLock lock(&mu);
    errors.push_back(std::move(e));
  };

  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      std::unique_ptr<Client> c = Connect();
      if (c == nullptr) return error("producer cannot connect");
      absl::StatusOr<std::unique_ptr<QueueStream>> stream = c->queue("work").OpenStream();
      if (!stream.ok()) return error(stream.status().ToString());
      // Pipelined: windows of 500 single puts in flight.
      for (int start = 0; start < kPerProducer; start += 500) {
        std::vector<std::string> items;
        for (int i = start; i < start + 500; ++i) items.push_back(absl::StrCat(p, ":", i));
        for (QueueOp& op : (*stream)->StartPuts("work", items)) {
          if (!op.Wait().status.ok()) return error(op.Wait().status.ToString());
        }
      }
      absl::Status closed = (*stream)->Close();
      if (!closed.ok()) error(closed.ToString());
    });
  }
  for (int k = 0; k < kConsumers; ++k) {
    threads.emplace_back([&, k] {
      std::unique_ptr<Client> c = Connect();
      if (c == nullptr) return error("consumer cannot connect");
      std::unique_ptr<QueueStream> stream;
      if (k % 2 == 0) {
        absl::StatusOr<std::unique_ptr<QueueStream>> s = c->queue("work").OpenStream();
        if (!s.ok()) return error(s.status().ToString());
        stream = std::move(*s);
      }
      std::vector<int> last(kProducers, -1);
      const absl::Time give_up = absl::Now() + absl::Seconds(50);
      while (received.load() < kTotal && absl::Now() < give_up) {
        std::vector<std::string> batch;
        if (stream != nullptr) {
          // One item at a time over the stream.
          absl::StatusOr<std::string> item = stream->Get("work", absl::Milliseconds(200));
          if (IsQueueEmpty(item.status())) continue;
          if (!item.ok()) return error(item.status().ToString());
          batch.push_back(*item);
        } else {
          // Unary batches.
          absl::StatusOr<std::vector<std::string>> items =
              c->queue("work").GetMany(97, absl::Milliseconds(200));
          if (IsQueueEmpty(items.status())) continue;
          if (!items.ok()) return error(items.status().ToString());
          batch = std::move(*items);
        }
        for (const std::string& item : batch) {
          std::vector<std::string> parts = absl::StrSplit(item, ':');
          int p = -1, i = -1;
          if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &p) ||
              !absl::SimpleAtoi(parts[1], &i) || p < 0 || p >= kProducers || i < 0 ||
              i >= kPerProducer) {
            error(absl::StrCat("malformed item '", item, "'"));
            continue;
          }
          if (i <= last[p]) {
            error(absl::StrCat("consumer ", k, " got ", item, " after ", p, ":", last[p]));
          }
          last[p] = i;
          {
            absl::MutexLock lock(&mu);
            ++seen[p][i];
          }
          received.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_THAT(errors, ::testing::IsEmpty());
  EXPECT_EQ(received.load(), kTotal);
  int missing = 0, duplicated = 0;
  for (const auto& s : seen) {
    for (int n : s) {
      if (n == 0) ++missing;
      if (n > 1) ++duplicated;
    }
  }
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(duplicated, 0);
  v1::QueueInfo info = Info("work");
  EXPECT_EQ(info.size(), 0);
  EXPECT_EQ(info.requeued(), 0);
  EXPECT_EQ(info.waiting_putters(), 0);
}

// get(timeout=0.2) on an empty queue: Empty after at least 0.2 s; get_nowait and
// put_nowait answer at once.
TEST_F(QueueTest, EmptyAfterTimeoutAndNowait) {
  ASSERT_THAT(client_->CreateQueue("e", 1), IsOk());
  Queue q = client_->queue("e");
  absl::Time start = absl::Now();
  absl::StatusOr<std::string> r = q.Get(absl::Milliseconds(200));
  absl::Duration took = absl::Now() - start;
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kDeadlineExceeded, "queue 'e' is empty"));
  EXPECT_TRUE(IsQueueEmpty(r.status()));
  EXPECT_GE(took, absl::Milliseconds(200));
  EXPECT_LT(took, absl::Seconds(5));

  // The same over a stream.
  absl::StatusOr<std::unique_ptr<QueueStream>> stream = q.OpenStream();
  ASSERT_THAT(stream, IsOk());
  start = absl::Now();
  EXPECT_THAT((*stream)->Get("e", absl::Milliseconds(200)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "queue 'e' is empty"));
  took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(200));
  EXPECT_LT(took, absl::Seconds(5));

  // get_nowait on empty, put_nowait on full: at once (generous bound, far below the
  // 30 s a wait-forever bug would take).
  start = absl::Now();
  EXPECT_THAT(q.Get(absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "queue 'e' is empty"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  ASSERT_THAT(q.Put("x", absl::ZeroDuration()), IsOk());
  start = absl::Now();
  absl::Status full = q.Put("y", absl::ZeroDuration());
  EXPECT_THAT(full, StatusIs(absl::StatusCode::kDeadlineExceeded, "queue 'e' is full"));
  EXPECT_TRUE(IsQueueFull(full));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_THAT((*stream)->Put("e", "y", absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "queue 'e' is full"));
  // put(timeout=0.2) on the full queue: Full after at least 0.2 s, nothing put.
  start = absl::Now();
  EXPECT_THAT(q.Put("z", absl::Milliseconds(200)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "queue 'e' is full"));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  EXPECT_EQ(Info("e").size(), 1);
  EXPECT_THAT(q.Get(absl::ZeroDuration()), IsOkAndHolds(std::string("x")));
}

// put on a full bounded queue blocks, and succeeds when a consumer takes an item.
TEST_F(QueueTest, PutBlocksOnFullQueueUntilAGet) {
  ASSERT_THAT(client_->CreateQueue("b", 2), IsOk());
  Queue q = client_->queue("b");
  ASSERT_THAT(q.PutMany({"1", "2"}, absl::ZeroDuration()), IsOk());
  std::atomic<bool> put_done{false};
  absl::Status put_status;
  std::thread putter([&] {
    put_status = q.Put("3");  // no timeout: waits for room
    put_done = true;
  });
  ASSERT_TRUE(PollUntil([&] { return Info("b").waiting_putters() == 1; }))
      << "the put never blocked";
  // Still blocked a while later: the daemon has no room to give it.
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_FALSE(put_done.load());
  EXPECT_THAT(q.Get(absl::ZeroDuration()), IsOkAndHolds(std::string("1")));
  EXPECT_TRUE(PollUntil([&] { return put_done.load(); }));
  putter.join();
  EXPECT_THAT(put_status, IsOk());
  EXPECT_THAT(q.GetMany(5, absl::ZeroDuration()), IsOkAndHolds(std::vector<std::string>{"2", "3"}));
}

// 1,000 gets blocked at once (the generated stub's async API, one channel, no client
// thread each) cost the daemon no thread each.
TEST_F(QueueTest, ThousandBlockedGettersHoldNoThreads) {
  ASSERT_THAT(client_->CreateQueue("wait"), IsOk());
  auto channel = grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials());
  std::unique_ptr<v1::Queues::Stub> stub = v1::Queues::NewStub(channel);
  grpc::CompletionQueue cq;
  struct Call {
    grpc::ClientContext context;
    v1::QueueGetResponse response;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<v1::QueueGetResponse>> reader;
  };
  std::vector<std::unique_ptr<Call>> calls;
  auto start_getters = [&](int n) {
    for (int i = 0; i < n; ++i) {
      auto call = std::make_unique<Call>();
      v1::QueueGetRequest request;
      request.set_queue("wait");  // no timeout: waits until an item or the delete
      call->reader = stub->AsyncGet(&call->context, request, &cq);
      call->reader->Finish(&call->response, &call->status, call.get());
      calls.push_back(std::move(call));
    }
  };
  start_getters(10);
  ASSERT_TRUE(AwaitGetters("wait", 10)) << "waiting: " << Info("wait").waiting_getters();
  // Let the daemon settle (gRPC may have started pollers on the first calls).
  absl::SleepFor(absl::Milliseconds(500));
  const int threads_10 = ThreadCount(daemon_->pid());
  ASSERT_GT(threads_10, 0);
  start_getters(990);
  ASSERT_TRUE(AwaitGetters("wait", 1000)) << "waiting: " << Info("wait").waiting_getters();
  const int threads_1000 = ThreadCount(daemon_->pid());
  EXPECT_LE(threads_1000, threads_10 + 8)
      << "1,000 blocked getters cost the daemon threads: " << threads_10 << " -> " << threads_1000;
  EXPECT_LT(threads_1000, 100);

  // Wake them all: 10 with items, the rest with the delete.
  std::vector<std::string> items;
  for (int i = 0; i < 10; ++i) items.push_back(absl::StrCat(i));
  ASSERT_THAT(client_->queue("wait").PutMany(items), IsOk());
  ASSERT_THAT(client_->DeleteQueue("wait"), IsOk());
  int ok = 0, deleted = 0, other = 0;
  for (size_t i = 0; i < calls.size(); ++i) {
    void* tag = nullptr;
    bool fine = false;
    ASSERT_EQ(
        cq.AsyncNext(&tag, &fine, std::chrono::system_clock::now() + std::chrono::seconds(30)),
        grpc::CompletionQueue::GOT_EVENT);
    Call* call = static_cast<Call*>(tag);
    if (call->status.ok() && call->response.items_size() == 1) {
      ++ok;
    } else if (call->status.error_code() == grpc::StatusCode::NOT_FOUND &&
               call->status.error_message().find("queue 'wait' was deleted") != std::string::npos) {
      ++deleted;
    } else {
      ++other;
    }
  }
  EXPECT_EQ(ok, 10);
  EXPECT_EQ(deleted, 990);
  EXPECT_EQ(other, 0);
  cq.Shutdown();
  void* tag;
  bool fine;
  while (cq.Next(&tag, &fine)) {
  }
}

// --- Bounds: whatever a client sends, what it can make forkpoold hold is capped.

// Queue names are checked on every call, not only at CreateQueue: a huge name is
// INVALID_ARGUMENT that does not echo it; ".", ".." and names starting with '-' are
// refused.
TEST_F(QueueTest, NamesAreBoundedOnEveryCall) {
  const std::string huge(100000, 'q');
  Queue q = client_->queue(huge);
  std::vector<absl::Status> answers = {client_->CreateQueue(huge).status(),
                                       q.Put("x"),
                                       q.Get(absl::ZeroDuration()).status(),
                                       q.Info().status(),
                                       q.Ack({"l-1"}).status(),
                                       client_->DeleteQueue(huge)};
  absl::StatusOr<std::unique_ptr<QueueStream>> stream = client_->queue("any").OpenStream();
  ASSERT_THAT(stream, IsOk());
  answers.push_back((*stream)->Put(huge, "x"));
  answers.push_back((*stream)->Get(huge, absl::ZeroDuration()).status());
  for (size_t i = 0; i < answers.size(); ++i) {
    EXPECT_THAT(answers[i],
                StatusIs(absl::StatusCode::kInvalidArgument, "queue name of 100000 bytes"))
        << "call " << i;
    EXPECT_LT(answers[i].message().size(), 300u) << "call " << i;
  }
  for (const char* name : {".", "..", "-", "-q"}) {
    EXPECT_THAT(client_->CreateQueue(name), StatusIs(absl::StatusCode::kInvalidArgument,
                                                     absl::StrCat("queue name '", name, "'")));
  }
  EXPECT_THAT(client_->CreateQueue(std::string(64, 'n')), IsOk());
  EXPECT_THAT(client_->CreateQueue(std::string(65, 'n')),
              StatusIs(absl::StatusCode::kInvalidArgument, "1 to 64"));
  absl::StatusOr<std::vector<v1::QueueInfo>> list = client_->ListQueues();
  ASSERT_THAT(list, IsOk());
  EXPECT_EQ(list->size(), 1u);
}

// Durations are checked: nanos outside [0, 1e9) or a negative timeout or lease is
// INVALID_ARGUMENT naming the field, on unary calls and on the stream.
TEST_F(QueueTest, MalformedDurationsAreInvalid) {
  ASSERT_THAT(client_->CreateQueue("d"), IsOk());
  auto channel = grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials());
  std::unique_ptr<v1::Queues::Stub> stub = v1::Queues::NewStub(channel);
  struct Case {
    int64_t seconds;
    int32_t nanos;
    bool lease;
    std::string expect;
  };
  for (const Case& c : {Case{0, 1'000'000'000, false, "timeout has nanos 1000000000"},
                        Case{1, -1, false, "timeout has nanos -1"},
                        Case{-1, 0, false, "timeout must not be negative"},
                        Case{int64_t{1} << 50, 0, false, "timeout of 1125899906842624 s"},
                        Case{0, 2'000'000'000, true, "lease has nanos 2000000000"},
                        Case{-3, 0, true, "lease must not be negative"}}) {
    v1::QueueGetRequest request;
    request.set_queue("d");
    google::protobuf::Duration* d = c.lease ? request.mutable_lease() : request.mutable_timeout();
    d->set_seconds(c.seconds);
    d->set_nanos(c.nanos);
    if (c.lease) request.mutable_timeout();  // zero: do not wait
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::QueueGetResponse response;
    const grpc::Status status = stub->Get(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.expect;
    EXPECT_THAT(status.error_message(), HasSubstr(c.expect));

    grpc::ClientContext stream_context;
    // Bounded: a daemon that let the get wait would otherwise hang the test.
    stream_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto stream = stub->Stream(&stream_context);
    v1::QueueStreamRequest op;
    op.set_correlation_id(5);
    *op.mutable_get() = request;
    ASSERT_TRUE(stream->Write(op));
    v1::QueueStreamResponse answer;
    ASSERT_TRUE(stream->Read(&answer));
    EXPECT_EQ(answer.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT)) << c.expect;
    EXPECT_THAT(answer.message(), HasSubstr(c.expect));
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
  }
  EXPECT_EQ(Info("d").waiting_getters(), 0);
}

// One stream holds at most --max_blocked_per_stream (default 1,024) waiting
// operations: one more that would wait is RESOURCE_EXHAUSTED naming the flag, while
// operations that need not wait, and other streams, go on; an answered one frees its
// slot; the stream's end withdraws all its waiters.
TEST_F(QueueTest, BlockedOperationsPerStreamAreCapped) {
  ASSERT_THAT(client_->CreateQueue("wait"), IsOk());
  ASSERT_THAT(client_->CreateQueue("other"), IsOk());
  ASSERT_THAT(client_->CreateQueue("full", 1), IsOk());
  ASSERT_THAT(client_->queue("full").Put("only"), IsOk());
  absl::StatusOr<std::unique_ptr<QueueStream>> stream = client_->queue("wait").OpenStream();
  ASSERT_THAT(stream, IsOk());
  std::vector<QueueOp> gets = (*stream)->StartGets("wait", 1024);  // no timeout
  ASSERT_TRUE(AwaitGetters("wait", 1024)) << "waiting: " << Info("wait").waiting_getters();

  // Answered at once (bounded, so that a daemon that lets them wait fails the test).
  QueueOp over_get = (*stream)->StartGet("wait");
  QueueOp over_put = (*stream)->StartPut("full", "more");
  ASSERT_TRUE(PollUntil([&] { return over_get.Ready() && over_put.Ready(); }));
  EXPECT_THAT(over_get.Wait().status,
              StatusIs(absl::StatusCode::kResourceExhausted, "--max_blocked_per_stream=1024"));
  EXPECT_THAT(over_put.Wait().status,
              StatusIs(absl::StatusCode::kResourceExhausted, "--max_blocked_per_stream"));
  EXPECT_EQ(Info("wait").waiting_getters(), 1024);
  EXPECT_EQ(Info("full").waiting_putters(), 0);
  EXPECT_EQ(Info("full").size(), 1);
  // What need not wait still runs on this stream.
  EXPECT_THAT((*stream)->Put("other", "x"), IsOk());
  EXPECT_THAT((*stream)->Get("other", absl::ZeroDuration()), IsOkAndHolds(std::string("x")));
  EXPECT_THAT((*stream)->Get("other", absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "is empty"));
  // The cap is per stream.
  absl::StatusOr<std::unique_ptr<QueueStream>> second = client_->queue("wait").OpenStream();
  ASSERT_THAT(second, IsOk());
  QueueOp elsewhere = (*second)->StartGet("wait");
  ASSERT_TRUE(AwaitGetters("wait", 1025));
  // An answered get frees its slot (getters are served in arrival order).
  ASSERT_THAT(client_->queue("wait").Put("item"), IsOk());
  ASSERT_TRUE(PollUntil([&] { return gets[0].Ready(); }));
  ASSERT_THAT(gets[0].Wait().status, IsOk());
  EXPECT_EQ(gets[0].Wait().items.at(0).data, "item");
  QueueOp again = (*stream)->StartGet("wait");
  ASSERT_TRUE(AwaitGetters("wait", 1025)) << "waiting: " << Info("wait").waiting_getters();
  EXPECT_FALSE(again.Ready());
  // Ending the streams withdraws every waiter they had: none is left behind.
  stream->reset();
  second->reset();
  EXPECT_TRUE(AwaitGetters("wait", 0)) << "waiting: " << Info("wait").waiting_getters();
  ASSERT_THAT(client_->queue("wait").Put("kept"), IsOk());
  EXPECT_EQ(Info("wait").size(), 1);
}

// A correlation id repeated while its operation is in flight is INVALID_ARGUMENT for
// the repeat (answered with that id); the first goes on and is answered as usual, and
// no second waiter is made that the stream's end would leave behind.
TEST_F(QueueTest, RepeatedCorrelationIdInFlightIsInvalidAndLeavesNoWaiter) {
  ASSERT_THAT(client_->CreateQueue("dup"), IsOk());
  auto channel = grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials());
  std::unique_ptr<v1::Queues::Stub> stub = v1::Queues::NewStub(channel);
  grpc::ClientContext context;
  // Bounded: an answer that never comes fails the test instead of hanging it.
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto stream = stub->Stream(&context);
  v1::QueueStreamRequest get;
  get.set_correlation_id(7);
  get.mutable_get()->set_queue("dup");  // no timeout
  ASSERT_TRUE(stream->Write(get));
  ASSERT_TRUE(AwaitGetters("dup", 1));

  v1::QueueStreamResponse answer;
  ASSERT_TRUE(stream->Write(get));
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_EQ(answer.correlation_id(), 7u);
  EXPECT_EQ(answer.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(answer.message(), HasSubstr("correlation_id 7 is already in flight"));
  EXPECT_EQ(Info("dup").waiting_getters(), 1);
  v1::QueueStreamRequest put;
  put.set_correlation_id(7);
  put.mutable_put()->set_queue("dup");
  put.mutable_put()->add_items()->set_data("refused");
  ASSERT_TRUE(stream->Write(put));
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_EQ(answer.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(Info("dup").size(), 0) << "the refused put put something";

  // The first is answered as usual; after that its id may be used again.
  ASSERT_THAT(client_->queue("dup").Put("x"), IsOk());
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_EQ(answer.correlation_id(), 7u);
  EXPECT_EQ(answer.code(), 0) << answer.message();
  ASSERT_EQ(answer.get().items_size(), 1);
  EXPECT_EQ(answer.get().items(0).payload().data(), "x");
  get.mutable_get()->mutable_timeout();  // zero: answered at once
  ASSERT_TRUE(stream->Write(get));
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_EQ(answer.correlation_id(), 7u);
  EXPECT_EQ(answer.code(), 0) << answer.message();
  EXPECT_TRUE(answer.get().empty());

  // Two blocked gets with one id, then the stream ends: no waiter is left to take
  // the next item.
  get.set_correlation_id(8);
  get.mutable_get()->clear_timeout();
  ASSERT_TRUE(stream->Write(get));
  ASSERT_TRUE(stream->Write(get));
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_EQ(answer.correlation_id(), 8u);
  EXPECT_EQ(answer.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  ASSERT_TRUE(AwaitGetters("dup", 1));
  context.TryCancel();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(AwaitGetters("dup", 0)) << "waiting: " << Info("dup").waiting_getters();
  ASSERT_THAT(client_->queue("dup").Put("kept"), IsOk());
  EXPECT_EQ(Info("dup").size(), 1);
}

// A daemon with smaller caps, to reach them quickly.
class QueueLimitTest : public QueueTest {
 protected:
  std::vector<std::string> ExtraFlags() const override {
    return {"--max_queues=50", "--max_blocked_per_stream=10"};
  }
};

// --max_queues: past it CreateQueue is RESOURCE_EXHAUSTED naming the flag; a repeat
// with exist_ok still succeeds, and deleting one makes room.
TEST_F(QueueLimitTest, QueueCountIsCappedNamingTheFlag) {
  for (int i = 0; i < 50; ++i) ASSERT_THAT(client_->CreateQueue(absl::StrCat("q", i)), IsOk());
  EXPECT_THAT(client_->CreateQueue("q50"),
              StatusIs(absl::StatusCode::kResourceExhausted, "--max_queues=50"));
  EXPECT_THAT(client_->CreateQueue("q7", 0, /*exist_ok=*/true), IsOk());
  absl::StatusOr<std::vector<v1::QueueInfo>> list = client_->ListQueues();
  ASSERT_THAT(list, IsOk());
  EXPECT_EQ(list->size(), 50u);
  ASSERT_THAT(client_->DeleteQueue("q0"), IsOk());
  EXPECT_THAT(client_->CreateQueue("q50"), IsOk());
  EXPECT_THAT(client_->CreateQueue("q51"),
              StatusIs(absl::StatusCode::kResourceExhausted, "--max_queues"));
}

// --max_blocked_per_stream is the flag's value.
TEST_F(QueueLimitTest, BlockedPerStreamCapIsTheFlags) {
  ASSERT_THAT(client_->CreateQueue("w"), IsOk());
  absl::StatusOr<std::unique_ptr<QueueStream>> stream = client_->queue("w").OpenStream();
  ASSERT_THAT(stream, IsOk());
  std::vector<QueueOp> gets = (*stream)->StartGets("w", 10);
  ASSERT_TRUE(AwaitGetters("w", 10));
  QueueOp over = (*stream)->StartGet("w", 1, absl::Seconds(30));
  ASSERT_TRUE(PollUntil([&] { return over.Ready(); }, absl::Seconds(10)));
  EXPECT_THAT(over.Wait().status,
              StatusIs(absl::StatusCode::kResourceExhausted, "--max_blocked_per_stream=10"));
  EXPECT_EQ(Info("w").waiting_getters(), 10);
}

// Spawns `forkpool --address A queue get NAME` (waits forever) with stdout to `out`.
pid_t SpawnCliGetter(const std::string& address, const std::string& name, const std::string& out) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  std::vector<std::string> args = {FORKPOOL_CLI_PATH, "--address", address, "queue", "get", name};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, FORKPOOL_CLI_PATH, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

// 50 rounds of: a `forkpool queue get` client blocked in get is SIGKILLed, an item is
// put (right after the kill, or only once the killed process is reaped), and a later
// getter takes what the queue has. Counts the items that never reached a later getter.
struct KillRounds {
  int rounds = 0;
  int lost = 0;          // items no later getter received
  int64_t requeued = 0;  // the daemon's counter at the end
  std::vector<std::string> lost_items;
};

class QueueKillTest : public QueueTest {
 protected:
  KillRounds RunKillRounds(int rounds, bool reap_before_put) {
    KillRounds result;
    result.rounds = rounds;
    EXPECT_THAT(client_->CreateQueue("k"), IsOk());
    Queue q = client_->queue("k");
    const std::string out = daemon_->dir() + "/getter.out";
    std::set<std::string> received;
    for (int round = 0; round < rounds; ++round) {
      const pid_t pid = SpawnCliGetter(daemon_->address(), "k", out);
      EXPECT_GT(pid, 0);
      if (pid <= 0) break;
      EXPECT_TRUE(AwaitGetters("k", 1)) << "round " << round << ": the CLI never blocked";
      EXPECT_EQ(::kill(pid, SIGKILL), 0);
      const std::string item = absl::StrCat("item-", round);
      int wstatus = 0;
      if (reap_before_put) {
        EXPECT_EQ(::waitpid(pid, &wstatus, 0), pid);
        EXPECT_FALSE(ProcessAlive(pid));
      }
      EXPECT_THAT(q.Put(item), IsOk());
      if (!reap_before_put) EXPECT_EQ(::waitpid(pid, &wstatus, 0), pid);
      EXPECT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL)
          << "round " << round << ": the getter ended otherwise (" << wstatus << ")";
      EXPECT_FALSE(ProcessAlive(pid));
      EXPECT_EQ(ReadFile(out), "") << "a killed getter printed an item";
      // A later getter: whatever the queue holds now (this round's item, or an earlier
      // one that came back late).
      absl::StatusOr<std::vector<std::string>> got = q.GetMany(100, absl::Seconds(2));
      if (got.ok()) received.insert(got->begin(), got->end());
    }
    // The final drain: whatever is still (or again) there.
    absl::StatusOr<std::vector<std::string>> rest = q.GetMany(10000, absl::Seconds(1));
    if (rest.ok()) received.insert(rest->begin(), rest->end());
    for (int round = 0; round < rounds; ++round) {
      const std::string item = absl::StrCat("item-", round);
      if (!received.count(item)) {
        ++result.lost;
        result.lost_items.push_back(item);
      }
    }
    EXPECT_EQ(received.size() + result.lost, static_cast<size_t>(rounds)) << "unexpected items";
    const v1::QueueInfo info = Info("k");
    EXPECT_EQ(info.size(), 0);
    EXPECT_EQ(info.waiting_getters(), 0);
    EXPECT_EQ(info.leased(), 0);
    result.requeued = info.requeued();
    std::cerr << "[ info ] " << rounds << " rounds ("
              << (reap_before_put ? "put after reaping" : "put right after kill") << "): requeued "
              << result.requeued << ", lost " << result.lost << "\n";
    return result;
  }
};

// The killed getter is reaped before the put: its socket is closed, so an item the
// daemon hands to its still-registered get cannot be written; the item must come back.
// (Once 4 of 50 were lost here: the daemon handed items to a get whose client had
// died before gRPC noticed; it now checks the client's connection first.)
TEST_F(QueueKillTest, GetterKilledAndReapedBeforePutLosesNoItem) {
  KillRounds r = RunKillRounds(50, /*reap_before_put=*/true);
  EXPECT_EQ(r.lost, 0) << "lost: " << ::testing::PrintToString(r.lost_items);
  // Every requeue is an item handed to a dead getter; one item per round.
  EXPECT_LE(r.requeued, 50);
}

// A plain get whose client is SIGKILLed just before the item is put: gRPC would write
// the reply into the dying client's socket buffer and report success, losing the item
// (23 of 50 were lost before the fix). The getter may not have died yet when the item
// arrives: forkpoold sees the pending SIGKILL of the connection's process (its pid
// from SO_PEERCRED) and does not hand the item over.
TEST_F(QueueKillTest, GetterKilledRightBeforePutLosesNoItem) {
  KillRounds r = RunKillRounds(50, /*reap_before_put=*/false);
  EXPECT_EQ(r.lost, 0) << "lost: " << ::testing::PrintToString(r.lost_items);
  EXPECT_GE(r.requeued, 1) << "no item was handed to a dead getter: the race did not happen";
  EXPECT_LE(r.requeued, 50);
}

// Leased get: an item never acknowledged comes back after its lease with
// delivery_count 2; an acknowledged one never does.
TEST_F(QueueTest, LeaseExpiryRedeliversUnackedItemsOnly) {
  ASSERT_THAT(client_->CreateQueue("l"), IsOk());
  Queue q = client_->queue("l");
  ASSERT_THAT(q.PutMany({"acked", "dropped"}), IsOk());
  const absl::Duration lease = absl::Milliseconds(500);
  absl::StatusOr<std::vector<QueueItem>> first = q.GetLeased(2, lease, absl::ZeroDuration());
  ASSERT_THAT(first, IsOk());
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ((*first)[0].data, "acked");
  EXPECT_EQ((*first)[1].data, "dropped");
  EXPECT_EQ((*first)[0].delivery_count, 1);
  EXPECT_FALSE((*first)[0].lease_id.empty());
  EXPECT_NE((*first)[0].lease_id, (*first)[1].lease_id);
  v1::QueueInfo info = Info("l");
  EXPECT_EQ(info.size(), 0);
  EXPECT_EQ(info.leased(), 2);
  EXPECT_THAT(q.Ack({(*first)[0].lease_id}), IsOkAndHolds(std::vector<std::string>{}));
  // Nothing to get while "dropped" is leased.
  EXPECT_THAT(q.Get(absl::ZeroDuration()), StatusIs(absl::StatusCode::kDeadlineExceeded, "empty"));
  // The consumer of "dropped" never acks: after the lease it comes back.
  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<QueueItem>> again = q.GetLeased(5, lease, absl::Seconds(10));
  ASSERT_THAT(again, IsOk());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));  // the lease had time left
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].data, "dropped");
  EXPECT_EQ((*again)[0].delivery_count, 2);
  // The expired lease is no longer held.
  EXPECT_THAT(q.Ack({(*first)[1].lease_id}),
              IsOkAndHolds(std::vector<std::string>{(*first)[1].lease_id}));
  EXPECT_THAT(q.Ack({(*again)[0].lease_id}), IsOkAndHolds(std::vector<std::string>{}));
  // "acked" never returns: nothing within three lease lengths.
  EXPECT_THAT(q.GetLeased(5, lease, absl::Milliseconds(1500)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "queue 'l' is empty"));
  info = Info("l");
  EXPECT_EQ(info.size(), 0);
  EXPECT_EQ(info.leased(), 0);
  EXPECT_EQ(info.bytes(), 0);
  EXPECT_GE(info.requeued(), 1);
}

// A leasing consumer over a stream that dies (its stream is torn down) without acking:
// the item comes back to the next consumer with delivery_count 2.
TEST_F(QueueTest, LeasedItemOfADeadStreamConsumerComesBack) {
  ASSERT_THAT(client_->CreateQueue("ls"), IsOk());
  ASSERT_THAT(client_->queue("ls").Put("job"), IsOk());
  {
    std::unique_ptr<Client> other = Connect();
    ASSERT_NE(other, nullptr);
    absl::StatusOr<std::unique_ptr<QueueStream>> stream = other->queue("ls").OpenStream();
    ASSERT_THAT(stream, IsOk());
    const QueueOpResult& r =
        (*stream)->StartGet("ls", 1, absl::ZeroDuration(), absl::Milliseconds(400)).Wait();
    ASSERT_THAT(r.status, IsOk());
    ASSERT_EQ(r.items.size(), 1u);
    EXPECT_EQ(r.items[0].delivery_count, 1);
  }  // stream and client gone, no ack
  absl::StatusOr<std::vector<QueueItem>> again =
      client_->queue("ls").GetLeased(1, absl::Seconds(30), absl::Seconds(10));
  ASSERT_THAT(again, IsOk());
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].data, "job");
  EXPECT_EQ((*again)[0].delivery_count, 2);
  EXPECT_THAT(client_->queue("ls").Ack({(*again)[0].lease_id}), IsOk());
}

// Deleting a queue wakes its blocked getters (unary and stream) and putters with an
// error naming the queue.
TEST_F(QueueTest, DeleteWakesBlockedCallsNamingTheQueue) {
  ASSERT_THAT(client_->CreateQueue("doomed"), IsOk());
  ASSERT_THAT(client_->CreateQueue("full", 1), IsOk());
  ASSERT_THAT(client_->queue("full").Put("x"), IsOk());
  absl::StatusOr<std::unique_ptr<QueueStream>> stream = client_->queue("doomed").OpenStream();
  ASSERT_THAT(stream, IsOk());
  std::vector<QueueOp> stream_gets = (*stream)->StartGets("doomed", 2);
  std::vector<absl::Status> results(3);
  std::vector<std::thread> getters;
  for (int i = 0; i < 3; ++i) {
    getters.emplace_back([&, i] { results[i] = client_->queue("doomed").Get().status(); });
  }
  absl::Status put_result;
  std::thread putter([&] { put_result = client_->queue("full").Put("y"); });
  ASSERT_TRUE(AwaitGetters("doomed", 5));
  ASSERT_TRUE(PollUntil([&] { return Info("full").waiting_putters() == 1; }));
  ASSERT_THAT(client_->DeleteQueue("doomed"), IsOk());
  ASSERT_THAT(client_->DeleteQueue("full"), IsOk());
  for (std::thread& t : getters) t.join();
  putter.join();
  for (const absl::Status& s : results) {
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kNotFound,
                            "queue 'doomed' was deleted while this call waited"));
  }
  for (QueueOp& op : stream_gets) {
    EXPECT_THAT(op.Wait().status, StatusIs(absl::StatusCode::kNotFound,
                                           "queue 'doomed' was deleted while this call waited"));
  }
  EXPECT_THAT(put_result, StatusIs(absl::StatusCode::kNotFound,
                                   "queue 'full' was deleted while this call waited"));
  EXPECT_THAT((*stream)->Close(), IsOk());
}

TEST_F(QueueTest, CliQueueCommands) {
  CommandResult r = Cli({"queue", "create", "jobs", "--maxsize", "3"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("jobs"));
  r = Cli({"queue", "put", "jobs", "a", "b"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Cli({"queue", "size", "jobs"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "2\n");
  // All or none: two more do not fit in maxsize 3.
  r = Cli({"queue", "put", "jobs", "c", "d", "--timeout", "0.1"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("queue 'jobs' is full"));
  r = Cli({"queue", "ls"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("jobs"));
  r = Cli({"queue", "ls", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"name\": \"jobs\""));
  EXPECT_THAT(r.out, HasSubstr("\"size\": \"2\""));
  r = Cli({"queue", "get", "jobs", "-n", "5"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "a\nb\n");
  absl::Time start = absl::Now();
  r = Cli({"queue", "get", "jobs", "--timeout", "0.3"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  EXPECT_THAT(r.err, HasSubstr("queue 'jobs' is empty"));
  EXPECT_EQ(r.out, "");
  r = Cli({"queue", "get", "nope", "--timeout", "0"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_THAT(r.err, HasSubstr("unknown queue 'nope'"));
  r = Cli({"queue", "get", "jobs", "-n", "0"});
  EXPECT_EQ(r.exit_code, 3);
  r = Cli({"queue", "delete", "jobs"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "jobs\tdeleted\n");
  r = Cli({"queue", "size", "jobs"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_THAT(r.err, HasSubstr("unknown queue 'jobs'"));
  // The CLI and the library see the same queue.
  ASSERT_THAT(client_->CreateQueue("shared"), IsOk());
  ASSERT_THAT(client_->queue("shared").Put("from library"), IsOk());
  r = Cli({"queue", "get", "shared", "--timeout", "5"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "from library\n");
}

}  // namespace
}  // namespace forkpool
