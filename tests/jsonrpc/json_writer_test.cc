#include "server/jsonrpc/json_writer.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"

namespace eventbus::jsonrpc {
namespace {

std::string String(absl::string_view value) {
  std::string out;
  AppendJsonString(&out, value);
  return out;
}

std::string Number(double value) {
  std::string out;
  AppendJsonNumber(&out, value);
  return out;
}

std::string Int(int64_t value) {
  std::string out;
  AppendJsonInt(&out, value);
  return out;
}

TEST(JsonWriterTest, QuotesPlainStrings) {
  EXPECT_EQ(String(""), "\"\"");
  EXPECT_EQ(String("E_PIKE_BLOCKED"), "\"E_PIKE_BLOCKED\"");
}

TEST(JsonWriterTest, EscapesQuoteAndBackslash) { EXPECT_EQ(String("a\"b\\c"), "\"a\\\"b\\\\c\""); }

TEST(JsonWriterTest, EscapesNamedControlBytesWithShortForms) {
  EXPECT_EQ(String("\b\f\n\r\t"), "\"\\b\\f\\n\\r\\t\"");
}

TEST(JsonWriterTest, EscapesEveryOtherControlByteAsLowercaseUnicode) {
  for (int byte = 0; byte < 0x20; ++byte) {
    const char c = static_cast<char>(byte);
    std::string expected;
    switch (c) {
      case '\b':
        expected = "\\b";
        break;
      case '\f':
        expected = "\\f";
        break;
      case '\n':
        expected = "\\n";
        break;
      case '\r':
        expected = "\\r";
        break;
      case '\t':
        expected = "\\t";
        break;
      default:
        expected = absl::StrFormat("\\u%04x", byte);
    }
    EXPECT_EQ(String(std::string(1, c)), "\"" + expected + "\"") << "byte " << byte;
  }
  EXPECT_EQ(String(std::string("\x1f\x1a\x0b", 3)), "\"\\u001f\\u001a\\u000b\"");
  EXPECT_EQ(String(std::string("a\0b", 3)), "\"a\\u0000b\"");
}

TEST(JsonWriterTest, LeavesPrintableAsciiAndSlashAlone) {
  for (int byte = 0x20; byte < 0x80; ++byte) {
    const char c = static_cast<char>(byte);
    if (c == '"' || c == '\\') continue;
    EXPECT_EQ(String(std::string(1, c)), std::string("\"") + c + "\"") << "byte " << byte;
  }
  EXPECT_EQ(String("a/b</script>"), "\"a/b</script>\"");
  EXPECT_EQ(String("\x7f"), "\"\x7f\"");
}

TEST(JsonWriterTest, PassesUtf8AndHighBytesThroughVerbatim) {
  EXPECT_EQ(String("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"),
            "\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"");
  EXPECT_EQ(String("\xff\x80"), "\"\xff\x80\"");
}

TEST(JsonWriterTest, AppendsToExistingText) {
  std::string out = "x=";
  AppendJsonString(&out, "a\nb");
  AppendJsonInt(&out, 7);
  EXPECT_EQ(out, "x=\"a\\nb\"7");
}

TEST(JsonWriterTest, PrintsIntegers) {
  EXPECT_EQ(Int(0), "0");
  EXPECT_EQ(Int(-3), "-3");
  EXPECT_EQ(Int(std::numeric_limits<int64_t>::max()), "9223372036854775807");
  EXPECT_EQ(Int(std::numeric_limits<int64_t>::min()), "-9223372036854775808");
}

TEST(JsonWriterTest, PrintsIntegralDoublesWithoutDecimalPoint) {
  EXPECT_EQ(Number(3.0), "3");
  EXPECT_EQ(Number(0.0), "0");
  EXPECT_EQ(Number(-0.0), "0");
  EXPECT_EQ(Number(-42.0), "-42");
  EXPECT_EQ(Number(9007199254740992.0), "9007199254740992");
  EXPECT_EQ(Number(-9007199254740992.0), "-9007199254740992");
}

TEST(JsonWriterTest, PrintsOtherDoublesInShortestRoundTripForm) {
  EXPECT_EQ(Number(2.5), "2.5");
  EXPECT_EQ(Number(0.1), "0.1");
  EXPECT_EQ(Number(-0.001), "-0.001");
  EXPECT_EQ(Number(1.0 / 3.0), "0.3333333333333333");
  EXPECT_EQ(Number(1e300), "1e+300");
  EXPECT_EQ(Number(1e-300), "1e-300");
  EXPECT_EQ(Number(18014398509481984.0), "18014398509481984");
  EXPECT_EQ(Number(std::numeric_limits<double>::max()), "1.7976931348623157e+308");
  EXPECT_EQ(Number(std::numeric_limits<double>::denorm_min()), "5e-324");
}

TEST(JsonWriterTest, NumbersRoundTrip) {
  const double values[] = {0.1,
                           0.2,
                           0.3,
                           1.0 / 7,
                           123456.789,
                           6.02214076e23,
                           -2.2250738585072014e-308,
                           3.141592653589793,
                           9007199254740993.0};
  for (double value : values) {
    EXPECT_EQ(std::strtod(Number(value).c_str(), nullptr), value) << Number(value);
  }
}

TEST(JsonWriterTest, PrintsNonFiniteNumbersAsNull) {
  EXPECT_EQ(Number(std::nan("")), "null");
  EXPECT_EQ(Number(std::numeric_limits<double>::infinity()), "null");
  EXPECT_EQ(Number(-std::numeric_limits<double>::infinity()), "null");
}

}  // namespace
}  // namespace eventbus::jsonrpc
