#include "server/base/version.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "eventbus/version_info.h"

namespace eventbus::base {

absl::string_view Version() { return EVENTBUS_VERSION; }
absl::string_view GitDescribe() { return EVENTBUS_GIT_DESCRIBE; }
absl::string_view BuildType() { return EVENTBUS_BUILD_TYPE; }
absl::string_view Compiler() { return EVENTBUS_COMPILER; }

std::string VersionString() {
  if (GitDescribe().empty()) return std::string(Version());
  return absl::StrCat(Version(), " (git ", GitDescribe(), ")");
}

std::string VersionText(absl::string_view program) {
  return absl::StrCat(program, " ", VersionString(), "\nbuild: ", BuildType(), ", ", Compiler(),
                      "\n");
}

}  // namespace eventbus::base
