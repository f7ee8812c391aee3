// The subscription value type (SPEC §6) and the rules for its fields. Immutable once built and
// shared by pointer between the registry's snapshots, the stores and in-flight Raises.
#ifndef EVENTBUS_SERVER_REGISTRY_SUBSCRIPTION_H_
#define EVENTBUS_SERVER_REGISTRY_SUBSCRIPTION_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/registry/shared_text.h"
#include "server/registry/subscriber_list.h"
#include "server/uri/socket_uri.h"

namespace eventbus::registry {

// A million of these fit in a few hundred MiB: the event name and the owner are SharedNames (one
// copy per distinct text, shared by every subscription naming it) and event_param an OptionalText
// (a pointer), so that the struct and its own heap blocks stay small. They read like the
// std::string and std::optional<std::string> they were (shared_text.h).
struct Subscription {
  // Random, 16 lowercase hex digits; unique across replicas. Held in place (shared_text.h).
  InlineText id;
  SharedName event;
  // Normalised socket text (uri::SocketUri::ToString()); with `event` the natural key.
  std::string socket;
  uri::SocketUri target;
  absl::Time create_time;
  // absl::InfiniteFuture() when it never expires.
  absl::Time expire_time = absl::InfiniteFuture();
  // Overrides the server's event_param; "" turns it off for this subscription.
  OptionalText event_param;
  // Who made it (SPEC §10): the caller's name (token name or certificate identity), or "" when it
  // was made by the anonymous caller (authentication off). Fixed for the life of the id: a refresh,
  // by the owner or an admin, keeps it.
  SharedName owner;

  bool Expires() const { return expire_time != absl::InfiniteFuture(); }
  // Live at `now`: it receives events strictly before its expiry instant.
  bool LiveAt(absl::Time now) const { return now < expire_time; }
};

using SubscriptionPtr = std::shared_ptr<const Subscription>;

// Who asks to change subscriptions, as the service established it from the authenticated caller
// (SPEC §10). The layers below the service know callers only as this plain value.
struct Actor {
  // The caller's name; "" for the anonymous caller.
  std::string name;
  // May change every subscription, whoever owns it.
  bool admin = false;

  // Everyone, when authentication is off: anonymous, and an admin (anyone may change anything).
  static Actor Anonymous() { return Actor{"", true}; }
};

// True when `actor` may refresh, change or remove `sub`: an admin always, anyone else only when
// it has a name and owns `sub`. A subscription without an owner ("", made while authentication
// was off) is thus an admin's alone once authentication is on.
bool MayChange(const Actor& actor, const Subscription& sub);

// Returns INVALID_ARGUMENT unless `event` is 1..max_len bytes of [A-Za-z0-9_.:-]:
// `event "a b": invalid character ' ' at offset 1`.
absl::Status ValidateEventName(absl::string_view event, size_t max_len = 128);

// Longest event_param key (SPEC §2), server-wide or per subscription.
inline constexpr size_t kMaxEventParamBytes = 128;

// Returns INVALID_ARGUMENT unless `key` is a usable event_param: "" (off) or at most
// kMaxEventParamBytes of valid UTF-8 without control characters:
// `event_param "x...": longer than 128 bytes`.
absl::Status ValidateEventParam(absl::string_view key);

// Returns a new random id (16 lowercase hex digits).
std::string NewSubscriptionId();

}  // namespace eventbus::registry

#endif  // EVENTBUS_SERVER_REGISTRY_SUBSCRIPTION_H_
