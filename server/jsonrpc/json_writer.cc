#include "server/jsonrpc/json_writer.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace eventbus::jsonrpc {
namespace {

// For each byte: 0 = copy verbatim, 'u' = \u00xx, anything else = the letter after a backslash.
struct EscapeTable {
  char action[256];
  constexpr EscapeTable() : action() {
    for (int i = 0; i < 0x20; ++i) action[i] = 'u';
    action[static_cast<unsigned char>('"')] = '"';
    action[static_cast<unsigned char>('\\')] = '\\';
    action[static_cast<unsigned char>('\b')] = 'b';
    action[static_cast<unsigned char>('\f')] = 'f';
    action[static_cast<unsigned char>('\n')] = 'n';
    action[static_cast<unsigned char>('\r')] = 'r';
    action[static_cast<unsigned char>('\t')] = 't';
  }
};
constexpr EscapeTable kEscapes;

constexpr double kMaxExactInteger = 9007199254740992.0;  // 2^53

}  // namespace

void AppendJsonString(std::string* out, absl::string_view value) {
  out->reserve(out->size() + value.size() + 2);
  out->push_back('"');
  size_t run_start = 0;
  for (size_t i = 0; i < value.size(); ++i) {
    char action = kEscapes.action[static_cast<unsigned char>(value[i])];
    if (action == 0) continue;
    out->append(value.data() + run_start, i - run_start);
    run_start = i + 1;
    if (action == 'u') {
      static constexpr char kHex[] = "0123456789abcdef";
      unsigned char byte = static_cast<unsigned char>(value[i]);
      const char escaped[6] = {'\\', 'u', '0', '0', kHex[byte >> 4], kHex[byte & 0xf]};
      out->append(escaped, sizeof(escaped));
    } else {
      const char escaped[2] = {'\\', action};
      out->append(escaped, sizeof(escaped));
    }
  }
  out->append(value.data() + run_start, value.size() - run_start);
  out->push_back('"');
}

void AppendJsonInt(std::string* out, int64_t value) { absl::StrAppend(out, value); }

void AppendJsonNumber(std::string* out, double value) {
  if (!std::isfinite(value)) {
    out->append("null");
    return;
  }
  if (std::trunc(value) == value && std::fabs(value) <= kMaxExactInteger) {
    absl::StrAppend(out, static_cast<int64_t>(value));
    return;
  }
  // The shortest %g precision that reads back as the same double; 17 digits always do.
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, value);
    if (precision == 17 || std::strtod(buf, nullptr) == value) break;
  }
  out->append(buf);
}

}  // namespace eventbus::jsonrpc
