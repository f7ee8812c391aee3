// Converts subscriptions to and from their stored forms, shared by the durable stores: the row
// fields the SQLite store keeps in columns, and the versioned JSON value the etcd store keeps under
// each key. Loading re-parses the socket text, so a stored subscription is rebuilt exactly as
// Subscribe would have built it. Pure: no I/O.
#ifndef EVENTBUS_SERVER_STORE_STORE_CODEC_H_
#define EVENTBUS_SERVER_STORE_STORE_CODEC_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/registry/subscription.h"

namespace eventbus::store {

// A subscription as stored: times in microseconds since the Unix epoch.
struct StoredSubscription {
  std::string id;
  std::string event;
  std::string socket;
  int64_t create_time_us = 0;
  // Absent: never expires.
  std::optional<int64_t> expire_time_us;
  std::optional<std::string> event_param;
  // "" for the anonymous caller, and in records written before owners were kept.
  std::string owner;
};

// Returns the stored form of `sub` (times truncated to microseconds).
StoredSubscription ToStored(const registry::Subscription& sub);

// StoredSubscription with its texts where they already are (e.g. SQLite's column buffers), so a
// load of a million rows copies each text once, into the subscription.
struct StoredSubscriptionView {
  absl::string_view id;
  absl::string_view event;
  absl::string_view socket;
  int64_t create_time_us = 0;
  std::optional<int64_t> expire_time_us;
  std::optional<absl::string_view> event_param;
  absl::string_view owner;
};

// Rebuilds a subscription, re-parsing its socket. INVALID_ARGUMENT naming the id when the id or
// event is empty or the socket does not parse.
absl::StatusOr<registry::SubscriptionPtr> FromStored(StoredSubscription stored);
absl::StatusOr<registry::SubscriptionPtr> FromStored(const StoredSubscriptionView& stored);

// Returns the JSON value the etcd store writes, version 1:
//   {"v":1,"id":"...","event":"...","socket":"...","create_time_us":N[,"expire_time_us":N]
//    [,"event_param":"..."][,"owner":"..."]}
// "owner" is left out when it is "" (the anonymous caller), so a build that keeps no owners and a
// record written before they were kept read the same: owner "".
std::string EncodeSubscriptionJson(const registry::Subscription& sub);

// Parses a value written by EncodeSubscriptionJson. Unknown members are ignored (a newer writer
// may add some), and a missing "owner" reads as "" (an older writer); INVALID_ARGUMENT for bad
// JSON, a missing or mistyped member, a version other than 1, or a socket that does not parse.
absl::StatusOr<registry::SubscriptionPtr> DecodeSubscriptionJson(absl::string_view json);

}  // namespace eventbus::store

#endif  // EVENTBUS_SERVER_STORE_STORE_CODEC_H_
