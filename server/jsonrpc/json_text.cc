#include "server/jsonrpc/json_text.h"

#include <cstdint>

namespace eventbus::jsonrpc {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The 4 hex digits at s[0..3] (already validated).
uint32_t Hex4(const char* s) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) value = (value << 4) | static_cast<uint32_t>(HexValue(s[i]));
  return value;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace

absl::string_view TrimJsonSpace(absl::string_view text) {
  while (!text.empty() && IsJsonSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsJsonSpace(text.back())) text.remove_suffix(1);
  return text;
}

bool IsJsonNumber(absl::string_view token) {
  size_t i = 0;
  const size_t n = token.size();
  if (i < n && token[i] == '-') ++i;
  if (i >= n) return false;
  if (token[i] == '0') {
    ++i;
  } else if (IsDigit(token[i])) {
    while (i < n && IsDigit(token[i])) ++i;
  } else {
    return false;
  }
  if (i < n && token[i] == '.') {
    ++i;
    if (i >= n || !IsDigit(token[i])) return false;
    while (i < n && IsDigit(token[i])) ++i;
  }
  if (i < n && (token[i] == 'e' || token[i] == 'E')) {
    ++i;
    if (i < n && (token[i] == '+' || token[i] == '-')) ++i;
    if (i >= n || !IsDigit(token[i])) return false;
    while (i < n && IsDigit(token[i])) ++i;
  }
  return i == n;
}

size_t ScanJsonString(absl::string_view text, size_t pos) {
  if (pos >= text.size() || text[pos] != '"') return absl::string_view::npos;
  for (size_t i = pos + 1; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '"') return i + 1;
    if (c < 0x20) return absl::string_view::npos;
    if (c != '\\') continue;
    if (++i >= text.size()) return absl::string_view::npos;
    switch (text[i]) {
      case '"':
      case '\\':
      case '/':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
        break;
      case 'u':
        if (text.size() - i <= 4) return absl::string_view::npos;
        for (size_t k = 1; k <= 4; ++k) {
          if (HexValue(text[i + k]) < 0) return absl::string_view::npos;
        }
        i += 4;
        break;
      default:
        return absl::string_view::npos;
    }
  }
  return absl::string_view::npos;
}

size_t SkipJsonValue(absl::string_view text, size_t pos) {
  if (pos >= text.size()) return text.size();
  const char first = text[pos];
  if (first == '"') {
    size_t end = ScanJsonString(text, pos);
    return end == absl::string_view::npos ? text.size() : end;
  }
  if (first != '{' && first != '[') {
    size_t i = pos;
    while (i < text.size() && !IsJsonSpace(text[i]) && text[i] != ',' && text[i] != '}' &&
           text[i] != ']' && text[i] != ':') {
      ++i;
    }
    return i;
  }
  int depth = 0;
  bool in_string = false;
  for (size_t i = pos; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (--depth == 0) return i + 1;
    }
  }
  return text.size();
}

std::string UnescapeJsonString(absl::string_view token) {
  std::string out;
  if (token.size() < 2) return out;
  absl::string_view body = token.substr(1, token.size() - 2);
  out.reserve(body.size());
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (c != '\\' || i + 1 >= body.size()) {
      out.push_back(c);
      continue;
    }
    const char e = body[++i];
    switch (e) {
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'u': {
        if (body.size() - i <= 4) return out;  // not a valid token; keep what was decoded
        uint32_t cp = Hex4(body.data() + i + 1);
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && body.size() - i > 6 && body[i + 1] == '\\' &&
            body[i + 2] == 'u') {
          const uint32_t low = Hex4(body.data() + i + 3);
          if (low >= 0xDC00 && low <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            i += 6;
          }
        }
        // A surrogate still unpaired here cannot be written as UTF-8.
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
        AppendUtf8(cp, &out);
        break;
      }
      default:  // '"', '\\', '/'
        out.push_back(e);
        break;
    }
  }
  return out;
}

size_t InvalidUtf8Offset(absl::string_view text) {
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (n - i < len) return i;
    const unsigned char second = static_cast<unsigned char>(text[i + 1]);
    if (second < lo || second > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      const unsigned char next = static_cast<unsigned char>(text[i + k]);
      if (next < 0x80 || next > 0xBF) return i;
    }
    i += len;
  }
  return absl::string_view::npos;
}

void AppendCompactJson(absl::string_view json, std::string* out) {
  out->reserve(out->size() + json.size());
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      out->push_back(c);
      if (c == '\\' && i + 1 < json.size()) {
        out->push_back(json[++i]);
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (IsJsonSpace(c)) continue;
    if (c == '"') in_string = true;
    out->push_back(c);
  }
}

}  // namespace eventbus::jsonrpc
