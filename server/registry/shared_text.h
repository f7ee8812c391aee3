// Compact text fields for registry::Subscription, of which a server holds up to a million:
// SharedName, one reference-counted copy per distinct text (event names and owners repeat across
// subscriptions), and OptionalText, an optional string one pointer wide (event_param, rarely set).
// Both read like the std::string and std::optional<std::string> they replace: they convert to
// const std::string& and absl::string_view, compare with strings, print, and hash as strings.
// What they cannot do is deduce as a string in a template: absl::StrCat and friends need
// .str() (or an absl::string_view). And InlineText, a string 24 bytes wide that holds up to 22
// characters in place (the 16-hex-digit id; std::string's own buffer stops at 15): it converts
// to absl::string_view and, by copy, to std::string, but has no std::string to refer to.
#ifndef EVENTBUS_SERVER_REGISTRY_SHARED_TEXT_H_
#define EVENTBUS_SERVER_REGISTRY_SHARED_TEXT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace eventbus::registry {

// Immutable text shared by every SharedName holding the same characters: a copy costs a reference
// count, equality a pointer comparison, and the text itself exists once however many
// subscriptions name it. The last holder to go frees it. Thread-safe as a const std::string is
// (distinct objects may be used from any thread; one object is not written while read).
class SharedName {
 public:
  // "".
  SharedName() = default;
  // Implicit, as std::string's are: fields assigned a string keep compiling.
  SharedName(absl::string_view text);  // NOLINT(google-explicit-constructor)
  SharedName(const std::string& text)  // NOLINT(google-explicit-constructor)
      : SharedName(absl::string_view(text)) {}
  SharedName(const char* text)  // NOLINT(google-explicit-constructor)
      : SharedName(absl::string_view(text)) {}
  SharedName(const SharedName& other) : node_(other.node_) { Ref(); }
  SharedName(SharedName&& other) noexcept : node_(std::exchange(other.node_, nullptr)) {}
  SharedName& operator=(const SharedName& other) {
    SharedName copy(other);
    std::swap(node_, copy.node_);
    return *this;
  }
  SharedName& operator=(SharedName&& other) noexcept {
    std::swap(node_, other.node_);
    return *this;
  }
  ~SharedName() { Unref(); }

  const std::string& str() const;
  operator const std::string&() const { return str(); }  // NOLINT
  operator absl::string_view() const { return str(); }   // NOLINT
  const char* data() const { return str().data(); }
  const char* c_str() const { return str().c_str(); }
  size_t size() const { return str().size(); }
  size_t length() const { return str().size(); }
  bool empty() const { return node_ == nullptr; }
  std::string::const_iterator begin() const { return str().begin(); }
  std::string::const_iterator end() const { return str().end(); }
  char operator[](size_t i) const { return str()[i]; }
  std::string substr(size_t pos, size_t n = std::string::npos) const {
    return str().substr(pos, n);
  }
  int compare(absl::string_view other) const { return absl::string_view(str()).compare(other); }
  int compare(const std::string& other) const { return compare(absl::string_view(other)); }
  int compare(const char* other) const { return compare(absl::string_view(other)); }

  // Distinct texts currently held (for tests).
  static size_t LiveCountForTest();

  // The shared text and its count of holders (opaque outside shared_text.cc).
  struct Node;

  // One live node per distinct text: the same text is the same node.
  friend bool operator==(const SharedName& a, const SharedName& b) { return a.node_ == b.node_; }
  friend bool operator!=(const SharedName& a, const SharedName& b) { return a.node_ != b.node_; }
  friend bool operator<(const SharedName& a, const SharedName& b) { return a.str() < b.str(); }
  friend bool operator>(const SharedName& a, const SharedName& b) { return b < a; }
  friend bool operator<=(const SharedName& a, const SharedName& b) { return !(b < a); }
  friend bool operator>=(const SharedName& a, const SharedName& b) { return !(a < b); }

  // Comparisons with every string type, in both orders, each an exact match so that none is
  // ambiguous. Hidden friends: found only when a SharedName is compared, so they never join
  // comparisons between other strings.
#define EVENTBUS_SHARED_NAME_COMPARE(Other)                                          \
  friend bool operator==(const SharedName& a, Other b) { return a.compare(b) == 0; } \
  friend bool operator!=(const SharedName& a, Other b) { return a.compare(b) != 0; } \
  friend bool operator<(const SharedName& a, Other b) { return a.compare(b) < 0; }   \
  friend bool operator>(const SharedName& a, Other b) { return a.compare(b) > 0; }   \
  friend bool operator<=(const SharedName& a, Other b) { return a.compare(b) <= 0; } \
  friend bool operator>=(const SharedName& a, Other b) { return a.compare(b) >= 0; } \
  friend bool operator==(Other a, const SharedName& b) { return b.compare(a) == 0; } \
  friend bool operator!=(Other a, const SharedName& b) { return b.compare(a) != 0; } \
  friend bool operator<(Other a, const SharedName& b) { return b.compare(a) > 0; }   \
  friend bool operator>(Other a, const SharedName& b) { return b.compare(a) < 0; }   \
  friend bool operator<=(Other a, const SharedName& b) { return b.compare(a) >= 0; } \
  friend bool operator>=(Other a, const SharedName& b) { return b.compare(a) <= 0; }
  EVENTBUS_SHARED_NAME_COMPARE(absl::string_view)
  EVENTBUS_SHARED_NAME_COMPARE(const std::string&)
  EVENTBUS_SHARED_NAME_COMPARE(const char*)
#undef EVENTBUS_SHARED_NAME_COMPARE

  template <typename H>
  friend H AbslHashValue(H h, const SharedName& name) {
    return H::combine(std::move(h), absl::string_view(name.str()));
  }
  friend std::ostream& operator<<(std::ostream& os, const SharedName& name) {
    return os << name.str();
  }

 private:
  void Ref() const;
  void Unref();

  // Null for "".
  Node* node_ = nullptr;
};

// An optional string one pointer wide (std::optional<std::string> takes 40 bytes in every
// subscription, set or not). Reads like it: has_value(), explicit bool, *, ->, value(), value_or;
// assigns from std::optional<std::string>, strings and std::nullopt; converts to
// std::optional<std::string>.
class OptionalText {
 public:
  OptionalText() = default;
  OptionalText(std::nullopt_t) {}  // NOLINT(google-explicit-constructor)
  OptionalText(const OptionalText& other) { *this = other; }
  OptionalText(OptionalText&& other) noexcept = default;
  OptionalText& operator=(const OptionalText& other) {
    text_ = other.text_ ? std::make_unique<std::string>(*other.text_) : nullptr;
    return *this;
  }
  OptionalText& operator=(OptionalText&& other) noexcept = default;
  OptionalText& operator=(std::nullopt_t) {
    text_.reset();
    return *this;
  }
  OptionalText& operator=(const std::optional<std::string>& value) {
    text_ = value.has_value() ? std::make_unique<std::string>(*value) : nullptr;
    return *this;
  }
  OptionalText& operator=(std::optional<std::string>&& value) {
    text_ = value.has_value() ? std::make_unique<std::string>(*std::move(value)) : nullptr;
    return *this;
  }
  OptionalText& operator=(absl::string_view value) {
    text_ = std::make_unique<std::string>(value);
    return *this;
  }
  OptionalText& operator=(const std::string& value) { return *this = absl::string_view(value); }
  OptionalText& operator=(std::string&& value) {
    text_ = std::make_unique<std::string>(std::move(value));
    return *this;
  }
  OptionalText& operator=(const char* value) { return *this = absl::string_view(value); }

  bool has_value() const { return text_ != nullptr; }
  explicit operator bool() const { return has_value(); }
  // Only when has_value().
  const std::string& operator*() const { return *text_; }
  const std::string* operator->() const { return text_.get(); }
  // std::bad_optional_access when empty, as std::optional's.
  const std::string& value() const;
  std::string value_or(absl::string_view other) const {
    return has_value() ? *text_ : std::string(other);
  }
  void reset() { text_.reset(); }
  operator std::optional<std::string>() const {  // NOLINT(google-explicit-constructor)
    return has_value() ? std::optional<std::string>(*text_) : std::nullopt;
  }

  friend bool operator==(const OptionalText& a, const OptionalText& b) {
    return a.has_value() == b.has_value() && (!a.has_value() || *a == *b);
  }
  friend bool operator!=(const OptionalText& a, const OptionalText& b) { return !(a == b); }
  friend bool operator==(const OptionalText& a, const std::optional<std::string>& b) {
    return a.has_value() == b.has_value() && (!a.has_value() || *a == *b);
  }
  friend bool operator!=(const OptionalText& a, const std::optional<std::string>& b) {
    return !(a == b);
  }
  friend bool operator==(const OptionalText& a, std::nullopt_t) { return !a.has_value(); }
  friend bool operator!=(const OptionalText& a, std::nullopt_t) { return a.has_value(); }
  friend bool operator==(const OptionalText& a, absl::string_view b) {
    return a.has_value() && absl::string_view(*a) == b;
  }
  friend bool operator!=(const OptionalText& a, absl::string_view b) { return !(a == b); }
  friend bool operator==(const OptionalText& a, const std::string& b) {
    return a.has_value() && *a == b;
  }
  friend bool operator!=(const OptionalText& a, const std::string& b) { return !(a == b); }
  friend bool operator==(const OptionalText& a, const char* b) {
    return a.has_value() && absl::string_view(*a) == absl::string_view(b);
  }
  friend bool operator!=(const OptionalText& a, const char* b) { return !(a == b); }
  friend std::ostream& operator<<(std::ostream& os, const OptionalText& text) {
    if (!text.has_value()) return os << "(nullopt)";
    return os << '"' << *text << '"';
  }

 private:
  std::unique_ptr<std::string> text_;
};

// A string 24 bytes wide holding up to kInlineCapacity characters in place and longer ones in one
// heap block: a subscription id (16 characters) costs no allocation, where a std::string of 16
// costs a 32-byte block beside its own 32 bytes. Reads like a const std::string (data, size,
// comparisons, hashing, printing, string_view); converts to std::string only by copy, so there
// is no `const std::string&` to it. Thread-safe as a const std::string is.
class InlineText {
 public:
  static constexpr size_t kInlineCapacity = 22;

  InlineText() { SetInline(0); }
  // Implicit, as std::string's are: fields assigned a string keep compiling.
  InlineText(absl::string_view text) { Assign(text); }  // NOLINT(google-explicit-constructor)
  InlineText(const std::string& text)                   // NOLINT(google-explicit-constructor)
      : InlineText(absl::string_view(text)) {}
  InlineText(const char* text)  // NOLINT(google-explicit-constructor)
      : InlineText(absl::string_view(text)) {}
  InlineText(const InlineText& other) : InlineText(absl::string_view(other)) {}
  InlineText(InlineText&& other) noexcept {
    std::memcpy(&rep_, &other.rep_, sizeof(rep_));
    other.SetInline(0);
  }
  InlineText& operator=(const InlineText& other) {
    if (this != &other) {
      InlineText copy(other);
      Swap(copy);
    }
    return *this;
  }
  InlineText& operator=(InlineText&& other) noexcept {
    Swap(other);
    return *this;
  }
  InlineText& operator=(absl::string_view text) {
    InlineText copy(text);
    Swap(copy);
    return *this;
  }
  InlineText& operator=(const std::string& text) { return *this = absl::string_view(text); }
  InlineText& operator=(const char* text) { return *this = absl::string_view(text); }
  ~InlineText() {
    if (on_heap()) delete[] rep_.heap.data;
  }

  // NUL-terminated, as std::string's.
  const char* data() const { return on_heap() ? rep_.heap.data : rep_.chars; }
  const char* c_str() const { return data(); }
  size_t size() const { return on_heap() ? rep_.heap.size : rep_.chars[kTagByte]; }
  size_t length() const { return size(); }
  bool empty() const { return size() == 0; }
  const char* begin() const { return data(); }
  const char* end() const { return data() + size(); }
  char operator[](size_t i) const { return data()[i]; }
  // A copy, for what wants a std::string (absl::StrCat takes the string_view).
  std::string str() const { return std::string(data(), size()); }
  operator absl::string_view() const { return absl::string_view(data(), size()); }  // NOLINT
  operator std::string() const { return str(); }                                    // NOLINT
  std::string substr(size_t pos, size_t n = std::string::npos) const {
    return std::string(absl::string_view(*this).substr(pos, n));
  }
  int compare(absl::string_view other) const { return absl::string_view(*this).compare(other); }
  // True when the text lives in the object itself (for tests).
  bool is_inline() const { return !on_heap(); }

  friend bool operator==(const InlineText& a, const InlineText& b) {
    return absl::string_view(a) == absl::string_view(b);
  }
  friend bool operator!=(const InlineText& a, const InlineText& b) { return !(a == b); }
  friend bool operator<(const InlineText& a, const InlineText& b) { return a.compare(b) < 0; }
  friend bool operator>(const InlineText& a, const InlineText& b) { return b < a; }
  friend bool operator<=(const InlineText& a, const InlineText& b) { return !(b < a); }
  friend bool operator>=(const InlineText& a, const InlineText& b) { return !(a < b); }

  // Comparisons with every string type, in both orders (see SharedName's).
#define EVENTBUS_INLINE_TEXT_COMPARE(Other)                                          \
  friend bool operator==(const InlineText& a, Other b) { return a.compare(b) == 0; } \
  friend bool operator!=(const InlineText& a, Other b) { return a.compare(b) != 0; } \
  friend bool operator<(const InlineText& a, Other b) { return a.compare(b) < 0; }   \
  friend bool operator>(const InlineText& a, Other b) { return a.compare(b) > 0; }   \
  friend bool operator<=(const InlineText& a, Other b) { return a.compare(b) <= 0; } \
  friend bool operator>=(const InlineText& a, Other b) { return a.compare(b) >= 0; } \
  friend bool operator==(Other a, const InlineText& b) { return b.compare(a) == 0; } \
  friend bool operator!=(Other a, const InlineText& b) { return b.compare(a) != 0; } \
  friend bool operator<(Other a, const InlineText& b) { return b.compare(a) > 0; }   \
  friend bool operator>(Other a, const InlineText& b) { return b.compare(a) < 0; }   \
  friend bool operator<=(Other a, const InlineText& b) { return b.compare(a) >= 0; } \
  friend bool operator>=(Other a, const InlineText& b) { return b.compare(a) <= 0; }
  EVENTBUS_INLINE_TEXT_COMPARE(absl::string_view)
  EVENTBUS_INLINE_TEXT_COMPARE(const std::string&)
  EVENTBUS_INLINE_TEXT_COMPARE(const char*)
#undef EVENTBUS_INLINE_TEXT_COMPARE

  template <typename H>
  friend H AbslHashValue(H h, const InlineText& text) {
    return H::combine(std::move(h), absl::string_view(text));
  }
  friend std::ostream& operator<<(std::ostream& os, const InlineText& text) {
    return os << absl::string_view(text);
  }

 private:
  // The last byte: the inline length (0..kInlineCapacity), or kHeapTag.
  static constexpr size_t kTagByte = 23;
  static constexpr char kHeapTag = static_cast<char>(0x7f);
  static_assert(kInlineCapacity < kTagByte, "room for the NUL before the tag");

  bool on_heap() const { return rep_.chars[kTagByte] == kHeapTag; }
  void SetInline(size_t size) {
    rep_.chars[size] = '\0';
    rep_.chars[kTagByte] = static_cast<char>(size);
  }
  void Assign(absl::string_view text) {
    if (text.size() <= kInlineCapacity) {
      if (!text.empty()) std::memcpy(rep_.chars, text.data(), text.size());
      SetInline(text.size());
      return;
    }
    char* data = new char[text.size() + 1];
    std::memcpy(data, text.data(), text.size());
    data[text.size()] = '\0';
    rep_.heap.data = data;
    rep_.heap.size = text.size();
    rep_.chars[kTagByte] = kHeapTag;
  }
  void Swap(InlineText& other) noexcept {
    Rep tmp;
    std::memcpy(&tmp, &rep_, sizeof(rep_));
    std::memcpy(&rep_, &other.rep_, sizeof(rep_));
    std::memcpy(&other.rep_, &tmp, sizeof(rep_));
  }

  union Rep {
    char chars[24];
    struct {
      char* data;
      size_t size;
    } heap;
  };
  Rep rep_;
};
static_assert(sizeof(InlineText) == 24, "three words, as a std::string's fields but the buffer");

}  // namespace eventbus::registry

#endif  // EVENTBUS_SERVER_REGISTRY_SHARED_TEXT_H_
