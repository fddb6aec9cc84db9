// Fuzzes the daemon's end of the worker protocol: a real WorkerConnection
// (server/daemon/launch/worker_connection.h) over a socketpair, with the fuzzer playing a
// worker that writes arbitrary bytes in arbitrary splits to the socket and to its
// stderr pipe, and closes the socket. Read() must deliver exactly the frames a
// reference decoder finds in the same bytes, and fail (never crash) on an oversized
// or unparsable frame; its output (ChildOutput) must log whole, tagged lines and keep a
// bounded tail;
// Send() must put exactly one well-formed frame on the wire.
#include <fcntl.h>
#include <fuzzer/FuzzedDataProvider.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "common/frame.h"
#include "common/packed_items.h"
#include "common/unique_fd.h"
#include "fuzz/fuzz_util.h"
#include "server/daemon/launch/worker_connection.h"

namespace {

using forkpool::AppendPackedItem;
using forkpool::FrameDecoder;
using forkpool::UniqueFd;
using forkpool::WorkerConnection;
using forkpool::internal::FromWorker;
using forkpool::internal::ToWorker;

constexpr size_t kStderrTailBytes = 4096;

// What the fuzzer, as the worker, does next.
enum class Op { kWrite, kStderr, kSend, kClose, kMaxValue = kClose };

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  forkpool::fuzz::QuietProtobuf();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  static constexpr size_t kLimits[] = {0, 5, 64, 4096, forkpool::kDefaultMaxFrameBytes};
  const size_t limit = in.PickValueInArray(kLimits);

  int sv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
  UniqueFd daemon_end(sv[0]), worker_end(sv[1]);
  FUZZ_CHECK(::fcntl(worker_end.get(), F_SETFL, O_NONBLOCK) == 0, "fcntl");
  int p[2];
  FUZZ_CHECK(::pipe2(p, O_CLOEXEC) == 0, "pipe2");
  UniqueFd stderr_read(p[0]), stderr_write(p[1]);
  // No pidfd and a pid that is never used: the fuzzer never calls Kill().
  // The worker's output goes to a sink that checks each line is tagged and whole.
  size_t logged_lines = 0;
  absl::StatusOr<std::unique_ptr<WorkerConnection>> created = WorkerConnection::Create(
      /*pid=*/0, std::move(daemon_end), UniqueFd(), std::move(stderr_read), limit, "[fuzz/0 pid 0]",
      [&logged_lines](std::string_view line) {
        FUZZ_CHECK(line.rfind("forkpoold: [fuzz/0 pid 0] ", 0) == 0, "an untagged output line");
        FUZZ_CHECK(line.find('\n') == std::string_view::npos, "a logged line holds a newline");
        ++logged_lines;
      });
  FUZZ_CHECK(created.ok(), "WorkerConnection::Create");
  WorkerConnection& conn = **created;

  FrameDecoder reference(limit);     // the same bytes, decoded independently
  std::deque<std::string> expected;  // serialised messages Read() must deliver
  bool expect_error = false;         // the reference met a bad frame
  std::string stderr_all;
  size_t checksum = 0;

  while (in.remaining_bytes() > 0) {
    const Op op = in.ConsumeEnum<Op>();
    switch (op) {
      case Op::kWrite:
      case Op::kClose: {
        // Bytes, then (kClose) EOF, then the daemon reads. Read() returns false at EOF
        // and the fuzzer stops there, so the worker end is open here.
        const bool close = op == Op::kClose;
        const std::string chunk =
            in.ConsumeBytesAsString(in.ConsumeIntegralInRange<size_t>(0, 4096));
        if (!chunk.empty()) {
          const ssize_t n = ::send(worker_end.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
          FUZZ_CHECK(n == static_cast<ssize_t>(chunk.size()), "short send to the daemon end");
          reference.Append(chunk);
          while (!expect_error) {
            auto frame = reference.Next();
            if (!frame.ok()) {
              expect_error = true;
              break;
            }
            if (!frame->has_value()) break;
            FromWorker m;
            if (!m.ParseFromArray((*frame)->data(), static_cast<int>((*frame)->size()))) {
              expect_error = true;
              break;
            }
            expected.push_back(m.SerializeAsString());
          }
        }
        if (close) worker_end.reset();
        absl::StatusOr<bool> open = conn.Read([&](const FromWorker& m) {
          FUZZ_CHECK(!expected.empty(), "Read delivered a frame the reference did not find");
          FUZZ_CHECK(m.SerializeAsString() == expected.front(),
                     "Read delivered a different message");
          expected.pop_front();
          checksum += forkpool::fuzz::Touch(m);
        });
        if (!open.ok()) {
          FUZZ_CHECK(expect_error, "Read failed on a well-formed stream");
          FUZZ_CHECK(expected.empty(), "Read failed before delivering every good frame");
          FUZZ_CHECK(absl::IsInvalidArgument(open.status()), "unexpected error code");
          forkpool::fuzz::Sink(checksum);
          return 0;  // the daemon kills such a worker
        }
        FUZZ_CHECK(!expect_error, "Read accepted a bad frame");
        FUZZ_CHECK(expected.empty(), "Read left a complete frame unread");
        FUZZ_CHECK(*open == worker_end.valid(), "Read's EOF disagrees with the socket");
        if (!*open) {
          forkpool::fuzz::Sink(checksum);
          return 0;
        }
        break;
      }
      case Op::kStderr: {
        const std::string chunk =
            in.ConsumeBytesAsString(in.ConsumeIntegralInRange<size_t>(0, 4096));
        if (!chunk.empty() && stderr_write.valid()) {
          FUZZ_CHECK(::write(stderr_write.get(), chunk.data(), chunk.size()) ==
                         static_cast<ssize_t>(chunk.size()),
                     "short write to the stderr pipe");
        }
        if (stderr_write.valid()) stderr_all += chunk;
        if (in.ConsumeIntegralInRange<int>(0, 7) == 0) stderr_write.reset();
        (void)conn.output()->Drain();
        const std::string tail = conn.output()->Tail();
        FUZZ_CHECK(tail.size() <= kStderrTailBytes, "stderr tail over 4 KiB");
        FUZZ_CHECK(stderr_all.size() >= tail.size() &&
                       stderr_all.compare(stderr_all.size() - tail.size(), tail.size(), tail) == 0,
                   "stderr tail is not the end of what the worker wrote");
        FUZZ_CHECK(conn.output()->eof() == !stderr_write.valid(),
                   "stderr EOF disagrees with the pipe");
        break;
      }
      case Op::kSend: {
        ToWorker message;
        switch (in.ConsumeIntegralInRange<int>(0, 3)) {
          case 0: {
            auto* run = message.mutable_run();
            run->set_batch_id(in.ConsumeIntegral<uint64_t>());
            run->set_function(in.ConsumeRandomLengthString(64));
            const int inputs = in.ConsumeIntegralInRange<int>(0, 8);
            for (int i = 0; i < inputs; ++i) {
              AppendPackedItem(in.ConsumeRandomLengthString(256), run->mutable_inputs());
            }
            run->set_attempt(in.ConsumeIntegral<int32_t>());
            break;
          }
          case 1:
            message.mutable_stop()->set_batch_id(in.ConsumeIntegral<uint64_t>());
            break;
          case 2: {
            auto* reply = message.mutable_reply();
            reply->set_correlation_id(in.ConsumeIntegral<uint64_t>());
            reply->mutable_status()->set_code(in.ConsumeIntegral<int32_t>());
            reply->set_body(in.ConsumeRandomLengthString(256));
            break;
          }
          default:
            message.mutable_shutdown();
        }
        absl::StatusOr<bool> queued = conn.Send(message);
        if (!worker_end.valid()) {
          // The worker is gone: EPIPE (or queued bytes), never a crash.
          forkpool::fuzz::Sink(checksum);
          return 0;
        }
        FUZZ_CHECK(queued.ok(), "Send to a live worker failed");
        FUZZ_CHECK(!*queued, "a small frame did not fit in an empty socket buffer");
        FrameDecoder worker_side;
        FUZZ_CHECK(worker_side.ReadFrom(worker_end.get()).ok(), "worker side read");
        auto frame = worker_side.Next();
        FUZZ_CHECK(frame.ok() && frame->has_value(), "Send put no complete frame on the wire");
        FUZZ_CHECK(**frame == message.SerializeAsString(), "Send put different bytes on the wire");
        FUZZ_CHECK(worker_side.pending_bytes() == 0, "Send put extra bytes on the wire");
        break;
      }
    }
  }
  forkpool::fuzz::Sink(checksum);
  return 0;
}
