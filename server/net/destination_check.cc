#include "server/net/destination_check.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace eventbus::net {
namespace {

// Addresses named in one connect-time detail; the rest are counted.
constexpr size_t kMaxListed = 4;

// The verdict on one address; allowed when it is not an IP socket address (nothing to match).
policy::Decision Check(const policy::DestinationPolicy& policy, const SocketAddress& address) {
  uint16_t port = 0;
  std::optional<policy::IpAddress> ip = policy::IpAddress::FromSockaddr(
      reinterpret_cast<const sockaddr*>(&address.storage), address.length, &port);
  if (!ip.has_value()) return policy::Decision{};
  return policy.Check(*ip, port);
}

}  // namespace

std::optional<std::string> FilterDeniedAddresses(const policy::DestinationPolicy* policy,
                                                 PoolObserver* observer,
                                                 const std::string& target_key,
                                                 std::vector<SocketAddress>* addresses) {
  if (policy == nullptr || addresses->empty()) return std::nullopt;
  // (address, why) of each address denied.
  std::vector<std::pair<std::string, std::string>> denied;
  std::vector<SocketAddress> allowed;
  allowed.reserve(addresses->size());
  for (SocketAddress& address : *addresses) {
    policy::Decision decision = Check(*policy, address);
    if (decision.allowed) {
      allowed.push_back(std::move(address));
      continue;
    }
    if (observer != nullptr) {
      observer->OnDestinationDenied(target_key, DenialStage::kConnect,
                                    policy::DenialText(address.text, decision));
    }
    denied.emplace_back(address.text, std::move(decision.reason));
  }
  *addresses = std::move(allowed);
  if (!addresses->empty() || denied.empty()) return std::nullopt;
  if (denied.size() == 1) {
    policy::Decision decision{false, denied[0].second};
    return absl::StrCat("connect to ", target_key, ": ",
                        policy::DenialText(denied[0].first, decision));
  }
  std::vector<std::string> listed;
  for (size_t i = 0; i < denied.size() && i < kMaxListed; ++i) {
    listed.push_back(absl::StrCat(denied[i].first, " (", denied[i].second, ")"));
  }
  std::string detail =
      absl::StrCat("connect to ", target_key, ": every address is denied by the destination ",
                   "policy: ", absl::StrJoin(listed, "; "));
  if (denied.size() > kMaxListed)
    absl::StrAppend(&detail, "; and ", denied.size() - kMaxListed, " more");
  return detail;
}

absl::Status CheckAddressesAtSubscribe(const policy::DestinationPolicy* policy,
                                       PoolObserver* observer, const std::string& target_key,
                                       bool is_name, const std::vector<SocketAddress>& addresses) {
  if (policy == nullptr) return absl::OkStatus();
  for (const SocketAddress& address : addresses) {
    policy::Decision decision = Check(*policy, address);
    if (decision.allowed) continue;
    std::string text = policy::DenialText(address.text, decision);
    if (observer != nullptr)
      observer->OnDestinationDenied(target_key, DenialStage::kSubscribe, text);
    if (is_name) {
      text = absl::StrCat("destination ", target_key, " resolves to ", address.text,
                          ", which is denied by the destination policy (", decision.reason, ")");
    }
    return absl::PermissionDeniedError(text);
  }
  return absl::OkStatus();
}

}  // namespace eventbus::net
