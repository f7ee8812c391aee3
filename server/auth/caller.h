// Who made a gRPC call (SPEC §10), as the API's authentication recorded it. The layer between the
// gRPC transport and the service: the authentication code in server/auth/ verifies a call's
// credentials (bearer token, client certificate) and records the caller under the names below;
// the service reads it with CallerOf() and otherwise knows nothing of tokens or certificates.
//
// Where it is recorded: in the call's client metadata, by the Authenticator's interceptor
// (authenticator.h), which first drops any the client sent under those names. Not in the
// AuthContext: gRPC 1.51 gives every call on a connection the connection's one AuthContext, so a
// property added for one call would show up in all the others. CallerOf still accepts a caller
// found as AuthContext properties when the metadata has none.
#ifndef EVENTBUS_SERVER_AUTH_CALLER_H_
#define EVENTBUS_SERVER_AUTH_CALLER_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"

namespace eventbus::auth {

// Roles are bits: one credential may hold several.
enum Role : uint32_t {
  kReader = 1u << 0,      // ListSubscriptions, ListEvents
  kPublisher = 1u << 1,   // Raise
  kSubscriber = 1u << 2,  // Subscribe, refresh and Unsubscribe its own subscriptions
  kAdmin = 1u << 3,       // everything, on every subscription whoever owns it
};
inline constexpr uint32_t kAllRoles = kReader | kPublisher | kSubscriber | kAdmin;

// Names (metadata keys, or AuthContext properties) of the caller of an accepted call.
inline constexpr char kCallerNameProperty[] = "eventbus.caller";
// The roles as a decimal bit mask ("9" = reader + admin).
inline constexpr char kCallerRolesProperty[] = "eventbus.roles";

struct Caller {
  // Token name or certificate identity; "" for the anonymous caller (authentication off).
  std::string name;
  uint32_t roles = 0;

  bool Has(Role role) const { return (roles & role) != 0; }
  bool anonymous() const { return name.empty(); }
  // Everyone, when authentication is off: the anonymous caller with every role (SPEC §6 as it was
  // before §10: anyone may change any subscription).
  static Caller Anonymous() { return Caller{"", kAllRoles}; }
};

// The caller of the call `context` belongs to. With `auth_enabled` false, Caller::Anonymous().
// With it true, the caller recorded by the authentication, or a caller with no name and no roles
// when none was recorded (a call the authentication let through unauthenticated, such as health).
Caller CallerOf(const grpc::ServerContextBase& context, bool auth_enabled);

}  // namespace eventbus::auth

#endif  // EVENTBUS_SERVER_AUTH_CALLER_H_
