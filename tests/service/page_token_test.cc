#include "server/service/page_token.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eventbus::service {
namespace {

using ::testing::HasSubstr;

PageToken Token(std::string filter, std::string event, std::string socket,
                PageKind kind = PageKind::kSubscriptions) {
  PageToken token;
  token.kind = kind;
  token.filter_event = std::move(filter);
  token.last = {std::move(event), std::move(socket)};
  return token;
}

void ExpectInvalid(absl::string_view text, PageKind kind, absl::string_view why) {
  absl::StatusOr<PageToken> decoded = DecodePageToken(text, kind);
  ASSERT_FALSE(decoded.ok()) << text;
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(decoded.status().message(), HasSubstr("page_token: "));
  EXPECT_THAT(decoded.status().message(), HasSubstr(why)) << text;
}

TEST(PageTokenTest, RoundTripsEveryField) {
  for (const PageToken& token :
       {Token("", "E", "tcp:h:1"), Token("E_PIKE", "E_PIKE", "virtual:FAILOVER tcp:a:1 tls:b:2/m"),
        Token("", "", ""), Token("", "EV", "", PageKind::kEvents),
        Token("", std::string(300, 'e'), std::string(5000, 's'))}) {
    std::string text = EncodePageToken(token);
    // base64url without padding: safe in URLs, JSON and shells.
    EXPECT_EQ(
        text.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        std::string::npos)
        << text;
    absl::StatusOr<PageToken> decoded = DecodePageToken(text, token.kind);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->kind, token.kind);
    EXPECT_EQ(decoded->filter_event, token.filter_event);
    EXPECT_EQ(decoded->last.event, token.last.event);
    EXPECT_EQ(decoded->last.socket, token.last.socket);
  }
}

TEST(PageTokenTest, RefusesTextThatIsNotATokenNamingTheField) {
  ExpectInvalid("not a token!", PageKind::kSubscriptions, "not base64url");
  ExpectInvalid("AAAA", PageKind::kSubscriptions, "truncated");
  ExpectInvalid(std::string(20000, 'A'), PageKind::kSubscriptions, "longer than");
  // Well-formed bytes with a wrong checksum, and random base64url.
  ExpectInvalid(absl::WebSafeBase64Escape(std::string("\x01\x01\x00\x01"
                                                      "E\x00\x00\x00\x00",
                                                      9)),
                PageKind::kSubscriptions, "damaged");
  ExpectInvalid("SGVsbG8sIHdvcmxkIQ", PageKind::kSubscriptions, "damaged");
}

TEST(PageTokenTest, RefusesEveryOneCharacterEditOfAToken) {
  const std::string text = EncodePageToken(Token("E", "E", "tcp:127.0.0.1:8080"));
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  int refused = 0, edits = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    for (char c : {'A', 'z', '0', '_'}) {
      if (text[i] == c) continue;
      std::string edited = text;
      edited[i] = c;
      ++edits;
      refused += DecodePageToken(edited, PageKind::kSubscriptions).ok() ? 0 : 1;
    }
  }
  // The last character carries only some bits of the checksum: an edit of its unused low bits
  // decodes to the same bytes. Every other edit is refused.
  EXPECT_GE(refused, edits - 4);
  // Cut short at every length.
  for (size_t n = 0; n < text.size(); ++n) {
    EXPECT_FALSE(DecodePageToken(text.substr(0, n), PageKind::kSubscriptions).ok()) << n;
  }
}

TEST(PageTokenTest, ATokenOfOneListDoesNotPageTheOther) {
  ExpectInvalid(EncodePageToken(Token("", "E", "", PageKind::kEvents)), PageKind::kSubscriptions,
                "a token of ListEvents, not of ListSubscriptions");
  ExpectInvalid(EncodePageToken(Token("", "E", "tcp:h:1")), PageKind::kEvents,
                "a token of ListSubscriptions, not of ListEvents");
}

TEST(PageTokenTest, PageSizeZeroIsTheDefaultLargerIsClampedNegativeIsRefused) {
  EXPECT_EQ(*ResolvePageSize(0), 1000u);
  EXPECT_EQ(*ResolvePageSize(1), 1u);
  EXPECT_EQ(*ResolvePageSize(10000), 10000u);
  EXPECT_EQ(*ResolvePageSize(10001), 10000u);
  EXPECT_EQ(*ResolvePageSize(2147483647), 10000u);
  absl::StatusOr<size_t> negative = ResolvePageSize(-1);
  ASSERT_FALSE(negative.ok());
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(negative.status().message(), "page_size: -1 is negative (0 = the default, 1000)");
}

}  // namespace
}  // namespace eventbus::service
