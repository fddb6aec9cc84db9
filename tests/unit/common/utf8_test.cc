// ValidUtf8: valid text passes unchanged; every invalid byte becomes U+FFFD.
#include "common/utf8.h"

#include <gtest/gtest.h>

namespace forkpool {
namespace {

constexpr char kReplacement[] = "\xef\xbf\xbd";

TEST(ValidUtf8, ValidTextIsUnchanged) {
  for (const std::string s : {std::string(""), std::string("plain ascii"),
                              std::string("gr\xc3\xbc\xc3\x9f dich"),    // two-byte
                              std::string("\xe2\x82\xac 100"),           // three-byte
                              std::string("\xf0\x9f\x98\x80 smile")}) {  // four-byte
    EXPECT_EQ(ValidUtf8(s), s);
  }
}

TEST(ValidUtf8, InvalidBytesAreReplacedOneByOne) {
  EXPECT_EQ(ValidUtf8("a\xff"
                      "b"),
            std::string("a") + kReplacement + "b");
  EXPECT_EQ(ValidUtf8("\xff\xfe"), std::string(kReplacement) + kReplacement);
  // A truncated sequence at the end.
  EXPECT_EQ(ValidUtf8("x\xe2\x82"), std::string("x") + kReplacement + kReplacement);
}

TEST(ValidUtf8, OverlongFormsAndSurrogatesAreInvalid) {
  EXPECT_EQ(ValidUtf8("\xc0\xaf"), std::string(kReplacement) + kReplacement);  // overlong '/'
  EXPECT_EQ(ValidUtf8("\xed\xa0\x80"),                                         // U+D800
            std::string(kReplacement) + kReplacement + kReplacement);
  EXPECT_EQ(ValidUtf8("\xf4\x90\x80\x80"),  // > U+10FFFF
            std::string(kReplacement) + kReplacement + kReplacement + kReplacement);
}

TEST(Utf8SequenceLength, GivesTheLengthOfTheFirstCharacterOrZero) {
  EXPECT_EQ(Utf8SequenceLength(""), 0u);
  EXPECT_EQ(Utf8SequenceLength("ab"), 1u);
  EXPECT_EQ(Utf8SequenceLength("\xc3\xbc!"), 2u);
  EXPECT_EQ(Utf8SequenceLength("\xe2\x82\xac"), 3u);
  EXPECT_EQ(Utf8SequenceLength("\xf0\x9f\x98\x80"), 4u);
  EXPECT_EQ(Utf8SequenceLength("\x80"), 0u);      // a stray continuation byte
  EXPECT_EQ(Utf8SequenceLength("\xe2\x82"), 0u);  // cut short
  EXPECT_EQ(Utf8SequenceLength("\xc0\xaf"), 0u);  // overlong
}

}  // namespace
}  // namespace forkpool
