// Compact JSON text writing with the escaping rules of SPEC §2 (byte-compatible with OpenSIPS):
// \" \\ \b \f \n \r \t, other bytes below 0x20 as \u00xx (lowercase hex), '/' and UTF-8 verbatim.
// Pure. The service layer uses it to turn protobuf Values into params text.
#ifndef EVENTBUS_SERVER_JSONRPC_JSON_WRITER_H_
#define EVENTBUS_SERVER_JSONRPC_JSON_WRITER_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace eventbus::jsonrpc {

// Appends `value` as a quoted, escaped JSON string.
void AppendJsonString(std::string* out, absl::string_view value);
// Appends an integer.
void AppendJsonInt(std::string* out, int64_t value);
// Appends a number: integral values in [-2^53, 2^53] print without a decimal point ("3"), others
// in the shortest form that round-trips ("2.5", "1e+300"). NaN and infinities print as null.
void AppendJsonNumber(std::string* out, double value);

}  // namespace eventbus::jsonrpc

#endif  // EVENTBUS_SERVER_JSONRPC_JSON_WRITER_H_
