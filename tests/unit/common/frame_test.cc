// Tests for common/frame.h: length-prefixed frames over a real socketpair.
#include "common/frame.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "forkpool/internal/worker.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/status_matchers.h"
#include "tests/unit/test_util.h"

namespace forkpool {
namespace {

using ::forkpool::testing::IsOk;
using ::forkpool::testing::IsOkAndHolds;
using ::forkpool::testing::MakeSocketPair;
using ::forkpool::testing::SetNonBlocking;
using ::forkpool::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Optional;

internal::Status MakeStatus(int code, const std::string& message) {
  internal::Status s;
  s.set_code(code);
  s.set_message(message);
  return s;
}

// The 4-byte little-endian header for a body of `size` bytes.
std::string Header(uint32_t size) {
  std::string h(4, '\0');
  h[0] = static_cast<char>(size & 0xff);
  h[1] = static_cast<char>((size >> 8) & 0xff);
  h[2] = static_cast<char>((size >> 16) & 0xff);
  h[3] = static_cast<char>((size >> 24) & 0xff);
  return h;
}

TEST(AppendFrameTest, WritesLittleEndianLengthThenBodyAfterExistingBytes) {
  const internal::Status message = MakeStatus(5, std::string(300, 'a'));
  const std::string body = message.SerializeAsString();
  ASSERT_EQ(body.size(), 305u);  // code (2) + tag + 2-byte length + 300 bytes

  std::string out = "prefix";
  AppendFrame(message, &out);
  EXPECT_EQ(out, "prefix" + std::string("\x31\x01\x00\x00", 4) + body);
}

TEST(AppendFrameTest, EmptyMessageIsAHeaderOfZero) {
  std::string out;
  AppendFrame(internal::Status(), &out);
  EXPECT_EQ(out, std::string(4, '\0'));
}

TEST(FrameDecoderTest, ReturnsNothingUntilTheLastByteOfAFrameArrives) {
  std::string stream;
  AppendFrame(MakeStatus(3, "first"), &stream);
  FrameDecoder decoder;
  for (size_t i = 0; i + 1 < stream.size(); ++i) {
    decoder.Append(stream.substr(i, 1));
    ASSERT_THAT(decoder.Next(), IsOkAndHolds(std::nullopt)) << "after byte " << i;
    EXPECT_EQ(decoder.pending_bytes(), i + 1);
  }
  decoder.Append(stream.substr(stream.size() - 1));
  auto frame = decoder.Next();
  ASSERT_THAT(frame, IsOk());
  ASSERT_TRUE(frame->has_value());
  internal::Status parsed;
  ASSERT_TRUE(parsed.ParseFromArray((*frame)->data(), (*frame)->size()));
  EXPECT_EQ(parsed.code(), 3);
  EXPECT_EQ(parsed.message(), "first");
  EXPECT_EQ(decoder.pending_bytes(), 0u);
}

TEST(FrameDecoderTest, ZeroLengthFrameYieldsEmptyBody) {
  FrameDecoder decoder;
  decoder.Append(std::string(4, '\0'));
  EXPECT_THAT(decoder.Next(), IsOkAndHolds(Optional(std::string_view())));
  EXPECT_THAT(decoder.Next(), IsOkAndHolds(std::nullopt));
}

// Each byte is its own write, and each ReadFrom sees exactly one byte: the decoder
// must reassemble frames from one-byte reads.
TEST(FrameOverSocketTest, FramesWrittenByteByByteAreReassembled) {
  auto [reader, writer] = MakeSocketPair(SOCK_STREAM);
  std::string stream;
  AppendFrame(MakeStatus(1, "one"), &stream);
  AppendFrame(MakeStatus(2, std::string(200, 'b')), &stream);
  AppendFrame(MakeStatus(14, "three"), &stream);

  FrameDecoder decoder;
  std::vector<internal::Status> received;
  for (size_t i = 0; i < stream.size(); ++i) {
    ASSERT_THAT(WriteAll(writer.get(), std::string_view(stream).substr(i, 1)), IsOk());
    ASSERT_THAT(decoder.ReadFrom(reader.get()), IsOkAndHolds(1u));
    while (true) {
      auto frame = decoder.Next();
      ASSERT_THAT(frame, IsOk());
      if (!frame->has_value()) break;
      internal::Status s;
      ASSERT_TRUE(s.ParseFromArray((*frame)->data(), (*frame)->size()));
      received.push_back(s);
    }
  }
  ASSERT_EQ(received.size(), 3u);
  EXPECT_EQ(received[0].code(), 1);
  EXPECT_EQ(received[0].message(), "one");
  EXPECT_EQ(received[1].code(), 2);
  EXPECT_EQ(received[1].message(), std::string(200, 'b'));
  EXPECT_EQ(received[2].code(), 14);
  EXPECT_EQ(received[2].message(), "three");
}

// The same through ReadMessage, with a writer thread dribbling bytes one send each.
TEST(FrameOverSocketTest, ReadMessageReassemblesByteByByteWritesFromAnotherThread) {
  auto [reader, writer] = MakeSocketPair(SOCK_STREAM);
  std::string stream;
  for (int i = 1; i <= 5; ++i) {
    AppendFrame(MakeStatus(i, std::string(i * 37, 'a' + i)), &stream);
  }
  std::thread dribbler([&, fd = writer.get()] {
    for (size_t i = 0; i < stream.size(); ++i) {
      ASSERT_THAT(WriteAll(fd, std::string_view(stream).substr(i, 1)), IsOk());
    }
    ::shutdown(fd, SHUT_WR);
  });
  FrameDecoder decoder;
  for (int i = 1; i <= 5; ++i) {
    internal::Status s;
    ASSERT_THAT(ReadMessage(reader.get(), decoder, &s), IsOk()) << "message " << i;
    EXPECT_EQ(s.code(), i);
    EXPECT_EQ(s.message(), std::string(i * 37, 'a' + i));
  }
  internal::Status s;
  EXPECT_THAT(ReadMessage(reader.get(), decoder, &s),
              StatusIs(absl::StatusCode::kNotFound));
  dribbler.join();
}

TEST(FrameOverSocketTest, SeveralFramesInOneWriteAreReadOneByOne) {
  auto [reader, writer] = MakeSocketPair(SOCK_STREAM);
  std::string stream;
  AppendFrame(MakeStatus(1, "a"), &stream);
  AppendFrame(MakeStatus(2, "bb"), &stream);
  AppendFrame(MakeStatus(3, "ccc"), &stream);
  ASSERT_THAT(WriteAll(writer.get(), stream), IsOk());
  // Close before reading: every frame must come out of the bytes of one read.
  writer.reset();

  FrameDecoder decoder;
  internal::Status s;
  ASSERT_THAT(ReadMessage(reader.get(), decoder, &s), IsOk());
  EXPECT_EQ(s.code(), 1);
  EXPECT_EQ(s.message(), "a");
  // The one read brought in the other two frames as well.
  const size_t first = 4 + MakeStatus(1, "a").ByteSizeLong();
  EXPECT_EQ(decoder.pending_bytes(), stream.size() - first);
  ASSERT_THAT(ReadMessage(reader.get(), decoder, &s), IsOk());
  EXPECT_EQ(s.code(), 2);
  EXPECT_EQ(s.message(), "bb");
  ASSERT_THAT(ReadMessage(reader.get(), decoder, &s), IsOk());
  EXPECT_EQ(s.code(), 3);
  EXPECT_EQ(s.message(), "ccc");
  EXPECT_THAT(ReadMessage(reader.get(), decoder, &s),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("end of stream")));
}

TEST(FrameOverSocketTest, CleanEofBeforeAnyFrameIsNotFound) {
  auto [reader, writer] = MakeSocketPair(SOCK_STREAM);
  writer.reset();
  FrameDecoder decoder;
  internal::Status s;
  EXPECT_THAT(ReadMessage(reader.get(), decoder, &s),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(FrameOverSocketTest, EofInsideAFrameBodyIsDataLoss) {
  auto [reader, writer] = MakeSocketPair(SOCK_STREAM);
  std::string frame;
  AppendFrame(MakeStatus(2, "a message cut in half"), &frame);
  const std::string half = frame.substr(0, frame.size() / 2);
  ASSERT_THAT(WriteAll(writer.get(), half), IsOk());
  writer.reset();
  FrameDecoder decoder;
  internal::Status s;
  EXPECT_THAT(ReadMessage(reader.get(), decoder, &s),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr(absl::StrCat(half.size(), " bytes pending"))));
}

TEST(FrameOverSocketTest, EofInsideAFrameHeaderIsDataLoss) {
  auto [reader, writer] = MakeSocketPair(SOCK_STREAM);
  ASSERT_THAT(WriteAll(writer.get(), std::string("\x05\x00", 2)), IsOk());
  writer.reset();
  FrameDecoder decoder;
  internal::Status s;
  EXPECT_THAT(ReadMessage(reader.get(), decoder, &s),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("2 bytes pending")));
}

TEST(FrameOverSocketTest, EofAfterACompleteFrameThenPartialIsDataLoss) {
  auto [reader, writer] = MakeSocketPair(SOCK_STREAM);
  std::string stream;
  AppendFrame(MakeStatus(1, "whole"), &stream);
  AppendFrame(MakeStatus(2, "partial"), &stream);
  stream.resize(stream.size() - 1);
  ASSERT_THAT(WriteAll(writer.get(), stream), IsOk());
  writer.reset();
  FrameDecoder decoder;
  internal::Status s;
  ASSERT_THAT(ReadMessage(reader.get(), decoder, &s), IsOk());
  EXPECT_EQ(s.message(), "whole");
  EXPECT_THAT(ReadMessage(reader.get(), decoder, &s),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(FrameOverSocketTest, OversizedFrameIsInvalidArgumentNamingBothSizes) {
  auto [reader, writer] = MakeSocketPair(SOCK_STREAM);
  std::string frame;
  AppendFrame(MakeStatus(2, std::string(100, 'x')), &frame);
  const size_t body = frame.size() - 4;
  ASSERT_THAT(WriteAll(writer.get(), frame), IsOk());
  FrameDecoder decoder(/*max_frame_bytes=*/16);
  internal::Status s;
  EXPECT_THAT(ReadMessage(reader.get(), decoder, &s),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(absl::StrCat("frame of ", body, " bytes")),
                             HasSubstr("limit of 16 bytes"))));
}

// A hostile header must be refused from the header alone, without waiting for (or
// buffering) 4 GiB of body: the reader is non-blocking, so waiting would show up as
// Unavailable instead of InvalidArgument.
TEST(FrameOverSocketTest, OversizedHeaderIsRefusedBeforeTheBodyArrives) {
  auto [reader, writer] = MakeSocketPair(SOCK_STREAM);
  SetNonBlocking(reader.get());
  ASSERT_THAT(WriteAll(writer.get(), Header(0xffffffffu)), IsOk());
  FrameDecoder decoder;  // default limit
  internal::Status s;
  EXPECT_THAT(ReadMessage(reader.get(), decoder, &s),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("4294967295"),
                             HasSubstr(absl::StrCat(kDefaultMaxFrameBytes)))));
}

TEST(FrameOverSocketTest, FrameAtExactlyTheLimitIsAccepted) {
  auto [reader, writer] = MakeSocketPair(SOCK_STREAM);
  std::string frame;
  AppendFrame(MakeStatus(2, std::string(10, 'x')), &frame);
  const size_t body = frame.size() - 4;
  ASSERT_THAT(WriteAll(writer.get(), frame), IsOk());
  FrameDecoder decoder(body);
  internal::Status s;
  ASSERT_THAT(ReadMessage(reader.get(), decoder, &s), IsOk());
  EXPECT_EQ(s.message(), std::string(10, 'x'));
}

TEST(FrameOverSocketTest, UnparsableBodyIsInvalidArgument) {
  auto [reader, writer] = MakeSocketPair(SOCK_STREAM);
  // Field 1, varint, whose varint never ends.
  const std::string body("\x08\xff", 2);
  ASSERT_THAT(WriteAll(writer.get(), Header(body.size()) + body), IsOk());
  FrameDecoder decoder;
  internal::Status s;
  EXPECT_THAT(ReadMessage(reader.get(), decoder, &s),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unparsable frame of 2 bytes")));
}

TEST(FrameOverSocketTest, ReadFromANonBlockingSocketWithNothingIsUnavailable) {
  auto [reader, writer] = MakeSocketPair(SOCK_STREAM);
  SetNonBlocking(reader.get());
  FrameDecoder decoder;
  EXPECT_THAT(decoder.ReadFrom(reader.get()), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(decoder.pending_bytes(), 0u);
  internal::Status s;
  EXPECT_THAT(ReadMessage(reader.get(), decoder, &s),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST(FrameOverSocketTest, ReadFromAClosedFdIsAnErrnoStatus) {
  FrameDecoder decoder;
  EXPECT_THAT(decoder.ReadFrom(-1), StatusIs(absl::StatusCode::kFailedPrecondition,
                                             HasSubstr("read(frame stream)")));
}

// An 8 MiB frame (far beyond the socket buffer) followed by a small one, read by a
// non-blocking reader that polls: it must survive many short reads and EAGAINs and
// deliver the bodies intact.
TEST(FrameOverSocketTest, LargeFrameThroughNonBlockingReader) {
  auto [reader, writer] = MakeSocketPair(SOCK_STREAM);
  SetNonBlocking(reader.get());

  internal::RunBatch big;
  big.set_batch_id(42);
  std::string input(8u << 20, '\0');
  for (size_t i = 0; i < input.size(); ++i) input[i] = static_cast<char>(i * 7 + i / 251);
  big.set_inputs(input);
  std::string stream;
  AppendFrame(big, &stream);
  internal::RunBatch small;
  small.set_batch_id(43);
  AppendFrame(small, &stream);

  FrameDecoder decoder;
  // Nothing written yet: EAGAIN is Unavailable, and leaves the decoder usable.
  ASSERT_THAT(decoder.ReadFrom(reader.get()), StatusIs(absl::StatusCode::kUnavailable));

  std::thread sender([&, fd = writer.get()] { ASSERT_THAT(WriteAll(fd, stream), IsOk()); });

  std::vector<internal::RunBatch> received;
  int reads = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (received.size() < 2 && absl::Now() < deadline) {
    pollfd p{reader.get(), POLLIN, 0};
    ASSERT_GE(::poll(&p, 1, 1000), 0);
    auto n = decoder.ReadFrom(reader.get());
    if (!n.ok()) {
      ASSERT_THAT(n, StatusIs(absl::StatusCode::kUnavailable));
      continue;
    }
    ASSERT_GT(*n, 0u) << "unexpected EOF";
    ++reads;
    while (true) {
      auto frame = decoder.Next();
      ASSERT_THAT(frame, IsOk());
      if (!frame->has_value()) break;
      internal::RunBatch b;
      ASSERT_TRUE(b.ParseFromArray((*frame)->data(), (*frame)->size()));
      received.push_back(std::move(b));
    }
  }
  sender.join();
  ASSERT_EQ(received.size(), 2u);
  EXPECT_GT(reads, 1) << "the large frame should need several reads";
  EXPECT_EQ(received[0].batch_id(), 42u);
  EXPECT_TRUE(received[0].inputs() == input) << "large body corrupted";
  EXPECT_EQ(received[1].batch_id(), 43u);
  EXPECT_EQ(decoder.pending_bytes(), 0u);
  // Drained: the next read is EAGAIN again.
  EXPECT_THAT(decoder.ReadFrom(reader.get()), StatusIs(absl::StatusCode::kUnavailable));
}

TEST(WriteAllTest, WritingToAClosedPeerIsAnErrorNotSigpipe) {
  auto [reader, writer] = MakeSocketPair(SOCK_STREAM);
  reader.reset();
  // MSG_NOSIGNAL: without it, SIGPIPE would kill this test binary.
  EXPECT_THAT(WriteAll(writer.get(), "bytes"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("send(frame)")));
}

}  // namespace
}  // namespace forkpool
