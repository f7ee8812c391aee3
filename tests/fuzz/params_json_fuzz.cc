// Fuzzes the raw-JSON params path (jsonrpc::ParamsFromRawJson, used for RaiseRequest.json_params)
// and the encoder on its output. Properties, for any input bytes:
// - Nothing crashes. A refusal is INVALID_ARGUMENT starting "params json: ".
// - Only valid JSON (checked by an independent RFC 8259 validator) whose top level is an object
//   or array is accepted; the kind matches the top level.
// - The accepted text is compact (no whitespace outside strings), valid JSON, and has the same
//   token sequence as the input (strings, numbers and literals byte for byte).
// - Accepting is idempotent: the accepted text is accepted again unchanged.
// - The messages encoded from it, with and without an event_param, are valid JSON.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "server/jsonrpc/encoder.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/json_check.h"

namespace eventbus::jsonrpc {
namespace {

using ::eventbus::fuzz::IsCompactJson;
using ::eventbus::fuzz::IsValidJson;
using ::eventbus::fuzz::JsonTokens;
using ::eventbus::fuzz::Quote;

std::string Tokens(const std::vector<std::string>& tokens) {
  std::vector<std::string> quoted;
  for (const std::string& token : tokens) quoted.push_back(Quote(token));
  return absl::StrJoin(quoted, " ");
}

void CheckParams(absl::string_view input) {
  absl::StatusOr<Params> params = ParamsFromRawJson(input);
  if (!params.ok()) {
    FUZZ_CHECK(params.status().code() == absl::StatusCode::kInvalidArgument &&
                   absl::StartsWith(params.status().message(), "params json: "),
               absl::StrCat("input ", Quote(input), ": ", params.status().ToString()));
    return;
  }
  const std::string& json = params->json;
  FUZZ_CHECK(IsValidJson(input), absl::StrCat("input ", Quote(input),
                                              " is not valid JSON, yet accepted as ", Quote(json)));
  FUZZ_CHECK(!json.empty() && ((params->kind == Params::Kind::kNamed && json.front() == '{') ||
                               (params->kind == Params::Kind::kPositional && json.front() == '[')),
             absl::StrCat("input ", Quote(input), ": kind ", static_cast<int>(params->kind),
                          " for ", Quote(json)));
  FUZZ_CHECK(IsCompactJson(json),
             absl::StrCat("input ", Quote(input), ": accepted text is not compact: ", Quote(json)));
  FUZZ_CHECK(IsValidJson(json), absl::StrCat("input ", Quote(input),
                                             ": accepted text is not valid JSON: ", Quote(json)));
  const std::vector<std::string> in_tokens = JsonTokens(input);
  const std::vector<std::string> out_tokens = JsonTokens(json);
  FUZZ_CHECK(in_tokens == out_tokens, absl::StrCat("tokens differ:\n  input  ", Tokens(in_tokens),
                                                   "\n  output ", Tokens(out_tokens)));

  absl::StatusOr<Params> again = ParamsFromRawJson(json);
  FUZZ_CHECK(again.ok() && again->kind == params->kind && again->json == json,
             absl::StrCat("accepted text ", Quote(json), " is not accepted unchanged: ",
                          again.ok() ? Quote(again->json) : again.status().ToString()));

  for (absl::string_view event_param : {"", "opensips_event"}) {
    BodyOptions options;
    options.event_param = event_param;
    const std::string message = EncodeMessage("E_FUZZ", *params, options, 7);
    FUZZ_CHECK(IsValidJson(message) && IsCompactJson(message),
               absl::StrCat("input ", Quote(input), " with event_param ", Quote(event_param),
                            " encodes to ", Quote(message)));
  }
}

}  // namespace
}  // namespace eventbus::jsonrpc

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  eventbus::jsonrpc::CheckParams(absl::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
