// Fuzzes the encoder (server/jsonrpc/encoder, json_writer) by round trip. From the fuzzer's bytes
// (FuzzedDataProvider) it builds an event name, a socket method, an event_param key, a request id
// and a params value tree (named, positional or none; strings valid UTF-8 as proto strings are;
// numbers finite, as the service refuses NaN and infinities; keys unique per object, as the service
// refuses duplicates). The params are written with json_writer, as the service does, and either
// used directly or passed through the raw-JSON path with whitespace between tokens. The encoded
// message is then parsed back strictly with simdjson and must carry exactly the model: the key
// order id (requests only), jsonrpc "2.0", method, params (absent when there are none), the
// event_param member or element first, and every value and key in order. The bytes must be compact
// valid JSON with every control byte escaped and '/' not escaped (SPEC §2).
#include <fuzzer/FuzzedDataProvider.h>
#include <simdjson.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "server/jsonrpc/encoder.h"
#include "server/jsonrpc/json_writer.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/json_check.h"

namespace eventbus::jsonrpc {
namespace {

using ::eventbus::fuzz::Quote;

struct Value {
  enum class Type { kNull, kBool, kInt, kDouble, kString, kArray, kObject };
  Type type = Type::kNull;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0;
  std::string string;
  std::vector<Value> items;
  std::vector<std::pair<std::string, Value>> members;
};

constexpr int kMaxDepth = 6;
constexpr size_t kMaxItems = 8;
constexpr size_t kMaxString = 64;

// Keeps valid UTF-8 sequences and replaces every other byte with '?'.
std::string ToValidUtf8(const std::string& bytes) {
  std::string out;
  for (size_t i = 0; i < bytes.size();) {
    const unsigned char b0 = static_cast<unsigned char>(bytes[i]);
    size_t n = b0 < 0x80             ? 1
               : (b0 & 0xE0) == 0xC0 ? 2
               : (b0 & 0xF0) == 0xE0 ? 3
               : (b0 & 0xF8) == 0xF0 ? 4
                                     : 0;
    bool valid = n > 0 && i + n <= bytes.size();
    uint32_t cp = n == 1 ? b0 : n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
    for (size_t k = 1; valid && k < n; ++k) {
      const unsigned char b = static_cast<unsigned char>(bytes[i + k]);
      valid = (b & 0xC0) == 0x80;
      cp = cp << 6 | (b & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (valid && (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) valid = false;
    if (valid) {
      out.append(bytes, i, n);
      i += n;
    } else {
      out.push_back('?');
      ++i;
    }
  }
  return out;
}

std::string ConsumeText(FuzzedDataProvider* provider) {
  return ToValidUtf8(provider->ConsumeRandomLengthString(kMaxString));
}

double ConsumeFiniteDouble(FuzzedDataProvider* provider) {
  switch (provider->ConsumeIntegralInRange<int>(0, 2)) {
    case 0: {
      // Any bit pattern: subnormals, huge exponents, negative zero.
      const uint64_t bits = provider->ConsumeIntegral<uint64_t>();
      double value;
      std::memcpy(&value, &bits, sizeof(value));
      return std::isfinite(value) ? value : 0.5;
    }
    case 1:
      // Integral values around 2^53, where the writer switches between integer and %g forms.
      return std::ldexp(static_cast<double>(provider->ConsumeIntegral<int32_t>()),
                        provider->ConsumeIntegralInRange<int>(0, 40));
    default:
      return provider->ConsumeFloatingPoint<double>();
  }
}

Value ConsumeValue(FuzzedDataProvider* provider, int depth) {
  Value value;
  const int max_type = depth >= kMaxDepth ? 4 : 6;
  value.type = static_cast<Value::Type>(provider->ConsumeIntegralInRange<int>(0, max_type));
  switch (value.type) {
    case Value::Type::kNull:
      break;
    case Value::Type::kBool:
      value.boolean = provider->ConsumeBool();
      break;
    case Value::Type::kInt:
      value.integer = provider->ConsumeIntegral<int64_t>();
      break;
    case Value::Type::kDouble:
      value.number = ConsumeFiniteDouble(provider);
      break;
    case Value::Type::kString:
      value.string = ConsumeText(provider);
      break;
    case Value::Type::kArray: {
      const size_t n = provider->ConsumeIntegralInRange<size_t>(0, kMaxItems);
      for (size_t i = 0; i < n && provider->remaining_bytes() > 0; ++i) {
        value.items.push_back(ConsumeValue(provider, depth + 1));
      }
      break;
    }
    case Value::Type::kObject: {
      const size_t n = provider->ConsumeIntegralInRange<size_t>(0, kMaxItems);
      absl::flat_hash_set<std::string> keys;
      for (size_t i = 0; i < n && provider->remaining_bytes() > 0; ++i) {
        std::string key = ConsumeText(provider);
        Value member = ConsumeValue(provider, depth + 1);
        if (!keys.insert(key).second) continue;
        value.members.emplace_back(std::move(key), std::move(member));
      }
      break;
    }
  }
  return value;
}

// Writes `value` as the service does (json_writer), with whitespace between tokens when `pretty`.
void Write(const Value& value, bool pretty, std::string* out) {
  const absl::string_view space = pretty ? " \n\t\r" : "";
  switch (value.type) {
    case Value::Type::kNull:
      out->append("null");
      break;
    case Value::Type::kBool:
      out->append(value.boolean ? "true" : "false");
      break;
    case Value::Type::kInt:
      AppendJsonInt(out, value.integer);
      break;
    case Value::Type::kDouble:
      AppendJsonNumber(out, value.number);
      break;
    case Value::Type::kString:
      AppendJsonString(out, value.string);
      break;
    case Value::Type::kArray:
      out->push_back('[');
      for (size_t i = 0; i < value.items.size(); ++i) {
        if (i > 0) absl::StrAppend(out, space, ",", space);
        Write(value.items[i], pretty, out);
      }
      absl::StrAppend(out, space, "]");
      break;
    case Value::Type::kObject:
      absl::StrAppend(out, "{", space);
      for (size_t i = 0; i < value.members.size(); ++i) {
        if (i > 0) absl::StrAppend(out, ",", space);
        AppendJsonString(out, value.members[i].first);
        absl::StrAppend(out, space, ":", space);
        Write(value.members[i].second, pretty, out);
      }
      out->push_back('}');
      break;
  }
}

// Compares a parsed element with the model; returns "" or what differs, at `path`.
std::string Compare(const Value& want, simdjson::dom::element got, const std::string& path) {
  using simdjson::dom::element_type;
  const element_type type = got.type();
  switch (want.type) {
    case Value::Type::kNull:
      return got.is_null() ? "" : absl::StrCat(path, ": expected null");
    case Value::Type::kBool:
      return type == element_type::BOOL && got.get_bool().value_unsafe() == want.boolean
                 ? ""
                 : absl::StrCat(path, ": expected ", want.boolean);
    case Value::Type::kInt:
      return type == element_type::INT64 && got.get_int64().value_unsafe() == want.integer
                 ? ""
                 : absl::StrCat(path, ": expected integer ", want.integer);
    case Value::Type::kDouble: {
      double number = 0;
      if (type == element_type::INT64) {
        number = static_cast<double>(got.get_int64().value_unsafe());
      } else if (type == element_type::DOUBLE) {
        number = got.get_double().value_unsafe();
      } else {
        return absl::StrCat(path, ": expected a number");
      }
      return number == want.number
                 ? ""
                 : absl::StrCat(path, ": expected ", absl::StrFormat("%.17g", want.number), " got ",
                                absl::StrFormat("%.17g", number));
    }
    case Value::Type::kString:
      return type == element_type::STRING && got.get_string().value_unsafe() == want.string
                 ? ""
                 : absl::StrCat(path, ": expected string ", Quote(want.string));
    case Value::Type::kArray: {
      if (type != element_type::ARRAY) return absl::StrCat(path, ": expected an array");
      simdjson::dom::array array = got.get_array().value_unsafe();
      if (array.size() != want.items.size()) {
        return absl::StrCat(path, ": expected ", want.items.size(), " elements, got ",
                            array.size());
      }
      size_t i = 0;
      for (simdjson::dom::element item : array) {
        std::string diff = Compare(want.items[i], item, absl::StrCat(path, "[", i, "]"));
        if (!diff.empty()) return diff;
        ++i;
      }
      return "";
    }
    case Value::Type::kObject: {
      if (type != element_type::OBJECT) return absl::StrCat(path, ": expected an object");
      simdjson::dom::object object = got.get_object().value_unsafe();
      if (object.size() != want.members.size()) {
        return absl::StrCat(path, ": expected ", want.members.size(), " members, got ",
                            object.size());
      }
      size_t i = 0;
      for (simdjson::dom::key_value_pair member : object) {
        const auto& [key, value] = want.members[i];
        if (absl::string_view(member.key.data(), member.key.size()) != key) {
          return absl::StrCat(path, ": member ", i, " is ",
                              Quote(absl::string_view(member.key.data(), member.key.size())),
                              ", expected ", Quote(key));
        }
        std::string diff = Compare(value, member.value, absl::StrCat(path, ".", Quote(key)));
        if (!diff.empty()) return diff;
        ++i;
      }
      return "";
    }
  }
  return "unknown type";
}

// Returns true when a string in `json` writes '/' as "\\/" (SPEC §2 keeps it verbatim). Escapes
// are walked one by one: "\\\\/" is an escaped backslash followed by a plain '/'.
bool EscapesSlash(absl::string_view json) {
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    if (!in_string) {
      in_string = json[i] == '"';
    } else if (json[i] == '\\') {
      if (i + 1 < json.size() && json[i + 1] == '/') return true;
      ++i;
    } else if (json[i] == '"') {
      in_string = false;
    }
  }
  return false;
}

Value StringValue(std::string text) {
  Value value;
  value.type = Value::Type::kString;
  value.string = std::move(text);
  return value;
}

void RoundTrip(FuzzedDataProvider* provider) {
  // Event names are 1-128 bytes of [A-Za-z0-9_.:-] (SPEC §6); the service refuses others.
  static constexpr char kEventChars[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-";
  std::string event;
  const size_t event_size = provider->ConsumeIntegralInRange<size_t>(1, 128);
  for (size_t i = 0; i < event_size; ++i) {
    event.push_back(
        kEventChars[provider->ConsumeIntegralInRange<size_t>(0, sizeof(kEventChars) - 2)]);
  }
  const std::string method = provider->ConsumeBool() ? ConsumeText(provider) : "";
  std::string event_param = provider->ConsumeBool() ? ConsumeText(provider) : "";
  const uint32_t id = provider->ConsumeBool() ? provider->ConsumeIntegral<uint32_t>() : 0;
  const int kind = provider->ConsumeIntegralInRange<int>(0, 2);
  const bool raw = provider->ConsumeBool();
  const bool pretty = raw && provider->ConsumeBool();

  Value model;
  Params params;
  if (kind == 1) {
    params.kind = Params::Kind::kNamed;
    model.type = Value::Type::kObject;
    const size_t n = provider->ConsumeIntegralInRange<size_t>(0, kMaxItems);
    absl::flat_hash_set<std::string> keys;
    for (size_t i = 0; i < n && provider->remaining_bytes() > 0; ++i) {
      std::string key = ConsumeText(provider);
      Value member = ConsumeValue(provider, 1);
      if (!keys.insert(key).second) continue;
      model.members.emplace_back(std::move(key), std::move(member));
    }
    // An event_param equal to a param name would duplicate a key; the service refuses that.
    if (keys.contains(event_param)) event_param.clear();
  } else if (kind == 2) {
    params.kind = Params::Kind::kPositional;
    model.type = Value::Type::kArray;
    const size_t n = provider->ConsumeIntegralInRange<size_t>(0, kMaxItems);
    for (size_t i = 0; i < n && provider->remaining_bytes() > 0; ++i) {
      model.items.push_back(ConsumeValue(provider, 1));
    }
  }
  if (params.kind != Params::Kind::kNone) {
    std::string text;
    Write(model, pretty, &text);
    if (raw) {
      absl::StatusOr<Params> parsed = ParamsFromRawJson(text);
      FUZZ_CHECK(parsed.ok() && parsed->kind == params.kind,
                 absl::StrCat("written params ", Quote(text),
                              " refused by the raw-JSON path: ", parsed.status().ToString()));
      params = *std::move(parsed);
    } else {
      params.json = std::move(text);
    }
  }

  BodyOptions options;
  options.method = method;
  options.event_param = event_param;
  const std::string message = EncodeMessage(event, params, options, id);
  std::string split;
  AppendMessagePrefix(&split, id);
  split += EncodeBody(event, params, options);
  FUZZ_CHECK(split == message, "prefix + body differs from the message");

  // The bytes: compact, valid, control bytes escaped, '/' verbatim.
  FUZZ_CHECK(fuzz::IsValidJson(message) && fuzz::IsCompactJson(message),
             absl::StrCat("not compact valid JSON: ", Quote(message)));
  for (char c : message) {
    FUZZ_CHECK(static_cast<unsigned char>(c) >= 0x20,
               absl::StrCat("raw control byte in ", Quote(message)));
  }
  FUZZ_CHECK(!EscapesSlash(message), absl::StrCat("'/' escaped in ", Quote(message)));

  // Parse back strictly and compare with the model.
  static simdjson::dom::parser* parser = new simdjson::dom::parser();
  simdjson::dom::element root;
  simdjson::error_code error = parser->parse(message).get(root);
  FUZZ_CHECK(error == simdjson::SUCCESS, absl::StrCat("simdjson refuses ", Quote(message), ": ",
                                                      simdjson::error_message(error)));
  Value expected;
  expected.type = Value::Type::kObject;
  if (id != 0) {
    Value id_value;
    id_value.type = Value::Type::kInt;
    id_value.integer = id;
    expected.members.emplace_back("id", id_value);
  }
  expected.members.emplace_back("jsonrpc", StringValue("2.0"));
  expected.members.emplace_back("method", StringValue(method.empty() ? event : method));
  if (params.kind != Params::Kind::kNone) {
    Value wire = model;
    if (!event_param.empty() && params.kind == Params::Kind::kNamed) {
      wire.members.insert(wire.members.begin(), {event_param, StringValue(event)});
    } else if (!event_param.empty()) {
      wire.items.insert(wire.items.begin(), StringValue(event));
    }
    expected.members.emplace_back("params", std::move(wire));
  }
  const std::string diff = Compare(expected, root, "message");
  FUZZ_CHECK(diff.empty(), absl::StrCat(diff, "\n  in ", Quote(message)));
}

}  // namespace
}  // namespace eventbus::jsonrpc

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider provider(data, size);
  eventbus::jsonrpc::RoundTrip(&provider);
  return 0;
}
