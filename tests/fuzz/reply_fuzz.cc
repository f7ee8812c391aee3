// Fuzzes the sync reply path (server/jsonrpc): ReplyFramer cuts a byte stream into frames and
// ReplyParser classifies each. The input is the stream; it is fed
//   a) at once, every frame to a fresh parser,
//   b) byte by byte, and
//   c) in fragments whose lengths come from a generator seeded by the input's last bytes (so the
//      fuzzer chooses the split points by mutating them),
// with b and c sharing one framer (Reset between them) and one parser, as a connection does.
// Properties: all feeds give the same frames, replies, final status and buffered byte count;
// frames are the input's bytes in order with only whitespace between them; a DATA_LOSS names the
// offset of the offending byte; a frame is classified "not JSON" exactly when an independent
// validator says so (up to 64 levels deep); kept raw JSON is compact and valid; nothing crashes.
// Each feed runs with the default frame limit and with a small one (from the input's last byte), so
// the size check is reached too.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/jsonrpc/reply_framer.h"
#include "server/jsonrpc/reply_parser.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/json_check.h"

namespace eventbus::jsonrpc {
namespace {

using ::eventbus::fuzz::IsCompactJson;
using ::eventbus::fuzz::IsValidJson;
using ::eventbus::fuzz::Quote;

struct Run {
  std::vector<std::string> frames;
  std::vector<Reply> replies;
  absl::Status status;
  size_t buffered = 0;
};

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool SameReply(const Reply& a, const Reply& b) {
  return a.kind == b.kind && a.id == b.id && a.result == b.result && a.error_code == b.error_code &&
         a.error_message == b.error_message && a.error_data == b.error_data && a.detail == b.detail;
}

std::string Describe(const Run& run) {
  std::string out = absl::StrCat(run.frames.size(), " frames, status ", run.status.ToString(),
                                 ", buffered ", run.buffered);
  for (size_t i = 0; i < run.frames.size(); ++i) {
    absl::StrAppend(&out, "\n    frame ", i, ": ", Quote(run.frames[i]), " kind ",
                    static_cast<int>(run.replies[i].kind), " id ", run.replies[i].id, " ",
                    Quote(run.replies[i].detail));
  }
  return out;
}

// Drains every complete frame, parsing each with `parser` (or a fresh parser when null).
void Drain(ReplyFramer* framer, ReplyParser* parser, Run* run) {
  std::string frame;
  while (framer->Next(&frame)) {
    if (parser != nullptr) {
      run->replies.push_back(parser->Parse(frame));
    } else {
      ReplyParser fresh;
      run->replies.push_back(fresh.Parse(frame));
    }
    run->frames.push_back(frame);
  }
}

void Finish(const ReplyFramer& framer, Run* run) {
  run->status = framer.status();
  run->buffered = run->status.ok() ? framer.buffered() : 0;
}

// A small deterministic generator (xorshift32): the fuzzer steers it through its seed.
class Lengths {
 public:
  explicit Lengths(uint32_t seed) : state_(seed | 1) {}
  size_t Next(size_t max) {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 17;
    state_ ^= state_ << 5;
    return 1 + state_ % max;
  }

 private:
  uint32_t state_;
};

void CheckRun(absl::string_view input, size_t max_frame, const Run& run) {
  // Frames are the input in order, separated by whitespace only.
  size_t pos = 0;
  for (const std::string& frame : run.frames) {
    while (pos < input.size() && IsJsonSpace(input[pos])) ++pos;
    FUZZ_CHECK(input.substr(pos, frame.size()) == frame,
               absl::StrCat("frame ", Quote(frame), " is not the input at offset ", pos));
    FUZZ_CHECK(frame.size() >= 2 && frame.size() <= max_frame,
               absl::StrCat("frame ", Quote(frame), " size out of range (limit ", max_frame, ")"));
    const char open = frame.front(), close = frame.back();
    FUZZ_CHECK((open == '{' || open == '[') && (close == '}' || close == ']'),
               absl::StrCat("frame ", Quote(frame), " is not bracketed"));
    pos += frame.size();
  }
  while (pos < input.size() && IsJsonSpace(input[pos])) ++pos;
  if (run.status.ok()) {
    FUZZ_CHECK(run.buffered == input.size() - pos,
               absl::StrCat("buffered ", run.buffered, ", expected ", input.size() - pos));
    return;
  }
  FUZZ_CHECK(run.status.code() == absl::StatusCode::kDataLoss &&
                 absl::StartsWith(run.status.message(), "reply stream: "),
             absl::StrCat("unexpected status ", run.status.ToString()));
  // "unexpected byte 'x' at offset N": N is the stream offset of a byte that cannot start a frame,
  // the first one after the last frame and its whitespace.
  constexpr absl::string_view kAtOffset = "' at offset ";
  const size_t at = run.status.message().rfind(kAtOffset);
  if (absl::StartsWith(run.status.message(), "reply stream: unexpected byte") &&
      at != absl::string_view::npos) {
    size_t offset = 0;
    FUZZ_CHECK(absl::SimpleAtoi(run.status.message().substr(at + kAtOffset.size()), &offset) &&
                   offset == pos && pos < input.size() && input[pos] != '{' && input[pos] != '[',
               absl::StrCat(run.status.ToString(), ": expected offset ", pos));
  } else {
    FUZZ_CHECK(absl::StartsWith(run.status.message(), "reply stream: reply larger than "),
               absl::StrCat("unexpected status ", run.status.ToString()));
    FUZZ_CHECK(input.size() - pos > max_frame, absl::StrCat(run.status.ToString(), " but only ",
                                                            input.size() - pos, " bytes left"));
  }
}

// Nesting depth of a frame (brackets outside strings).
int MaxDepth(absl::string_view frame) {
  int depth = 0, max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < frame.size(); ++i) {
    const char c = frame[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max_depth;
}

// FUZZ_TOLERATE_VALID_AS_INVALID=1 skips the first check of CheckReply, so that a long run can
// look past a known defect of that kind (valid JSON the parser cannot hold) while it is open.
bool TolerateValidAsInvalid() {
  static const bool tolerate = [] {
    const char* value = std::getenv("FUZZ_TOLERATE_VALID_AS_INVALID");
    return value != nullptr && std::string(value) == "1";
  }();
  return tolerate;
}

// The parser's verdict agrees with an independent RFC 8259 validator: a frame is kInvalid ("not
// JSON at all", which tears the connection down, SPEC §3) exactly when it is not JSON. Very deep
// frames may be refused as a resource limit. Raw JSON kept from a reply is compact valid JSON.
void CheckReply(absl::string_view frame, const Reply& reply) {
  constexpr int kMaxCheckedDepth = 64;
  const bool valid = IsValidJson(frame);
  if (reply.kind == Reply::Kind::kInvalid) {
    FUZZ_CHECK(
        !valid || MaxDepth(frame) > kMaxCheckedDepth || TolerateValidAsInvalid(),
        absl::StrCat("valid JSON reply ", Quote(frame), " classified as not JSON: ", reply.detail));
    return;
  }
  FUZZ_CHECK(valid, absl::StrCat("invalid JSON ", Quote(frame), " classified as kind ",
                                 static_cast<int>(reply.kind)));
  if (reply.kind == Reply::Kind::kResult) {
    FUZZ_CHECK(IsValidJson(reply.result) && IsCompactJson(reply.result),
               absl::StrCat("reply ", Quote(frame), ": result kept as ", Quote(reply.result)));
  }
  if (reply.kind == Reply::Kind::kError && !reply.error_data.empty()) {
    FUZZ_CHECK(
        IsValidJson(reply.error_data) && IsCompactJson(reply.error_data),
        absl::StrCat("reply ", Quote(frame), ": error data kept as ", Quote(reply.error_data)));
  }
}

void CheckSame(const Run& whole, const Run& split, absl::string_view how) {
  bool same = whole.frames == split.frames && whole.status == split.status &&
              whole.buffered == split.buffered && whole.replies.size() == split.replies.size();
  for (size_t i = 0; same && i < whole.replies.size(); ++i) {
    same = SameReply(whole.replies[i], split.replies[i]);
  }
  FUZZ_CHECK(same, absl::StrCat("fed ", how, " the stream gives\n  ", Describe(split),
                                "\nbut fed at once\n  ", Describe(whole)));
}

void CheckStream(absl::string_view input, size_t max_frame) {
  Run whole;
  {
    ReplyFramer framer(max_frame);
    framer.Append(input);
    Drain(&framer, nullptr, &whole);
    Finish(framer, &whole);
  }
  CheckRun(input, max_frame, whole);
  for (size_t i = 0; i < whole.frames.size(); ++i) CheckReply(whole.frames[i], whole.replies[i]);

  ReplyFramer framer(max_frame);
  ReplyParser parser;
  Run bytes;
  for (char c : input) {
    framer.Append(absl::string_view(&c, 1));
    Drain(&framer, &parser, &bytes);
  }
  Finish(framer, &bytes);
  CheckSame(whole, bytes, "byte by byte");

  uint32_t seed = 0;
  for (size_t i = input.size() >= 4 ? input.size() - 4 : 0; i < input.size(); ++i) {
    seed = seed << 8 | static_cast<unsigned char>(input[i]);
  }
  Lengths lengths(seed);
  const size_t max_fragment = 1 + (seed >> 24) % 64;
  framer.Reset();
  Run fragments;
  for (size_t pos = 0; pos < input.size();) {
    const size_t n = lengths.Next(max_fragment);
    framer.Append(input.substr(pos, n));
    pos += n;
    Drain(&framer, &parser, &fragments);
  }
  Finish(framer, &fragments);
  CheckSame(whole, fragments, absl::StrCat("in fragments of 1-", max_fragment, " bytes"));
}

}  // namespace
}  // namespace eventbus::jsonrpc

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view input(reinterpret_cast<const char*>(data), size);
  eventbus::jsonrpc::CheckStream(input, 1 << 20);
  const size_t small_limit = 2 + (size == 0 ? 0 : data[size - 1] % 62);
  eventbus::jsonrpc::CheckStream(input, small_limit);
  return 0;
}
