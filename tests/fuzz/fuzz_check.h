// Property checks for the fuzz targets in tests/fuzz/. A failed check prints what broke and aborts,
// which libFuzzer reports as a crash (and saves the input), and which fails the plain replay test
// (fuzz_replay_main.cc) that runs every target over its seed corpus and regressions in ctest.
#ifndef EVENTBUS_TESTS_FUZZ_FUZZ_CHECK_H_
#define EVENTBUS_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"

namespace eventbus::fuzz {

// Quotes arbitrary bytes for a failure message, cut to a readable length.
inline std::string Quote(absl::string_view bytes) {
  constexpr size_t kMax = 400;
  std::string out = "\"" + absl::CHexEscape(bytes.substr(0, kMax)) + "\"";
  if (bytes.size() > kMax) out += "...";
  return out;
}

[[noreturn]] inline void Fail(const char* file, int line, const char* condition,
                              const std::string& detail) {
  std::fprintf(stderr, "%s:%d: fuzz property failed: %s\n  %s\n", file, line, condition,
               detail.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace eventbus::fuzz

// FUZZ_CHECK(condition, detail): `detail` (a std::string expression) is evaluated only on failure.
#define FUZZ_CHECK(condition, detail)                                   \
  do {                                                                  \
    if (!(condition)) {                                                 \
      ::eventbus::fuzz::Fail(__FILE__, __LINE__, #condition, (detail)); \
    }                                                                   \
  } while (false)

#endif  // EVENTBUS_TESTS_FUZZ_FUZZ_CHECK_H_
