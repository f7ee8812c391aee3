#include "server/auth/method_roles.h"

#include "absl/strings/match.h"
#include "server/auth/caller.h"

namespace eventbus::auth {
namespace {

struct MethodEntry {
  absl::string_view path;
  uint32_t roles;
};

constexpr MethodEntry kMethods[] = {
    {"/eventbus.v1.EventBusService/Raise", kPublisher | kAdmin},
    {"/eventbus.v1.EventBusService/RaiseStream", kPublisher | kAdmin},
    {"/eventbus.v1.EventBusService/Subscribe", kSubscriber | kAdmin},
    {"/eventbus.v1.EventBusService/Unsubscribe", kSubscriber | kAdmin},
    {"/eventbus.v1.EventBusService/ListSubscriptions", kReader | kSubscriber | kAdmin},
    {"/eventbus.v1.EventBusService/ListEvents", kReader | kSubscriber | kAdmin},
};

// Services open to every caller: probes (kubelet, load balancers) and tools (grpcurl, buf curl)
// carry no credentials, and neither reveals or changes subscriptions.
constexpr absl::string_view kOpenServices[] = {
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
};

}  // namespace

MethodRule RuleFor(absl::string_view path) {
  for (absl::string_view prefix : kOpenServices) {
    if (absl::StartsWith(path, prefix)) return MethodRule{true, 0};
  }
  for (const MethodEntry& method : kMethods) {
    if (path == method.path) return MethodRule{false, method.roles};
  }
  return MethodRule{false, kAdmin};
}

}  // namespace eventbus::auth
