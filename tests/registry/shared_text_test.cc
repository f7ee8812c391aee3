#include "server/registry/shared_text.h"

#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "server/registry/subscription.h"

namespace eventbus::registry {
namespace {

TEST(SharedNameTest, ReadsAndComparesLikeAString) {
  SharedName name("E_DIALOG");
  const std::string& as_string = name;
  absl::string_view as_view = name;
  EXPECT_EQ(as_string, "E_DIALOG");
  EXPECT_EQ(as_view, "E_DIALOG");
  EXPECT_EQ(name, "E_DIALOG");
  EXPECT_EQ(name, std::string("E_DIALOG"));
  EXPECT_EQ(name, absl::string_view("E_DIALOG"));
  EXPECT_EQ("E_DIALOG", name);
  EXPECT_NE(name, "E_OTHER");
  EXPECT_LT(name, "F");
  EXPECT_GT(name, SharedName("A"));
  EXPECT_EQ(name.size(), 8u);
  EXPECT_FALSE(name.empty());
  EXPECT_EQ(absl::StrCat(name.str(), "!"), "E_DIALOG!");
  EXPECT_EQ(std::string(name), "E_DIALOG");
  EXPECT_EQ(name.substr(2), "DIALOG");

  SharedName empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty, "");
  EXPECT_EQ(SharedName(""), empty);
}

TEST(SharedNameTest, OneCopyPerDistinctTextReleasedWithItsLastHolder) {
  const size_t before = SharedName::LiveCountForTest();
  {
    std::vector<SharedName> names;
    for (int i = 0; i < 1000; ++i) names.emplace_back(absl::StrCat("shared.test.", i % 10));
    EXPECT_EQ(SharedName::LiveCountForTest(), before + 10);
    // The same text is the same copy.
    EXPECT_EQ(names[0].data(), names[10].data());
    EXPECT_NE(names[0].data(), names[1].data());
    SharedName moved = std::move(names[0]);
    SharedName copied = names[10];
    names.clear();
    EXPECT_EQ(SharedName::LiveCountForTest(), before + 1);
    EXPECT_EQ(moved, copied);
  }
  EXPECT_EQ(SharedName::LiveCountForTest(), before);
}

TEST(SharedNameTest, WorksAsAHashAndOrderedKey) {
  absl::flat_hash_map<SharedName, int> by_name;
  by_name[SharedName("a")] = 1;
  by_name[SharedName("b")] = 2;
  EXPECT_EQ(by_name.at(SharedName("a")), 1);
  std::map<SharedName, int> ordered = {{"b", 2}, {"a", 1}};
  EXPECT_EQ(ordered.begin()->first, "a");
  absl::flat_hash_map<std::string, int> by_string;
  by_string[SharedName("c")] = 3;
  EXPECT_EQ(by_string.count("c"), 1u);
}

// Many threads taking and dropping the same few names: every text stays right, and none is left
// behind (run under TSan and ASan in CI).
TEST(SharedNameTest, ConcurrentHoldersOfTheSameNames) {
  const size_t before = SharedName::LiveCountForTest();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 2000; ++i) {
        const std::string text = absl::StrCat("concurrent.", (i + t) % 3);
        SharedName a(text);
        SharedName b = a;
        EXPECT_EQ(b, text);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(SharedName::LiveCountForTest(), before);
}

TEST(OptionalTextTest, ReadsLikeAnOptionalString) {
  OptionalText none;
  EXPECT_FALSE(none.has_value());
  EXPECT_FALSE(none);
  EXPECT_EQ(none, std::nullopt);
  EXPECT_EQ(none.value_or("x"), "x");
  EXPECT_EQ(std::optional<std::string>(none), std::nullopt);

  OptionalText off;
  off = "";
  EXPECT_TRUE(off.has_value());
  EXPECT_EQ(off, "");
  EXPECT_NE(off, none);

  OptionalText key;
  key = std::optional<std::string>("opensips_event");
  EXPECT_EQ(*key, "opensips_event");
  EXPECT_EQ(key->size(), 14u);
  EXPECT_EQ(key, std::optional<std::string>("opensips_event"));
  OptionalText copy = key;
  EXPECT_EQ(copy, key);
  const std::string fallback = "server";
  const std::string& chosen = key ? *key : fallback;
  EXPECT_EQ(chosen, "opensips_event");
  key = std::nullopt;
  EXPECT_FALSE(key.has_value());
  EXPECT_EQ(*copy, "opensips_event");
}

// What the compact fields buy: the subscription itself, not counting the heap blocks it no longer
// needs (an event name longer than 15 bytes, an owner, an event_param).
TEST(SubscriptionLayoutTest, TheStructStaysCompact) {
  EXPECT_LE(sizeof(Subscription), 160u) << sizeof(Subscription);
}

}  // namespace
}  // namespace eventbus::registry
