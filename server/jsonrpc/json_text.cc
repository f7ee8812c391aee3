#include "server/jsonrpc/json_text.h"

#include <cstdint>

#include "absl/strings/str_cat.h"

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

size_t SkipSpace(absl::string_view text, size_t pos) {
  while (pos < text.size() && IsJsonSpace(text[pos])) ++pos;
  return pos;
}

// A strict recursive-descent check of the value at text[pos]. Returns the offset past it, or npos
// with *fault set.
class JsonChecker {
 public:
  JsonChecker(absl::string_view text, int max_depth) : text_(text), max_depth_(max_depth) {}

  size_t Value(size_t pos, int depth) {
    if (pos >= text_.size()) return Fail("unexpected end", pos);
    const char c = text_[pos];
    if (c == '{' || c == '[') return Container(pos, depth + 1);
    if (c == '"') {
      const size_t end = ScanJsonString(text_, pos);
      return end == absl::string_view::npos ? Fail("malformed string", pos) : end;
    }
    if (c == '-' || IsDigit(c)) {
      size_t end = pos;
      while (end < text_.size() && (IsDigit(text_[end]) || text_[end] == '-' || text_[end] == '+' ||
                                    text_[end] == '.' || text_[end] == 'e' || text_[end] == 'E')) {
        ++end;
      }
      return IsJsonNumber(text_.substr(pos, end - pos)) ? end : Fail("malformed number", pos);
    }
    for (absl::string_view literal : {"true", "false", "null"}) {
      if (text_.substr(pos, literal.size()) == literal) return pos + literal.size();
    }
    return Fail("unexpected byte", pos);
  }

  std::string fault() const { return fault_; }

 private:
  size_t Container(size_t pos, int depth) {
    if (depth > max_depth_) {
      return Fail(absl::StrCat("nested deeper than ", max_depth_, " levels"), pos);
    }
    const bool object = text_[pos] == '{';
    const char close = object ? '}' : ']';
    pos = SkipSpace(text_, pos + 1);
    if (pos < text_.size() && text_[pos] == close) return pos + 1;
    for (;;) {
      if (object) {
        if (pos >= text_.size() || text_[pos] != '"') return Fail("expected a member name", pos);
        const size_t end = ScanJsonString(text_, pos);
        if (end == absl::string_view::npos) return Fail("malformed member name", pos);
        pos = SkipSpace(text_, end);
        if (pos >= text_.size() || text_[pos] != ':') return Fail("expected ':'", pos);
        pos = SkipSpace(text_, pos + 1);
      }
      pos = Value(pos, depth);
      if (pos == absl::string_view::npos) return pos;
      pos = SkipSpace(text_, pos);
      if (pos < text_.size() && text_[pos] == ',') {
        pos = SkipSpace(text_, pos + 1);
        continue;
      }
      if (pos < text_.size() && text_[pos] == close) return pos + 1;
      return Fail(object ? "expected ',' or '}'" : "expected ',' or ']'", pos);
    }
  }

  size_t Fail(absl::string_view what, size_t pos) {
    fault_ = absl::StrCat(what, " at offset ", pos);
    return absl::string_view::npos;
  }

  absl::string_view text_;
  int max_depth_;
  std::string fault_;
};

}  // namespace

std::string CheckJsonText(absl::string_view text, int max_depth) {
  JsonChecker checker(text, max_depth);
  size_t end = checker.Value(SkipSpace(text, 0), 0);
  if (end == absl::string_view::npos) return checker.fault();
  end = SkipSpace(text, end);
  if (end != text.size()) return absl::StrCat("trailing content at offset ", end);
  return {};
}

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
