#include "server/jsonrpc/reply_framer.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eventbus::jsonrpc {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

// Every shape of reply a subscriber may send, including strings that contain brackets, quotes,
// escaped quotes and backslashes that must not confuse the depth count.
const std::vector<std::string>& Corpus() {
  static const auto* corpus = new std::vector<std::string>{
      R"({"jsonrpc":"2.0","id":1,"result":"ok"})",
      R"({"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"no such method","data":[1,{"a":null}]}})",
      R"({"id":3,"result":{"nested":{"deep":[[[]]]}}})",
      R"({"id":4,"result":"}}}]]]{{{[[["})",
      R"({"id":5,"result":"quote \" inside"})",
      R"({"id":6,"result":"backslash at end \\"})",
      R"({"id":7,"result":"\\\" tricky \\\\\"}"})",
      R"({"id":8,"result":"\u007b\/"})",
      "{ \"id\" : 9 ,\n \"result\" : [ 1 , 2 ] }",
      R"([{"id":10,"result":1},{"id":11,"result":2}])",
      R"({})",
      R"([])",
      "{\"id\":12,\"result\":\"h\xc3\xa9llo\"}",
      // Valid JSON that simdjson's DOM cannot convert: the framer must not care.
      R"({"id":13,"result":[1e400,-1e400,18446744073709551616,"\ud800","\udc00\\"]})",
      R"({"id":18446744073709551616,"result":"\ud83d\ude00 \"]}"})",
  };
  return *corpus;
}

std::vector<std::string> Drain(ReplyFramer& framer) {
  std::vector<std::string> frames;
  std::string frame;
  // Bounded: a frame needs at least two bytes.
  for (int i = 0; i < 100000 && framer.Next(&frame); ++i) frames.push_back(frame);
  return frames;
}

TEST(ReplyFramerTest, ReturnsOneCompleteReply) {
  ReplyFramer framer;
  framer.Append(Corpus()[0]);
  EXPECT_THAT(Drain(framer), ElementsAre(Corpus()[0]));
  EXPECT_TRUE(framer.status().ok());
  EXPECT_EQ(framer.buffered(), 0u);
}

TEST(ReplyFramerTest, NeedsMoreBytesForPartialReply) {
  ReplyFramer framer;
  framer.Append(R"({"id":1,"res)");
  std::string frame;
  EXPECT_FALSE(framer.Next(&frame));
  EXPECT_TRUE(framer.status().ok());
  EXPECT_EQ(framer.buffered(), 12u);
  framer.Append(R"(ult":2})");
  ASSERT_TRUE(framer.Next(&frame));
  EXPECT_EQ(frame, R"({"id":1,"result":2})");
  EXPECT_FALSE(framer.Next(&frame));
}

TEST(ReplyFramerTest, FramesEveryReplySplitAtEveryByteOffset) {
  for (const std::string& reply : Corpus()) {
    for (size_t split = 0; split <= reply.size(); ++split) {
      ReplyFramer framer;
      framer.Append(reply.substr(0, split));
      std::vector<std::string> frames = Drain(framer);
      if (split < reply.size()) {
        EXPECT_TRUE(frames.empty()) << reply << " split " << split;
      }
      framer.Append(reply.substr(split));
      std::vector<std::string> rest = Drain(framer);
      frames.insert(frames.end(), rest.begin(), rest.end());
      EXPECT_THAT(frames, ElementsAre(reply)) << "split at " << split;
      EXPECT_TRUE(framer.status().ok());
      EXPECT_EQ(framer.buffered(), 0u);
    }
  }
}

TEST(ReplyFramerTest, FramesWholeCorpusStreamSplitAtEveryPairOfOffsets) {
  std::string stream;
  for (const std::string& reply : Corpus()) absl::StrAppend(&stream, reply, "\r\n");
  // Three pieces: every (a, b) with a <= b. ~10^5 runs over a ~600-byte stream.
  for (size_t a = 0; a <= stream.size(); a += 1) {
    for (size_t b = a; b <= stream.size(); b += 7) {
      ReplyFramer framer;
      std::vector<std::string> frames;
      for (absl::string_view piece :
           {absl::string_view(stream).substr(0, a), absl::string_view(stream).substr(a, b - a),
            absl::string_view(stream).substr(b)}) {
        framer.Append(piece);
        std::vector<std::string> got = Drain(framer);
        frames.insert(frames.end(), got.begin(), got.end());
      }
      ASSERT_THAT(frames, ElementsAreArray(Corpus())) << "split at " << a << "," << b;
      ASSERT_TRUE(framer.status().ok());
    }
  }
}

TEST(ReplyFramerTest, FramesByteByByteStream) {
  std::string stream;
  for (const std::string& reply : Corpus()) stream += reply;
  ReplyFramer framer;
  std::vector<std::string> frames;
  for (char c : stream) {
    framer.Append(absl::string_view(&c, 1));
    std::vector<std::string> got = Drain(framer);
    frames.insert(frames.end(), got.begin(), got.end());
  }
  EXPECT_THAT(frames, ElementsAreArray(Corpus()));
}

TEST(ReplyFramerTest, FramesManyRepliesInOneAppend) {
  std::string stream;
  std::vector<std::string> expected;
  for (int i = 0; i < 1000; ++i) {
    expected.push_back(absl::StrCat(R"({"jsonrpc":"2.0","id":)", i, R"(,"result":"ok"})"));
    stream += expected.back();
  }
  ReplyFramer framer;
  framer.Append(stream);
  EXPECT_THAT(Drain(framer), ElementsAreArray(expected));
  EXPECT_EQ(framer.buffered(), 0u);
}

TEST(ReplyFramerTest, SkipsWhitespaceAndNewlinesBetweenReplies) {
  ReplyFramer framer;
  framer.Append(" \n\r\t{\"id\":1}\n\n  [2]\r\n{\"id\":3}\t \n");
  EXPECT_THAT(Drain(framer), ElementsAre("{\"id\":1}", "[2]", "{\"id\":3}"));
  EXPECT_EQ(framer.buffered(), 0u);
  EXPECT_TRUE(framer.status().ok());
}

TEST(ReplyFramerTest, KeepsWhitespaceInsideReplies) {
  ReplyFramer framer;
  framer.Append("\n{ \"id\" :\n1 }\n");
  EXPECT_THAT(Drain(framer), ElementsAre("{ \"id\" :\n1 }"));
}

TEST(ReplyFramerTest, FailsOnGarbageStartByte) {
  ReplyFramer framer;
  framer.Append("{\"id\":1}\n x{\"id\":2}");
  std::string frame;
  ASSERT_TRUE(framer.Next(&frame));
  EXPECT_FALSE(framer.Next(&frame));
  EXPECT_EQ(framer.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(framer.status().message(), "reply stream: unexpected byte 'x' at offset 10");
  // Stays failed.
  framer.Append("{\"id\":3}");
  EXPECT_FALSE(framer.Next(&frame));
  EXPECT_EQ(framer.status().code(), absl::StatusCode::kDataLoss);
}

TEST(ReplyFramerTest, ReportsStreamOffsetAcrossAppends) {
  ReplyFramer framer;
  std::string frame;
  framer.Append("{\"id\":1}");
  ASSERT_TRUE(framer.Next(&frame));
  framer.Append("{\"id\":2}  ");
  ASSERT_TRUE(framer.Next(&frame));
  EXPECT_FALSE(framer.Next(&frame));
  framer.Append("\x01\x02garbage");
  EXPECT_FALSE(framer.Next(&frame));
  EXPECT_EQ(framer.status().message(), "reply stream: unexpected byte '\\x01' at offset 18");
}

TEST(ReplyFramerTest, RejectsTopLevelScalars) {
  for (absl::string_view input : {"\"str\"", "1", "null", "}", "]"}) {
    ReplyFramer framer;
    framer.Append(input);
    std::string frame;
    EXPECT_FALSE(framer.Next(&frame)) << input;
    EXPECT_EQ(framer.status().code(), absl::StatusCode::kDataLoss) << input;
  }
}

TEST(ReplyFramerTest, FailsWhenReplyExceedsLimitBeforeItCompletes) {
  ReplyFramer framer(16);
  framer.Append("{\"id\":1,\"result\":\"");  // 18 bytes, still open
  std::string frame;
  EXPECT_FALSE(framer.Next(&frame));
  EXPECT_EQ(framer.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(framer.status().message(), "reply stream: reply larger than 16 bytes");
}

TEST(ReplyFramerTest, AcceptsReplyOfExactlyTheLimit) {
  const std::string reply = R"({"id":1,"r":"x"})";
  ASSERT_EQ(reply.size(), 16u);
  ReplyFramer framer(16);
  framer.Append(reply + reply + " \n" + reply);
  EXPECT_THAT(Drain(framer), ElementsAre(reply, reply, reply));
  EXPECT_TRUE(framer.status().ok());

  ReplyFramer small(15);
  small.Append(reply);
  std::string frame;
  EXPECT_FALSE(small.Next(&frame));
  EXPECT_EQ(small.status().code(), absl::StatusCode::kDataLoss);
}

TEST(ReplyFramerTest, LimitAppliesPerFrameNotPerStream) {
  ReplyFramer framer(64);
  std::string stream;
  for (int i = 0; i < 100; ++i) absl::StrAppend(&stream, R"({"id":)", i, R"(,"result":"ok"})");
  for (size_t pos = 0; pos < stream.size(); pos += 10) {
    framer.Append(absl::string_view(stream).substr(pos, 10));
    Drain(framer);
  }
  EXPECT_TRUE(framer.status().ok());
  EXPECT_EQ(framer.buffered(), 0u);
}

TEST(ReplyFramerTest, ResetForgetsPartialFrameAndFailure) {
  ReplyFramer framer;
  framer.Append("{\"id\":1,\"result\":\"unterminated {");
  std::string frame;
  EXPECT_FALSE(framer.Next(&frame));
  framer.Reset();
  EXPECT_EQ(framer.buffered(), 0u);
  framer.Append("{\"id\":2}");
  ASSERT_TRUE(framer.Next(&frame));
  EXPECT_EQ(frame, "{\"id\":2}");

  framer.Append("garbage");
  EXPECT_FALSE(framer.Next(&frame));
  EXPECT_FALSE(framer.status().ok());
  framer.Reset();
  EXPECT_TRUE(framer.status().ok());
  framer.Append("[3]");
  ASSERT_TRUE(framer.Next(&frame));
  EXPECT_EQ(frame, "[3]");
  EXPECT_EQ(framer.buffered(), 0u);
}

TEST(ReplyFramerTest, BufferStaysSmallOverLongStream) {
  ReplyFramer framer(1 << 10);
  const std::string reply = R"({"jsonrpc":"2.0","id":1,"result":"ok"})";
  std::string frame;
  for (int i = 0; i < 100000; ++i) {
    // Straddle every append boundary.
    framer.Append(absl::string_view(reply).substr(0, 5));
    framer.Next(&frame);
    framer.Append(absl::string_view(reply).substr(5));
    ASSERT_TRUE(framer.Next(&frame));
    ASSERT_LE(framer.buffered(), reply.size());
  }
  EXPECT_EQ(framer.buffered(), 0u);
}

}  // namespace
}  // namespace eventbus::jsonrpc
