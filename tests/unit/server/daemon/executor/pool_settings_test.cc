// Tests for server/daemon/executor/pool_settings.h: validation and defaults.
#include "server/daemon/executor/pool_settings.h"

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/status_matchers.h"

namespace forkpool {
namespace {

using ::forkpool::testing::IsOk;
using ::forkpool::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

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

TEST(ValidateNameTest, DotsAndLeadingDashesAreRefusedNamingTheValue) {
  for (const std::string name : {".", "..", "-", "--", "-rf", "-a.b"}) {
    EXPECT_THAT(ValidateName("pool", name),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("pool name '" + name + "'"), HasSubstr("'-'"))))
        << name;
    EXPECT_THAT(ValidateName("queue", name),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("queue name '" + name)))
        << name;
  }
  // Dots and dashes elsewhere stay allowed.
  for (const char* name : {"a-", "a.b", "...", ".hidden", "x--y", "_-"}) {
    EXPECT_THAT(ValidateName("pool", name), IsOk()) << name;
  }
}

TEST(ValidateNameTest, ALongNameIsNotEchoed) {
  const absl::Status s = ValidateName("queue", std::string(100000, 'q'));
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                          AllOf(HasSubstr("queue name of 100000 bytes"), HasSubstr("1 to 64"))));
  EXPECT_LT(s.message().size(), 200u);
}

TEST(ValidateNameTest, ControlCharactersAreEscapedInTheError) {
  const absl::Status s = ValidateName("pool", "a\nb\x01");
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'a\\nb\\x01'")));
}

TEST(NormalizePoolSettingsTest, DotAndDashNamesAreInvalid) {
  for (const std::string name : {".", "..", "-", "-x"}) {
    v1::PoolSettings s = Valid();
    s.set_name(name);
    EXPECT_THAT(NormalizePoolSettings(&s),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pool name '" + name)))
        << name;
  }
}

TEST(NormalizePoolSettingsTest, TaskDefaultsAreValidatedAsTaskOptions) {
  v1::PoolSettings ok = Valid();
  ok.mutable_task_defaults()->mutable_time_limit()->set_seconds(60);
  ok.mutable_task_defaults()->set_max_retries(3);
  EXPECT_THAT(NormalizePoolSettings(&ok), IsOk());

  v1::PoolSettings negative = Valid();
  negative.mutable_task_defaults()->mutable_time_limit()->set_seconds(-1);
  EXPECT_THAT(NormalizePoolSettings(&negative),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("pool 'workers': task_defaults: time_limit"),
                             HasSubstr("negative"))));

  v1::PoolSettings nanos = Valid();
  nanos.mutable_task_defaults()->mutable_soft_time_limit()->set_nanos(1'000'000'000);
  EXPECT_THAT(
      NormalizePoolSettings(&nanos),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("task_defaults: soft_time_limit"), HasSubstr("nanos 1000000000"))));

  v1::PoolSettings too_long = Valid();
  too_long.mutable_task_defaults()->mutable_queue_deadline()->set_seconds(int64_t{1} << 40);
  EXPECT_THAT(NormalizePoolSettings(&too_long),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("task_defaults: queue_deadline"), HasSubstr("too long"))));

  v1::PoolSettings retries = Valid();
  retries.mutable_task_defaults()->set_max_retries(101);
  EXPECT_THAT(NormalizePoolSettings(&retries),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("task_defaults: max_retries"), HasSubstr("101"))));
}

TEST(NormalizePoolSettingsTest, MemoryLimitsRefuseNegativesAndTinyCaps) {
  for (int64_t bad :
       {int64_t{-1}, int64_t{1}, int64_t{1} << 20, kMinMemoryLimitBytes - 1, INT64_MIN}) {
    v1::PoolSettings s = Valid();
    s.set_memory_limit_bytes(bad);
    EXPECT_THAT(NormalizePoolSettings(&s),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("pool 'workers': memory_limit_bytes"),
                               HasSubstr(absl::StrCat("not ", bad)), HasSubstr("32 MiB"))))
        << bad;
  }
  for (int64_t bad : {int64_t{-1}, int64_t{4096}, kMinMemoryPerChildBytes - 1}) {
    v1::PoolSettings s = Valid();
    s.set_max_memory_per_child_bytes(bad);
    EXPECT_THAT(NormalizePoolSettings(&s),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("max_memory_per_child_bytes"),
                               HasSubstr(absl::StrCat("not ", bad)), HasSubstr("16 MiB"))))
        << bad;
  }
  for (int64_t good : {int64_t{0}, kMinMemoryLimitBytes, int64_t{1} << 40, INT64_MAX}) {
    v1::PoolSettings s = Valid();
    s.set_memory_limit_bytes(good);
    EXPECT_THAT(NormalizePoolSettings(&s), IsOk()) << good;
  }
  for (int64_t good : {int64_t{0}, kMinMemoryPerChildBytes, int64_t{1} << 30}) {
    v1::PoolSettings s = Valid();
    s.set_max_memory_per_child_bytes(good);
    EXPECT_THAT(NormalizePoolSettings(&s), IsOk()) << good;
  }
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
