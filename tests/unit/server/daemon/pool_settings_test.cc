// Tests for server/daemon/pool_settings.h: validation and defaults.
#include "server/daemon/pool_settings.h"

#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/status_matchers.h"

namespace forkpool {
namespace {

using ::forkpool::testing::IsOk;
using ::forkpool::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

v1::PoolSettings Valid() {
  v1::PoolSettings s;
  s.set_name("workers");
  s.set_processes(3);
  s.add_libraries("/opt/tasks/libtasks.so");
  return s;
}

TEST(NormalizePoolSettingsTest, ValidSettingsPassAndGetTheForkserverDefault) {
  v1::PoolSettings s = Valid();
  ASSERT_THAT(NormalizePoolSettings(&s), IsOk());
  EXPECT_EQ(s.processes(), 3);
  EXPECT_EQ(s.start_method(), v1::START_METHOD_FORKSERVER);
}

TEST(NormalizePoolSettingsTest, ZeroProcessesBecomesTheCpuCount) {
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  ASSERT_GT(cpus, 0);
  v1::PoolSettings s = Valid();
  s.set_processes(0);
  ASSERT_THAT(NormalizePoolSettings(&s), IsOk());
  EXPECT_EQ(s.processes(), cpus);
}

TEST(NormalizePoolSettingsTest, ForkIsRefusedAsUnsafe) {
  v1::PoolSettings s = Valid();
  s.set_start_method(v1::START_METHOD_FORK);
  EXPECT_THAT(
      NormalizePoolSettings(&s),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("pool 'workers'"), HasSubstr("'fork'"), HasSubstr("multi-threaded"),
                     HasSubstr("deadlock"), HasSubstr("forkserver"))));
}

TEST(NormalizePoolSettingsTest, ExplicitForkserverIsKept) {
  v1::PoolSettings s = Valid();
  s.set_start_method(v1::START_METHOD_FORKSERVER);
  ASSERT_THAT(NormalizePoolSettings(&s), IsOk());
  EXPECT_EQ(s.start_method(), v1::START_METHOD_FORKSERVER);
}

TEST(NormalizePoolSettingsTest, SpawnIsAcceptedAndKept) {
  v1::PoolSettings s = Valid();
  s.set_start_method(v1::START_METHOD_SPAWN);
  ASSERT_THAT(NormalizePoolSettings(&s), IsOk());
  EXPECT_EQ(s.start_method(), v1::START_METHOD_SPAWN);
}

TEST(NormalizePoolSettingsTest, UnknownStartMethodIsInvalid) {
  v1::PoolSettings s = Valid();
  s.set_start_method(static_cast<v1::StartMethod>(99));
  EXPECT_THAT(NormalizePoolSettings(&s),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("99")));
}

TEST(NormalizePoolSettingsTest, NegativeProcessesIsInvalid) {
  v1::PoolSettings s = Valid();
  s.set_processes(-1);
  EXPECT_THAT(NormalizePoolSettings(&s), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  AllOf(HasSubstr("pool 'workers'"),
                                                        HasSubstr("processes"), HasSubstr("-1"))));
  EXPECT_EQ(s.processes(), -1) << "a refused value should not be replaced";
}

TEST(NormalizePoolSettingsTest, TooManyProcessesIsInvalid) {
  v1::PoolSettings s = Valid();
  s.set_processes(4096);
  EXPECT_THAT(NormalizePoolSettings(&s), IsOk());
  s.set_processes(4097);
  EXPECT_THAT(NormalizePoolSettings(&s),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("4097")));
}

TEST(NormalizePoolSettingsTest, NegativeLimitsAreInvalid) {
  v1::PoolSettings s = Valid();
  s.set_max_tasks_per_child(-2);
  EXPECT_THAT(NormalizePoolSettings(&s),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("max_tasks_per_child"), HasSubstr("-2"))));
  s = Valid();
  s.set_max_queued(-3);
  EXPECT_THAT(NormalizePoolSettings(&s), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  AllOf(HasSubstr("max_queued"), HasSubstr("-3"))));
}

TEST(NormalizePoolSettingsTest, NoLibrariesIsInvalid) {
  v1::PoolSettings s = Valid();
  s.clear_libraries();
  EXPECT_THAT(NormalizePoolSettings(&s),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no task libraries")));
}

TEST(NormalizePoolSettingsTest, BadNamesAreInvalid) {
  for (const std::string& name :
       {std::string(""), std::string(65, 'a'), std::string("has space"), std::string("a/b"),
        std::string("caf\xc3\xa9"), std::string("x\n")}) {
    v1::PoolSettings s = Valid();
    s.set_name(name);
    EXPECT_THAT(NormalizePoolSettings(&s),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pool name")))
        << "name '" << name << "'";
  }
}

TEST(ValidateNameTest, AcceptsTheAllowedAlphabetUpTo64Characters) {
  EXPECT_THAT(ValidateName("pool", "a"), IsOk());
  EXPECT_THAT(ValidateName("pool", std::string(64, 'z')), IsOk());
  EXPECT_THAT(ValidateName("queue", "Az09_.-"), IsOk());
  EXPECT_THAT(ValidateName("pool", kDefaultPoolName), IsOk());
}

TEST(ValidateNameTest, ErrorsNameWhatAndTheName) {
  EXPECT_THAT(ValidateName("queue", "bad name"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("queue name 'bad name'"), HasSubstr("letters"))));
  EXPECT_THAT(ValidateName("pool", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1 to 64")));
  EXPECT_THAT(ValidateName("pool", std::string(65, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1 to 64")));
}

TEST(StartMethodNameTest, NamesEachMethod) {
  EXPECT_EQ(StartMethodName(v1::START_METHOD_FORKSERVER), "forkserver");
  EXPECT_EQ(StartMethodName(v1::START_METHOD_SPAWN), "spawn");
  EXPECT_EQ(StartMethodName(v1::START_METHOD_FORK), "fork");
  EXPECT_EQ(StartMethodName(v1::START_METHOD_UNSPECIFIED), "forkserver");
}

TEST(NormalizePoolSettingsTest, RelativeLibraryPathsAreRefusedBareNamesAllowed) {
  v1::PoolSettings s = Valid();
  s.add_libraries("../lib/libx.so");
  EXPECT_THAT(NormalizePoolSettings(&s),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'../lib/libx.so'"), HasSubstr("relative path"))));
  v1::PoolSettings bare = Valid();
  bare.add_libraries("libtasks.so");
  EXPECT_THAT(NormalizePoolSettings(&bare), IsOk());
}

TEST(NormalizePoolSettingsTest, InitargsPastTheCapAreRefusedNamingIt) {
  v1::PoolSettings s = Valid();
  s.mutable_initargs()->set_data(std::string(kMaxInitargsBytes + 1, 'x'));
  EXPECT_THAT(NormalizePoolSettings(&s),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("initargs of 1048577 bytes")));
  s.mutable_initargs()->set_data(std::string(kMaxInitargsBytes, 'x'));
  EXPECT_THAT(NormalizePoolSettings(&s), IsOk());
}

TEST(NormalizePoolSettingsTest, InitargsCapIsTheCallersWhenGiven) {
  v1::PoolSettings s = Valid();
  s.mutable_initargs()->set_data(std::string(101, 'x'));
  EXPECT_THAT(NormalizePoolSettings(&s, 100),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("initargs of 101 bytes; at most 100"),
                             HasSubstr("--max_initargs_bytes"))));
  EXPECT_THAT(NormalizePoolSettings(&s, 101), IsOk());
}

TEST(NormalizePoolSettingsTest, WorkerCommandIsForSpawnPoolsWithAnAbsoluteProgram) {
  v1::PoolSettings forkserver = Valid();
  forkserver.add_worker_command("/usr/bin/worker");
  EXPECT_THAT(NormalizePoolSettings(&forkserver),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("spawn pools")));
  v1::PoolSettings relative = Valid();
  relative.set_start_method(v1::START_METHOD_SPAWN);
  relative.add_worker_command("worker");
  EXPECT_THAT(NormalizePoolSettings(&relative),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("absolute path")));
  v1::PoolSettings ok = Valid();
  ok.set_start_method(v1::START_METHOD_SPAWN);
  ok.add_worker_command("/usr/bin/python3");
  ok.add_worker_command("-m");
  ok.add_worker_command("forkpool.worker");
  EXPECT_THAT(NormalizePoolSettings(&ok), IsOk());
}

}  // namespace
}  // namespace forkpool
