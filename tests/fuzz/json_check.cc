#include "tests/fuzz/json_check.h"

#include <cstddef>
#include <cstdint>

namespace eventbus::fuzz {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool IsPunct(char c) {
  return c == '{' || c == '}' || c == '[' || c == ']' || c == ':' || c == ',';
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsHex(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Recursive-descent validator over text[pos_...].
class Validator {
 public:
  explicit Validator(absl::string_view text) : text_(text) {}

  bool Document() {
    SkipSpace();
    if (!Value(0)) return false;
    SkipSpace();
    return pos_ == text_.size();
  }

 private:
  static constexpr int kMaxDepth = 10000;

  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return text_[pos_]; }
  void SkipSpace() {
    while (!AtEnd() && IsSpace(Peek())) ++pos_;
  }
  bool Consume(char c) {
    if (AtEnd() || Peek() != c) return false;
    ++pos_;
    return true;
  }
  bool Literal(absl::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  bool Value(int depth) {
    if (AtEnd()) return false;
    switch (Peek()) {
      case '{':
        return Object(depth + 1);
      case '[':
        return Array(depth + 1);
      case '"':
        return String();
      case 't':
        return Literal("true");
      case 'f':
        return Literal("false");
      case 'n':
        return Literal("null");
      default:
        return Number();
    }
  }

  bool Object(int depth) {
    if (depth > kMaxDepth) return false;
    ++pos_;  // '{'
    SkipSpace();
    if (Consume('}')) return true;
    while (true) {
      SkipSpace();
      if (AtEnd() || Peek() != '"' || !String()) return false;
      SkipSpace();
      if (!Consume(':')) return false;
      SkipSpace();
      if (!Value(depth)) return false;
      SkipSpace();
      if (Consume('}')) return true;
      if (!Consume(',')) return false;
    }
  }

  bool Array(int depth) {
    if (depth > kMaxDepth) return false;
    ++pos_;  // '['
    SkipSpace();
    if (Consume(']')) return true;
    while (true) {
      SkipSpace();
      if (!Value(depth)) return false;
      SkipSpace();
      if (Consume(']')) return true;
      if (!Consume(',')) return false;
    }
  }

  bool Number() {
    Consume('-');
    if (AtEnd() || !IsDigit(Peek())) return false;
    if (!Consume('0')) {
      while (!AtEnd() && IsDigit(Peek())) ++pos_;
    }
    if (Consume('.')) {
      if (AtEnd() || !IsDigit(Peek())) return false;
      while (!AtEnd() && IsDigit(Peek())) ++pos_;
    }
    if (!AtEnd() && (Peek() == 'e' || Peek() == 'E')) {
      ++pos_;
      if (!Consume('+')) Consume('-');
      if (AtEnd() || !IsDigit(Peek())) return false;
      while (!AtEnd() && IsDigit(Peek())) ++pos_;
    }
    return true;
  }

  // One UTF-8 sequence starting at pos_ (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
  bool Utf8() {
    const unsigned char b0 = static_cast<unsigned char>(Peek());
    size_t n;
    uint32_t cp;
    if (b0 < 0x80) {
      ++pos_;
      return true;
    } else if ((b0 & 0xE0) == 0xC0) {
      n = 2;
      cp = b0 & 0x1F;
    } else if ((b0 & 0xF0) == 0xE0) {
      n = 3;
      cp = b0 & 0x0F;
    } else if ((b0 & 0xF8) == 0xF0) {
      n = 4;
      cp = b0 & 0x07;
    } else {
      return false;
    }
    if (pos_ + n > text_.size()) return false;
    for (size_t i = 1; i < n; ++i) {
      const unsigned char b = static_cast<unsigned char>(text_[pos_ + i]);
      if ((b & 0xC0) != 0x80) return false;
      cp = cp << 6 | (b & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    pos_ += n;
    return true;
  }

  bool String() {
    ++pos_;  // '"'
    while (!AtEnd()) {
      const char c = Peek();
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c == '\\') {
        ++pos_;
        if (AtEnd()) return false;
        const char e = Peek();
        ++pos_;
        if (e == 'u') {
          for (int i = 0; i < 4; ++i) {
            if (AtEnd() || !IsHex(Peek())) return false;
            ++pos_;
          }
        } else if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' &&
                   e != 'r' && e != 't') {
          return false;
        }
        continue;
      }
      if (!Utf8()) return false;
    }
    return false;
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

// Returns the end of the string token starting at text[start] == '"'.
size_t StringEnd(absl::string_view text, size_t start) {
  size_t i = start + 1;
  while (i < text.size()) {
    if (text[i] == '\\') {
      i += 2;
    } else if (text[i] == '"') {
      return i + 1;
    } else {
      ++i;
    }
  }
  return text.size();
}

}  // namespace

bool IsValidJson(absl::string_view text) { return Validator(text).Document(); }

std::vector<std::string> JsonTokens(absl::string_view text) {
  std::vector<std::string> tokens;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (IsSpace(c)) {
      ++i;
    } else if (c == '"') {
      const size_t end = StringEnd(text, i);
      tokens.emplace_back(text.substr(i, end - i));
      i = end;
    } else if (IsPunct(c)) {
      tokens.emplace_back(1, c);
      ++i;
    } else {
      size_t end = i;
      while (end < text.size() && !IsSpace(text[end]) && !IsPunct(text[end]) && text[end] != '"') {
        ++end;
      }
      tokens.emplace_back(text.substr(i, end - i));
      i = end;
    }
  }
  return tokens;
}

bool IsCompactJson(absl::string_view text) {
  for (size_t i = 0; i < text.size();) {
    if (text[i] == '"') {
      i = StringEnd(text, i);
    } else if (IsSpace(text[i])) {
      return false;
    } else {
      ++i;
    }
  }
  return true;
}

}  // namespace eventbus::fuzz
