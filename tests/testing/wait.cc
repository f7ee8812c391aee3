#include "tests/testing/wait.h"

#include <unistd.h>

#include <atomic>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace eventbus::testing {

TempDir::TempDir(const std::string& tag) {
  static std::atomic<int> counter{0};
  path_ = std::filesystem::temp_directory_path() / absl::StrCat("eventbus-", tag, "-", ::getpid(),
                                                                "-", absl::ToUnixNanos(absl::Now()),
                                                                "-", counter++);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace eventbus::testing
