// Small scanners for JSON text (RFC 8259) that the reply parser and the encoder share: they check
// and copy tokens as text, so a number too large for a double or an int64 (`1e400`,
// `18446744073709551616`) or a lone escaped surrogate (`"\ud800"`), all valid JSON, passes through
// byte for byte instead of failing a parse. Pure.
#ifndef EVENTBUS_SERVER_JSONRPC_JSON_TEXT_H_
#define EVENTBUS_SERVER_JSONRPC_JSON_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace eventbus::jsonrpc {

inline bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// `text` without leading and trailing JSON whitespace.
absl::string_view TrimJsonSpace(absl::string_view text);

// True when `token` is exactly one number by the RFC 8259 grammar
// (-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?), whatever its magnitude.
bool IsJsonNumber(absl::string_view token);

// Scans the string token that starts with the '"' at text[pos]: every escape must be one of
// \" \\ \/ \b \f \n \r \t \uXXXX and no byte below 0x20 may appear unescaped (UTF-8 validity is
// the caller's concern). Returns the offset just past the closing quote, or npos when the token
// is malformed or unterminated. A \u escape of a lone surrogate is grammatical and accepted.
size_t ScanJsonString(absl::string_view text, size_t pos);

// Checks that `text` is exactly one JSON value (RFC 8259 grammar, whitespace around it allowed)
// with arrays and objects nested at most `max_depth` deep. Numbers may have any magnitude and \u
// escapes may be lone surrogates. UTF-8 validity is the caller's concern (see InvalidUtf8Offset).
// Returns "" when valid, else what is wrong and where ("expected ',' or '}' at offset 12").
std::string CheckJsonText(absl::string_view text, int max_depth);

// Returns the offset just past the value that starts at text[pos], which must be valid JSON
// (already checked): a string, an object or array (to its matching bracket), or a scalar (to the
// next delimiter). Returns text.size() if it runs off the end.
size_t SkipJsonValue(absl::string_view text, size_t pos);

// Decodes a valid string token (with its quotes) to UTF-8. Escaped surrogate pairs become one
// code point; a lone surrogate becomes U+FFFD, so the result is always valid UTF-8 when the input
// is.
std::string UnescapeJsonString(absl::string_view token);

// The offset of the first byte of `text` that is not part of well-formed UTF-8 (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF), or npos when it all is.
size_t InvalidUtf8Offset(absl::string_view text);

// Appends valid JSON `json` to `out` without the whitespace between tokens; tokens, including
// strings with their escapes, are kept verbatim.
void AppendCompactJson(absl::string_view json, std::string* out);

}  // namespace eventbus::jsonrpc

#endif  // EVENTBUS_SERVER_JSONRPC_JSON_TEXT_H_
