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

TEST(InlineTextTest, ReadsAndComparesLikeAString) {
  InlineText id("0123456789abcdef");
  EXPECT_TRUE(id.is_inline());
  absl::string_view as_view = id;
  std::string as_string = id;
  EXPECT_EQ(as_view, "0123456789abcdef");
  EXPECT_EQ(as_string, "0123456789abcdef");
  EXPECT_EQ(id.size(), 16u);
  EXPECT_STREQ(id.c_str(), "0123456789abcdef");
  EXPECT_EQ(id, "0123456789abcdef");
  EXPECT_EQ(id, std::string("0123456789abcdef"));
  EXPECT_EQ("0123456789abcdef", id);
  EXPECT_NE(id, "0123456789abcdee");
  EXPECT_LT(InlineText("a"), InlineText("b"));
  EXPECT_GT(id, "0");
  EXPECT_EQ(absl::StrCat("id=", absl::string_view(id)), "id=0123456789abcdef");
  EXPECT_EQ(id.substr(10), "abcdef");
  EXPECT_EQ(id[1], '1');
  InlineText empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_STREQ(empty.c_str(), "");
  EXPECT_EQ(empty, "");
}

TEST(InlineTextTest, LongTextGoesToTheHeap) {
  const std::string edge(InlineText::kInlineCapacity, 'x');
  const std::string longer(InlineText::kInlineCapacity + 1, 'y');
  InlineText at_edge(edge);
  InlineText beyond(longer);
  EXPECT_TRUE(at_edge.is_inline());
  EXPECT_FALSE(beyond.is_inline());
  EXPECT_EQ(at_edge, edge);
  EXPECT_EQ(beyond, longer);
  EXPECT_STREQ(beyond.c_str(), longer.c_str());
  EXPECT_EQ(beyond.size(), longer.size());
}

TEST(InlineTextTest, CopiesMovesAndAssignmentsKeepTheText) {
  const std::string longer(40, 'z');
  for (const std::string& text : {std::string("short"), longer}) {
    InlineText a(text);
    InlineText copy(a);
    EXPECT_EQ(copy, text);
    InlineText moved(std::move(copy));
    EXPECT_EQ(moved, text);
    EXPECT_TRUE(copy.empty());  // NOLINT(bugprone-use-after-move): moved-from is "".
    InlineText assigned("other");
    assigned = a;
    EXPECT_EQ(assigned, text);
    assigned = assigned;  // NOLINT: self-assignment keeps the text.
    EXPECT_EQ(assigned, text);
    InlineText move_assigned(longer + "!");
    move_assigned = std::move(assigned);
    EXPECT_EQ(move_assigned, text);
    move_assigned = "back to short";
    EXPECT_EQ(move_assigned, "back to short");
    move_assigned = longer;
    EXPECT_EQ(move_assigned, longer);
  }
}

TEST(InlineTextTest, HashesAsItsText) {
  absl::flat_hash_map<InlineText, int> by_id;
  by_id[InlineText("0123456789abcdef")] = 1;
  EXPECT_EQ(by_id.count(InlineText(std::string("0123456789abcdef"))), 1u);
  EXPECT_EQ(absl::Hash<InlineText>{}(InlineText("abc")),
            absl::Hash<absl::string_view>{}(absl::string_view("abc")));
}

TEST(SubscriptionLayoutTest, TheIdNeedsNoHeapBlock) {
  Subscription sub;
  sub.id = NewSubscriptionId();
  EXPECT_EQ(sub.id.size(), 16u);
  EXPECT_TRUE(sub.id.is_inline());
}

// What the compact fields buy: the subscription itself, not counting the heap blocks it no longer
// needs (an event name longer than 15 bytes, an owner, an event_param, the id, the parsed target
// of a tcp: or tls: socket). The single target, held in place, takes 80 of these bytes; it was a
// separate heap block of 80.
TEST(SubscriptionLayoutTest, TheStructStaysCompact) {
  EXPECT_LE(sizeof(Subscription), 200u) << sizeof(Subscription);
}

}  // namespace
}  // namespace eventbus::registry
