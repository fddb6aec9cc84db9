// GetResponseBytes implementation.
#include "server/daemon/api/result_reply.h"

#include <string>
#include <vector>

#include "google/protobuf/field_mask.pb.h"
#include "google/protobuf/util/field_mask_util.h"

namespace forkpool {
namespace {

// Wire types and field numbers of forkpool.v1.GetResponse.result,
// TaskResult.output and Payload.data.
constexpr uint8_t kLengthDelimited = 2;
constexpr uint8_t kResultTag = (2 << 3) | kLengthDelimited;
constexpr uint8_t kOutputTag = (3 << 3) | kLengthDelimited;
constexpr uint8_t kDataTag = (1 << 3) | kLengthDelimited;

void AppendVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Every field of TaskResult but the output's data, found by reflection so that
// a field added later is not silently dropped.
const google::protobuf::FieldMask& AllButOutputData() {
  static const google::protobuf::FieldMask* mask = [] {
    auto* m = new google::protobuf::FieldMask;
    const google::protobuf::Descriptor* d = v1::TaskResult::descriptor();
    for (int i = 0; i < d->field_count(); ++i) {
      if (d->field(i)->name() != "output") m->add_paths(d->field(i)->name());
    }
    m->add_paths("output.codec");
    return m;
  }();
  return *mask;
}

void ReleaseResult(void* holder) {
  delete static_cast<std::shared_ptr<const v1::TaskResult>*>(holder);
}

}  // namespace

grpc::ByteBuffer GetResponseBytes(bool ready, std::shared_ptr<const v1::TaskResult> result) {
  v1::GetResponse head;
  head.set_ready(ready);
  const std::string& data = result ? result->output().data() : std::string();
  if (result) {
    google::protobuf::util::FieldMaskUtil::MergeMessageTo(
        *result, AllButOutputData(), google::protobuf::util::FieldMaskUtil::MergeOptions(),
        head.mutable_result());
    // The mask's "output.codec" makes an output even where there was none.
    if (!result->has_output()) head.mutable_result()->clear_output();
  }
  std::string bytes = head.SerializeAsString();
  std::vector<grpc::Slice> slices;
  if (!result || data.empty()) {
    slices.emplace_back(bytes);
    return grpc::ByteBuffer(slices.data(), slices.size());
  }
  const size_t data_field = 1 + VarintSize(data.size()) + data.size();
  const size_t output_field = 1 + VarintSize(data_field) + data_field;
  bytes.push_back(static_cast<char>(kResultTag));
  AppendVarint(output_field, &bytes);
  bytes.push_back(static_cast<char>(kOutputTag));
  AppendVarint(data_field, &bytes);
  bytes.push_back(static_cast<char>(kDataTag));
  AppendVarint(data.size(), &bytes);
  slices.emplace_back(bytes);
  auto* holder = new std::shared_ptr<const v1::TaskResult>(std::move(result));
  slices.emplace_back(const_cast<char*>((*holder)->output().data().data()),
                      (*holder)->output().data().size(), &ReleaseResult, holder);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace forkpool
