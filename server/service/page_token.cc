#include "server/service/page_token.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace eventbus::service {
namespace {

// The serialised token: version, kind, then filter_event, last.event and last.socket, each as a
// varint length and its bytes, then a 32-bit FNV-1a checksum of everything before it (little
// endian). The checksum is not a secret: it only tells a damaged or hand-made token from a real
// one, so that a mistyped token is refused rather than read as some other position.
constexpr uint8_t kVersion = 1;
// Longer than any token the server makes with its limits (an event of at most a few hundred
// bytes, a socket of at most a few kilobytes).
constexpr size_t kMaxTokenChars = 16384;

uint32_t Fnv1a(absl::string_view bytes) {
  uint32_t hash = 2166136261u;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 16777619u;
  }
  return hash;
}

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

void AppendString(absl::string_view text, std::string* out) {
  AppendVarint(text.size(), out);
  out->append(text.data(), text.size());
}

// Reads the serialised fields front to back; every read checks its bounds.
class Reader {
 public:
  explicit Reader(absl::string_view bytes) : rest_(bytes) {}

  std::optional<uint8_t> Byte() {
    if (rest_.empty()) return std::nullopt;
    uint8_t b = static_cast<uint8_t>(rest_.front());
    rest_.remove_prefix(1);
    return b;
  }

  std::optional<std::string> String() {
    uint64_t size = 0;
    for (int shift = 0;; shift += 7) {
      std::optional<uint8_t> b = Byte();
      if (!b.has_value() || shift > 28) return std::nullopt;
      size |= uint64_t{*b & 0x7fu} << shift;
      if ((*b & 0x80) == 0) break;
    }
    if (size > rest_.size()) return std::nullopt;
    std::string text(rest_.substr(0, size));
    rest_.remove_prefix(size);
    return text;
  }

  bool AtEnd() const { return rest_.empty(); }

 private:
  absl::string_view rest_;
};

absl::Status NotOurs(absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("page_token: not a token this server issued (", why,
                   "); pass the next_page_token of the previous page, or none for the first"));
}

absl::string_view KindName(uint8_t kind) {
  switch (kind) {
    case static_cast<uint8_t>(PageKind::kSubscriptions):
      return "ListSubscriptions";
    case static_cast<uint8_t>(PageKind::kEvents):
      return "ListEvents";
  }
  return "an unknown list";
}

}  // namespace

absl::StatusOr<size_t> ResolvePageSize(int32_t page_size) {
  if (page_size < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "page_size: ", page_size, " is negative (0 = the default, ", kDefaultPageSize, ")"));
  }
  if (page_size == 0) return static_cast<size_t>(kDefaultPageSize);
  return static_cast<size_t>(std::min(page_size, kMaxPageSize));
}

std::string EncodePageToken(const PageToken& token) {
  std::string bytes;
  bytes.push_back(static_cast<char>(kVersion));
  bytes.push_back(static_cast<char>(token.kind));
  AppendString(token.filter_event, &bytes);
  AppendString(token.last.event, &bytes);
  AppendString(token.last.socket, &bytes);
  uint32_t sum = Fnv1a(bytes);
  for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<char>((sum >> (8 * i)) & 0xff));
  std::string text;
  absl::WebSafeBase64Escape(bytes, &text);
  return text;
}

absl::StatusOr<PageToken> DecodePageToken(absl::string_view text, PageKind kind) {
  if (text.size() > kMaxTokenChars) {
    return NotOurs(absl::StrCat("longer than ", kMaxTokenChars, " characters"));
  }
  std::string bytes;
  if (!absl::WebSafeBase64Unescape(text, &bytes)) return NotOurs("not base64url");
  if (bytes.size() < 6) return NotOurs("truncated");
  absl::string_view body = absl::string_view(bytes).substr(0, bytes.size() - 4);
  uint32_t sum = 0;
  for (int i = 0; i < 4; ++i) {
    sum |= uint32_t{static_cast<uint8_t>(bytes[body.size() + i])} << (8 * i);
  }
  if (sum != Fnv1a(body)) return NotOurs("damaged");
  Reader reader(body);
  std::optional<uint8_t> version = reader.Byte();
  if (version != kVersion) {
    return NotOurs(absl::StrCat("unknown version ", static_cast<int>(version.value_or(0))));
  }
  std::optional<uint8_t> token_kind = reader.Byte();
  if (token_kind != static_cast<uint8_t>(kind)) {
    return absl::InvalidArgumentError(absl::StrCat("page_token: a token of ",
                                                   KindName(token_kind.value_or(0)), ", not of ",
                                                   KindName(static_cast<uint8_t>(kind))));
  }
  std::optional<std::string> filter_event = reader.String();
  std::optional<std::string> last_event = reader.String();
  std::optional<std::string> last_socket = reader.String();
  if (!filter_event || !last_event || !last_socket || !reader.AtEnd()) return NotOurs("malformed");
  PageToken token;
  token.kind = kind;
  token.filter_event = *std::move(filter_event);
  token.last.event = *std::move(last_event);
  token.last.socket = *std::move(last_socket);
  return token;
}

}  // namespace eventbus::service
