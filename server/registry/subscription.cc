#include "server/registry/subscription.h"

#include <cstdint>

#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/jsonrpc/json_text.h"

namespace eventbus::registry {
namespace {

// Longest prefix of a name quoted in an error message: the message must stay readable when a
// client sends megabytes.
constexpr size_t kMaxQuoted = 64;

std::string Quote(absl::string_view text) {
  if (text.size() <= kMaxQuoted) return absl::CHexEscape(text);
  return absl::StrCat(absl::CHexEscape(text.substr(0, kMaxQuoted)), "...");
}

bool IsEventChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '-';
}

}  // namespace

absl::Status ValidateEventName(absl::string_view event, size_t max_len) {
  if (event.empty()) return absl::InvalidArgumentError("event \"\": empty");
  if (event.size() > max_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("event \"", Quote(event), "\": longer than ", max_len, " bytes"));
  }
  for (size_t i = 0; i < event.size(); ++i) {
    if (!IsEventChar(event[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("event \"", Quote(event), "\": invalid character '",
                       absl::CHexEscape(event.substr(i, 1)), "' at offset ", i));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateEventParam(absl::string_view key) {
  // Every event to the subscription carries the key, and every Raise encodes it once per distinct
  // key: an unbounded key is memory a client can claim without limit.
  if (key.size() > kMaxEventParamBytes) {
    return absl::InvalidArgumentError(absl::StrCat("event_param \"", Quote(key), "\": longer than ",
                                                   kMaxEventParamBytes, " bytes"));
  }
  const size_t bad_utf8 = jsonrpc::InvalidUtf8Offset(key);
  if (bad_utf8 != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("event_param \"", Quote(key), "\": invalid UTF-8 at byte ", bad_utf8));
  }
  for (size_t i = 0; i < key.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(key[i]);
    if (c < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrCat("event_param \"", Quote(key), "\": control character '",
                       absl::CHexEscape(key.substr(i, 1)), "' at offset ", i));
    }
  }
  return absl::OkStatus();
}

bool MayChange(const Actor& actor, const Subscription& sub) {
  if (actor.admin) return true;
  // An unnamed caller owns nothing: "" marks subscriptions made before authentication was on.
  return !actor.name.empty() && actor.name == sub.owner;
}

std::string NewSubscriptionId() {
  // absl::BitGen is not thread-safe; one per thread, seeded from the OS.
  thread_local absl::BitGen gen;
  uint64_t value = absl::Uniform<uint64_t>(gen);
  return absl::StrCat(absl::Hex(value, absl::kZeroPad16));
}

}  // namespace eventbus::registry
