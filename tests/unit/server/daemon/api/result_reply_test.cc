// Tests for server/daemon/api/result_reply.h: the shared-output GetResponse parses
// back to exactly the result, every field included, and shares its data.
#include "server/daemon/api/result_reply.h"

#include <string>
#include <vector>

#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace forkpool {
namespace {

v1::GetResponse Parse(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  v1::GetResponse response;
  EXPECT_TRUE(response.ParseFromString(bytes));
  return response;
}

TEST(GetResponseBytesTest, ParsesBackToTheWholeResult) {
  auto result = std::make_shared<v1::TaskResult>();
  result->set_task_id("t-1-2");
  result->set_state(v1::TASK_STATE_SUCCEEDED);
  result->mutable_output()->set_data(std::string(300000, 'z'));
  result->mutable_output()->set_codec("pickle");
  result->set_error("an earlier attempt's error");
  result->mutable_worker_loss()->set_signal(9);
  result->set_attempts(2);
  result->set_pool("p");
  result->set_function("f");
  result->set_worker_pid(77);
  result->mutable_submitted_at()->set_seconds(1);
  result->mutable_started_at()->set_seconds(2);
  result->mutable_finished_at()->set_seconds(3);
  const v1::GetResponse parsed = Parse(GetResponseBytes(true, result));
  EXPECT_TRUE(parsed.ready());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(parsed.result(), *result))
      << parsed.result().ShortDebugString().substr(0, 500);
}

TEST(GetResponseBytesTest, EmptyOutputAndNotReady) {
  auto result = std::make_shared<v1::TaskResult>();
  result->set_task_id("t-1-3");
  result->set_state(v1::TASK_STATE_RUNNING);
  const v1::GetResponse parsed = Parse(GetResponseBytes(false, result));
  EXPECT_FALSE(parsed.ready());
  EXPECT_EQ(parsed.result().task_id(), "t-1-3");
  EXPECT_FALSE(parsed.result().has_output());
}

TEST(GetResponseBytesTest, TheDataSliceKeepsTheResultAliveAndIsNotACopy) {
  auto result = std::make_shared<v1::TaskResult>();
  result->mutable_output()->set_data(std::string(1 << 20, 'q'));
  const char* data = result->output().data().data();
  grpc::ByteBuffer buffer = GetResponseBytes(true, result);
  std::weak_ptr<v1::TaskResult> weak = result;
  result.reset();
  EXPECT_FALSE(weak.expired());  // the slice holds it
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(buffer.Dump(&slices).ok());
  ASSERT_EQ(slices.size(), 2u);
  EXPECT_EQ(reinterpret_cast<const char*>(slices[1].begin()), data);
  slices.clear();
  buffer.Clear();
  EXPECT_TRUE(weak.expired());
}

}  // namespace
}  // namespace forkpool
