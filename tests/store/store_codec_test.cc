#include "server/store/store_codec.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/store/store_test_listener.h"

namespace eventbus::store {
namespace {

using ::testing::HasSubstr;

const absl::Time kCreate = absl::FromUnixNanos(1'700'000'000'123'456'789);

TEST(StoreCodecTest, JsonHasAFixedVersionedShape) {
  auto sub = MakeSubscription("0123456789abcdef", "E_X", "tcp:h:1/m", kCreate,
                              kCreate + absl::Seconds(10), "opensips_event");
  EXPECT_EQ(EncodeSubscriptionJson(*sub),
            R"({"v":1,"id":"0123456789abcdef","event":"E_X","socket":"tcp:h:1/m",)"
            R"("create_time_us":1700000000123456,"expire_time_us":1700000010123456,)"
            R"("event_param":"opensips_event"})");
}

TEST(StoreCodecTest, JsonLeavesOutNeverExpiringAndUnsetEventParam) {
  auto sub = MakeSubscription("id", "E", "tcp:h:1", kCreate);
  EXPECT_EQ(
      EncodeSubscriptionJson(*sub),
      R"({"v":1,"id":"id","event":"E","socket":"tcp:h:1","create_time_us":1700000000123456})");
}

TEST(StoreCodecTest, JsonCarriesANamedOwnerLast) {
  auto sub = OwnedBy(MakeSubscription("id", "E", "tcp:h:1", kCreate), "svc \"billing\"");
  EXPECT_EQ(EncodeSubscriptionJson(*sub),
            R"({"v":1,"id":"id","event":"E","socket":"tcp:h:1","create_time_us":1700000000123456,)"
            R"("owner":"svc \"billing\""})");
}

TEST(StoreCodecTest, JsonRoundTripsEveryField) {
  for (const auto& sub : {
           MakeSubscription("a", "E", "tcp:[::1]:80/x\"y", kCreate, kCreate + absl::Hours(1), ""),
           MakeSubscription("b", "E.F:G-H_1", "virtual:ROUND-ROBIN tcp:a:1 tcp:b:2", kCreate),
           OwnedBy(MakeSubscription("c", "E", "tcp:h:1", kCreate, kCreate + absl::Hours(1), "p"),
                   "CN=client-é"),
       }) {
    absl::StatusOr<registry::SubscriptionPtr> decoded =
        DecodeSubscriptionJson(EncodeSubscriptionJson(*sub));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    ExpectSameSubscription(**decoded, *sub);
  }
}

TEST(StoreCodecTest, StoredFormRoundTripsAtMicrosecondPrecision) {
  auto sub = MakeSubscription("a", "E", "tcp:h:1", kCreate, kCreate + absl::Seconds(5), "p");
  StoredSubscription stored = ToStored(*sub);
  EXPECT_EQ(stored.create_time_us, 1700000000123456);
  EXPECT_EQ(stored.expire_time_us, 1700000005123456);
  absl::StatusOr<registry::SubscriptionPtr> back = FromStored(stored);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameSubscription(**back, *sub);
}

TEST(StoreCodecTest, StoredFormKeepsTheOwner) {
  auto sub = OwnedBy(MakeSubscription("a", "E", "tcp:h:1", kCreate), "alice");
  StoredSubscription stored = ToStored(*sub);
  EXPECT_EQ(stored.owner, "alice");
  absl::StatusOr<registry::SubscriptionPtr> back = FromStored(stored);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ((*back)->owner, "alice");
}

TEST(StoreCodecTest, ARecordWrittenBeforeOwnersWereKeptHasNoOwner) {
  // What a build without owners wrote; a null owner reads the same.
  for (const char* json : {
           R"({"v":1,"id":"a","event":"E","socket":"tcp:h:1","create_time_us":5})",
           R"({"v":1,"id":"a","event":"E","socket":"tcp:h:1","create_time_us":5,"owner":null})",
       }) {
    absl::StatusOr<registry::SubscriptionPtr> decoded = DecodeSubscriptionJson(json);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ((*decoded)->owner, "") << json;
  }
}

TEST(StoreCodecTest, UnknownMembersAreIgnored) {
  absl::StatusOr<registry::SubscriptionPtr> decoded = DecodeSubscriptionJson(
      R"({"v":1,"id":"a","event":"E","socket":"tcp:h:1","create_time_us":5,"later":[1,2]})");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ((*decoded)->create_time, absl::FromUnixMicros(5));
  EXPECT_FALSE((*decoded)->Expires());
  EXPECT_FALSE((*decoded)->event_param.has_value());
}

TEST(StoreCodecTest, FromStoredNormalisesTheSocketAgain) {
  StoredSubscription stored{"a", "E", "tcp:EXAMPLE.com:0080", 0, std::nullopt, std::nullopt, ""};
  absl::StatusOr<registry::SubscriptionPtr> sub = FromStored(stored);
  ASSERT_TRUE(sub.ok()) << sub.status();
  EXPECT_EQ((*sub)->socket, "tcp:example.com:80");
}

TEST(StoreCodecTest, RejectsBadValuesNamingTheProblem) {
  struct Case {
    const char* json;
    const char* error;
  };
  for (const Case& c : {
           Case{"", "invalid JSON"},
           Case{"[1]", "not a JSON object"},
           Case{R"({"id":"a"})", "missing \"v\""},
           Case{R"({"v":2,"id":"a"})", "unsupported version 2"},
           Case{R"({"v":1,"event":"E","socket":"tcp:h:1","create_time_us":1})", "missing \"id\""},
           Case{R"({"v":1,"id":7,"event":"E","socket":"tcp:h:1","create_time_us":1})",
                "\"id\" is not a string"},
           Case{R"({"v":1,"id":"a","event":"E","socket":"tcp:h:1","create_time_us":"1"})",
                "\"create_time_us\" is not an integer"},
           Case{R"({"v":1,"id":"a","event":"E","socket":"tcp:h:1","create_time_us":1,)"
                R"("expire_time_us":1.5})",
                "\"expire_time_us\" is not an integer"},
           Case{R"({"v":1,"id":"a","event":"E","socket":"tcp:h:1","create_time_us":1,)"
                R"("event_param":3})",
                "\"event_param\" is not a string"},
           Case{R"({"v":1,"id":"a","event":"E","socket":"tcp:h:1","create_time_us":1,)"
                R"("owner":["alice"]})",
                "\"owner\" is not a string"},
           Case{R"({"v":1,"id":"a","event":"E","socket":"tcp:h:70000","create_time_us":1})",
                "stored subscription a: socket \"tcp:h:70000\""},
           Case{R"({"v":1,"id":"a","event":"","socket":"tcp:h:1","create_time_us":1})",
                "empty event"},
       }) {
    absl::StatusOr<registry::SubscriptionPtr> sub = DecodeSubscriptionJson(c.json);
    ASSERT_FALSE(sub.ok()) << c.json;
    EXPECT_EQ(sub.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(sub.status().message(), HasSubstr(c.error)) << c.json;
  }
}

}  // namespace
}  // namespace eventbus::store
