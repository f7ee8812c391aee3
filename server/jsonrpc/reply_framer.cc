#include "server/jsonrpc/reply_framer.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace eventbus::jsonrpc {
namespace {

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

}  // namespace

ReplyFramer::ReplyFramer(size_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}

void ReplyFramer::Append(absl::string_view bytes) {
  if (!status_.ok()) return;
  // Drop what was already returned before growing. Only the partial frame is moved, and only once
  // per completed frame, so the total cost stays linear in the stream length.
  if (start_ > 0) {
    buffer_.erase(0, start_);
    buffer_offset_ += start_;
    scan_ -= start_;
    start_ = 0;
  }
  buffer_.append(bytes.data(), bytes.size());
}

bool ReplyFramer::Fail(absl::Status status) {
  status_ = std::move(status);
  return false;
}

bool ReplyFramer::Next(std::string* frame) {
  if (!status_.ok()) return false;
  const char* data = buffer_.data();
  const size_t size = buffer_.size();
  while (scan_ < size) {
    const char c = data[scan_];
    if (depth_ == 0) {
      // Between frames: only whitespace, then '{' or '['.
      if (IsJsonSpace(c)) {
        start_ = ++scan_;
        continue;
      }
      if (c != '{' && c != '[') {
        return Fail(absl::DataLossError(absl::StrCat("reply stream: unexpected byte '",
                                                     absl::CHexEscape(absl::string_view(&c, 1)),
                                                     "' at offset ", buffer_offset_ + scan_)));
      }
      start_ = scan_;
      depth_ = 1;
    } else if (in_string_) {
      if (escape_) {
        escape_ = false;
      } else if (c == '\\') {
        escape_ = true;
      } else if (c == '"') {
        in_string_ = false;
      }
    } else if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      ++depth_;
    } else if (c == '}' || c == ']') {
      // Mismatched brackets are not our concern: the parser rejects the frame.
      --depth_;
    }
    ++scan_;
    if (scan_ - start_ > max_frame_bytes_) {
      return Fail(absl::DataLossError(
          absl::StrCat("reply stream: reply larger than ", max_frame_bytes_, " bytes")));
    }
    if (depth_ == 0) {
      frame->assign(data + start_, scan_ - start_);
      start_ = scan_;
      return true;
    }
  }
  return false;
}

size_t ReplyFramer::buffered() const { return buffer_.size() - start_; }

void ReplyFramer::Reset() {
  buffer_.clear();
  start_ = 0;
  scan_ = 0;
  buffer_offset_ = 0;
  depth_ = 0;
  in_string_ = false;
  escape_ = false;
  status_ = absl::OkStatus();
}

}  // namespace eventbus::jsonrpc
