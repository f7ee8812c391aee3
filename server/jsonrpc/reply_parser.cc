#include "server/jsonrpc/reply_parser.h"

#include <simdjson.h>

#include <optional>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/jsonrpc/json_text.h"

namespace eventbus::jsonrpc {

namespace ondemand = simdjson::ondemand;

namespace {

// Deeper replies are refused as invalid: the walk below recurses once per level.
constexpr int kMaxDepth = 1024;

// What one walk found wrong; empty while the frame is valid JSON.
struct Walk {
  std::string fault;
  bool ok() const { return fault.empty(); }
};

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

// The start of a token for a message, escaped: the message may end up in a log line or a gRPC
// string, and a cut may split a UTF-8 sequence.
std::string Excerpt(absl::string_view token) {
  if (token.size() <= 32) return absl::CHexEscape(token);
  return absl::StrCat(absl::CHexEscape(token.substr(0, 32)), "...");
}

}  // namespace

// simdjson's on-demand API is used, not its DOM: the DOM converts every number and string while
// parsing, so a valid `1e400`, an integer beyond 64 bits or a lone `\ud800` fails the whole frame
// (NUMBER_ERROR / STRING_ERROR in simdjson 3.0). On demand, simdjson checks the structure and
// UTF-8 (stage 1) and each value is read only as far as we ask. Every value is visited: the
// containers through simdjson, the scalars as text (json_text.h), so the frame is still checked
// against the whole RFC 8259 grammar while the values we only pass on stay raw text.
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

  // Returns a fault unless `token` is exactly one well-formed string.
  std::string CheckStringToken(absl::string_view token) const {
    if (ScanJsonString(token, 0) != token.size()) {
      return absl::StrCat("malformed string ", Excerpt(token));
    }
    return {};
  }

  // Reads one member name: checked as a string token, decoded only when it has escapes.
  bool ReadKey(ondemand::field& field, std::string* scratch, absl::string_view* key, Walk* walk) {
    const char* raw = field.key().raw();  // just past the opening quote
    const size_t begin = Offset(raw) - 1;
    const size_t end = ScanJsonString(text, begin);
    if (end == absl::string_view::npos) {
      walk->fault = absl::StrCat("malformed member name ", Excerpt(text.substr(begin)));
      return false;
    }
    absl::string_view token = text.substr(begin, end - begin);
    if (token.find('\\') == absl::string_view::npos) {
      *key = token.substr(1, token.size() - 2);
    } else {
      *scratch = UnescapeJsonString(token);
      *key = *scratch;
    }
    return true;
  }

  // Checks `value` and everything in it against the JSON grammar.
  void Check(ondemand::value value, int depth, Walk* walk) {
    if (depth > kMaxDepth) {
      walk->fault = absl::StrCat("nested deeper than ", kMaxDepth, " levels");
      return;
    }
    ondemand::json_type type;
    if (auto error = value.type().get(type)) {
      walk->fault = simdjson::error_message(error);
      return;
    }
    switch (type) {
      case ondemand::json_type::object: {
        ondemand::object object;
        if (auto error = value.get_object().get(object)) {
          walk->fault = simdjson::error_message(error);
          return;
        }
        std::string scratch;
        for (auto member : object) {
          ondemand::field field;
          if (auto error = std::move(member).get(field)) {
            walk->fault = simdjson::error_message(error);
            return;
          }
          absl::string_view key;
          if (!ReadKey(field, &scratch, &key, walk)) return;
          Check(field.value(), depth + 1, walk);
          if (!walk->ok()) return;
        }
        return;
      }
      case ondemand::json_type::array: {
        ondemand::array array;
        if (auto error = value.get_array().get(array)) {
          walk->fault = simdjson::error_message(error);
          return;
        }
        for (auto element : array) {
          ondemand::value item;
          if (auto error = std::move(element).get(item)) {
            walk->fault = simdjson::error_message(error);
            return;
          }
          Check(item, depth + 1, walk);
          if (!walk->ok()) return;
        }
        return;
      }
      case ondemand::json_type::number: {
        absl::string_view token = Token(value);
        if (!IsJsonNumber(token)) walk->fault = absl::StrCat("malformed number ", Excerpt(token));
        return;
      }
      case ondemand::json_type::string:
        walk->fault = CheckStringToken(Token(value));
        return;
      case ondemand::json_type::boolean: {
        absl::string_view token = Token(value);
        if (token != "true" && token != "false") {
          walk->fault = absl::StrCat("malformed literal ", Excerpt(token));
        }
        return;
      }
      case ondemand::json_type::null: {
        absl::string_view token = Token(value);
        if (token != "null") walk->fault = absl::StrCat("malformed literal ", Excerpt(token));
        return;
      }
    }
    walk->fault = "unknown value";
  }

  // An integer member ("id", error "code"): checked, then read if it fits an int64.
  IntResult ReadInteger(ondemand::value value, int64_t* out, Walk* walk) {
    ondemand::json_type type;
    if (auto error = value.type().get(type)) {
      walk->fault = simdjson::error_message(error);
      return IntResult::kNotNumber;
    }
    if (type != ondemand::json_type::number) {
      Check(value, 1, walk);
      return IntResult::kNotNumber;
    }
    absl::string_view token = Token(value);
    if (!IsJsonNumber(token)) {
      walk->fault = absl::StrCat("malformed number ", Excerpt(token));
      return IntResult::kNotNumber;
    }
    if (token.find_first_of(".eE") != absl::string_view::npos) return IntResult::kNotInteger;
    return absl::SimpleAtoi(token, out) ? IntResult::kInt : IntResult::kOutOfRange;
  }

  // Reads the "error" object (`value`, an object): the first code, message and data count, and
  // everything is checked.
  void ReadError(ondemand::value value, ErrorMembers* members, Walk* walk) {
    ondemand::object object;
    if (auto error = value.get_object().get(object)) {
      walk->fault = simdjson::error_message(error);
      return;
    }
    std::string scratch;
    for (auto member : object) {
      ondemand::field field;
      if (auto error = std::move(member).get(field)) {
        walk->fault = simdjson::error_message(error);
        return;
      }
      absl::string_view key;
      if (!ReadKey(field, &scratch, &key, walk)) return;
      ondemand::value& item = field.value();
      if (key == "code" && !members->has_code) {
        members->has_code = true;
        members->code_kind = ReadInteger(item, &members->code, walk);
      } else if (key == "message" && !members->has_message) {
        members->has_message = true;
        ondemand::json_type type;
        if (auto error = item.type().get(type)) {
          walk->fault = simdjson::error_message(error);
          return;
        }
        if (type == ondemand::json_type::string) {
          members->message_is_string = true;
          members->message_token = Token(item);
        }
        Check(item, 2, walk);
      } else if (key == "data" && !members->data.has_value()) {
        const char* start = item.raw_json_token().data();
        Check(item, 2, walk);
        if (walk->ok()) members->data = RawValue(start);
      } else {
        Check(item, 2, walk);
      }
      if (!walk->ok()) return;
    }
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

  ondemand::document doc;
  if (auto error =
          impl.parser.iterate(impl.padded.data(), frame.size(), impl.padded.size()).get(doc)) {
    return Invalid(simdjson::error_message(error));
  }
  ondemand::json_type type;
  if (auto error = doc.type().get(type)) return Invalid(simdjson::error_message(error));
  Walk walk;

  // Anything but an object is valid JSON we ignore (once checked), or garbage.
  if (type != ondemand::json_type::object) {
    size_t end = 0;
    if (type == ondemand::json_type::array) {
      ondemand::array array;
      if (auto error = doc.get_array().get(array)) return Invalid(simdjson::error_message(error));
      for (auto element : array) {
        ondemand::value item;
        if (auto error = std::move(element).get(item)) {
          return Invalid(simdjson::error_message(error));
        }
        impl.Check(item, 1, &walk);
        if (!walk.ok()) return Invalid(walk.fault);
      }
      end = SkipJsonValue(impl.text, impl.text.find('['));
    } else {
      std::string_view raw = doc.raw_json_token();
      absl::string_view token = TrimJsonSpace(absl::string_view(raw.data(), raw.size()));
      const bool valid =
          type == ondemand::json_type::number    ? IsJsonNumber(token)
          : type == ondemand::json_type::string  ? ScanJsonString(token, 0) == token.size()
          : type == ondemand::json_type::boolean ? token == "true" || token == "false"
                                                 : token == "null";
      if (!valid) return Invalid(absl::StrCat("malformed value ", Excerpt(token)));
      end = impl.Offset(token.data()) + token.size();
    }
    if (!TrimJsonSpace(impl.text.substr(end)).empty()) return Invalid("trailing content");
    return NoId(type == ondemand::json_type::array ? "top-level array (batch replies are not used)"
                                                   : "top-level value is not an object");
  }

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
    if (!impl.ReadKey(field, &scratch, &key, &walk)) return Invalid(walk.fault);
    ondemand::value& value = field.value();
    if (key == "id" && !has_id) {
      has_id = true;
      id_kind = impl.ReadInteger(value, &id, &walk);
    } else if (key == "result" && !result.has_value()) {
      const char* start = value.raw_json_token().data();
      impl.Check(value, 1, &walk);
      if (walk.ok()) result = impl.RawValue(start);
    } else if (key == "error" && !has_error) {
      has_error = true;
      ondemand::json_type error_type;
      if (auto error = value.type().get(error_type)) return Invalid(simdjson::error_message(error));
      if (error_type == ondemand::json_type::null) {
        error_is_null = true;
        impl.Check(value, 1, &walk);
      } else if (error_type != ondemand::json_type::object) {
        impl.Check(value, 1, &walk);
      } else {
        error_is_object = true;
        impl.ReadError(value, &error_members, &walk);
      }
    } else {
      impl.Check(value, 1, &walk);
    }
    if (!walk.ok()) return Invalid(walk.fault);
  }
  // Nothing but whitespace may follow the object (ReplyFramer never hands over more, but the
  // parser stands on its own). Only whitespace precedes it, so its '{' is the first one.
  const size_t top_start = impl.text.find('{');
  if (!TrimJsonSpace(impl.text.substr(SkipJsonValue(impl.text, top_start))).empty()) {
    return Invalid("trailing content");
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
