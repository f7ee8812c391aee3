#include "server/registry/registry.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eventbus::registry {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

SubscriptionPtr Sub(std::string id, std::string event, std::string socket,
                    absl::Time create_time = kT0, absl::Time expire_time = absl::InfiniteFuture()) {
  auto sub = std::make_shared<Subscription>();
  sub->id = std::move(id);
  sub->event = std::move(event);
  sub->socket = std::move(socket);
  sub->create_time = create_time;
  sub->expire_time = expire_time;
  return sub;
}

std::vector<std::string> Ids(const std::vector<SubscriptionPtr>& subs) {
  std::vector<std::string> ids;
  for (const auto& sub : subs) ids.push_back(sub->id);
  return ids;
}

TEST(RegistryTest, StartsEmpty) {
  Registry registry;
  EXPECT_EQ(registry.size(), 0u);
  EXPECT_THAT(registry.List(), IsEmpty());
  EXPECT_THAT(registry.Events(), IsEmpty());
  EXPECT_EQ(registry.FindById("x"), nullptr);
  EXPECT_EQ(registry.FindByKey("E", "tcp:h:1"), nullptr);
  EXPECT_EQ(registry.NextExpiry(), absl::InfiniteFuture());
}

TEST(RegistryTest, SubscribersIsNeverNull) {
  Registry registry;
  auto list = registry.Subscribers("NOBODY");
  ASSERT_NE(list, nullptr);
  EXPECT_TRUE(list->empty());
  registry.Upsert(Sub("a", "E", "tcp:h:1"));
  registry.Remove("a");
  list = registry.Subscribers("E");
  ASSERT_NE(list, nullptr);
  EXPECT_TRUE(list->empty());
}

TEST(RegistryTest, UpsertedSubscriptionIsFoundByIdKeyAndEvent) {
  Registry registry;
  SubscriptionPtr sub = Sub("a", "E", "tcp:h:1");
  registry.Upsert(sub);
  EXPECT_EQ(registry.FindById("a"), sub);
  EXPECT_EQ(registry.FindByKey("E", "tcp:h:1"), sub);
  EXPECT_EQ(registry.FindByKey("E", "tcp:h:2"), nullptr);
  EXPECT_EQ(registry.FindByKey("F", "tcp:h:1"), nullptr);
  EXPECT_THAT(*registry.Subscribers("E"), ElementsAre(sub));
  EXPECT_EQ(registry.size(), 1u);
  EXPECT_EQ(registry.CountForEvent("E"), 1u);
}

TEST(RegistryTest, UpsertWithSameIdRefreshesInPlace) {
  Registry registry;
  registry.Upsert(Sub("a", "E", "tcp:h:1", kT0, kT0 + absl::Seconds(10)));
  SubscriptionPtr refreshed = Sub("a", "E", "tcp:h:1", kT0, kT0 + absl::Seconds(20));
  registry.Upsert(refreshed);
  EXPECT_EQ(registry.size(), 1u);
  EXPECT_EQ(registry.FindById("a"), refreshed);
  EXPECT_EQ(registry.FindByKey("E", "tcp:h:1"), refreshed);
  EXPECT_THAT(*registry.Subscribers("E"), ElementsAre(refreshed));
  EXPECT_EQ(registry.NextExpiry(), kT0 + absl::Seconds(20));
}

TEST(RegistryTest, UpsertWithSameKeyAndNewIdReplacesTheOldId) {
  Registry registry;
  registry.Upsert(Sub("a", "E", "tcp:h:1"));
  SubscriptionPtr replacement = Sub("b", "E", "tcp:h:1");
  registry.Upsert(replacement);
  EXPECT_EQ(registry.size(), 1u);
  EXPECT_EQ(registry.FindById("a"), nullptr);
  EXPECT_EQ(registry.FindById("b"), replacement);
  EXPECT_EQ(registry.FindByKey("E", "tcp:h:1"), replacement);
  EXPECT_THAT(*registry.Subscribers("E"), ElementsAre(replacement));
}

TEST(RegistryTest, UpsertWithSameIdAndNewKeyMovesIt) {
  Registry registry;
  registry.Upsert(Sub("a", "E", "tcp:h:1"));
  registry.Upsert(Sub("a", "F", "tcp:h:2"));
  EXPECT_EQ(registry.size(), 1u);
  EXPECT_EQ(registry.FindByKey("E", "tcp:h:1"), nullptr);
  EXPECT_NE(registry.FindByKey("F", "tcp:h:2"), nullptr);
  EXPECT_TRUE(registry.Subscribers("E")->empty());
  EXPECT_EQ(registry.Subscribers("F")->size(), 1u);
  ASSERT_EQ(registry.Events().size(), 1u);
  EXPECT_EQ(registry.Events()[0].event, "F");
}

TEST(RegistryTest, UpsertMatchingTwoSubscriptionsReplacesBoth) {
  Registry registry;
  registry.Upsert(Sub("a", "E", "tcp:h:1"));
  registry.Upsert(Sub("b", "E", "tcp:h:2"));
  // Same id as "a", same key as "b".
  registry.Upsert(Sub("a", "E", "tcp:h:2"));
  EXPECT_EQ(registry.size(), 1u);
  EXPECT_EQ(registry.FindById("b"), nullptr);
  EXPECT_EQ(registry.FindByKey("E", "tcp:h:1"), nullptr);
  EXPECT_EQ(registry.FindByKey("E", "tcp:h:2")->id, "a");
  EXPECT_THAT(Ids(*registry.Subscribers("E")), ElementsAre("a"));
}

TEST(RegistryTest, IgnoresNullUpsert) {
  Registry registry;
  registry.Upsert(nullptr);
  EXPECT_EQ(registry.size(), 0u);
}

TEST(RegistryTest, RemoveReturnsTheRemovedSubscriptionThenNull) {
  Registry registry;
  SubscriptionPtr sub = Sub("a", "E", "tcp:h:1", kT0, kT0 + absl::Seconds(5));
  registry.Upsert(sub);
  registry.Upsert(Sub("b", "E", "tcp:h:2"));
  EXPECT_EQ(registry.Remove("a"), sub);
  EXPECT_EQ(registry.Remove("a"), nullptr);
  EXPECT_EQ(registry.FindById("a"), nullptr);
  EXPECT_EQ(registry.FindByKey("E", "tcp:h:1"), nullptr);
  EXPECT_THAT(Ids(*registry.Subscribers("E")), ElementsAre("b"));
  EXPECT_EQ(registry.size(), 1u);
  EXPECT_EQ(registry.NextExpiry(), absl::InfiniteFuture());
}

TEST(RegistryTest, SubscribersAreOrderedByCreateTimeThenId) {
  Registry registry;
  registry.Upsert(Sub("c", "E", "tcp:h:3", kT0 + absl::Seconds(1)));
  registry.Upsert(Sub("b", "E", "tcp:h:2", kT0));
  registry.Upsert(Sub("a", "E", "tcp:h:1", kT0 + absl::Seconds(1)));
  registry.Upsert(Sub("d", "E", "tcp:h:4", kT0 - absl::Seconds(1)));
  EXPECT_THAT(Ids(*registry.Subscribers("E")), ElementsAre("d", "b", "a", "c"));
}

TEST(RegistryTest, SnapshotTakenBeforeAChangeIsUnchangedAfterIt) {
  Registry registry;
  registry.Upsert(Sub("a", "E", "tcp:h:1"));
  registry.Upsert(Sub("b", "E", "tcp:h:2"));
  std::shared_ptr<const SubscriberList> before = registry.Subscribers("E");
  std::vector<SubscriptionPtr> copy = *before;

  registry.Upsert(Sub("c", "E", "tcp:h:3"));
  registry.Remove("a");
  registry.Upsert(Sub("b", "E", "tcp:h:2", kT0, kT0 + absl::Seconds(1)));
  registry.ReplaceAll({});

  EXPECT_EQ(*before, copy);
  EXPECT_THAT(Ids(*before), ElementsAre("a", "b"));
  EXPECT_TRUE(registry.Subscribers("E")->empty());
}

TEST(RegistryTest, ChangingOneEventSharesTheOtherEventsLists) {
  Registry registry;
  registry.Upsert(Sub("a", "E", "tcp:h:1"));
  registry.Upsert(Sub("b", "F", "tcp:h:1"));
  std::shared_ptr<const SubscriberList> e = registry.Subscribers("E");
  std::shared_ptr<const SubscriberList> f = registry.Subscribers("F");
  registry.Upsert(Sub("c", "E", "tcp:h:2"));
  EXPECT_NE(registry.Subscribers("E"), e);
  EXPECT_EQ(registry.Subscribers("F"), f);
}

TEST(RegistryTest, ListIsSortedByEventThenSocket) {
  Registry registry;
  registry.Upsert(Sub("1", "B", "tcp:h:2"));
  registry.Upsert(Sub("2", "A", "tcp:h:9"));
  registry.Upsert(Sub("3", "B", "tcp:h:1"));
  registry.Upsert(Sub("4", "A", "tcp:h:1"));
  EXPECT_THAT(Ids(registry.List()), ElementsAre("4", "2", "3", "1"));
  EXPECT_THAT(Ids(registry.List("B")), ElementsAre("3", "1"));
  EXPECT_THAT(registry.List("C"), IsEmpty());
}

TEST(RegistryTest, EventsCountsSubscribersSortedByName) {
  Registry registry;
  registry.Upsert(Sub("1", "ZED", "tcp:h:1"));
  registry.Upsert(Sub("2", "ALPHA", "tcp:h:1"));
  registry.Upsert(Sub("3", "ALPHA", "tcp:h:2"));
  registry.Upsert(Sub("4", "MID", "tcp:h:1"));
  std::vector<EventCount> events = registry.Events();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].event, "ALPHA");
  EXPECT_EQ(events[0].subscribers, 2u);
  EXPECT_EQ(events[1].event, "MID");
  EXPECT_EQ(events[1].subscribers, 1u);
  EXPECT_EQ(events[2].event, "ZED");
  EXPECT_EQ(events[2].subscribers, 1u);

  registry.Remove("4");
  events = registry.Events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].event, "ZED");
  EXPECT_EQ(registry.CountForEvent("ALPHA"), 2u);
  EXPECT_EQ(registry.CountForEvent("MID"), 0u);
}

TEST(RegistryTest, EventsOwnedByCountsOnlyThatOwnersSubscriptions) {
  Registry registry;
  auto owned = [](std::string id, std::string event, std::string socket, std::string owner) {
    auto sub =
        std::make_shared<Subscription>(*Sub(std::move(id), std::move(event), std::move(socket)));
    sub->owner = std::move(owner);
    return SubscriptionPtr(std::move(sub));
  };
  registry.Upsert(owned("1", "ALPHA", "tcp:h:1", "alice"));
  registry.Upsert(owned("2", "ALPHA", "tcp:h:2", "bob"));
  registry.Upsert(owned("3", "ALPHA", "tcp:h:3", "alice"));
  registry.Upsert(owned("4", "MID", "tcp:h:1", "bob"));
  registry.Upsert(owned("5", "ZED", "tcp:h:1", ""));

  std::vector<EventCount> alice = registry.EventsOwnedBy("alice");
  ASSERT_EQ(alice.size(), 1u);
  EXPECT_EQ(alice[0].event, "ALPHA");
  EXPECT_EQ(alice[0].subscribers, 2u);

  std::vector<EventCount> bob = registry.EventsOwnedBy("bob");
  ASSERT_EQ(bob.size(), 2u);
  EXPECT_EQ(bob[0].event, "ALPHA");
  EXPECT_EQ(bob[0].subscribers, 1u);
  EXPECT_EQ(bob[1].event, "MID");
  EXPECT_EQ(bob[1].subscribers, 1u);

  EXPECT_THAT(registry.EventsOwnedBy("carol"), IsEmpty());
  std::vector<EventCount> unowned = registry.EventsOwnedBy("");
  ASSERT_EQ(unowned.size(), 1u);
  EXPECT_EQ(unowned[0].event, "ZED");
}

TEST(RegistryTest, ReplaceAllReplacesEverythingAndLaterDuplicatesWin) {
  Registry registry;
  registry.Upsert(Sub("old", "E", "tcp:h:1"));
  SubscriptionPtr later = Sub("b", "E", "tcp:h:2", kT0, kT0 + absl::Seconds(3));
  registry.ReplaceAll({Sub("a", "E", "tcp:h:2"), Sub("c", "F", "tcp:h:1"), later, nullptr});
  EXPECT_EQ(registry.size(), 2u);
  EXPECT_EQ(registry.FindById("old"), nullptr);
  EXPECT_EQ(registry.FindById("a"), nullptr);
  EXPECT_EQ(registry.FindByKey("E", "tcp:h:2"), later);
  EXPECT_THAT(Ids(registry.List()), ElementsAre("b", "c"));
  EXPECT_EQ(registry.NextExpiry(), kT0 + absl::Seconds(3));
}

TEST(RegistryTest, NextExpiryIsTheEarliestAndInfiniteWhenNoneExpires) {
  Registry registry;
  registry.Upsert(Sub("never", "E", "tcp:h:1"));
  EXPECT_EQ(registry.NextExpiry(), absl::InfiniteFuture());
  registry.Upsert(Sub("late", "E", "tcp:h:2", kT0, kT0 + absl::Seconds(20)));
  registry.Upsert(Sub("soon", "F", "tcp:h:2", kT0, kT0 + absl::Seconds(10)));
  EXPECT_EQ(registry.NextExpiry(), kT0 + absl::Seconds(10));
  // A refresh moves the expiry: the old instant is forgotten.
  registry.Upsert(Sub("soon", "F", "tcp:h:2", kT0, kT0 + absl::Seconds(30)));
  EXPECT_EQ(registry.NextExpiry(), kT0 + absl::Seconds(20));
  registry.Remove("late");
  EXPECT_EQ(registry.NextExpiry(), kT0 + absl::Seconds(30));
}

TEST(RegistryTest, RemoveExpiredRemovesAtTheExactInstantAndKeepsLaterOnes) {
  Registry registry;
  const absl::Time t = kT0 + absl::Seconds(10);
  registry.Upsert(Sub("at", "E", "tcp:h:1", kT0, t));
  registry.Upsert(Sub("after", "E", "tcp:h:2", kT0, t + absl::Nanoseconds(1)));
  registry.Upsert(Sub("before", "F", "tcp:h:1", kT0, t - absl::Nanoseconds(1)));
  registry.Upsert(Sub("never", "F", "tcp:h:2"));

  EXPECT_THAT(registry.RemoveExpired(t - absl::Nanoseconds(2)), IsEmpty());
  EXPECT_EQ(registry.size(), 4u);

  EXPECT_THAT(Ids(registry.RemoveExpired(t)), ElementsAre("before", "at"));
  EXPECT_EQ(registry.size(), 2u);
  EXPECT_EQ(registry.FindById("at"), nullptr);
  EXPECT_EQ(registry.FindByKey("F", "tcp:h:1"), nullptr);
  EXPECT_EQ(registry.NextExpiry(), t + absl::Nanoseconds(1));

  EXPECT_THAT(Ids(registry.RemoveExpired(t + absl::Nanoseconds(1))), ElementsAre("after"));
  EXPECT_THAT(Ids(registry.List()), ElementsAre("never"));
  EXPECT_THAT(registry.RemoveExpired(absl::InfiniteFuture()), IsEmpty());
}

// Random operations across many events and ids, checked against a plain model: exercises every
// shard and the per-event list rebuilds.
TEST(RegistryTest, AgreesWithASimpleModelOverRandomOperations) {
  Registry registry;
  std::map<std::string, SubscriptionPtr> model;  // by id
  std::mt19937 rng(42);
  auto pick = [&](int n) { return static_cast<int>(rng() % n); };
  for (int step = 0; step < 3000; ++step) {
    int op = pick(10);
    std::string id = absl::StrCat("id", pick(400));
    if (op < 6) {
      SubscriptionPtr sub =
          Sub(id, absl::StrCat("E", pick(20)), absl::StrCat("tcp:h:", pick(30)),
              kT0 + absl::Seconds(pick(50)),
              pick(3) == 0 ? absl::InfiniteFuture() : kT0 + absl::Seconds(100 + pick(100)));
      for (auto it = model.begin(); it != model.end();) {
        bool same = it->first == id ||
                    (it->second->event == sub->event && it->second->socket == sub->socket);
        it = same ? model.erase(it) : std::next(it);
      }
      model[id] = sub;
      registry.Upsert(sub);
    } else if (op < 9) {
      SubscriptionPtr removed = registry.Remove(id);
      auto it = model.find(id);
      ASSERT_EQ(removed, it == model.end() ? nullptr : it->second);
      if (it != model.end()) model.erase(it);
    } else {
      absl::Time now = kT0 + absl::Seconds(100 + pick(30));
      std::vector<std::string> expected;
      for (auto it = model.begin(); it != model.end();) {
        if (it->second->expire_time <= now) {
          expected.push_back(it->first);
          it = model.erase(it);
        } else {
          ++it;
        }
      }
      std::vector<std::string> got = Ids(registry.RemoveExpired(now));
      std::sort(got.begin(), got.end());
      ASSERT_EQ(got, expected);
    }
    ASSERT_EQ(registry.size(), model.size());
  }

  std::vector<SubscriptionPtr> all;
  absl::Time next = absl::InfiniteFuture();
  std::map<std::string, size_t> counts;
  for (const auto& [id, sub] : model) {
    all.push_back(sub);
    next = std::min(next, sub->expire_time);
    ++counts[sub->event];
    EXPECT_EQ(registry.FindById(id), sub);
    EXPECT_EQ(registry.FindByKey(sub->event, sub->socket), sub);
  }
  std::sort(all.begin(), all.end(), [](const SubscriptionPtr& a, const SubscriptionPtr& b) {
    return std::make_pair(a->event, a->socket) < std::make_pair(b->event, b->socket);
  });
  EXPECT_EQ(registry.List(), all);
  EXPECT_EQ(registry.NextExpiry(), next);
  std::vector<EventCount> events = registry.Events();
  ASSERT_EQ(events.size(), counts.size());
  for (const EventCount& count : events) {
    EXPECT_EQ(count.subscribers, counts[count.event]) << count.event;
    const SubscriberList& list = *registry.Subscribers(count.event);
    EXPECT_TRUE(std::is_sorted(
        list.begin(), list.end(), [](const SubscriptionPtr& a, const SubscriptionPtr& b) {
          return std::make_pair(a->create_time, a->id) < std::make_pair(b->create_time, b->id);
        }));
  }
}

// Readers take snapshots while writers change the index; every snapshot must be internally
// consistent. Meant to run under ThreadSanitizer too.
TEST(RegistryTest, ReadersSeeConsistentSnapshotsWhileWritersChangeIt) {
  Registry registry;
  constexpr int kWriters = 2;
  constexpr int kReaders = 2;
  constexpr int kOpsPerWriter = 2000;
  std::atomic<int> writers_left{kWriters};
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < kOpsPerWriter; ++i) {
        std::string id = absl::StrCat("w", w, "-", i % 50);
        if (i % 3 == 2) {
          registry.Remove(id);
        } else {
          registry.Upsert(Sub(id, absl::StrCat("E", i % 5), absl::StrCat("tcp:h", w, ":", i % 50),
                              kT0 + absl::Seconds(i % 7), kT0 + absl::Seconds(i)));
        }
        if (i % 100 == 99) registry.RemoveExpired(kT0 + absl::Seconds(i / 2));
      }
      writers_left.fetch_sub(1);
    });
  }
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&] {
      // Bounded: stops when the writers are done, or after a fixed number of rounds.
      for (int round = 0; round < 1000000 && writers_left.load() > 0; ++round) {
        std::string event = absl::StrCat("E", round % 5);
        std::shared_ptr<const SubscriberList> list = registry.Subscribers(event);
        for (const SubscriptionPtr& sub : *list) {
          if (sub == nullptr || sub->event != event) bad.fetch_add(1);
        }
        if (round % 64 == 0) {
          registry.List();
          registry.Events();
          registry.NextExpiry();
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(bad.load(), 0);
  size_t total = 0;
  for (const EventCount& count : registry.Events()) total += count.subscribers;
  EXPECT_EQ(total, registry.size());
  EXPECT_EQ(registry.List().size(), registry.size());
}

}  // namespace
}  // namespace eventbus::registry
