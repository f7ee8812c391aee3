// Structured (logfmt) logging to stderr: `ts=... level=info msg="..." key=value`. Thread-safe;
// one write(2) per line so lines from different threads never interleave.
#ifndef EVENTBUS_SERVER_BASE_LOG_H_
#define EVENTBUS_SERVER_BASE_LOG_H_

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace eventbus::base {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Sets the lowest level that is written. Default: kInfo.
void SetLogLevel(LogLevel level);
// Parses "debug", "info", "warning", "error". Returns false for anything else.
bool ParseLogLevel(absl::string_view text, LogLevel* level);
bool LogEnabled(LogLevel level);
// Writes one line. `fields` is already logfmt ("key=value key2=value2"), may be empty.
void LogLine(LogLevel level, absl::string_view msg, absl::string_view fields = {});
// Quotes a value for logfmt when it contains spaces, quotes or '='.
std::string LogValue(absl::string_view value);

}  // namespace eventbus::base

// EB_LOG(kInfo, "connected", "target=", key, " fd=", fd): message, then logfmt fields.
#define EB_LOG(level, msg, ...)                                            \
  do {                                                                     \
    if (::eventbus::base::LogEnabled(::eventbus::base::LogLevel::level)) { \
      ::eventbus::base::LogLine(::eventbus::base::LogLevel::level, msg,    \
                                ::absl::StrCat(__VA_ARGS__));              \
    }                                                                      \
  } while (0)

#endif  // EVENTBUS_SERVER_BASE_LOG_H_
