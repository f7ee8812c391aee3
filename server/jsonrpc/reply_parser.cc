#include "server/jsonrpc/reply_parser.h"

#include <simdjson.h>

#include <optional>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/jsonrpc/json_text.h"

namespace eventbus::jsonrpc {

namespace ondemand = simdjson::ondemand;

namespace {

// Deeper replies are refused as invalid (as simdjson's own default).
constexpr int kMaxDepth = 1024;

// How an integer member ("id", error "code") read.
enum class IntResult { kInt, kNotInteger, kOutOfRange, kNotNumber };

// The members of the "error" object that JSON-RPC 2.0 defines; the first of each name counts.
struct ErrorMembers {
  bool has_code = false;
  IntResult code_kind = IntResult::kNotNumber;
  int64_t code = 0;
  bool has_message = false;
  bool message_is_string = false;
  absl::string_view message_token;
  std::optional<absl::string_view> data;
};

}  // namespace

// Two steps. CheckJsonText checks the whole frame against the RFC 8259 grammar, as text: numbers
// of any size and lone escaped surrogates are grammatical, where simdjson's DOM, which converts
// every value while parsing, fails the frame on `1e400`, an integer beyond 64 bits or `"\ud800"`
// (NUMBER_ERROR / STRING_ERROR in simdjson 3.0). Then simdjson's on-demand API finds the members
// we need, and only those are read; everything else is skipped, and "result" and "data" are
// taken as raw text. (On demand alone is no check: it skips unread values by counting brackets,
// so `{"id":"a":{}}` would pass.)
struct ReplyParser::Impl {
  // Reused for every frame: its buffers grow to the largest reply seen.
  ondemand::parser parser;
  // The frame plus simdjson's padding.
  std::string padded;
  // The frame being parsed (in `padded`).
  absl::string_view text;

  size_t Offset(const char* p) const { return static_cast<size_t>(p - text.data()); }

  // The raw text of the value starting at `start` (its first byte, in `text`).
  absl::string_view RawValue(const char* start) const {
    const size_t begin = Offset(start);
    return text.substr(begin, SkipJsonValue(text, begin) - begin);
  }

  // The token of a scalar value, without the whitespace simdjson includes after it.
  static absl::string_view Token(ondemand::value& value) {
    std::string_view token = value.raw_json_token();
    return TrimJsonSpace(absl::string_view(token.data(), token.size()));
  }

  // Reads one member name, decoded only when it has escapes (a lone surrogate becomes U+FFFD, so
  // it never equals a name we look for). False if it cannot be read.
  bool ReadKey(ondemand::field& field, std::string* scratch, absl::string_view* key) const {
    const char* raw = field.key().raw();  // just past the opening quote
    const size_t begin = Offset(raw) - 1;
    const size_t end = ScanJsonString(text, begin);
    if (end == absl::string_view::npos) return false;
    absl::string_view token = text.substr(begin, end - begin);
    if (token.find('\\') == absl::string_view::npos) {
      *key = token.substr(1, token.size() - 2);
    } else {
      *scratch = UnescapeJsonString(token);
      *key = *scratch;
    }
    return true;
  }

  // Reads an integer member ("id", error "code") if it is an integer that fits an int64.
  static IntResult ReadInteger(ondemand::value& value, int64_t* out) {
    ondemand::json_type type;
    if (value.type().get(type) != simdjson::SUCCESS || type != ondemand::json_type::number) {
      return IntResult::kNotNumber;
    }
    absl::string_view token = Token(value);
    if (token.find_first_of(".eE") != absl::string_view::npos) return IntResult::kNotInteger;
    return absl::SimpleAtoi(token, out) ? IntResult::kInt : IntResult::kOutOfRange;
  }

  // Reads the "error" object `value`. Returns false if simdjson fails on it.
  bool ReadError(ondemand::value& value, ErrorMembers* members) const {
    ondemand::object object;
    if (value.get_object().get(object) != simdjson::SUCCESS) return false;
    std::string scratch;
    for (auto member : object) {
      ondemand::field field;
      if (std::move(member).get(field) != simdjson::SUCCESS) return false;
      absl::string_view key;
      if (!ReadKey(field, &scratch, &key)) return false;
      ondemand::value& item = field.value();
      if (key == "code" && !members->has_code) {
        members->has_code = true;
        members->code_kind = ReadInteger(item, &members->code);
      } else if (key == "message" && !members->has_message) {
        members->has_message = true;
        ondemand::json_type type;
        if (item.type().get(type) != simdjson::SUCCESS) return false;
        if (type == ondemand::json_type::string) {
          members->message_is_string = true;
          members->message_token = Token(item);
        }
      } else if (key == "data" && !members->data.has_value()) {
        members->data = RawValue(item.raw_json_token().data());
      }
    }
    return true;
  }
};

namespace {

Reply Invalid(absl::string_view fault) {
  Reply reply;
  reply.kind = Reply::Kind::kInvalid;
  reply.detail = absl::StrCat("invalid JSON: ", fault);
  return reply;
}

Reply NoId(std::string detail) {
  Reply reply;
  reply.kind = Reply::Kind::kNoId;
  reply.detail = std::move(detail);
  return reply;
}

Reply BadReply(int64_t id, std::string detail) {
  Reply reply;
  reply.kind = Reply::Kind::kBadReply;
  reply.id = id;
  reply.detail = std::move(detail);
  return reply;
}

}  // namespace

ReplyParser::ReplyParser() : impl_(std::make_unique<Impl>()) {}
ReplyParser::~ReplyParser() = default;

Reply ReplyParser::Parse(absl::string_view frame) {
  Impl& impl = *impl_;
  impl.padded.assign(frame.data(), frame.size());
  impl.padded.append(simdjson::SIMDJSON_PADDING, '\0');
  impl.text = absl::string_view(impl.padded.data(), frame.size());

  // simdjson checks UTF-8 and unescaped control characters (stage 1), then the grammar is checked.
  ondemand::document doc;
  if (auto error =
          impl.parser.iterate(impl.padded.data(), frame.size(), impl.padded.size()).get(doc)) {
    return Invalid(simdjson::error_message(error));
  }
  std::string fault = CheckJsonText(impl.text, kMaxDepth);
  if (!fault.empty()) return Invalid(fault);

  ondemand::json_type type;
  if (auto error = doc.type().get(type)) return Invalid(simdjson::error_message(error));
  if (type == ondemand::json_type::array) {
    return NoId("top-level array (batch replies are not used)");
  }
  if (type != ondemand::json_type::object) return NoId("top-level value is not an object");
  ondemand::object top;
  if (auto error = doc.get_object().get(top)) return Invalid(simdjson::error_message(error));

  bool has_id = false;
  IntResult id_kind = IntResult::kNotNumber;
  int64_t id = 0;
  std::optional<absl::string_view> result;
  bool has_error = false;
  bool error_is_null = false;
  bool error_is_object = false;
  ErrorMembers error_members;
  std::string scratch;
  for (auto member : top) {
    ondemand::field field;
    if (auto error = std::move(member).get(field)) return Invalid(simdjson::error_message(error));
    absl::string_view key;
    if (!impl.ReadKey(field, &scratch, &key)) return Invalid("malformed member name");
    ondemand::value& value = field.value();
    if (key == "id" && !has_id) {
      has_id = true;
      id_kind = Impl::ReadInteger(value, &id);
    } else if (key == "result" && !result.has_value()) {
      result = impl.RawValue(value.raw_json_token().data());
    } else if (key == "error" && !has_error) {
      has_error = true;
      ondemand::json_type error_type;
      if (auto error = value.type().get(error_type)) return Invalid(simdjson::error_message(error));
      error_is_null = error_type == ondemand::json_type::null;
      error_is_object = error_type == ondemand::json_type::object;
      if (error_is_object && !impl.ReadError(value, &error_members)) {
        return Invalid("unreadable \"error\" object");
      }
    }
  }

  // Only integer ids that fit 64 bits can be ours: a string, null, fractional, huge or missing id
  // is a reply nobody is waiting for, counted and ignored by the connection.
  if (!has_id) return NoId("no \"id\"");
  switch (id_kind) {
    case IntResult::kInt:
      break;
    case IntResult::kOutOfRange:
      return NoId("\"id\" is out of range");
    default:
      return NoId("\"id\" is not an integer");
  }

  if (has_error && !error_is_null) {
    if (!error_is_object) return BadReply(id, "\"error\" is not an object");
    if (!error_members.has_code) return BadReply(id, "error object has no \"code\"");
    if (error_members.code_kind == IntResult::kOutOfRange) {
      return BadReply(id, "error \"code\" is out of range");
    }
    if (error_members.code_kind != IntResult::kInt) {
      return BadReply(id, "error \"code\" is not an integer");
    }
    if (!error_members.has_message) return BadReply(id, "error object has no \"message\"");
    if (!error_members.message_is_string) return BadReply(id, "error \"message\" is not a string");
    Reply reply;
    reply.kind = Reply::Kind::kError;
    reply.id = id;
    reply.error_code = error_members.code;
    reply.error_message = UnescapeJsonString(error_members.message_token);
    if (error_members.data.has_value()) AppendCompactJson(*error_members.data, &reply.error_data);
    return reply;
  }
  if (result.has_value()) {
    Reply reply;
    reply.kind = Reply::Kind::kResult;
    reply.id = id;
    AppendCompactJson(*result, &reply.result);
    return reply;
  }
  return BadReply(id, "reply has neither \"result\" nor \"error\"");
}

}  // namespace eventbus::jsonrpc
