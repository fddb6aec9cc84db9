// Pool's map family: Map / Imap / ImapUnordered / Starmap / MapAsync over Tasks.Map and
// Tasks.MapStream.
#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/packed_items.h"
#include "connection.h"
#include "forkpool/pool.h"
#include "map_call.h"

namespace forkpool {
namespace {

// Inputs up to this many bytes go in one Tasks.Map request; more stream.
constexpr size_t kMaxMapRequestBytes = 3 << 20;

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

v1::MapStreamOpen MakeOpen(const std::string& pool, const std::string& function,
                           const MapOptions& options) {
  v1::MapStreamOpen open;
  open.set_pool(pool);
  open.set_function(function);
  open.set_codec(options.codec);
  open.set_chunksize(options.chunksize);
  open.set_ordered(options.ordered);
  *open.mutable_options() = ToTaskOptions(options);
  open.set_window(options.window);
  return open;
}

}  // namespace

MapResults Pool::Imap(const std::string& function, InputSource source,
                      const MapOptions& options) const {
  // Prefetched at most a batch (or the window) ahead of what has been sent.
  const size_t ahead = std::min<size_t>(std::max<uint32_t>(options.window, 1),
                                        internal::kMaxInputBatchItems);
  return MapResults(internal::MapCall::StartStream(
      connection_, MakeOpen(name_, function, options),
      std::make_unique<internal::PrefetchFeed>(std::move(source), ahead)));
}

MapResults Pool::Imap(const std::string& function, const std::vector<std::string>& inputs,
                      const MapOptions& options) const {
  size_t bytes = 0;
  for (const std::string& in : inputs) bytes += PackedItemBytes(in.size());
  if (options.force_stream || bytes > kMaxMapRequestBytes) {
    // Packed once; the stream then sends slices of the same bytes.
    absl::StatusOr<std::shared_ptr<const PackedItems>> items = PackedItems::Pack(inputs);
    if (!items.ok()) {
      return MapResults(internal::MapCall::Failed(absl::Status(
          items.status().code(), absl::StrCat("map inputs: ", items.status().message()))));
    }
    return MapResults(internal::MapCall::StartStream(
        connection_, MakeOpen(name_, function, options),
        std::make_unique<internal::SliceFeed>(*std::move(items))));
  }
  PackedWriter writer;
  writer.Recycle(std::string(bytes + 11, '\0'));  // room for Add's longest header
  for (const std::string& in : inputs) writer.Add(in);
  std::string packed = writer.Take();
  v1::MapRequest request;
  request.set_pool(name_);
  request.set_function(function);
  request.set_codec(options.codec);
  request.set_inputs(std::move(packed));
  request.set_chunksize(options.chunksize);
  request.set_ordered(options.ordered);
  *request.mutable_options() = ToTaskOptions(options);
  return MapResults(internal::MapCall::StartUnary(connection_, request, inputs.size()));
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
