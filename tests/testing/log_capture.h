// Captures the lines written through server/base/log while it lives, instead of stderr, for tests
// that check what an operator would see.
#ifndef EVENTBUS_TESTS_TESTING_LOG_CAPTURE_H_
#define EVENTBUS_TESTS_TESTING_LOG_CAPTURE_H_

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "server/base/log.h"
#include "server/base/mutex.h"

namespace eventbus::testing {

// Thread-safe. One at a time per process; restores stderr (and the level) at destruction.
class LogCapture {
 public:
  explicit LogCapture(base::LogLevel level = base::LogLevel::kDebug) {
    base::SetLogLevel(level);
    base::SetLogSinkForTesting([this](absl::string_view line) {
      eventbus::MutexLock lock(&mu_);
      lines_.emplace_back(line);
    });
  }
  ~LogCapture() {
    base::SetLogSinkForTesting(nullptr);
    base::SetLogLevel(base::LogLevel::kInfo);
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  // Every line so far, each with its trailing '\n'.
  std::vector<std::string> lines() const {
    eventbus::MutexLock lock(&mu_);
    return lines_;
  }
  // The lines that contain every one of `parts`.
  std::vector<std::string> Matching(std::initializer_list<absl::string_view> parts) const {
    std::vector<std::string> out;
    for (const std::string& line : lines()) {
      bool all = true;
      for (absl::string_view part : parts) all = all && absl::StrContains(line, part);
      if (all) out.push_back(line);
    }
    return out;
  }
  void Clear() {
    eventbus::MutexLock lock(&mu_);
    lines_.clear();
  }

 private:
  mutable eventbus::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

}  // namespace eventbus::testing

#endif  // EVENTBUS_TESTS_TESTING_LOG_CAPTURE_H_
