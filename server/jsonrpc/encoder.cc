#include "server/jsonrpc/encoder.h"

#include <simdjson.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/jsonrpc/json_writer.h"

namespace eventbus::jsonrpc {
namespace {

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

absl::string_view TrimJsonSpace(absl::string_view text) {
  while (!text.empty() && IsJsonSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsJsonSpace(text.back())) text.remove_suffix(1);
  return text;
}

absl::string_view TypeName(simdjson::dom::element_type type) {
  switch (type) {
    case simdjson::dom::element_type::ARRAY:
      return "an array";
    case simdjson::dom::element_type::OBJECT:
      return "an object";
    case simdjson::dom::element_type::INT64:
    case simdjson::dom::element_type::UINT64:
    case simdjson::dom::element_type::DOUBLE:
      return "a number";
    case simdjson::dom::element_type::STRING:
      return "a string";
    case simdjson::dom::element_type::BOOL:
      return "a boolean";
    case simdjson::dom::element_type::NULL_VALUE:
      return "null";
  }
  return "an unknown value";
}

// Copies valid JSON `json` to `out` without the whitespace between tokens (SPEC §2: one compact
// object per event, no newline). Tokens, including strings with their escapes, are kept verbatim.
void AppendCompactJson(absl::string_view json, std::string* out) {
  out->reserve(out->size() + json.size());
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      out->push_back(c);
      if (c == '\\' && i + 1 < json.size()) {
        out->push_back(json[++i]);
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (IsJsonSpace(c)) continue;
    if (c == '"') in_string = true;
    out->push_back(c);
  }
}

// Appends `json` (an object or array) with the event name inserted as its first member/element.
// Raw client JSON may have whitespace after the opening bracket, so emptiness ignores it.
void AppendWithEventParam(std::string* out, absl::string_view json, bool named,
                          absl::string_view event, absl::string_view key) {
  const char open = named ? '{' : '[';
  if (json.empty() || json.front() != open) {
    // Not what Params promises; keep the bytes rather than corrupt them.
    out->append(json.data(), json.size());
    return;
  }
  absl::string_view inner = json.substr(1);
  out->push_back(open);
  if (named) {
    AppendJsonString(out, key);
    out->push_back(':');
  }
  AppendJsonString(out, event);
  absl::string_view rest = inner;
  while (!rest.empty() && IsJsonSpace(rest.front())) rest.remove_prefix(1);
  const bool empty = !rest.empty() && rest.front() == (named ? '}' : ']');
  if (!empty) out->push_back(',');
  out->append(empty ? rest.data() : inner.data(), empty ? rest.size() : inner.size());
}

}  // namespace

absl::StatusOr<Params> ParamsFromRawJson(absl::string_view text) {
  absl::string_view json = TrimJsonSpace(text);
  if (json.empty()) {
    return absl::InvalidArgumentError("params json: empty (expected an object or array)");
  }
  // One parser per thread: its buffers are reused for every call.
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::error_code error = parser.parse(json.data(), json.size()).get(root);
  if (error != simdjson::SUCCESS) {
    // simdjson's NUMBER_ERROR also covers valid JSON numbers it cannot hold: say so.
    return absl::InvalidArgumentError(
        absl::StrCat("params json: invalid JSON: ", simdjson::error_message(error),
                     error == simdjson::NUMBER_ERROR
                         ? " (malformed, or beyond what a 64-bit integer or a double can hold)"
                         : ""));
  }
  Params params;
  switch (root.type()) {
    case simdjson::dom::element_type::OBJECT:
      params.kind = Params::Kind::kNamed;
      break;
    case simdjson::dom::element_type::ARRAY:
      params.kind = Params::Kind::kPositional;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("params json: expected an object or array, got ", TypeName(root.type())));
  }
  AppendCompactJson(json, &params.json);
  return params;
}

std::string EncodeBody(absl::string_view event, const Params& params, const BodyOptions& options) {
  std::string out;
  out.reserve(32 + event.size() + options.method.size() + params.json.size() +
              options.event_param.size());
  out.append("\"jsonrpc\":\"2.0\",\"method\":");
  AppendJsonString(&out, options.method.empty() ? event : options.method);
  if (params.kind != Params::Kind::kNone) {
    const bool named = params.kind == Params::Kind::kNamed;
    absl::string_view json = params.json;
    if (json.empty()) json = named ? "{}" : "[]";
    out.append(",\"params\":");
    if (options.event_param.empty()) {
      out.append(json.data(), json.size());
    } else {
      AppendWithEventParam(&out, json, named, event, options.event_param);
    }
  }
  out.push_back('}');
  return out;
}

void AppendMessagePrefix(std::string* out, uint32_t id) {
  if (id == 0) {
    out->push_back('{');
    return;
  }
  absl::StrAppend(out, "{\"id\":", id, ",");
}

std::string EncodeMessage(absl::string_view event, const Params& params, const BodyOptions& options,
                          uint32_t id) {
  std::string out;
  AppendMessagePrefix(&out, id);
  out.append(EncodeBody(event, params, options));
  return out;
}

}  // namespace eventbus::jsonrpc
