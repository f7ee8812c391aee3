#include "server/auth/caller.h"

#include <memory>

#include "absl/strings/numbers.h"
#include "grpcpp/security/auth_context.h"

namespace eventbus::auth {

Caller CallerOf(const grpc::ServerContextBase& context, bool auth_enabled) {
  if (!auth_enabled) return Caller::Anonymous();
  Caller caller;
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr) return caller;
  std::vector<grpc::string_ref> names = auth->FindPropertyValues(kCallerNameProperty);
  std::vector<grpc::string_ref> roles = auth->FindPropertyValues(kCallerRolesProperty);
  if (names.size() != 1 || roles.size() != 1) return caller;
  uint32_t bits = 0;
  if (!absl::SimpleAtoi(absl::string_view(roles[0].data(), roles[0].size()), &bits)) return caller;
  caller.name.assign(names[0].data(), names[0].size());
  caller.roles = bits & kAllRoles;
  return caller;
}

}  // namespace eventbus::auth
