// The one table of what each API method needs (SPEC §10): which roles may call it, or that it is
// open to everyone (health and reflection, for probes and tools). The Authenticator applies it to
// every call; nothing else in the server decides who may call what.
#ifndef EVENTBUS_SERVER_AUTH_METHOD_ROLES_H_
#define EVENTBUS_SERVER_AUTH_METHOD_ROLES_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace eventbus::auth {

struct MethodRule {
  // No credential needed (a credential given anyway is not checked).
  bool open = false;
  // Roles of which the caller needs at least one; kAdmin is always among them.
  uint32_t roles = 0;
};

// The rule for the gRPC method `path` ("/eventbus.v1.EventBusService/Raise"):
//   Raise                                  publisher, admin
//   Subscribe, Unsubscribe                 subscriber, admin
//   ListSubscriptions, ListEvents          reader, subscriber, admin
//   grpc.health.v1.Health/*, reflection    open
//   anything else                          admin (a method added later is closed until listed)
MethodRule RuleFor(absl::string_view path);

}  // namespace eventbus::auth

#endif  // EVENTBUS_SERVER_AUTH_METHOD_ROLES_H_
