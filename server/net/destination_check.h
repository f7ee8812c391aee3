// The destination policy (SPEC §10) applied to the addresses net/ resolves: at connect time,
// every address is checked just before it would be connected to, so a DNS answer that changes
// after Subscribe cannot get around the policy; at Subscribe time (WriterPool::CheckDestination),
// every address a target resolves to must be allowed. Internal to server/net.
#ifndef EVENTBUS_SERVER_NET_DESTINATION_CHECK_H_
#define EVENTBUS_SERVER_NET_DESTINATION_CHECK_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/net/pool_observer.h"
#include "server/net/resolver.h"
#include "server/policy/destination_policy.h"

namespace eventbus::net {

// Connect time: removes from `addresses` every address `policy` denies, telling `observer` (when
// set) of each (DenialStage::kConnect). Returns the detail of a kDestinationDenied outcome when
// addresses were there and none is left: "connect to KEY: destination 127.0.0.1:80 is denied by
// the destination policy (RULE)", or with several, "connect to KEY: every address is denied by
// the destination policy: A (RULE); B (RULE)". nullopt otherwise, and always when `policy` is
// null.
std::optional<std::string> FilterDeniedAddresses(const policy::DestinationPolicy* policy,
                                                 PoolObserver* observer,
                                                 const std::string& target_key,
                                                 std::vector<SocketAddress>* addresses);

// Subscribe time: OK when `policy` (may be null) allows every address of `addresses`, else
// PERMISSION_DENIED for the first one denied: "destination 169.254.169.254:80 is denied by the
// destination policy (...)" for a literal, or, `host` being a name, "destination h:80 resolves
// to 169.254.169.254:80, which is denied by the destination policy (...)". Tells `observer` (when
// set) once (DenialStage::kSubscribe).
absl::Status CheckAddressesAtSubscribe(const policy::DestinationPolicy* policy,
                                       PoolObserver* observer, const std::string& target_key,
                                       bool is_name, const std::vector<SocketAddress>& addresses);

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_DESTINATION_CHECK_H_
