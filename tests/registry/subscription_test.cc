#include "server/registry/subscription.h"

#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eventbus::registry {
namespace {

using ::testing::HasSubstr;

TEST(ValidateEventNameTest, AcceptsEveryAllowedCharacter) {
  EXPECT_TRUE(ValidateEventName("E_PIKE_BLOCKED").ok());
  EXPECT_TRUE(ValidateEventName("a.b:c-d_e0123456789XYZ").ok());
  EXPECT_TRUE(ValidateEventName("x").ok());
}

TEST(ValidateEventNameTest, RejectsEmpty) {
  absl::Status status = ValidateEventName("");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "event \"\": empty");
}

TEST(ValidateEventNameTest, RejectsSpaceNamingItsOffset) {
  absl::Status status = ValidateEventName("a b");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "event \"a b\": invalid character ' ' at offset 1");
}

TEST(ValidateEventNameTest, EscapesControlBytesAndQuotesInMessages) {
  EXPECT_EQ(ValidateEventName("ab\n").message(),
            "event \"ab\\n\": invalid character '\\n' at offset 2");
  EXPECT_EQ(ValidateEventName("a\"").message(),
            "event \"a\\\"\": invalid character '\\\"' at offset 1");
}

TEST(ValidateEventNameTest, Accepts128BytesAndRejects129) {
  EXPECT_TRUE(ValidateEventName(std::string(128, 'E')).ok());
  absl::Status status = ValidateEventName(std::string(129, 'E'));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "event \"" + std::string(64, 'E') + "...\": longer than 128 bytes");
}

TEST(ValidateEventNameTest, HonoursACustomMaximum) {
  EXPECT_TRUE(ValidateEventName("abcd", 4).ok());
  EXPECT_THAT(ValidateEventName("abcde", 4).message(), HasSubstr("longer than 4 bytes"));
}

TEST(ValidateEventParamTest, AcceptsOffAndUpTo128BytesOfText) {
  EXPECT_TRUE(ValidateEventParam("").ok());
  EXPECT_TRUE(ValidateEventParam("opensips_event").ok());
  EXPECT_TRUE(ValidateEventParam("with space \"quote\" /\xc3\xa9").ok());
  EXPECT_TRUE(ValidateEventParam(std::string(kMaxEventParamBytes, 'k')).ok());
}

// Regression (issue 7): an event_param had no size limit.
TEST(ValidateEventParamTest, RejectsLongerThan128BytesQuotingOnlyAPrefix) {
  absl::Status status = ValidateEventParam(std::string(3800000, 'k'));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            absl::StrCat("event_param \"", std::string(64, 'k'), "...\": longer than 128 bytes"));
  EXPECT_FALSE(ValidateEventParam(std::string(129, 'k')).ok());
}

TEST(ValidateEventParamTest, RejectsControlCharactersAndInvalidUtf8) {
  EXPECT_EQ(ValidateEventParam("a\tb").message(),
            "event_param \"a\\tb\": control character '\\t' at offset 1");
  EXPECT_EQ(ValidateEventParam("a\x7f").message(),
            "event_param \"a\\x7f\": control character '\\x7f' at offset 1");
  EXPECT_EQ(ValidateEventParam("ab\xff").message(),
            "event_param \"ab\\xff\": invalid UTF-8 at byte 2");
}

TEST(NewSubscriptionIdTest, Is16LowercaseHexDigits) {
  for (int i = 0; i < 100; ++i) {
    std::string id = NewSubscriptionId();
    ASSERT_EQ(id.size(), 16u) << id;
    for (char c : id) {
      EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << id;
    }
  }
}

TEST(NewSubscriptionIdTest, DoesNotRepeat) {
  absl::flat_hash_set<std::string> ids;
  for (int i = 0; i < 10000; ++i) EXPECT_TRUE(ids.insert(NewSubscriptionId()).second);
}

TEST(MayChangeTest, AnAdminMayChangeEverySubscriptionWhoeverOwnsIt) {
  Subscription sub;
  sub.owner = "alice";
  EXPECT_TRUE(MayChange(Actor{"root", true}, sub));
  sub.owner = "";
  EXPECT_TRUE(MayChange(Actor{"root", true}, sub));
  EXPECT_TRUE(MayChange(Actor::Anonymous(), sub));
}

TEST(MayChangeTest, ANonAdminMayChangeOnlyWhatItOwns) {
  Subscription sub;
  sub.owner = "alice";
  EXPECT_TRUE(MayChange(Actor{"alice", false}, sub));
  EXPECT_FALSE(MayChange(Actor{"bob", false}, sub));
  EXPECT_FALSE(MayChange(Actor{"Alice", false}, sub));
  EXPECT_FALSE(MayChange(Actor{"", false}, sub));
}

TEST(MayChangeTest, ASubscriptionWithoutOwnerIsAnAdminsAlone) {
  // Made while authentication was off: no named caller owns it, and an unnamed non-admin caller
  // (one the authentication let through without a name) must not match its empty owner.
  Subscription sub;
  EXPECT_FALSE(MayChange(Actor{"alice", false}, sub));
  EXPECT_FALSE(MayChange(Actor{"", false}, sub));
  EXPECT_TRUE(MayChange(Actor{"", true}, sub));
}

TEST(SubscriptionTest, IsLiveStrictlyBeforeItsExpiry) {
  Subscription sub;
  absl::Time t = absl::FromUnixSeconds(1000);
  sub.expire_time = t;
  EXPECT_TRUE(sub.Expires());
  EXPECT_TRUE(sub.LiveAt(t - absl::Nanoseconds(1)));
  EXPECT_FALSE(sub.LiveAt(t));
  sub.expire_time = absl::InfiniteFuture();
  EXPECT_FALSE(sub.Expires());
  EXPECT_TRUE(sub.LiveAt(t));
}

}  // namespace
}  // namespace eventbus::registry
