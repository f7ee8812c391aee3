#include "server/base/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "server/base/mutex.h"

namespace eventbus::base {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<int> g_format{static_cast<int>(LogFormat::kLogfmt)};

eventbus::Mutex& SinkMutex() {
  static auto* mu = new eventbus::Mutex();
  return *mu;
}
// Set only by tests; read under SinkMutex() for every line (lines are rare, so the lock is cheap).
absl::AnyInvocable<void(absl::string_view)>* g_sink = nullptr;

absl::string_view LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

constexpr char kHex[] = "0123456789abcdef";

void AppendU00(std::string* out, unsigned char c) {
  out->append("\\u00");
  out->push_back(kHex[c >> 4]);
  out->push_back(kHex[c & 0xf]);
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not one.
size_t Utf8SequenceLength(absl::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3f);
  }
  // Overlong forms, surrogates and code points beyond U+10FFFF are not UTF-8.
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))) return 0;
  if (cp >= 0xd800 && cp <= 0xdfff) return 0;
  return n;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Reads a quoted logfmt value starting after its opening quote at fields[*pos]; leaves *pos after
// the closing quote (or at the end when there is none).
std::string ReadQuoted(absl::string_view fields, size_t* pos) {
  std::string value;
  size_t i = *pos;
  while (i < fields.size()) {
    char c = fields[i];
    if (c == '"') {
      ++i;
      break;
    }
    if (c == '\\' && i + 1 < fields.size()) {
      char e = fields[i + 1];
      if (e == 'n') {
        value.push_back('\n');
      } else if (e == 'r') {
        value.push_back('\r');
      } else if (e == 't') {
        value.push_back('\t');
      } else if (e == 'u' && i + 5 < fields.size() && HexDigit(fields[i + 2]) >= 0 &&
                 HexDigit(fields[i + 3]) >= 0 && HexDigit(fields[i + 4]) >= 0 &&
                 HexDigit(fields[i + 5]) >= 0 && fields[i + 2] == '0' && fields[i + 3] == '0') {
        value.push_back(static_cast<char>(HexDigit(fields[i + 4]) * 16 + HexDigit(fields[i + 5])));
        i += 6;
        continue;
      } else {
        value.push_back(e);  // '"', '\' and anything else escaped literally
      }
      i += 2;
      continue;
    }
    value.push_back(c);
    ++i;
  }
  *pos = i;
  return value;
}

void Write(absl::string_view line) {
  eventbus::MutexLock lock(&SinkMutex());
  if (g_sink != nullptr) {
    (*g_sink)(line);
    return;
  }
  // One write per line: atomic for lines below PIPE_BUF on pipes, and unbuffered.
  ssize_t unused = ::write(STDERR_FILENO, line.data(), line.size());
  (void)unused;
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }

bool ParseLogLevel(absl::string_view text, LogLevel* level) {
  std::string lower = absl::AsciiStrToLower(text);
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarning, LogLevel::kError}) {
    if (lower == LevelName(l)) {
      *level = l;
      return true;
    }
  }
  return false;
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

void SetLogFormat(LogFormat format) { g_format.store(static_cast<int>(format)); }

LogFormat GetLogFormat() { return static_cast<LogFormat>(g_format.load()); }

bool ParseLogFormat(absl::string_view text, LogFormat* format) {
  std::string lower = absl::AsciiStrToLower(text);
  if (lower == "logfmt") {
    *format = LogFormat::kLogfmt;
  } else if (lower == "json") {
    *format = LogFormat::kJson;
  } else {
    return false;
  }
  return true;
}

std::string LogValue(absl::string_view value) {
  bool needs_quotes = value.empty();
  for (char c : value) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20) {
      needs_quotes = true;
      break;
    }
  }
  if (!needs_quotes) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      // Raw control characters would let a value forge or garble lines on a terminal.
      AppendU00(&out, static_cast<unsigned char>(c));
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

std::vector<std::pair<std::string, std::string>> ParseLogfmtFields(absl::string_view fields) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t i = 0;
  while (i < fields.size()) {
    if (fields[i] == ' ') {
      ++i;
      continue;
    }
    size_t start = i;
    while (i < fields.size() && fields[i] != ' ' && fields[i] != '=') ++i;
    std::string key(fields.substr(start, i - start));
    if (i >= fields.size() || fields[i] == ' ') {
      // A word without '=': part of the previous value (a caller forgot LogValue).
      if (out.empty()) {
        out.emplace_back(std::move(key), "");
      } else {
        absl::StrAppend(&out.back().second, " ", key);
      }
      continue;
    }
    ++i;  // '='
    std::string value;
    if (i < fields.size() && fields[i] == '"') {
      ++i;
      value = ReadQuoted(fields, &i);
    } else {
      size_t value_start = i;
      while (i < fields.size() && fields[i] != ' ') ++i;
      value = std::string(fields.substr(value_start, i - value_start));
    }
    out.emplace_back(std::move(key), std::move(value));
  }
  return out;
}

void AppendJsonString(std::string* out, absl::string_view value) {
  out->push_back('"');
  size_t i = 0;
  while (i < value.size()) {
    unsigned char c = static_cast<unsigned char>(value[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out->append("\\\"");
          break;
        case '\\':
          out->append("\\\\");
          break;
        case '\n':
          out->append("\\n");
          break;
        case '\r':
          out->append("\\r");
          break;
        case '\t':
          out->append("\\t");
          break;
        default:
          if (c < 0x20 || c == 0x7f) {
            AppendU00(out, c);
          } else {
            out->push_back(static_cast<char>(c));
          }
      }
      ++i;
      continue;
    }
    size_t n = Utf8SequenceLength(value, i);
    if (n == 0) {
      out->append("\\ufffd");
      ++i;
      continue;
    }
    absl::string_view seq = value.substr(i, n);
    // U+2028 and U+2029 are valid JSON but end lines in JavaScript and some log viewers.
    if (seq == "\xe2\x80\xa8") {
      out->append("\\u2028");
    } else if (seq == "\xe2\x80\xa9") {
      out->append("\\u2029");
    } else {
      out->append(seq.data(), seq.size());
    }
    i += n;
  }
  out->push_back('"');
}

std::string FormatLogLine(LogFormat format, absl::Time ts, LogLevel level, absl::string_view msg,
                          absl::string_view fields) {
  std::string time = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", ts, absl::UTCTimeZone());
  std::string line;
  if (format == LogFormat::kJson) {
    line = absl::StrCat("{\"ts\":\"", time, "\",\"level\":\"", LevelName(level), "\",\"msg\":");
    AppendJsonString(&line, msg);
    for (const auto& [key, value] : ParseLogfmtFields(fields)) {
      line.push_back(',');
      // A field named like a fixed key would make a duplicate JSON key.
      if (key == "ts" || key == "level" || key == "msg") {
        AppendJsonString(&line, absl::StrCat("field_", key));
      } else {
        AppendJsonString(&line, key);
      }
      line.push_back(':');
      AppendJsonString(&line, value);
    }
    line.append("}\n");
    return line;
  }
  line = absl::StrCat("ts=", time, " level=", LevelName(level), " msg=", LogValue(msg));
  if (!fields.empty()) absl::StrAppend(&line, " ", fields);
  line.push_back('\n');
  return line;
}

void LogLine(LogLevel level, absl::string_view msg, absl::string_view fields) {
  Write(FormatLogLine(GetLogFormat(), absl::Now(), level, msg, fields));
}

void SetLogSinkForTesting(absl::AnyInvocable<void(absl::string_view line)> sink) {
  eventbus::MutexLock lock(&SinkMutex());
  delete g_sink;
  g_sink = sink ? new absl::AnyInvocable<void(absl::string_view)>(std::move(sink)) : nullptr;
}

}  // namespace eventbus::base
