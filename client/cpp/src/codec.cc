// Starmap's argument-tuple encoding (docs/api.md).
#include "forkpool/codec.h"

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace forkpool {

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<int>(c));
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

absl::StatusOr<std::string> EncodeArgTuple(const std::string& codec, const ArgTuple& args) {
  if (codec.empty() || codec == "text") {
    for (size_t i = 0; i < args.size(); ++i) {
      if (args[i].find_first_of("\t\n") != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "field ", i, " holds a tab or a newline, which codec \"text\" cannot carry"));
      }
    }
    return absl::StrJoin(args, "\t");
  }
  if (codec == "json") {
    for (size_t i = 0; i < args.size(); ++i) {
      if (args[i].empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("field ", i, " is empty, which is not a JSON value"));
      }
    }
    return absl::StrCat("[", absl::StrJoin(args, ","), "]");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "starmap cannot encode argument tuples for codec \"", codec, "\" (text or json)"));
}

}  // namespace forkpool
