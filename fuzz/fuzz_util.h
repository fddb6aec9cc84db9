// Helpers shared by the fuzz targets: touching every field of the internal protocol
// messages (so parsing and accessors run under the sanitizers) and a hard check that
// aborts with a message (libFuzzer reports the abort as a crash with the input).
#ifndef FORKPOOL_FUZZ_FUZZ_UTIL_H_
#define FORKPOOL_FUZZ_FUZZ_UTIL_H_

#include <cstdio>
#include <cstdlib>

#include "common/proto_status.h"
#include "forkpool/internal/control.pb.h"
#include "forkpool/internal/worker.pb.h"
#include "google/protobuf/stubs/logging.h"

// Aborts with `what` when `cond` is false; active in every build type.
#define FUZZ_CHECK(cond, what)                                              \
  do {                                                                      \
    if (!(cond)) {                                                          \
      std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s (%s)\n", __FILE__, \
                   __LINE__, #cond, what);                                  \
      std::abort();                                                         \
    }                                                                       \
  } while (0)

namespace forkpool::fuzz {

// Reads every field of `m` and returns a checksum, so the reads are not optimised out.
inline size_t Touch(const internal::Status& s) {
  return static_cast<size_t>(s.code()) + s.message().size() +
         StatusFromProto(s).message().size();
}

inline size_t Touch(const internal::FromWorker& m) {
  size_t sum = static_cast<size_t>(m.kind_case());
  switch (m.kind_case()) {
    case internal::FromWorker::kHello:
      sum += static_cast<size_t>(m.hello().pid()) +
             static_cast<size_t>(m.hello().protocol_version()) + m.hello().runtime().size();
      if (m.hello().has_init_error()) sum += Touch(m.hello().init_error());
      break;
    case internal::FromWorker::kResults:
      sum += m.results().batch_id() + m.results().first_index();
      sum += m.results().outputs().size();
      for (const internal::ItemError& e : m.results().errors()) {
        sum += e.index() + Touch(e.status());
      }
      break;
    case internal::FromWorker::kDone:
      sum += m.done().batch_id() + static_cast<size_t>(m.done().rss_bytes());
      break;
    case internal::FromWorker::kRequest:
      sum += m.request().correlation_id() + m.request().method().size() +
             m.request().body().size();
      break;
    case internal::FromWorker::KIND_NOT_SET:
      break;
  }
  return sum;
}

inline size_t Touch(const internal::ToHelper& m) {
  size_t sum = m.request_id() + static_cast<size_t>(m.kind_case());
  switch (m.kind_case()) {
    case internal::ToHelper::kLoadPool: {
      const internal::LoadPool& l = m.load_pool();
      sum += l.pool().size() + l.start_method().size() + l.initializer().size() +
             l.initargs().size() + static_cast<size_t>(l.memory_limit_bytes());
      for (const std::string& lib : l.libraries()) sum += lib.size();
      for (const std::string& arg : l.worker_command()) sum += arg.size();
      sum += static_cast<size_t>(l.nofile_soft_limit());
      break;
    }
    case internal::ToHelper::kForkWorker:
      sum += static_cast<size_t>(m.fork_worker().worker_index());
      break;
    case internal::ToHelper::kStartPoolHelper:
      sum += m.start_pool_helper().pool().size();
      break;
    case internal::ToHelper::KIND_NOT_SET:
      break;
  }
  return sum;
}

inline size_t Touch(const internal::FromHelper& m) {
  size_t sum = m.request_id() + static_cast<size_t>(m.kind_case());
  if (m.has_status()) sum += Touch(m.status());
  switch (m.kind_case()) {
    case internal::FromHelper::kPoolLoaded:
      for (const std::string& f : m.pool_loaded().functions()) sum += f.size();
      break;
    case internal::FromHelper::kWorkerForked:
      sum += static_cast<size_t>(m.worker_forked().pid());
      break;
    case internal::FromHelper::kHello:
      sum += static_cast<size_t>(m.hello().version()) + static_cast<size_t>(m.hello().pid()) +
             m.hello().role().size();
      break;
    case internal::FromHelper::kProgress:
      sum += m.progress().library().size();
      break;
    case internal::FromHelper::kPoolHelperStarted:
      sum += static_cast<size_t>(m.pool_helper_started().pid());
      break;
    case internal::FromHelper::KIND_NOT_SET:
      break;
  }
  return sum;
}

// Silences protobuf's log: parsing fuzzed bytes logs every string field that is not
// UTF-8 (the parse then fails, which the fuzzers handle), and the log costs more than
// the parse. Call from LLVMFuzzerInitialize.
inline void QuietProtobuf() { google::protobuf::SetLogHandler(nullptr); }

// Keeps a value alive so the compiler cannot drop the computation of it.
inline void Sink(size_t v) {
  static volatile size_t sink;
  sink = sink + v;
}

}  // namespace forkpool::fuzz

#endif  // FORKPOOL_FUZZ_FUZZ_UTIL_H_
