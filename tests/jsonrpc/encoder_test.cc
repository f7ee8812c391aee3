#include "server/jsonrpc/encoder.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/jsonrpc/json_writer.h"

namespace eventbus::jsonrpc {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

Params Named(std::string json) { return Params{Params::Kind::kNamed, std::move(json)}; }
Params Positional(std::string json) { return Params{Params::Kind::kPositional, std::move(json)}; }
Params NoParams() { return Params{}; }

BodyOptions Method(absl::string_view method) {
  BodyOptions options;
  options.method = method;
  return options;
}

BodyOptions EventParam(absl::string_view key) {
  BodyOptions options;
  options.event_param = key;
  return options;
}

// SPEC §2, row by row.
TEST(EncoderTest, NotificationWithNamedParams) {
  EXPECT_EQ(
      EncodeMessage("E_PIKE_BLOCKED", Named(R"({"ip":"192.168.2.11","count":3})"), {}),
      R"({"jsonrpc":"2.0","method":"E_PIKE_BLOCKED","params":{"ip":"192.168.2.11","count":3}})");
}

TEST(EncoderTest, NotificationWithPositionalParams) {
  EXPECT_EQ(EncodeMessage("E_MY_EVENT", Positional(R"([3,"x"])"), {}),
            R"({"jsonrpc":"2.0","method":"E_MY_EVENT","params":[3,"x"]})");
}

TEST(EncoderTest, NoParamsMeansNoParamsKey) {
  EXPECT_EQ(EncodeMessage("E_MY_EVENT", NoParams(), {}),
            R"({"jsonrpc":"2.0","method":"E_MY_EVENT"})");
}

TEST(EncoderTest, SyncRequestPutsIdFirst) {
  EXPECT_EQ(
      EncodeMessage("E_PIKE_BLOCKED", Named(R"({"ip":"192.168.2.11"})"), {}, 915243442),
      R"({"id":915243442,"jsonrpc":"2.0","method":"E_PIKE_BLOCKED","params":{"ip":"192.168.2.11"}})");
}

TEST(EncoderTest, SocketMethodReplacesEventName) {
  EXPECT_EQ(
      EncodeMessage("E_PIKE_BLOCKED", Named(R"({"ip":"192.168.2.11"})"), Method("handle_cmd")),
      R"({"jsonrpc":"2.0","method":"handle_cmd","params":{"ip":"192.168.2.11"}})");
  EXPECT_EQ(EncodeMessage("E_MY_EVENT", NoParams(), Method("handle_cmd"), 7),
            R"({"id":7,"jsonrpc":"2.0","method":"handle_cmd"})");
}

TEST(EncoderTest, EventParamBecomesFirstNamedParam) {
  EXPECT_EQ(
      EncodeMessage("E_PIKE_BLOCKED", Named(R"({"ip":"192.168.2.11"})"),
                    EventParam("opensips_event")),
      R"({"jsonrpc":"2.0","method":"E_PIKE_BLOCKED","params":{"opensips_event":"E_PIKE_BLOCKED","ip":"192.168.2.11"}})");
}

TEST(EncoderTest, EventParamBecomesElementZeroOfPositionalParams) {
  EXPECT_EQ(EncodeMessage("E_MY_EVENT", Positional("[3,5]"), EventParam("opensips_event")),
            R"({"jsonrpc":"2.0","method":"E_MY_EVENT","params":["E_MY_EVENT",3,5]})");
}

TEST(EncoderTest, EventParamAddsNothingWithoutParams) {
  EXPECT_EQ(EncodeMessage("E_MY_EVENT", NoParams(), EventParam("opensips_event")),
            R"({"jsonrpc":"2.0","method":"E_MY_EVENT"})");
}

TEST(EncoderTest, EventParamFillsEmptyParams) {
  EXPECT_EQ(EncodeMessage("E", Named("{}"), EventParam("ev")),
            R"({"jsonrpc":"2.0","method":"E","params":{"ev":"E"}})");
  EXPECT_EQ(EncodeMessage("E", Positional("[]"), EventParam("ev")),
            R"({"jsonrpc":"2.0","method":"E","params":["E"]})");
}

TEST(EncoderTest, EventParamCarriesEventNameNotSocketMethod) {
  BodyOptions options;
  options.method = "handle_cmd";
  options.event_param = "opensips_event";
  EXPECT_EQ(
      EncodeMessage("E_X", Named(R"({"a":1})"), options, 3),
      R"({"id":3,"jsonrpc":"2.0","method":"handle_cmd","params":{"opensips_event":"E_X","a":1}})");
}

TEST(EncoderTest, EventParamKeyAndEventAreEscaped) {
  EXPECT_EQ(EncodeMessage("E\"1", Named(R"({"a":1})"), EventParam("k\\\n")),
            R"({"jsonrpc":"2.0","method":"E\"1","params":{"k\\\n":"E\"1","a":1}})");
}

// Regression (issue 7): a named param called like the subscription's event_param produced two
// members with one key. The event_param member (the subscriber's contract) stays first and the
// client's member of that name is left out, for that subscriber only.
TEST(EncoderTest, EventParamLeavesOutANamedParamOfTheSameName) {
  EXPECT_EQ(EncodeMessage("E", Named(R"({"ip":"1","opensips_event":"x","n":2})"),
                          EventParam("opensips_event")),
            R"({"jsonrpc":"2.0","method":"E","params":{"opensips_event":"E","ip":"1","n":2}})");
  EXPECT_EQ(EncodeMessage("E", Named(R"({"ev":{"nested":[1,"}"]}})"), EventParam("ev"), 7),
            R"({"id":7,"jsonrpc":"2.0","method":"E","params":{"ev":"E"}})");
  EXPECT_EQ(EncodeMessage("E", Named(R"({"ev":1,"a":"ev","ev":2,"b":{"ev":3}})"), EventParam("ev")),
            R"({"jsonrpc":"2.0","method":"E","params":{"ev":"E","a":"ev","b":{"ev":3}}})");
  // The same name written with escapes is the same name.
  EXPECT_EQ(EncodeMessage("E", Named(R"({"\u0065v":1,"x\"":2})"), EventParam("ev")),
            R"({"jsonrpc":"2.0","method":"E","params":{"ev":"E","x\"":2}})");
  EXPECT_EQ(EncodeMessage("E", Named(R"({"k\"":1,"a":2})"), EventParam("k\"")),
            R"({"jsonrpc":"2.0","method":"E","params":{"k\"":"E","a":2}})");
  // Only the key counts: a value or a longer key that contains it stays.
  EXPECT_EQ(EncodeMessage("E", Named(R"({"evx":"ev"})"), EventParam("ev")),
            R"({"jsonrpc":"2.0","method":"E","params":{"ev":"E","evx":"ev"}})");
  // Positional params have no names: nothing is left out.
  EXPECT_EQ(EncodeMessage("E", Positional(R"(["ev",1])"), EventParam("ev")),
            R"({"jsonrpc":"2.0","method":"E","params":["E","ev",1]})");
}

TEST(EncoderTest, EventParamCollisionInRawJsonWithWhitespace) {
  absl::StatusOr<Params> params = ParamsFromRawJson("{ \"ev\" : [ 1 ] ,\n \"a\" : 2 }");
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(EncodeMessage("E", *params, EventParam("ev")),
            R"({"jsonrpc":"2.0","method":"E","params":{"ev":"E","a":2}})");
}

TEST(EncoderTest, EmptyParamsTextKeepsItsKind) {
  EXPECT_EQ(EncodeMessage("E", Named(""), {}), R"({"jsonrpc":"2.0","method":"E","params":{}})");
  EXPECT_EQ(EncodeMessage("E", Positional(""), {}),
            R"({"jsonrpc":"2.0","method":"E","params":[]})");
}

TEST(EncoderTest, PrefixIsOpeningBraceForNotifications) {
  std::string out;
  AppendMessagePrefix(&out, 0);
  EXPECT_EQ(out, "{");
}

TEST(EncoderTest, PrefixCarriesRequestId) {
  std::string out = "x";
  AppendMessagePrefix(&out, 1);
  AppendMessagePrefix(&out, 2147483647u);
  EXPECT_EQ(out, R"(x{"id":1,{"id":2147483647,)");
}

TEST(EncoderTest, MessageIsPrefixPlusSharedBody) {
  const Params params = Named(R"({"a":[1,{"b":null}]})");
  const std::string body = EncodeBody("E", params, {});
  EXPECT_EQ(body, R"("jsonrpc":"2.0","method":"E","params":{"a":[1,{"b":null}]}})");
  std::string request;
  AppendMessagePrefix(&request, 42);
  request += body;
  EXPECT_EQ(request, EncodeMessage("E", params, {}, 42));
  EXPECT_EQ("{" + body, EncodeMessage("E", params, {}));
}

TEST(EncoderTest, EscapesMethodAndEventName) {
  EXPECT_EQ(EncodeMessage("E\x01/\xc3\xa9", NoParams(), {}),
            "{\"jsonrpc\":\"2.0\",\"method\":\"E\\u0001/\xc3\xa9\"}");
  EXPECT_EQ(EncodeMessage("E", NoParams(), Method("a\"b\\c\td")),
            R"({"jsonrpc":"2.0","method":"a\"b\\c\td"})");
}

TEST(EncoderTest, EscapesEveryControlByteInStringParams) {
  std::string value;
  for (int byte = 0; byte < 0x20; ++byte) value.push_back(static_cast<char>(byte));
  std::string params = "{\"s\":";
  AppendJsonString(&params, value);
  params += "}";
  EXPECT_EQ(EncodeMessage("E", Named(params), {}),
            "{\"jsonrpc\":\"2.0\",\"method\":\"E\",\"params\":{\"s\":\""
            "\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r"
            "\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018"
            "\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\"}}");
}

TEST(EncoderTest, PassesUtf8Through) {
  absl::StatusOr<Params> params = ParamsFromRawJson("{\"city\":\"Z\xc3\xbcrich \xe2\x82\xac\"}");
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(EncodeMessage("E", *params, {}),
            "{\"jsonrpc\":\"2.0\",\"method\":\"E\",\"params\":{\"city\":\"Z\xc3\xbcrich "
            "\xe2\x82\xac\"}}");
}

TEST(EncoderTest, CarriesNestedValuesFromRawJson) {
  const std::string raw =
      R"({"i":-3,"d":2.5,"b":true,"n":null,"a":[1,[2,{"x":"y"}]],"o":{"p":{"q":[]}}})";
  absl::StatusOr<Params> params = ParamsFromRawJson(raw);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->kind, Params::Kind::kNamed);
  EXPECT_EQ(EncodeMessage("E", *params, EventParam("ev"), 5),
            absl::StrCat(R"({"id":5,"jsonrpc":"2.0","method":"E","params":{"ev":"E",)",
                         raw.substr(1), "}"));
}

TEST(EncoderTest, RawJsonKeepsTokensAndDropsWhitespaceBetweenThem) {
  // SPEC §2: one compact object per event, no newline. Tokens (numbers, escapes) stay as given.
  absl::StatusOr<Params> params =
      ParamsFromRawJson(" \n\t{ \"a\" : 2.50 ,\n\"b\":[ 1e2 ,\t\"s/\\u00e9\" ] }\r\n ");
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->kind, Params::Kind::kNamed);
  EXPECT_EQ(params->json, R"({"a":2.50,"b":[1e2,"s/\u00e9"]})");
}

TEST(EncoderTest, RawJsonKeepsWhitespaceAndEscapesInsideStrings) {
  const std::string raw = R"({ "k e\"y\\" : " a \" \n\\ b " })";
  absl::StatusOr<Params> params = ParamsFromRawJson(raw);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->json, R"({"k e\"y\\":" a \" \n\\ b "})");
  EXPECT_EQ(EncodeMessage("E", *params, {}).find('\n'), std::string::npos);
}

TEST(EncoderTest, EventParamInsertsAfterBraceOfRawJsonWithWhitespace) {
  absl::StatusOr<Params> named = ParamsFromRawJson("{ \"a\": 1 }");
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(EncodeMessage("E", *named, EventParam("ev")),
            R"({"jsonrpc":"2.0","method":"E","params":{"ev":"E","a":1}})");

  absl::StatusOr<Params> empty_named = ParamsFromRawJson("{ \n }");
  ASSERT_TRUE(empty_named.ok()) << empty_named.status();
  EXPECT_EQ(EncodeMessage("E", *empty_named, EventParam("ev")),
            R"({"jsonrpc":"2.0","method":"E","params":{"ev":"E"}})");

  absl::StatusOr<Params> positional = ParamsFromRawJson("[\n1, 2]");
  ASSERT_TRUE(positional.ok()) << positional.status();
  EXPECT_EQ(positional->kind, Params::Kind::kPositional);
  EXPECT_EQ(EncodeMessage("E", *positional, EventParam("ev")),
            R"({"jsonrpc":"2.0","method":"E","params":["E",1,2]})");

  absl::StatusOr<Params> empty_positional = ParamsFromRawJson("[\t]");
  ASSERT_TRUE(empty_positional.ok()) << empty_positional.status();
  EXPECT_EQ(EncodeMessage("E", *empty_positional, EventParam("ev")),
            R"({"jsonrpc":"2.0","method":"E","params":["E"]})");
}

TEST(EncoderTest, RawJsonArrayIsPositional) {
  absl::StatusOr<Params> params = ParamsFromRawJson(R"([1,"two",{"three":3}])");
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->kind, Params::Kind::kPositional);
  EXPECT_EQ(params->json, R"([1,"two",{"three":3}])");
}

struct RawJsonErrorCase {
  std::string input;
  std::string message_start;
};

class RawJsonErrorTest : public ::testing::TestWithParam<RawJsonErrorCase> {};

TEST_P(RawJsonErrorTest, IsInvalidArgumentNamingTheProblem) {
  absl::StatusOr<Params> params = ParamsFromRawJson(GetParam().input);
  ASSERT_FALSE(params.ok()) << params->json;
  EXPECT_EQ(params.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(params.status().message()), StartsWith(GetParam().message_start));
}

INSTANTIATE_TEST_SUITE_P(
    Encoder, RawJsonErrorTest,
    ::testing::Values(
        RawJsonErrorCase{"", "params json: empty (expected an object or array)"},
        RawJsonErrorCase{" \n\t ", "params json: empty (expected an object or array)"},
        RawJsonErrorCase{"3", "params json: expected an object or array, got a number"},
        RawJsonErrorCase{"-2.5", "params json: expected an object or array, got a number"},
        RawJsonErrorCase{"\"s\"", "params json: expected an object or array, got a string"},
        RawJsonErrorCase{"true", "params json: expected an object or array, got a boolean"},
        RawJsonErrorCase{"null", "params json: expected an object or array, got null"},
        RawJsonErrorCase{"{", "params json: invalid JSON: "},
        RawJsonErrorCase{"{\"a\":}", "params json: invalid JSON: "},
        RawJsonErrorCase{"[1,]", "params json: invalid JSON: "},
        RawJsonErrorCase{"{\"a\":1}}", "params json: invalid JSON: "},
        RawJsonErrorCase{"{} {}", "params json: invalid JSON: "},
        RawJsonErrorCase{"{'a':1}", "params json: invalid JSON: "},
        RawJsonErrorCase{"{\"a\":\"\xff\"}", "params json: invalid UTF-8 at byte 6"},
        RawJsonErrorCase{"{\"a\":\"x\ny\"}", "params json: invalid JSON: "}));

TEST(EncoderTest, RawJsonNumberErrorSaysWhichNumbersCannotBeCarried) {
  for (const char* raw : {"[123456789012345678901234567890]", "{\"a\":1e400}", "[01]"}) {
    absl::StatusOr<Params> params = ParamsFromRawJson(raw);
    ASSERT_FALSE(params.ok()) << raw;
    EXPECT_THAT(std::string(params.status().message()),
                HasSubstr("(malformed, or beyond what a 64-bit integer or a double can hold)"))
        << raw;
  }
}

TEST(EncoderTest, RawJsonErrorNamesUtf8Problem) {
  absl::StatusOr<Params> params = ParamsFromRawJson("[\"\xc3\"]");
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(params.status().message(), "params json: invalid UTF-8 at byte 2");
  params = ParamsFromRawJson(" {\"ok\":\"\xc3\xa9\",\"bad\":\"\xed\xa0\x80\"}");
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.status().message(), "params json: invalid UTF-8 at byte 19");
}

std::string Nested(int levels, absl::string_view inner = "1") {
  std::string text;
  for (int i = 0; i < levels; ++i) text += (i % 2 == 0) ? "[" : "{\"k\":";
  text.append(inner.data(), inner.size());
  for (int i = levels - 1; i >= 0; --i) text += (i % 2 == 0) ? "]" : "}";
  return text;
}

// The params object or array is level 1; kMaxParamsDepth levels are fine, one more is refused
// naming the top-level param it is in.
TEST(EncoderTest, RawJsonNestingIsLimitedAndTheParamNamed) {
  ASSERT_EQ(kMaxParamsDepth, 32);
  EXPECT_TRUE(ParamsFromRawJson(Nested(32)).ok());
  EXPECT_TRUE(ParamsFromRawJson(absl::StrCat(R"({"a":)", Nested(31), "}")).ok());

  absl::StatusOr<Params> params = ParamsFromRawJson(Nested(33));
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(params.status().message(), "params json: param [0]: nested deeper than 32 levels");

  params = ParamsFromRawJson(absl::StrCat(R"({"ok":[[1]],"deep\"":)", Nested(32), "}"));
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.status().message(),
            R"(params json: param "deep\"": nested deeper than 32 levels)");

  params = ParamsFromRawJson(absl::StrCat("[1,2,", Nested(40), "]"));
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.status().message(), "params json: param [2]: nested deeper than 32 levels");

  // Beyond what simdjson itself nests (1024): the same answer, without a name.
  params = ParamsFromRawJson(std::string(5000, '[') + std::string(5000, ']'));
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(params.status().message(), "params json: nested deeper than 32 levels");
}

}  // namespace
}  // namespace eventbus::jsonrpc
