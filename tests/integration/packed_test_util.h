// Packed map inputs and results for tests that speak Tasks.Map on the raw stub. They
// go through the PackedItems proto message, not forkpool's own scanner, so a test also
// checks that the bytes are what any protobuf library reads.
#ifndef FORKPOOL_TESTS_INTEGRATION_PACKED_TEST_UTIL_H_
#define FORKPOOL_TESTS_INTEGRATION_PACKED_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "forkpool/v1/forkpool.pb.h"
#include "gtest/gtest.h"

namespace forkpool::testing {

// `items` as the bytes of a PackedItems message.
inline std::string PackWithProto(const std::vector<std::string>& items) {
  v1::PackedItems packed;
  for (const std::string& item : items) packed.add_items(item);
  return packed.SerializeAsString();
}

// The (index, output) pairs of a MapResponse, in the order its runs hold them.
inline std::vector<std::pair<uint64_t, std::string>> UnpackResults(
    const v1::MapResponse& response) {
  std::vector<std::pair<uint64_t, std::string>> results;
  for (const v1::MapResultRun& run : response.runs()) {
    v1::PackedItems outputs;
    EXPECT_TRUE(outputs.ParseFromString(run.outputs())) << "run outputs do not parse";
    for (int i = 0; i < outputs.items_size(); ++i) {
      results.emplace_back(run.first_index() + static_cast<uint64_t>(i), outputs.items(i));
    }
  }
  return results;
}

}  // namespace forkpool::testing

#endif  // FORKPOOL_TESTS_INTEGRATION_PACKED_TEST_UTIL_H_
