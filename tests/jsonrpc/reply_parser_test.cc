#include "server/jsonrpc/reply_parser.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eventbus::jsonrpc {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Kind = Reply::Kind;

class ReplyParserTest : public ::testing::Test {
 protected:
  Reply Parse(absl::string_view frame) { return parser_.Parse(frame); }
  ReplyParser parser_;
};

TEST_F(ReplyParserTest, ResultReplyKeepsRawResult) {
  Reply reply = Parse(R"({"jsonrpc":"2.0","id":7,"result":"ok"})");
  EXPECT_EQ(reply.kind, Kind::kResult);
  EXPECT_EQ(reply.id, 7);
  EXPECT_EQ(reply.result, R"("ok")");
}

TEST_F(ReplyParserTest, NestedResultIsKeptMinified) {
  Reply reply = Parse(
      "{ \"id\" : 915243442 , \"jsonrpc\":\"2.0\",\n \"result\" : { \"a\" : [ 1 , "
      "{ \"b\" : null } ] , \"c\" : \"x y\" , \"d\": true } }");
  EXPECT_EQ(reply.kind, Kind::kResult);
  EXPECT_EQ(reply.id, 915243442);
  EXPECT_EQ(reply.result, R"({"a":[1,{"b":null}],"c":"x y","d":true})");
}

TEST_F(ReplyParserTest, ScalarResultsAreKept) {
  EXPECT_EQ(Parse(R"({"id":1,"result":null})").result, "null");
  EXPECT_EQ(Parse(R"({"id":1,"result":null})").kind, Kind::kResult);
  EXPECT_EQ(Parse(R"({"id":1,"result":42})").result, "42");
  EXPECT_EQ(Parse(R"({"id":1,"result":false})").result, "false");
  EXPECT_EQ(Parse(R"({"id":1,"result":[]})").result, "[]");
}

TEST_F(ReplyParserTest, NullErrorWithResultIsResult) {
  Reply reply = Parse(R"({"jsonrpc":"2.0","id":3,"error":null,"result":{"x":1}})");
  EXPECT_EQ(reply.kind, Kind::kResult);
  EXPECT_EQ(reply.id, 3);
  EXPECT_EQ(reply.result, R"({"x":1})");
}

TEST_F(ReplyParserTest, ErrorObjectWithData) {
  Reply reply = Parse(
      R"({"jsonrpc":"2.0","id":4,"error":{"code":-32000,"message":"busy \"now\"","data":{"retry": [1, 2]}}})");
  EXPECT_EQ(reply.kind, Kind::kError);
  EXPECT_EQ(reply.id, 4);
  EXPECT_EQ(reply.error_code, -32000);
  EXPECT_EQ(reply.error_message, "busy \"now\"");
  EXPECT_EQ(reply.error_data, R"({"retry":[1,2]})");
}

TEST_F(ReplyParserTest, ErrorObjectWithoutData) {
  Reply reply = Parse(R"({"jsonrpc":"2.0","id":5,"error":{"code":-32601,"message":"no method"}})");
  EXPECT_EQ(reply.kind, Kind::kError);
  EXPECT_EQ(reply.id, 5);
  EXPECT_EQ(reply.error_code, -32601);
  EXPECT_EQ(reply.error_message, "no method");
  EXPECT_EQ(reply.error_data, "");
}

TEST_F(ReplyParserTest, ErrorWinsOverResult) {
  Reply reply = Parse(R"({"id":6,"result":1,"error":{"code":1,"message":"m","data":"d"}})");
  EXPECT_EQ(reply.kind, Kind::kError);
  EXPECT_EQ(reply.error_data, R"("d")");
}

TEST_F(ReplyParserTest, IllFormedErrorIsBadReply) {
  struct Case {
    const char* frame;
    const char* detail;
  };
  for (const Case& c : {
           Case{R"({"id":1,"error":"oops"})", "\"error\" is not an object"},
           Case{R"({"id":1,"error":[1],"result":2})", "\"error\" is not an object"},
           Case{R"({"id":1,"error":{"message":"m"}})", "error object has no \"code\""},
           Case{R"({"id":1,"error":{"code":"1","message":"m"}})",
                "error \"code\" is not an integer"},
           Case{R"({"id":1,"error":{"code":1.5,"message":"m"}})",
                "error \"code\" is not an integer"},
           Case{R"({"id":1,"error":{"code":1}})", "error object has no \"message\""},
           Case{R"({"id":1,"error":{"code":1,"message":7}})", "error \"message\" is not a string"},
       }) {
    Reply reply = Parse(c.frame);
    EXPECT_EQ(reply.kind, Kind::kBadReply) << c.frame;
    EXPECT_EQ(reply.id, 1) << c.frame;
    EXPECT_EQ(reply.detail, c.detail) << c.frame;
  }
}

TEST_F(ReplyParserTest, IdWithoutResultOrErrorIsBadReply) {
  Reply reply = Parse(R"({"jsonrpc":"2.0","id":8})");
  EXPECT_EQ(reply.kind, Kind::kBadReply);
  EXPECT_EQ(reply.id, 8);
  EXPECT_EQ(reply.detail, "reply has neither \"result\" nor \"error\"");

  reply = Parse(R"({"jsonrpc":"2.0","id":9,"error":null})");
  EXPECT_EQ(reply.kind, Kind::kBadReply);
  EXPECT_EQ(reply.id, 9);
}

TEST_F(ReplyParserTest, MissingIdIsNoId) {
  EXPECT_EQ(Parse(R"({"jsonrpc":"2.0","result":"ok"})").kind, Kind::kNoId);
  EXPECT_EQ(Parse(R"({"jsonrpc":"2.0","method":"ping"})").kind, Kind::kNoId);
  EXPECT_EQ(Parse(R"({})").kind, Kind::kNoId);
}

TEST_F(ReplyParserTest, NonIntegerIdIsNoId) {
  EXPECT_EQ(Parse(R"({"id":"7","result":"ok"})").kind, Kind::kNoId);
  EXPECT_EQ(Parse(R"({"id":null,"error":{"code":-32700,"message":"parse error"}})").kind,
            Kind::kNoId);
  EXPECT_EQ(Parse(R"({"id":7.5,"result":"ok"})").kind, Kind::kNoId);
  EXPECT_EQ(Parse(R"({"id":true,"result":"ok"})").kind, Kind::kNoId);
  EXPECT_EQ(Parse(R"({"id":[7],"result":"ok"})").kind, Kind::kNoId);
  EXPECT_EQ(Parse(R"({"id":18446744073709551615,"result":"ok"})").kind, Kind::kNoId);
}

TEST_F(ReplyParserTest, UnknownIdIsReturnedForTheCallerToJudge) {
  Reply reply = Parse(R"({"id":2147483647999,"result":"late"})");
  EXPECT_EQ(reply.kind, Kind::kResult);
  EXPECT_EQ(reply.id, 2147483647999);
  reply = Parse(R"({"id":-1,"result":"neg"})");
  EXPECT_EQ(reply.kind, Kind::kResult);
  EXPECT_EQ(reply.id, -1);
}

TEST_F(ReplyParserTest, TopLevelArrayIsNoId) {
  Reply reply = Parse(R"([{"id":1,"result":"ok"},{"id":2,"result":"ok"}])");
  EXPECT_EQ(reply.kind, Kind::kNoId);
  EXPECT_EQ(Parse("[]").kind, Kind::kNoId);
}

TEST_F(ReplyParserTest, TopLevelScalarIsNoId) {
  EXPECT_EQ(Parse("42").kind, Kind::kNoId);
  EXPECT_EQ(Parse("\"s\"").kind, Kind::kNoId);
}

TEST_F(ReplyParserTest, TruncatedJsonIsInvalid) {
  const std::string full = R"({"jsonrpc":"2.0","id":1,"result":{"a":[1,2]}})";
  for (size_t len = 0; len < full.size(); ++len) {
    Reply reply = Parse(absl::string_view(full).substr(0, len));
    EXPECT_EQ(reply.kind, Kind::kInvalid) << full.substr(0, len);
    EXPECT_THAT(reply.detail, StartsWith("invalid JSON: ")) << full.substr(0, len);
  }
}

TEST_F(ReplyParserTest, BinaryGarbageIsInvalid) {
  EXPECT_EQ(Parse(std::string("\x01\x02garbage\xff\x00", 11)).kind, Kind::kInvalid);
  EXPECT_EQ(Parse("{\x01\x02}").kind, Kind::kInvalid);
  EXPECT_EQ(Parse("{\"id\":1,\"result\":\"\xff\"}").kind, Kind::kInvalid);
  EXPECT_EQ(Parse("{\"id\":1,\"result\":1]").kind, Kind::kInvalid);
  EXPECT_EQ(Parse("{\"id\":1,\"result\":1}{}").kind, Kind::kInvalid);
}

TEST_F(ReplyParserTest, ParserIsReusableAfterAnyOutcome) {
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Parse("garbage").kind, Kind::kInvalid);
    Reply big = Parse(R"({"id":1,"result":")" + std::string(100000, 'x') + R"("})");
    EXPECT_EQ(big.kind, Kind::kResult);
    EXPECT_EQ(big.result.size(), 100002u);
    Reply small = Parse(R"({"id":2,"result":"s"})");
    EXPECT_EQ(small.kind, Kind::kResult);
    EXPECT_EQ(small.id, 2);
    EXPECT_EQ(small.result, R"("s")");
    EXPECT_THAT(Parse(R"({"id":"x"})").detail, HasSubstr("id"));
  }
}

}  // namespace
}  // namespace eventbus::jsonrpc
