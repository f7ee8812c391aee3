// Classifies one framed reply (SPEC §3) with simdjson's on-demand API. Only what matching needs
// is interpreted: `id`, whether `result`/`error` are present, and the error's `code` and `message`;
// everything else is checked against the JSON grammar and kept as raw text, so any valid JSON
// (numbers of any size, lone escaped surrogates) is carried, never a reason to drop the stream.
// Pure; one ReplyParser per loop thread, reused for every frame so buffers are allocated once.
#ifndef EVENTBUS_SERVER_JSONRPC_REPLY_PARSER_H_
#define EVENTBUS_SERVER_JSONRPC_REPLY_PARSER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace eventbus::jsonrpc {

struct Reply {
  enum class Kind {
    kResult,    // "result" present, "error" absent or null
    kError,     // "error" is an object
    kBadReply,  // has a numeric id but neither of the above (or an ill-formed error)
    kNoId,      // valid JSON without a usable id (none, not an integer, beyond 64 bits, an array)
    kInvalid,   // not JSON at all: the stream is unusable
  };
  Kind kind = Kind::kInvalid;
  // The numeric id (kResult, kError, kBadReply).
  int64_t id = 0;
  // kResult: raw JSON of "result", tokens verbatim, whitespace between them dropped.
  std::string result;
  // kError: code, message (UTF-8; a lone escaped surrogate becomes U+FFFD) and raw JSON of "data"
  // ("" when absent).
  int64_t error_code = 0;
  std::string error_message;
  std::string error_data;
  // kBadReply / kInvalid: what was wrong.
  std::string detail;
};

// Thread-compatible.
class ReplyParser {
 public:
  ReplyParser();
  ~ReplyParser();
  ReplyParser(const ReplyParser&) = delete;
  ReplyParser& operator=(const ReplyParser&) = delete;

  // Parses one frame from ReplyFramer.
  Reply Parse(absl::string_view frame);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eventbus::jsonrpc

#endif  // EVENTBUS_SERVER_JSONRPC_REPLY_PARSER_H_
