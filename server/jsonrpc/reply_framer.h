// Incremental framer for the reply stream of a sync connection (SPEC §3): finds complete top-level
// JSON values in a TCP byte stream split at any byte, several per read, with any whitespace
// (including newlines) between them. It tracks only nesting, strings and escapes; simdjson parses
// each frame afterwards (reply_parser.h). Pure.
#ifndef EVENTBUS_SERVER_JSONRPC_REPLY_FRAMER_H_
#define EVENTBUS_SERVER_JSONRPC_REPLY_FRAMER_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace eventbus::jsonrpc {

// Thread-compatible; one per connection.
class ReplyFramer {
 public:
  explicit ReplyFramer(size_t max_frame_bytes = 1 << 20);

  // Appends received bytes.
  void Append(absl::string_view bytes);

  // Extracts the next complete frame (an object or array, as raw text without surrounding
  // whitespace) into *frame and returns true; returns false when more bytes are needed.
  // Once it fails the stream is unusable: status() is then DATA_LOSS ("reply stream: unexpected
  // byte 'x' at offset N" for anything but '{' / '[' at the top level, or "reply stream: reply
  // larger than N bytes") and Next() keeps returning false until Reset().
  bool Next(std::string* frame);

  const absl::Status& status() const { return status_; }
  // Bytes buffered but not yet returned as a frame.
  size_t buffered() const;
  // Forgets all state (after a reconnect).
  void Reset();

 private:
  bool Fail(absl::Status status);

  size_t max_frame_bytes_;
  std::string buffer_;
  size_t start_ = 0;          // start of the frame being scanned, in buffer_
  size_t scan_ = 0;           // next byte to scan
  size_t buffer_offset_ = 0;  // stream offset of buffer_[0], for error messages
  int depth_ = 0;
  bool in_string_ = false;
  bool escape_ = false;
  absl::Status status_;
};

}  // namespace eventbus::jsonrpc

#endif  // EVENTBUS_SERVER_JSONRPC_REPLY_FRAMER_H_
