#include "server/auth/caller.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "grpcpp/security/auth_context.h"

namespace eventbus::auth {

namespace {

// The caller named by exactly one `name` and one `roles` value, or none.
template <typename Values>
std::optional<Caller> CallerFrom(const Values& names, const Values& roles) {
  if (names.size() != 1 || roles.size() != 1) return std::nullopt;
  uint32_t bits = 0;
  if (!absl::SimpleAtoi(absl::string_view(roles[0].data(), roles[0].size()), &bits)) {
    return std::nullopt;
  }
  return Caller{std::string(names[0].data(), names[0].size()), bits & kAllRoles};
}

}  // namespace

Caller CallerOf(const grpc::ServerContextBase& context, bool auth_enabled) {
  if (!auth_enabled) return Caller::Anonymous();
  // Recorded per call by the Authenticator's interceptor (see the top of caller.h).
  std::vector<grpc::string_ref> names, roles;
  for (const auto& [key, value] : context.client_metadata()) {
    if (key == kCallerNameProperty) names.push_back(value);
    if (key == kCallerRolesProperty) roles.push_back(value);
  }
  if (!names.empty() || !roles.empty()) return CallerFrom(names, roles).value_or(Caller{});
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr) return Caller{};
  return CallerFrom(auth->FindPropertyValues(kCallerNameProperty),
                    auth->FindPropertyValues(kCallerRolesProperty))
      .value_or(Caller{});
}

}  // namespace eventbus::auth
