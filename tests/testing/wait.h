// Waiting helpers for tests that watch another process or another thread they cannot be notified
// by (a child eventbusd, a socket's peer): poll a condition until a deadline. Tests whose code
// under test can signal them wait on that signal instead.
#ifndef EVENTBUS_TESTS_TESTING_WAIT_H_
#define EVENTBUS_TESTS_TESTING_WAIT_H_

#include <filesystem>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace eventbus::testing {

// Polls `condition` every `poll` until it holds or `timeout` passes; returns whether it held.
template <typename Condition>
bool WaitFor(absl::Duration timeout, Condition&& condition,
             absl::Duration poll = absl::Milliseconds(20)) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(poll);
  }
}

// A fresh directory under the system temp dir, removed with everything in it at destruction.
// Thread-compatible.
class TempDir {
 public:
  explicit TempDir(const std::string& tag);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace eventbus::testing

#endif  // EVENTBUS_TESTS_TESTING_WAIT_H_
