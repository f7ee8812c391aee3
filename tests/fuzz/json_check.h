// Reference checks on JSON text for the fuzz targets, written independently of the code under
// test (which uses simdjson): a strict RFC 8259 validator and a tokenizer. Pure.
#ifndef EVENTBUS_TESTS_FUZZ_JSON_CHECK_H_
#define EVENTBUS_TESTS_FUZZ_JSON_CHECK_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace eventbus::fuzz {

// Returns true when `text` is exactly one JSON value (RFC 8259, UTF-8 text, optional surrounding
// whitespace). Numbers are checked by grammar only (1e400 is valid JSON); \u escapes by grammar
// only (a lone surrogate escape is valid grammar). Nesting is limited to 10000 levels.
bool IsValidJson(absl::string_view text);

// Splits JSON-like text into tokens: strings (verbatim, quotes and escapes included), single
// punctuation bytes ({ } [ ] : ,), and maximal runs of any other bytes (numbers, literals, junk).
// Whitespace outside strings separates tokens and is dropped. An unterminated string is one token.
std::vector<std::string> JsonTokens(absl::string_view text);

// Returns true when `text` has no whitespace outside strings.
bool IsCompactJson(absl::string_view text);

}  // namespace eventbus::fuzz

#endif  // EVENTBUS_TESTS_FUZZ_JSON_CHECK_H_
