#include "server/jsonrpc/json_text.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eventbus::jsonrpc {
namespace {

constexpr size_t kNpos = absl::string_view::npos;

TEST(JsonTextTest, IsJsonNumberFollowsTheGrammarWhateverTheMagnitude) {
  for (const char* number : {"0", "-0", "1", "-1", "10", "2.5", "-0.0", "1e2", "1E2", "1e+2",
                             "1e-2", "0e0", "1.5e400", "1e400", "-1e400", "18446744073709551616",
                             "123456789012345678901234567890", "-9223372036854775809", "1e-400"}) {
    EXPECT_TRUE(IsJsonNumber(number)) << number;
  }
  for (const char* token : {"",          "-",     "+1",    "01",  "-01", "00",  "1.",  ".5",
                            "1e",        "1e+",   "1e-",   "0x1", "1 ",  " 1",  "NaN", "Infinity",
                            "-Infinity", "1.5.5", "1e2e3", "--1", "1f",  "true"}) {
    EXPECT_FALSE(IsJsonNumber(token)) << token;
  }
}

TEST(JsonTextTest, ScanJsonStringChecksEscapesAndAcceptsLoneSurrogates) {
  struct Case {
    std::string text;
    size_t end;
  };
  for (const Case& c : {
           Case{R"("")", 2},
           Case{R"("abc" tail)", 5},
           Case{R"("a\"b")", 6},
           Case{R"("\\")", 4},
           Case{R"("\/\b\f\n\r\t")", 14},
           Case{R"("\u00e9")", 8},
           Case{R"("\ud800")", 8},
           Case{R"("\udc00\ud800")", 14},
           Case{"\"h\xc3\xa9\"", 5},
           Case{R"("\x")", kNpos},
           Case{R"("\u12")", kNpos},
           Case{R"("\u12g4")", kNpos},
           Case{R"("\)", kNpos},
           Case{R"("abc)", kNpos},
           Case{"\"a\nb\"", kNpos},
           Case{std::string("\"a\x01\"", 4), kNpos},
           Case{"abc", kNpos},
       }) {
    EXPECT_EQ(ScanJsonString(c.text, 0), c.end) << c.text;
  }
}

TEST(JsonTextTest, UnescapeReplacesOnlyLoneSurrogates) {
  EXPECT_EQ(UnescapeJsonString(R"("plain")"), "plain");
  EXPECT_EQ(UnescapeJsonString(R"("a\"b\\c\/d\b\f\n\r\t")"), "a\"b\\c/d\b\f\n\r\t");
  EXPECT_EQ(UnescapeJsonString(R"("\u0041\u00e9\u20ac")"), "A\xc3\xa9\xe2\x82\xac");
  EXPECT_EQ(UnescapeJsonString(R"("\ud83d\ude00")"), "\xf0\x9f\x98\x80");
  EXPECT_EQ(UnescapeJsonString(R"("\ud800")"), "\xef\xbf\xbd");
  EXPECT_EQ(UnescapeJsonString(R"("\udc00\ud800x")"), "\xef\xbf\xbd\xef\xbf\xbdx");
  EXPECT_EQ(UnescapeJsonString(R"("\ud800\u0041")"),
            "\xef\xbf\xbd"
            "A");
  EXPECT_EQ(UnescapeJsonString(R"("\ud800\ud800\udc00")"), "\xef\xbf\xbd\xf0\x90\x80\x80");
}

TEST(JsonTextTest, CheckJsonTextAcceptsTheWholeGrammar) {
  for (const char* text :
       {"0", " true ", "null", "\"s\"", "[]", "{}", " [ 1 , -2.5e-3 , \"\\ud800\" ] ",
        R"({"a":{"b":[null,false,{"c":1e400}]},"d":18446744073709551616})", "\t\r\n{}\n"}) {
    EXPECT_EQ(CheckJsonText(text, 10), "") << text;
  }
}

TEST(JsonTextTest, CheckJsonTextNamesTheFaultAndItsOffset) {
  struct Case {
    const char* text;
    const char* fault;
  };
  for (const Case& c : {
           Case{"", "unexpected end at offset 0"},
           Case{"{\"a\":\"b\":1}", "expected ',' or '}' at offset 8"},
           Case{"[1:2]", "expected ',' or ']' at offset 2"},
           Case{"{\"a\" 1}", "expected ':' at offset 5"},
           Case{"{a:1}", "expected a member name at offset 1"},
           Case{"{\"a\":1,}", "expected a member name at offset 7"},
           Case{"[1,]", "unexpected byte at offset 3"},
           Case{"[01]", "malformed number at offset 1"},
           Case{"[tru]", "unexpected byte at offset 1"},
           Case{"[truex]", "expected ',' or ']' at offset 5"},
           Case{"[\"\\x\"]", "malformed string at offset 1"},
           Case{"{} {}", "trailing content at offset 3"},
           Case{"[[[1]]]", "nested deeper than 2 levels at offset 2"},
       }) {
    EXPECT_EQ(CheckJsonText(c.text, 2), c.fault) << c.text;
  }
}

TEST(JsonTextTest, SkipJsonValueFindsTheEndOfEachKind) {
  EXPECT_EQ(SkipJsonValue(R"({"a":"}"} ,)", 0), 9u);
  EXPECT_EQ(SkipJsonValue(R"([1,[2,"]\""]],3)", 0), 13u);
  EXPECT_EQ(SkipJsonValue(R"("x\"y",1)", 0), 6u);
  EXPECT_EQ(SkipJsonValue("1e400 ,", 0), 5u);
  EXPECT_EQ(SkipJsonValue("true}", 0), 4u);
  EXPECT_EQ(SkipJsonValue("[1,2", 0), 4u);
}

TEST(JsonTextTest, InvalidUtf8OffsetFindsTheFirstBadByte) {
  EXPECT_EQ(InvalidUtf8Offset(""), kNpos);
  EXPECT_EQ(InvalidUtf8Offset("ascii"), kNpos);
  EXPECT_EQ(InvalidUtf8Offset("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf"), kNpos);
  EXPECT_EQ(InvalidUtf8Offset("ab\xff"), 2u);
  EXPECT_EQ(InvalidUtf8Offset("ab\xc3"), 2u);             // truncated
  EXPECT_EQ(InvalidUtf8Offset("a\xc0\xaf"), 1u);          // overlong '/'
  EXPECT_EQ(InvalidUtf8Offset("a\xe0\x80\xaf"), 1u);      // overlong
  EXPECT_EQ(InvalidUtf8Offset("a\xed\xa0\x80"), 1u);      // surrogate U+D800
  EXPECT_EQ(InvalidUtf8Offset("a\xf4\x90\x80\x80"), 1u);  // above U+10FFFF
  EXPECT_EQ(InvalidUtf8Offset("a\xc3\x28"), 1u);          // bad continuation
  EXPECT_EQ(InvalidUtf8Offset("\x80"), 0u);
}

TEST(JsonTextTest, AppendCompactJsonDropsWhitespaceOutsideStrings) {
  std::string out;
  AppendCompactJson(" { \"a b\" : [ 1 , \"\\\" x \" ] }\n", &out);
  EXPECT_EQ(out, R"({"a b":[1,"\" x "]})");
}

}  // namespace
}  // namespace eventbus::jsonrpc
