#include "server/jsonrpc/encoder.h"

#include <simdjson.h>

#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/jsonrpc/json_text.h"
#include "server/jsonrpc/json_writer.h"

namespace eventbus::jsonrpc {
namespace {

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

absl::Status TooDeep(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": nested deeper than ", kMaxParamsDepth, " levels"));
}

// The level of the deepest array or object in `element`, which sits at `level` (a scalar adds
// nothing). Stops counting past kMaxParamsDepth.
int Depth(simdjson::dom::element element, int level) {
  simdjson::dom::object object;
  simdjson::dom::array array;
  const bool is_object = element.get(object) == simdjson::SUCCESS;
  const bool is_array = !is_object && element.get(array) == simdjson::SUCCESS;
  if (!is_object && !is_array) return level - 1;
  if (level > kMaxParamsDepth) return level;
  int deepest = level;
  if (is_object) {
    for (simdjson::dom::key_value_pair member : object) {
      deepest = std::max(deepest, Depth(member.value, level + 1));
      if (deepest > kMaxParamsDepth) break;
    }
  } else {
    for (simdjson::dom::element item : array) {
      deepest = std::max(deepest, Depth(item, level + 1));
      if (deepest > kMaxParamsDepth) break;
    }
  }
  return deepest;
}

// Appends the members of the object `json` after the first ('{' and the event_param member are
// already written), leaving out every member named `key`: the event_param member is the
// subscriber's contract (it names the event), so a client param of the same name gives way for
// this subscriber only. Returns false, having appended nothing, if `json` is not an object it can
// read (Params promises one; the caller then keeps the bytes).
bool AppendMembersWithout(std::string* out, absl::string_view json, absl::string_view key) {
  std::string members;
  size_t i = 1;
  auto skip_space = [&] {
    while (i < json.size() && IsJsonSpace(json[i])) ++i;
  };
  for (;;) {
    skip_space();
    if (i >= json.size()) return false;
    if (json[i] == '}') break;
    const size_t name_start = i;
    const size_t name_end = ScanJsonString(json, i);
    if (name_end == absl::string_view::npos) return false;
    i = name_end;
    skip_space();
    if (i >= json.size() || json[i] != ':') return false;
    ++i;
    skip_space();
    const size_t value_end = SkipJsonValue(json, i);
    if (value_end <= i) return false;
    absl::string_view name = json.substr(name_start, name_end - name_start);
    const bool collides = name.find('\\') == absl::string_view::npos
                              ? name.substr(1, name.size() - 2) == key
                              : UnescapeJsonString(name) == key;
    if (!collides) {
      members.push_back(',');
      members.append(json.data() + name_start, value_end - name_start);
    }
    i = value_end;
    skip_space();
    if (i < json.size() && json[i] == ',') ++i;
  }
  out->append(members);
  out->push_back('}');
  return true;
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
  // A member named like the event_param is possible only if the key occurs in the text as is,
  // or escaped (then the text has a backslash somewhere).
  if (named &&
      (json.find(key) != absl::string_view::npos || json.find('\\') != absl::string_view::npos)) {
    const size_t mark = out->size();
    if (AppendMembersWithout(out, json, key)) return;
    out->resize(mark);
  }
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
  const size_t bad_utf8 = error == simdjson::UTF8_ERROR ? InvalidUtf8Offset(text) : 0;
  if (error == simdjson::UTF8_ERROR && bad_utf8 != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("params json: invalid UTF-8 at byte ", bad_utf8));
  }
  if (error == simdjson::DEPTH_ERROR) return TooDeep("params json");
  if (error != simdjson::SUCCESS) {
    // simdjson's NUMBER_ERROR also covers valid JSON numbers it cannot hold: say so.
    return absl::InvalidArgumentError(
        absl::StrCat("params json: invalid JSON: ", simdjson::error_message(error),
                     error == simdjson::NUMBER_ERROR
                         ? " (malformed, or beyond what a 64-bit integer or a double can hold)"
                         : ""));
  }
  Params params;
  simdjson::dom::object object;
  simdjson::dom::array array;
  switch (root.type()) {
    case simdjson::dom::element_type::OBJECT:
      params.kind = Params::Kind::kNamed;
      if (root.get(object) != simdjson::SUCCESS) break;
      for (simdjson::dom::key_value_pair member : object) {
        if (Depth(member.value, 2) > kMaxParamsDepth) {
          std::string quoted;
          AppendJsonString(&quoted, absl::string_view(member.key.data(), member.key.size()));
          return TooDeep(absl::StrCat("params json: param ", quoted));
        }
      }
      break;
    case simdjson::dom::element_type::ARRAY: {
      params.kind = Params::Kind::kPositional;
      size_t index = 0;
      if (root.get(array) != simdjson::SUCCESS) break;
      for (simdjson::dom::element element : array) {
        if (Depth(element, 2) > kMaxParamsDepth) {
          return TooDeep(absl::StrCat("params json: param [", index, "]"));
        }
        ++index;
      }
      break;
    }
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
