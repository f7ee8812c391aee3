#include "server/jsonrpc/reply_parser.h"

#include <simdjson.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/jsonrpc/reply_framer.h"

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

// Regression (issue 7): simdjson's DOM failed the whole frame on these ids (NUMBER_ERROR), so the
// connection was torn down and the oldest request blamed with BAD_REPLY. They are valid JSON and
// can match no request of ours: unmatched, counted and ignored by the connection.
TEST_F(ReplyParserTest, IdBeyondSixtyFourBitsIsNoIdNotInvalid) {
  struct Case {
    const char* frame;
    const char* detail;
  };
  for (const Case& c : {
           Case{R"({"id":18446744073709551616,"result":"ok"})", "\"id\" is out of range"},
           Case{R"({"id":-9223372036854775809,"result":"ok"})", "\"id\" is out of range"},
           Case{R"({"id":123456789012345678901234567890,"error":{"code":1,"message":"m"}})",
                "\"id\" is out of range"},
           Case{R"({"id":1e400,"result":"ok"})", "\"id\" is not an integer"},
           Case{R"({"id":-1e400,"result":"ok"})", "\"id\" is not an integer"},
           Case{R"({"id":1.0,"result":"ok"})", "\"id\" is not an integer"},
           Case{R"({"id":1e2,"result":"ok"})", "\"id\" is not an integer"},
           Case{R"({"id":"\ud800","result":"ok"})", "\"id\" is not an integer"},
       }) {
    Reply reply = Parse(c.frame);
    EXPECT_EQ(reply.kind, Kind::kNoId) << c.frame << ": " << reply.detail;
    EXPECT_EQ(reply.detail, c.detail) << c.frame;
  }
}

// Regression (issue 7): a reply is matched by its id and its result kept as raw JSON text, so a
// number no double or int64 can hold and a lone escaped surrogate (all valid RFC 8259 JSON) reach
// the client byte for byte instead of failing the frame.
TEST_F(ReplyParserTest, ValuesSimdjsonCannotConvertAreKeptRaw) {
  struct Case {
    std::string frame;
    std::string result;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"id":1,"result":1e400})", "1e400"},
           {R"({"id":1,"result":-1e400})", "-1e400"},
           {R"({"id":1,"result":1E+400})", "1E+400"},
           {R"({"id":1,"result":18446744073709551616})", "18446744073709551616"},
           {R"({"id":1,"result":-9223372036854775809})", "-9223372036854775809"},
           {R"({"id":1,"result":123456789012345678901234567890})",
            "123456789012345678901234567890"},
           {R"({"id":1,"result":"\ud800"})", R"("\ud800")"},
           {R"({"id":1,"result":"\udc00x\ud800\u0041"})", R"("\udc00x\ud800\u0041")"},
           {R"({"id":1,"result":"\ud83d\ude00"})", R"("\ud83d\ude00")"},
           {R"({"id":1,"result":{ "a" : [ 1e400 , "\ud800" ] , "b" : 2.50 }})",
            R"({"a":[1e400,"\ud800"],"b":2.50})"},
           // Members we do not read may hold anything valid.
           {R"({"big":1e400,"id":1,"s":"\udfff","result":true,"n":[99999999999999999999]})",
            "true"},
           {R"({"id":1,"result":"ok","error":null,"x":{"\ud800":-0.0e-999}})", R"("ok")"},
       }) {
    Reply reply = Parse(c.frame);
    EXPECT_EQ(reply.kind, Kind::kResult) << c.frame << ": " << reply.detail;
    EXPECT_EQ(reply.id, 1) << c.frame;
    EXPECT_EQ(reply.result, c.result) << c.frame;
  }
}

TEST_F(ReplyParserTest, ErrorDataIsKeptRawAndMessageSurrogatesAreReplaced) {
  Reply reply =
      Parse(R"({"id":3,"error":{"code":-32000,"message":"bad \ud800 \ud83d\ude00 \u00e9","data":)"
            R"({"big": 1e400, "s":"\udc00"}}})");
  ASSERT_EQ(reply.kind, Kind::kError) << reply.detail;
  EXPECT_EQ(reply.id, 3);
  EXPECT_EQ(reply.error_code, -32000);
  // A lone surrogate cannot be UTF-8 (gRPC strings must be): U+FFFD stands in for it.
  EXPECT_EQ(reply.error_message, "bad \xef\xbf\xbd \xf0\x9f\x98\x80 \xc3\xa9");
  EXPECT_EQ(reply.error_data, R"({"big":1e400,"s":"\udc00"})");
}

TEST_F(ReplyParserTest, ErrorCodeBeyondSixtyFourBitsIsBadReplyForThatId) {
  Reply reply = Parse(R"({"id":4,"error":{"code":99999999999999999999,"message":"m"}})");
  EXPECT_EQ(reply.kind, Kind::kBadReply);
  EXPECT_EQ(reply.id, 4);
  EXPECT_EQ(reply.detail, "error \"code\" is out of range");
  reply = Parse(R"({"id":4,"error":{"code":1e400,"message":"m"}})");
  EXPECT_EQ(reply.kind, Kind::kBadReply);
  EXPECT_EQ(reply.detail, "error \"code\" is not an integer");
}

TEST_F(ReplyParserTest, MemberNamesAreComparedUnescaped) {
  Reply reply = Parse(R"({"\u0069d":5,"r\u0065sult":[1]})");
  EXPECT_EQ(reply.kind, Kind::kResult) << reply.detail;
  EXPECT_EQ(reply.id, 5);
  EXPECT_EQ(reply.result, "[1]");
  // The first of a duplicated member counts.
  reply = Parse(R"({"id":6,"id":7,"result":1,"result":2})");
  EXPECT_EQ(reply.id, 6);
  EXPECT_EQ(reply.result, "1");
}

// Not JSON by RFC 8259, though each reads as "a token": the stream is unusable.
TEST_F(ReplyParserTest, MalformedTokensAreInvalid) {
  for (const char* frame : {
           R"({"id":1,"result":01})",
           R"({"id":1,"result":-})",
           R"({"id":1,"result":1.})",
           R"({"id":1,"result":.5})",
           R"({"id":1,"result":+1})",
           R"({"id":1,"result":1e})",
           R"({"id":1,"result":1e+})",
           R"({"id":1,"result":0x10})",
           R"({"id":1,"result":NaN})",
           R"({"id":1,"result":Infinity})",
           R"({"id":1,"result":-Infinity})",
           R"({"id":1,"result":tru})",
           R"({"id":1,"result":truex})",
           R"({"id":1,"result":nul})",
           R"({"id":1,"result":"\x"})",
           R"({"id":1,"result":"\u12"})",
           R"({"id":1,"result":"\u12g4"})",
           R"({"id":1,"result":'s'})",
           R"({"\x":1,"id":1,"result":1})",
           R"({"id":01,"result":1})",
           R"({"id":1,"error":{"code":01,"message":"m"}})",
           R"({"id":1,"error":{"code":1,"message":"\q"}})",
           R"({"id":1,"ignored":[1,2,tru],"result":1})",
           R"({"id":1,"result":[1,]})",
           R"({"id":1,"result":{"a" 1}})",
           R"({"id":1,"result":{"a":}})",
           R"({"id":1,"result":1,})",
           R"({"id":1 "result":1})",
           R"({"id":1,"result":{"a":1}}})",
           R"({"id":1,"result":1} x)",
           R"([1,2,tru])",
           // simdjson on demand skips unread values by counting brackets: found by comparing
           // with the DOM on random mutations.
           R"({"id":"error":{"code":-32000,"message":"m","data":[{}]}})",
           R"({"id":2,"error":"code":-32000,"message":"m","data":[]}})",
           R"({"id":2,"or":"code":-32000,"message":"m"})",
           R"(["i":3,"result":"x"},{"id":4}])",
           R"({"id":1,"result":[1:2]})",
           R"({"id":1,"result":{"a":1:2}})",
           "1.",
           "\"\\x\"",
           "nul",
       }) {
    Reply reply = Parse(frame);
    EXPECT_EQ(reply.kind, Kind::kInvalid)
        << frame << " read as " << static_cast<int>(reply.kind) << " " << reply.detail;
    EXPECT_THAT(reply.detail, StartsWith("invalid JSON: ")) << frame;
  }
}

TEST_F(ReplyParserTest, NestingDeeperThanTheLimitIsInvalid) {
  const std::string ok =
      R"({"id":1,"result":)" + std::string(1000, '[') + std::string(1000, ']') + "}";
  EXPECT_EQ(Parse(ok).kind, Kind::kResult);
  const std::string deep =
      R"({"id":1,"result":)" + std::string(5000, '[') + std::string(5000, ']') + "}";
  EXPECT_EQ(Parse(deep).kind, Kind::kInvalid);
}

// Every frame simdjson's DOM accepts must be accepted, and every frame it refuses for a reason
// other than converting a number or string (NUMBER_ERROR, STRING_ERROR: the cases this parser
// now accepts when they are grammatical) must be refused: mutations of valid replies, truncated
// and with single bytes replaced, compared with the DOM as the oracle.
TEST_F(ReplyParserTest, AgreesWithSimdjsonDomOnEverythingButNumberAndStringConversion) {
  const std::vector<std::string> seeds = {
      R"({"jsonrpc":"2.0","id":1,"result":{"a":[1,2.5,-3e2,true,false,null,"s\n"]}})",
      R"({"id":2,"error":{"code":-32000,"message":"m \"q\" \u00e9","data":[{}]}})",
      "{ \"id\" : 3 ,\n \"result\" : [ ] , \"x\" : { \"y\" : \"\\\\\" } }",
  };
  const std::string replacements = "{}[]\",:0123456789-+.eEtrufalsn \\/x\x01\xff";
  simdjson::dom::parser dom;
  int compared = 0;
  auto compare = [&](const std::string& frame) {
    simdjson::dom::element root;
    simdjson::error_code error = dom.parse(frame).get(root);
    if (error == simdjson::NUMBER_ERROR || error == simdjson::STRING_ERROR) return;
    Reply reply = Parse(frame);
    ++compared;
    if (error == simdjson::SUCCESS) {
      EXPECT_NE(reply.kind, Kind::kInvalid) << frame << ": " << reply.detail;
    } else {
      EXPECT_EQ(reply.kind, Kind::kInvalid)
          << frame << " (simdjson: " << simdjson::error_message(error) << ")";
    }
  };
  for (const std::string& seed : seeds) {
    for (size_t len = 0; len <= seed.size(); ++len) compare(seed.substr(0, len));
    for (size_t i = 0; i < seed.size(); ++i) {
      for (char c : replacements) {
        std::string mutated = seed;
        mutated[i] = c;
        compare(mutated);
        mutated.insert(i, 1, c);
        compare(mutated);
      }
    }
  }
  EXPECT_GT(compared, 5000);
}

// The connection's own path: a stream of such replies through ReplyFramer, split at every byte,
// each frame parsed. Nothing is invalid, so nothing would break the connection.
TEST_F(ReplyParserTest, FramedStreamOfUnusualRepliesSplitAtEveryByteNeverBreaks) {
  const std::string stream =
      R"({"jsonrpc":"2.0","id":1,"result":1e400})"
      "\n"
      R"({"id":18446744073709551616,"result":"late"} )"
      R"({"id":2,"result":["\ud800",-9223372036854775809]})"
      "\r\n"
      R"({"id":3,"error":{"code":7,"message":"\udc00","data":18446744073709551616}})";
  for (size_t split = 0; split <= stream.size(); ++split) {
    ReplyFramer framer;
    std::vector<Reply> replies;
    std::string frame;
    for (absl::string_view piece :
         {absl::string_view(stream).substr(0, split), absl::string_view(stream).substr(split)}) {
      framer.Append(piece);
      while (framer.Next(&frame)) replies.push_back(Parse(frame));
    }
    ASSERT_TRUE(framer.status().ok()) << framer.status();
    ASSERT_EQ(replies.size(), 4u) << "split at " << split;
    EXPECT_EQ(replies[0].kind, Kind::kResult);
    EXPECT_EQ(replies[0].result, "1e400");
    EXPECT_EQ(replies[1].kind, Kind::kNoId);
    EXPECT_EQ(replies[2].kind, Kind::kResult);
    EXPECT_EQ(replies[2].id, 2);
    EXPECT_EQ(replies[2].result, R"(["\ud800",-9223372036854775809])");
    EXPECT_EQ(replies[3].kind, Kind::kError);
    EXPECT_EQ(replies[3].error_message, "\xef\xbf\xbd");
    EXPECT_EQ(replies[3].error_data, "18446744073709551616");
  }
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
