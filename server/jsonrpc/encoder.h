// Encodes one event into JSON-RPC 2.0 bytes, exactly as SPEC §2 (OpenSIPS event_stream's bytes).
// A message is split in two so that one event is encoded once and shared by all its targets:
//   notification = "{" + body
//   request      = "{\"id\":" + N + "," + body       (the connection writes the prefix)
// body = "\"jsonrpc\":\"2.0\",\"method\":...,\"params\":...}". Pure.
#ifndef EVENTBUS_SERVER_JSONRPC_ENCODER_H_
#define EVENTBUS_SERVER_JSONRPC_ENCODER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace eventbus::jsonrpc {

// The params of one event, already compact JSON text.
struct Params {
  enum class Kind { kNone, kNamed, kPositional };
  Kind kind = Kind::kNone;
  // kNamed: an object "{...}"; kPositional: an array "[...]"; kNone: empty.
  std::string json;
};

// Params nest at most this many levels of arrays and objects; the params object or array itself
// is level 1, so `{"a":[1]}` has 2. Deeper is INVALID_ARGUMENT (subscribers' parsers have limits
// of their own, and some recurse).
inline constexpr int kMaxParamsDepth = 32;

// Validates client-given raw JSON text with simdjson: it must be one object or array. Whitespace
// between tokens is dropped (the wire carries compact JSON, no newline); the tokens themselves
// (numbers, strings and their escapes) are kept byte for byte.
// Returns INVALID_ARGUMENT naming the problem ("params json: expected an object or array",
// "params json: invalid UTF-8 at byte 7", `params json: param "a": nested deeper than 32 levels`).
absl::StatusOr<Params> ParamsFromRawJson(absl::string_view text);

// What distinguishes the bodies of one event: the socket's method and the event_param key.
struct BodyOptions {
  // The socket's "/METHOD"; empty means the event name is the method.
  absl::string_view method;
  // The event_param key ("" = off). Named params get {"KEY":"EVENT",...} first, and a param of
  // the same name is left out (the subscriber asked for the event name under that key);
  // positional params get the event name as element 0; no params: nothing is added.
  absl::string_view event_param;
};

// Encodes the body (everything after the opening '{' or the id member).
std::string EncodeBody(absl::string_view event, const Params& params, const BodyOptions& options);

// Writes the prefix of a message: "{" for a notification (id == 0), "{\"id\":N," for a request.
void AppendMessagePrefix(std::string* out, uint32_t id);

// Convenience for tests and tools: the whole message.
std::string EncodeMessage(absl::string_view event, const Params& params, const BodyOptions& options,
                          uint32_t id = 0);

}  // namespace eventbus::jsonrpc

#endif  // EVENTBUS_SERVER_JSONRPC_ENCODER_H_
