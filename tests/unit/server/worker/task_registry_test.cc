// Tests for server/worker/task_registry.h: loading real task libraries with dlopen.
#include "server/worker/task_registry.h"

#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "forkpool/task_abi.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/status_matchers.h"

#ifndef FORKPOOL_EXAMPLE_TASKS_PATH
#error "FORKPOOL_EXAMPLE_TASKS_PATH must name the example task library"
#endif
#ifndef FORKPOOL_DUP_TASKS_PATH
#error "FORKPOOL_DUP_TASKS_PATH must name the duplicate-task test library"
#endif

namespace forkpool {
namespace {

using ::forkpool::testing::IsOk;
using ::forkpool::testing::StatusIs;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsSupersetOf;
using ::testing::WhenSorted;

const std::string kExample = FORKPOOL_EXAMPLE_TASKS_PATH;
const std::string kDup = FORKPOOL_DUP_TASKS_PATH;

struct CallResult {
  int code;
  std::string output;
  std::string error;
};

// Calls `fn` through the C ABI, as a worker does, and frees the buffers it fills.
CallResult Call(forkpool_task_fn_v1 fn, const std::string& input) {
  forkpool_task_context_v1 ctx{};
  ctx.pid = ::getpid();
  ctx.worker_index = 0;
  ctx.pool = "test";
  ctx.task_id = "t-test-1";
  ctx.attempt = 1;
  forkpool_buffer output{nullptr, 0};
  forkpool_buffer error{nullptr, 0};
  CallResult r;
  r.code = fn(&ctx, input.data(), input.size(), &output, &error);
  r.output.assign(output.data ? output.data : "", output.size);
  r.error.assign(error.data ? error.data : "", error.size);
  std::free(output.data);
  std::free(error.data);
  return r;
}

TEST(TaskRegistryTest, LoadsTheExampleLibraryAndFindsItsTasks) {
  auto registry = TaskRegistry::Load({kExample});
  ASSERT_THAT(registry, IsOk());
  EXPECT_NE(registry->Find("square"), nullptr);
  EXPECT_NE(registry->Find("echo"), nullptr);
  EXPECT_EQ(registry->Find("no_such_task"), nullptr);
  EXPECT_EQ(registry->Find(""), nullptr);
  const std::vector<std::string> names = registry->Names();
  EXPECT_THAT(names, IsSupersetOf({"square", "echo"}));
  EXPECT_THAT(names, WhenSorted(names)) << "Names() should be sorted";
}

TEST(TaskRegistryTest, SquareThroughTheCAbi) {
  auto registry = TaskRegistry::Load({kExample});
  ASSERT_THAT(registry, IsOk());
  forkpool_task_fn_v1 square = registry->Find("square");
  ASSERT_NE(square, nullptr);
  const CallResult r = Call(square, "7");
  EXPECT_EQ(r.code, 0) << r.error;
  EXPECT_EQ(r.output, "49");

  const CallResult bad = Call(square, "seven");
  EXPECT_EQ(bad.code, static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(bad.error, HasSubstr("seven"));
}

TEST(TaskRegistryTest, EchoThroughTheCAbiKeepsBinaryBytes) {
  auto registry = TaskRegistry::Load({kExample});
  ASSERT_THAT(registry, IsOk());
  forkpool_task_fn_v1 echo = registry->Find("echo");
  ASSERT_NE(echo, nullptr);
  const std::string input("a\0b\xff", 4);
  const CallResult r = Call(echo, input);
  EXPECT_EQ(r.code, 0) << r.error;
  EXPECT_EQ(r.output, input);
}

TEST(TaskRegistryTest, TheSdkHandsOutputsToWriteOutputWhenTheHostOffersIt) {
  auto registry = TaskRegistry::Load({kExample});
  ASSERT_THAT(registry, IsOk());
  struct Host {
    std::vector<std::string> written;
  } host;
  forkpool_task_context_v1 ctx{};
  ctx.pool = "test";
  ctx.task_id = "t-test-2";
  ctx.host = &host;
  ctx.write_output = [](void* h, const char* data, size_t size) {
    static_cast<Host*>(h)->written.emplace_back(data, size);
  };
  forkpool_buffer output{nullptr, 0};
  forkpool_buffer error{nullptr, 0};
  const std::string input = "12";
  EXPECT_EQ(registry->Find("square")(&ctx, input.data(), input.size(), &output, &error), 0);
  EXPECT_THAT(host.written, ::testing::ElementsAre("144"));
  EXPECT_EQ(output.data, nullptr) << "the output went to write_output, not a buffer";
  // A failure still fills `error` and writes nothing.
  const std::string bad = "x";
  EXPECT_NE(registry->Find("square")(&ctx, bad.data(), bad.size(), &output, &error), 0);
  EXPECT_EQ(host.written.size(), 1u);
  EXPECT_NE(error.data, nullptr);
  std::free(error.data);
}

TEST(TaskRegistryTest, NonexistentPathIsFailedPreconditionNamingPathAndDlerror) {
  const std::string path = "/nonexistent/dir/libno_such_tasks.so";
  EXPECT_THAT(TaskRegistry::Load({path}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("'" + path + "'"),
                             // dlerror()'s own text.
                             HasSubstr("cannot open shared object file"))));
}

TEST(TaskRegistryTest, ALibraryWithoutTheTaskTableIsFailedPrecondition) {
  // libm is a real shared object, but not a task library.
  EXPECT_THAT(TaskRegistry::Load({"libm.so.6"}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("libm.so.6"),
                             HasSubstr(FORKPOOL_TASK_TABLE_SYMBOL))));
}

TEST(TaskRegistryTest, AFailureAfterAGoodLibraryStillFails) {
  EXPECT_THAT(TaskRegistry::Load({kExample, "/nonexistent/libx.so"}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("libx.so")));
}

TEST(TaskRegistryTest, LoadingTheSameLibraryTwiceIsFine) {
  auto registry = TaskRegistry::Load({kExample, kExample});
  ASSERT_THAT(registry, IsOk());
  auto once = TaskRegistry::Load({kExample});
  ASSERT_THAT(once, IsOk());
  EXPECT_EQ(registry->Names(), once->Names()) << "no name may be listed twice";
  EXPECT_EQ(Call(registry->Find("square"), "12").output, "144");
}

TEST(TaskRegistryTest, TheDuplicateLibraryLoadsAlone) {
  auto registry = TaskRegistry::Load({kDup});
  ASSERT_THAT(registry, IsOk());
  ASSERT_NE(registry->Find("square"), nullptr);
  EXPECT_EQ(Call(registry->Find("square"), "7").output, "not the example square");
  EXPECT_THAT(registry->Names(), Contains("dup_only"));
}

TEST(TaskRegistryTest, ATaskDefinedInTwoLibrariesIsAlreadyExistsNamingBoth) {
  EXPECT_THAT(TaskRegistry::Load({kExample, kDup}),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       AllOf(HasSubstr("'square'"), HasSubstr("'" + kExample + "'"),
                             HasSubstr("'" + kDup + "'"))));
  // Either order.
  EXPECT_THAT(TaskRegistry::Load({kDup, kExample}),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       AllOf(HasSubstr("'square'"), HasSubstr("'" + kExample + "'"),
                             HasSubstr("'" + kDup + "'"))));
}

}  // namespace
}  // namespace forkpool
