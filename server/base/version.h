// The version of this build, for `--version` and the start-up log line: the project's version
// (CMake project(VERSION)), `git describe --always --dirty` of the source when it was a git
// checkout, the build type and the compiler. Generated at build time (cmake/EventbusVersion.cmake).
#ifndef EVENTBUS_SERVER_BASE_VERSION_H_
#define EVENTBUS_SERVER_BASE_VERSION_H_

#include <string>

#include "absl/strings/string_view.h"

namespace eventbus::base {

// "0.1.0", from project(VERSION).
absl::string_view Version();
// "v0.1.0-3-g96ae044-dirty", or "" when the source was not a git checkout.
absl::string_view GitDescribe();
// CMAKE_BUILD_TYPE ("RelWithDebInfo", "Debug", ...; "none" when unset).
absl::string_view BuildType();
// "GNU 12.2.0", "Clang 14.0.6".
absl::string_view Compiler();

// Returns "0.1.0 (git 96ae044-dirty)", or "0.1.0" without a git description.
std::string VersionString();
// Returns what `PROGRAM --version` prints:
// "eventbusd 0.1.0 (git 96ae044-dirty)\nbuild: RelWithDebInfo, GNU 12.2.0\n".
std::string VersionText(absl::string_view program);

}  // namespace eventbus::base

#endif  // EVENTBUS_SERVER_BASE_VERSION_H_
