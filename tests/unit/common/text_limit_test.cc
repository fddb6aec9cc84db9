// CapText: short valid text passes unchanged; long text is cut at a character
// boundary within the cap and says how long it was; invalid UTF-8 is replaced.
#include "common/text_limit.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/utf8.h"

namespace forkpool {
namespace {

constexpr char kReplacement[] = "\xef\xbf\xbd";
constexpr char kEllipsis[] = "\xe2\x80\xa6";

std::string Marker(size_t total) {
  return absl::StrCat(kEllipsis, " [truncated: ", total, " bytes in all]");
}

TEST(CapText, ShortValidTextIsUnchanged) {
  EXPECT_EQ(CapText("", 10), "");
  EXPECT_EQ(CapText("unknown pool 'x'", 100), "unknown pool 'x'");
  EXPECT_EQ(CapText("gr\xc3\xbc\xc3\x9f", 6), "gr\xc3\xbc\xc3\x9f");  // exactly the cap
}

TEST(CapText, LongTextIsCutAndMarkedWithinTheCap) {
  const std::string text(100000, 'a');
  const std::string capped = CapText(text, 1000);
  EXPECT_EQ(capped.size(), 1000u);
  EXPECT_TRUE(absl::EndsWith(capped, Marker(100000))) << capped;
  const std::string kept = capped.substr(0, capped.size() - Marker(100000).size());
  EXPECT_EQ(kept, std::string(kept.size(), 'a'));
  EXPECT_GT(kept.size(), 900u);
}

TEST(CapText, OneByteOverTheCapIsCut) {
  const std::string text(101, 'b');
  const std::string capped = CapText(text, 100);
  EXPECT_LE(capped.size(), 100u);
  EXPECT_TRUE(absl::EndsWith(capped, Marker(101))) << capped;
}

TEST(CapText, CutsAtACharacterBoundary) {
  // 4-byte characters: no cap may split one.
  std::string text;
  for (int i = 0; i < 1000; ++i) text += "\xf0\x9f\x98\x80";
  for (size_t cap = 40; cap < 60; ++cap) {
    const std::string capped = CapText(text, cap);
    EXPECT_LE(capped.size(), cap);
    EXPECT_EQ(ValidUtf8(capped), capped) << "cap " << cap;
    const std::string kept = capped.substr(0, capped.size() - Marker(4000).size());
    EXPECT_EQ(kept.size() % 4, 0u) << "cap " << cap;
    EXPECT_EQ(text.substr(0, kept.size()), kept);
  }
}

TEST(CapText, InvalidBytesAreReplaced) {
  EXPECT_EQ(CapText("a\xff"
                    "b",
                    100),
            std::string("a") + kReplacement + "b");
  // A sequence cut short by the end of the text.
  EXPECT_EQ(CapText("x\xe2\x82", 100), std::string("x") + kReplacement + kReplacement);
}

TEST(CapText, ReplacementsCountAgainstTheCap) {
  // 10 invalid bytes become 30 bytes of U+FFFD: over a cap of 20.
  const std::string text(10, '\xff');
  EXPECT_EQ(CapText(text, 30), ValidUtf8(text));
  const std::string capped = CapText(text, 29);
  EXPECT_LE(capped.size(), 29u);
  EXPECT_EQ(ValidUtf8(capped), capped);
}

TEST(CapText, ACapSmallerThanTheMarkerOnlyCuts) {
  const std::string text(1000, 'c');
  EXPECT_EQ(CapText(text, 5), "ccccc");
  EXPECT_EQ(CapText(text, 0), "");
  EXPECT_EQ(CapText("\xc3\xbc\xc3\xbc", 3), "\xc3\xbc");
}

TEST(CapText, AlwaysValidAndWithinTheCap) {
  std::mt19937 rng(42);
  for (int round = 0; round < 2000; ++round) {
    std::string text(rng() % 300, '\0');
    for (char& c : text) c = static_cast<char>(rng() % 256);
    const size_t cap = rng() % 200;
    const std::string capped = CapText(text, cap);
    ASSERT_LE(capped.size(), cap) << "round " << round;
    ASSERT_EQ(ValidUtf8(capped), capped) << "round " << round;
    if (ValidUtf8(text).size() <= cap) {
      ASSERT_EQ(capped, ValidUtf8(text)) << "round " << round;
    }
  }
}

TEST(CapText, StatusCapLeavesRoomAfterPercentEncoding) {
  // Worst case on the wire: every byte percent-encoded (3 bytes each).
  EXPECT_LE(kMaxStatusMessageBytes * 3, size_t{8} << 10);
  EXPECT_GE(kDefaultMaxErrorBytes, kMaxStatusMessageBytes);
}

}  // namespace
}  // namespace forkpool
