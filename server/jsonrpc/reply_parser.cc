#include "server/jsonrpc/reply_parser.h"

#include <simdjson.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace eventbus::jsonrpc {

struct ReplyParser::Impl {
  // Reused for every frame: its tape and string buffers grow to the largest reply seen.
  simdjson::dom::parser parser;
};

namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

Reply BadReply(int64_t id, std::string detail) {
  Reply reply;
  reply.kind = Reply::Kind::kBadReply;
  reply.id = id;
  reply.detail = std::move(detail);
  return reply;
}

// Classifies an "error" member that is an object: code (integer) and message (string) are
// required by JSON-RPC 2.0; data is optional and kept raw.
Reply ErrorReply(int64_t id, object error) {
  element code;
  if (error["code"].get(code) != simdjson::SUCCESS) {
    return BadReply(id, "error object has no \"code\"");
  }
  int64_t code_value = 0;
  if (code.get(code_value) != simdjson::SUCCESS) {
    return BadReply(id, "error \"code\" is not an integer");
  }
  element message;
  if (error["message"].get(message) != simdjson::SUCCESS) {
    return BadReply(id, "error object has no \"message\"");
  }
  std::string_view message_value;
  if (message.get(message_value) != simdjson::SUCCESS) {
    return BadReply(id, "error \"message\" is not a string");
  }
  Reply reply;
  reply.kind = Reply::Kind::kError;
  reply.id = id;
  reply.error_code = code_value;
  reply.error_message = std::string(message_value);
  element data;
  if (error["data"].get(data) == simdjson::SUCCESS) reply.error_data = simdjson::minify(data);
  return reply;
}

}  // namespace

ReplyParser::ReplyParser() : impl_(std::make_unique<Impl>()) {}
ReplyParser::~ReplyParser() = default;

Reply ReplyParser::Parse(absl::string_view frame) {
  Reply reply;
  element root;
  simdjson::error_code error = impl_->parser.parse(frame.data(), frame.size()).get(root);
  if (error != simdjson::SUCCESS) {
    reply.kind = Reply::Kind::kInvalid;
    reply.detail = absl::StrCat("invalid JSON: ", simdjson::error_message(error));
    return reply;
  }
  object top;
  if (root.get(top) != simdjson::SUCCESS) {
    reply.kind = Reply::Kind::kNoId;
    reply.detail = root.is_array() ? "top-level array (batch replies are not used)"
                                   : "top-level value is not an object";
    return reply;
  }

  // Only integer ids can be ours: a string, null, fractional or missing id is ignored.
  element id_element;
  int64_t id = 0;
  if (top["id"].get(id_element) != simdjson::SUCCESS) {
    reply.kind = Reply::Kind::kNoId;
    reply.detail = "no \"id\"";
    return reply;
  }
  if (id_element.type() != element_type::INT64 || id_element.get(id) != simdjson::SUCCESS) {
    reply.kind = Reply::Kind::kNoId;
    reply.detail = "\"id\" is not an integer";
    return reply;
  }

  element error_element;
  const bool has_error = top["error"].get(error_element) == simdjson::SUCCESS;
  if (has_error && !error_element.is_null()) {
    object error_object;
    if (error_element.get(error_object) != simdjson::SUCCESS) {
      return BadReply(id, "\"error\" is not an object");
    }
    return ErrorReply(id, error_object);
  }
  element result;
  if (top["result"].get(result) == simdjson::SUCCESS) {
    reply.kind = Reply::Kind::kResult;
    reply.id = id;
    reply.result = simdjson::minify(result);
    return reply;
  }
  return BadReply(id, "reply has neither \"result\" nor \"error\"");
}

}  // namespace eventbus::jsonrpc
