#include "server/base/log.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "simdjson.h"
#include "tests/testing/log_capture.h"

namespace eventbus::base {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

const absl::Time kTs = absl::FromUnixMillis(1700000000123);

// Parses one JSON line into its members (all of them strings); fails the test when it is not
// valid JSON or a member is not a string.
std::vector<std::pair<std::string, std::string>> ParseJsonLine(const std::string& line) {
  std::vector<std::pair<std::string, std::string>> out;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  auto error = parser.parse(line).get(doc);
  EXPECT_FALSE(error) << simdjson::error_message(error) << " in " << line;
  if (error) return out;
  simdjson::dom::object object;
  EXPECT_FALSE(doc.get(object));
  for (auto field : object) {
    std::string_view value;
    EXPECT_FALSE(field.value.get(value)) << "member " << field.key << " is not a string";
    out.emplace_back(std::string(field.key), std::string(value));
  }
  return out;
}

TEST(LogTest, LogfmtLineIsByteForByteAsBefore) {
  EXPECT_EQ(FormatLogLine(LogFormat::kLogfmt, kTs, LogLevel::kInfo, "eventbusd serving",
                          "listen=127.0.0.1:50051 port=50051 store=\"sqlite:/tmp/a b\""),
            "ts=2023-11-14T22:13:20.123Z level=info msg=\"eventbusd serving\" "
            "listen=127.0.0.1:50051 port=50051 store=\"sqlite:/tmp/a b\"\n");
  EXPECT_EQ(FormatLogLine(LogFormat::kLogfmt, kTs, LogLevel::kWarning, "stopped", ""),
            "ts=2023-11-14T22:13:20.123Z level=warning msg=stopped\n");
}

TEST(LogTest, LogValueQuotesOnlyWhenNeeded) {
  EXPECT_EQ(LogValue("127.0.0.1:9"), "127.0.0.1:9");
  EXPECT_EQ(LogValue("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(LogValue(""), "\"\"");
  EXPECT_EQ(LogValue("a b"), "\"a b\"");
  EXPECT_EQ(LogValue("a=b"), "\"a=b\"");
  EXPECT_EQ(LogValue("say \"hi\""), "\"say \\\"hi\\\"\"");
  EXPECT_EQ(LogValue("C:\\x"), "\"C:\\\\x\"");
  EXPECT_EQ(LogValue("two\nlines"), "\"two\\nlines\"");
}

TEST(LogTest, LogValueEscapesEveryControlCharacter) {
  EXPECT_EQ(LogValue("a\rb"), "\"a\\rb\"");
  EXPECT_EQ(LogValue("a\tb"), "\"a\\tb\"");
  EXPECT_EQ(LogValue(std::string("a\x01"
                                 "b\x1b[31m",
                                 8)),
            "\"a\\u0001b\\u001b[31m\"");
  EXPECT_EQ(LogValue(std::string("nul\0", 4)), "\"nul\\u0000\"");
}

TEST(LogTest, ParseLogfmtFieldsUndoesLogValue) {
  const std::vector<std::string> values = {"plain",
                                           "",
                                           "a b",
                                           "a=b",
                                           "\"",
                                           "\\",
                                           "\\\"",
                                           "x\ny\r\tz",
                                           std::string("\0\x01\x1f", 3),
                                           "caf\xc3\xa9 \xe2\x82\xac",
                                           "\xff\xfe",
                                           "trailing\\",
                                           "=",
                                           "\\u0041"};
  std::string fields;
  for (size_t i = 0; i < values.size(); ++i) {
    absl::StrAppend(&fields, i == 0 ? "" : " ", "k", i, "=", LogValue(values[i]));
  }
  auto parsed = ParseLogfmtFields(fields);
  ASSERT_EQ(parsed.size(), values.size()) << fields;
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(parsed[i].first, absl::StrCat("k", i));
    EXPECT_EQ(parsed[i].second, values[i]) << "value " << i << " in " << fields;
  }
}

TEST(LogTest, ParseLogfmtFieldsKeepsAWordWithoutEqualsInThePreviousValue) {
  EXPECT_THAT(ParseLogfmtFields("error=Connection refused id=7"),
              ElementsAre(Pair("error", "Connection refused"), Pair("id", "7")));
  EXPECT_THAT(ParseLogfmtFields("a=\"unterminated x"), ElementsAre(Pair("a", "unterminated x")));
  EXPECT_THAT(ParseLogfmtFields("  a=1   b=x=y "), ElementsAre(Pair("a", "1"), Pair("b", "x=y")));
}

TEST(LogTest, JsonLineHasTsLevelMsgAndEveryFieldAsAString) {
  std::string line = FormatLogLine(LogFormat::kJson, kTs, LogLevel::kWarning, "target failing",
                                   "target=127.0.0.1:9 status=CONNECT_FAILED detail=" +
                                       LogValue("connect to 127.0.0.1:9: Connection refused"));
  EXPECT_EQ(line,
            "{\"ts\":\"2023-11-14T22:13:20.123Z\",\"level\":\"warning\",\"msg\":\"target "
            "failing\",\"target\":\"127.0.0.1:9\",\"status\":\"CONNECT_FAILED\",\"detail\":"
            "\"connect to 127.0.0.1:9: Connection refused\"}\n");
  EXPECT_THAT(ParseJsonLine(line),
              ElementsAre(Pair("ts", "2023-11-14T22:13:20.123Z"), Pair("level", "warning"),
                          Pair("msg", "target failing"), Pair("target", "127.0.0.1:9"),
                          Pair("status", "CONNECT_FAILED"),
                          Pair("detail", "connect to 127.0.0.1:9: Connection refused")));
}

TEST(LogTest, JsonEscapesQuotesNewlinesControlsAndKeepsUtf8) {
  const std::string value =
      std::string("q\"b\\n\nr\rt\tc\x01\x1f\x7f", 14) + " caf\xc3\xa9 \xe2\x82\xac";
  std::string line =
      FormatLogLine(LogFormat::kJson, kTs, LogLevel::kInfo, "m\"sg\n", "v=" + LogValue(value));
  EXPECT_EQ(line,
            "{\"ts\":\"2023-11-14T22:13:20.123Z\",\"level\":\"info\",\"msg\":\"m\\\"sg\\n\","
            "\"v\":\"q\\\"b\\\\n\\nr\\rt\\tc\\u0001\\u001f\\u007f caf\xc3\xa9 \xe2\x82\xac\"}\n");
  EXPECT_THAT(ParseJsonLine(line), ElementsAre(Pair("ts", ::testing::_), Pair("level", "info"),
                                               Pair("msg", "m\"sg\n"), Pair("v", value)));
  // One line: no raw newline before the end.
  EXPECT_EQ(line.find('\n'), line.size() - 1);
}

TEST(LogTest, JsonReplacesInvalidUtf8AndEscapesLineSeparators) {
  std::string line = FormatLogLine(LogFormat::kJson, kTs, LogLevel::kInfo, "m",
                                   "v=" + LogValue("a\xff"
                                                   "b\xc3(\xed\xa0\x80 \xe2\x80\xa8"));
  EXPECT_THAT(line,
              ::testing::HasSubstr("\"v\":\"a\\ufffdb\\ufffd(\\ufffd\\ufffd\\ufffd \\u2028\"}"));
  EXPECT_THAT(ParseJsonLine(line),
              ElementsAre(Pair("ts", ::testing::_), Pair("level", "info"), Pair("msg", "m"),
                          Pair("v",
                               "a\xef\xbf\xbd"
                               "b\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd"
                               "\xef\xbf\xbd \xe2\x80\xa8")));
}

TEST(LogTest, JsonRenamesFieldsThatWouldDuplicateFixedKeys) {
  std::string line =
      FormatLogLine(LogFormat::kJson, kTs, LogLevel::kInfo, "m", "msg=x level=y ts=z");
  EXPECT_THAT(ParseJsonLine(line),
              ElementsAre(Pair("ts", ::testing::_), Pair("level", "info"), Pair("msg", "m"),
                          Pair("field_msg", "x"), Pair("field_level", "y"), Pair("field_ts", "z")));
}

TEST(LogTest, EbLogWritesTheChosenFormatToTheSink) {
  testing::LogCapture capture(LogLevel::kInfo);
  EB_LOG(kDebug, "hidden", "a=1");
  EB_LOG(kInfo, "shown", "target=", LogValue("h:1"), " fd=", 7);
  SetLogFormat(LogFormat::kJson);
  EB_LOG(kWarning, "as json", "error=", LogValue("x \"y\""));
  SetLogFormat(LogFormat::kLogfmt);
  std::vector<std::string> lines = capture.lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0],
              ::testing::MatchesRegex("ts=[0-9T:.-]+Z level=info msg=shown target=h:1 fd=7\n"));
  EXPECT_THAT(
      lines[1],
      ::testing::HasSubstr("\"level\":\"warning\",\"msg\":\"as json\",\"error\":\"x \\\"y\\\"\"}"));
}

TEST(LogTest, ParsesLevelsAndFormats) {
  LogFormat format = LogFormat::kLogfmt;
  EXPECT_TRUE(ParseLogFormat("JSON", &format));
  EXPECT_EQ(format, LogFormat::kJson);
  EXPECT_TRUE(ParseLogFormat("logfmt", &format));
  EXPECT_EQ(format, LogFormat::kLogfmt);
  EXPECT_FALSE(ParseLogFormat("text", &format));
  LogLevel level;
  EXPECT_TRUE(ParseLogLevel("Warning", &level));
  EXPECT_EQ(level, LogLevel::kWarning);
  EXPECT_FALSE(ParseLogLevel("warn", &level));
}

}  // namespace
}  // namespace eventbus::base
