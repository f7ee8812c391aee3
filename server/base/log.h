// Structured logging to stderr, one line per record, in logfmt (`ts=... level=info msg="..."
// key=value`, the default) or JSON (`{"ts":"...","level":"info","msg":"...","key":"value"}`).
// Thread-safe; one write(2) per line so lines from different threads never interleave.
//
// Call sites pass their fields as logfmt text built with LogValue(); in JSON format LogLine parses
// that text back (ParseLogfmtFields is the exact inverse of LogValue) and writes every field as a
// JSON string, so one call site serves both formats.
#ifndef EVENTBUS_SERVER_BASE_LOG_H_
#define EVENTBUS_SERVER_BASE_LOG_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace eventbus::base {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class LogFormat { kLogfmt = 0, kJson = 1 };

// Sets the lowest level that is written. Default: kInfo.
void SetLogLevel(LogLevel level);
// Parses "debug", "info", "warning", "error". Returns false for anything else.
bool ParseLogLevel(absl::string_view text, LogLevel* level);
bool LogEnabled(LogLevel level);
// Sets the line format. Default: kLogfmt.
void SetLogFormat(LogFormat format);
LogFormat GetLogFormat();
// Parses "logfmt" or "json". Returns false for anything else.
bool ParseLogFormat(absl::string_view text, LogFormat* format);

// Writes one line. `fields` is already logfmt ("key=value key2=value2"), may be empty.
void LogLine(LogLevel level, absl::string_view msg, absl::string_view fields = {});
// Quotes a value for logfmt when it is empty or contains spaces, quotes, '=', '\' or control
// characters; inside quotes '"' and '\' are backslash-escaped, and control characters written as
// \n, \r, \t or \u00XX. Other bytes (UTF-8 included) are kept as they are.
std::string LogValue(absl::string_view value);

// Formats one complete line (with its trailing '\n') as LogLine writes it; exposed for tests.
std::string FormatLogLine(LogFormat format, absl::Time ts, LogLevel level, absl::string_view msg,
                          absl::string_view fields);
// Splits logfmt `fields` into (key, value) pairs, undoing LogValue's quoting. Lenient with text
// LogValue never produces: a word without '=' is appended to the previous value (after a space),
// and an unterminated quoted value runs to the end.
std::vector<std::pair<std::string, std::string>> ParseLogfmtFields(absl::string_view fields);
// Appends `value` to `out` as a JSON string literal: '"', '\' and control characters escaped,
// valid UTF-8 kept (U+2028/U+2029 escaped), each byte of invalid UTF-8 replaced by U+FFFD.
void AppendJsonString(std::string* out, absl::string_view value);

// Test hook: while set, complete lines go to `sink` instead of stderr. Pass nullptr to restore.
// `sink` runs under the log's lock, one line at a time, and must not log itself.
void SetLogSinkForTesting(absl::AnyInvocable<void(absl::string_view line)> sink);

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
