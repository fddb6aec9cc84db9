// Pool's map family: Map / Imap / ImapUnordered / Starmap / MapAsync over Tasks.Map and
// Tasks.MapStream.
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "connection.h"
#include "forkpool/pool.h"
#include "map_call.h"

namespace forkpool {
namespace {

// Inputs up to this many bytes go in one Tasks.Map request; more stream.
constexpr size_t kMaxMapRequestBytes = 3 << 20;

// Bytes a string adds to a repeated field: tag, length varint, data.
size_t FieldBytes(size_t n) {
  size_t varint = 1;
  for (size_t v = n; v >= 0x80; v >>= 7) ++varint;
  return 1 + varint + n;
}

void SetProtoDuration(absl::Duration d, google::protobuf::Duration* out) {
  absl::Duration rest;
  const int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &rest);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(rest)));
}

v1::TaskOptions ToTaskOptions(const MapOptions& options) {
  v1::TaskOptions out;
  if (options.time_limit) SetProtoDuration(*options.time_limit, out.mutable_time_limit());
  out.set_max_retries(options.max_retries);
  return out;
}

// An InputSource over a shared vector.
InputSource VectorSource(std::shared_ptr<const std::vector<std::string>> inputs) {
  return [inputs = std::move(inputs), next = size_t{0}]() mutable -> std::optional<std::string> {
    if (next >= inputs->size()) return std::nullopt;
    return (*inputs)[next++];
  };
}

}  // namespace

MapResults Pool::Imap(const std::string& function, InputSource source,
                      const MapOptions& options) const {
  v1::MapStreamOpen open;
  open.set_pool(name_);
  open.set_function(function);
  open.set_codec(options.codec);
  open.set_chunksize(options.chunksize);
  open.set_ordered(options.ordered);
  *open.mutable_options() = ToTaskOptions(options);
  open.set_window(options.window);
  return MapResults(internal::MapCall::StartStream(connection_, open, std::move(source)));
}

MapResults Pool::Imap(const std::string& function, const std::vector<std::string>& inputs,
                      const MapOptions& options) const {
  size_t bytes = 0;
  for (const std::string& in : inputs) bytes += FieldBytes(in.size());
  if (options.force_stream || bytes > kMaxMapRequestBytes) {
    return Imap(function, VectorSource(std::make_shared<const std::vector<std::string>>(inputs)),
                options);
  }
  v1::MapRequest request;
  request.set_pool(name_);
  request.set_function(function);
  request.set_codec(options.codec);
  request.mutable_inputs()->Reserve(static_cast<int>(inputs.size()));
  for (const std::string& in : inputs) request.add_inputs(in);
  request.set_chunksize(options.chunksize);
  request.set_ordered(options.ordered);
  *request.mutable_options() = ToTaskOptions(options);
  return MapResults(internal::MapCall::StartUnary(connection_, request));
}

MapResults Pool::ImapUnordered(const std::string& function,
                               const std::vector<std::string>& inputs,
                               MapOptions options) const {
  options.ordered = false;
  return Imap(function, inputs, options);
}

MapResults Pool::ImapUnordered(const std::string& function, InputSource source,
                               MapOptions options) const {
  options.ordered = false;
  return Imap(function, std::move(source), options);
}

absl::StatusOr<std::vector<std::string>> Pool::Map(const std::string& function,
                                                   const std::vector<std::string>& inputs,
                                                   const MapOptions& options) const {
  MapResults results = Imap(function, inputs, options);
  return CollectMap(results, inputs.size());
}

absl::StatusOr<std::vector<std::string>> Pool::Map(const std::string& function,
                                                   InputSource source,
                                                   const MapOptions& options) const {
  MapResults results = Imap(function, std::move(source), options);
  return CollectMap(results, std::nullopt);
}

absl::StatusOr<std::vector<std::string>> Pool::Starmap(const std::string& function,
                                                       const std::vector<ArgTuple>& arg_tuples,
                                                       const MapOptions& options) const {
  std::vector<std::string> inputs;
  inputs.reserve(arg_tuples.size());
  for (size_t i = 0; i < arg_tuples.size(); ++i) {
    absl::StatusOr<std::string> encoded = EncodeArgTuple(options.codec, arg_tuples[i]);
    if (!encoded.ok()) {
      return absl::Status(encoded.status().code(), absl::StrCat("starmap argument tuple ", i,
                                                                ": ", encoded.status().message()));
    }
    inputs.push_back(*std::move(encoded));
  }
  return Map(function, inputs, options);
}

MapAsyncResult Pool::MapAsync(const std::string& function, const std::vector<std::string>& inputs,
                              const MapOptions& options) const {
  return MapAsyncResult(Imap(function, inputs, options), inputs.size());
}

}  // namespace forkpool
