// The registry at scale (issue 11): SubscriberList's path-copied tree against a vector, the
// registry against a simple model after loads, random writes and batches over 100k
// subscriptions, snapshots that later writes leave alone, exact expiry of 100k subscriptions, and
// a write's cost (pointers copied, counted, not timed) that does not grow with the registry.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/registry/registry.h"
#include "server/registry/subscriber_list.h"

namespace eventbus::registry {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

// Under the sanitizers (ThreadSanitizer is about 10x slower, AddressSanitizer with its malloc a
// few times) the large registries are 5x smaller.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr size_t kScaleDivisor = 5;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
constexpr size_t kScaleDivisor = 5;
#else
constexpr size_t kScaleDivisor = 1;
#endif
#else
constexpr size_t kScaleDivisor = 1;
#endif

SubscriptionPtr Sub(std::string id, std::string event, std::string socket, absl::Time create_time,
                    absl::Time expire_time = absl::InfiniteFuture()) {
  auto sub = std::make_shared<Subscription>();
  sub->id = std::move(id);
  sub->event = std::move(event);
  sub->socket = std::move(socket);
  sub->create_time = create_time;
  sub->expire_time = expire_time;
  return sub;
}

std::vector<SubscriptionPtr> Contents(const SubscriberList& list) {
  return std::vector<SubscriptionPtr>(list.begin(), list.end());
}

// --- SubscriberList -------------------------------------------------------------------------

TEST(SubscriberListTest, EmptyListHasNoEntries) {
  SubscriberList list;
  EXPECT_TRUE(list.empty());
  EXPECT_EQ(list.size(), 0u);
  EXPECT_TRUE(list.begin() == list.end());
  EXPECT_EQ(SubscriberList(std::vector<SubscriptionPtr>{}).size(), 0u);
}

TEST(SubscriberListTest, BuiltFromAVectorIteratesInItsOrder) {
  for (size_t n : {1, 2, 63, 64, 65, 4095, 4096, 4097, 300000}) {
    std::vector<SubscriptionPtr> subs;
    for (size_t i = 0; i < n; ++i) subs.push_back(Sub(absl::StrCat(i), "E", "s", kT0));
    SubscriberList list(subs);
    ASSERT_EQ(list.size(), n);
    EXPECT_EQ(Contents(list), subs) << n;
    EXPECT_EQ(list.at(n - 1), subs[n - 1]);
    EXPECT_EQ(list.front(), subs[0]);
  }
}

// Random inserts, erases and replacements at random positions, each checked against a vector;
// every version kept stays as it was.
TEST(SubscriberListTest, AgreesWithAVectorAndKeepsEveryVersion) {
  std::mt19937 rng(11);
  std::vector<SubscriptionPtr> model;
  for (int i = 0; i < 5000; ++i) model.push_back(Sub(absl::StrCat("b", i), "E", "s", kT0));
  SubscriberList list(model);
  std::vector<std::pair<SubscriberList, std::vector<SubscriptionPtr>>> versions;
  for (int op = 0; op < 20000; ++op) {
    const int kind = rng() % 10;
    if (kind < 4 || model.empty()) {
      size_t pos = rng() % (model.size() + 1);
      SubscriptionPtr sub = Sub(absl::StrCat("n", op), "E", "s", kT0);
      list = list.Inserted(pos, sub);
      model.insert(model.begin() + pos, sub);
    } else if (kind < 9) {
      // Erases outnumber inserts: the list shrinks, merging nodes, down to empty and up again.
      size_t pos = rng() % model.size();
      list = list.Erased(pos);
      model.erase(model.begin() + pos);
    } else {
      size_t pos = rng() % model.size();
      SubscriptionPtr sub = Sub(absl::StrCat("r", op), "E", "s", kT0);
      list = list.Replaced(pos, sub);
      model[pos] = sub;
    }
    ASSERT_EQ(list.size(), model.size());
    if (!model.empty()) {
      size_t pos = rng() % model.size();
      ASSERT_EQ(list.at(pos), model[pos]) << "op " << op;
    }
    if (op % 1000 == 0) {
      ASSERT_EQ(Contents(list), model) << "op " << op;
      versions.emplace_back(list, model);
    }
    if (model.empty()) {
      // Grow it again from nothing.
      for (int i = 0; i < 3000; ++i) {
        SubscriptionPtr sub = Sub(absl::StrCat("g", op, "-", i), "E", "s", kT0);
        size_t pos = rng() % (model.size() + 1);
        list = list.Inserted(pos, sub);
        model.insert(model.begin() + pos, sub);
      }
    }
  }
  EXPECT_EQ(Contents(list), model);
  for (const auto& [old, contents] : versions) EXPECT_EQ(Contents(old), contents);
}

TEST(SubscriberListTest, PartitionPointAndSeekFindBoundsInASortedList) {
  std::vector<SubscriptionPtr> subs;
  // Sockets s00000, s00002, ... (even numbers only).
  for (int i = 0; i < 20000; i += 2) {
    subs.push_back(Sub(absl::StrCat(i), "E", absl::StrFormat("s%05d", i), kT0));
  }
  SubscriberList list(subs);
  for (int probe = -1; probe <= 20001; probe += 7) {
    std::string key = absl::StrFormat("s%05d", probe < 0 ? 0 : probe);
    if (probe < 0) key = "r";
    auto before = [&](const Subscription& sub) { return sub.socket <= key; };  // upper bound
    size_t expected =
        std::partition_point(subs.begin(), subs.end(),
                             [&](const SubscriptionPtr& sub) { return before(*sub); }) -
        subs.begin();
    ASSERT_EQ(list.PartitionPoint(before), expected) << key;
    auto it = list.Seek(before);
    if (expected == subs.size()) {
      EXPECT_TRUE(it == list.end()) << key;
    } else {
      ASSERT_TRUE(it != list.end()) << key;
      EXPECT_EQ(*it, subs[expected]) << key;
      // Iterating on from it reaches the end after exactly the rest.
      size_t rest = 0;
      for (; it != list.end(); ++it) ++rest;
      EXPECT_EQ(rest, subs.size() - expected) << key;
    }
  }
}

// --- Registry at scale ----------------------------------------------------------------------

// The model: subscriptions by id, and the orders the registry must produce, computed the slow way.
class Model {
 public:
  void Upsert(const SubscriptionPtr& sub) {
    Remove(sub->id);
    auto key = by_key_.find({sub->event, sub->socket});
    if (key != by_key_.end()) Remove(key->second->id);
    by_id_[sub->id] = sub;
    by_key_[{sub->event, sub->socket}] = sub;
    expiries_.insert({sub->expire_time, sub->id});
  }
  SubscriptionPtr Remove(const std::string& id) {
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return nullptr;
    SubscriptionPtr sub = it->second;
    by_key_.erase({sub->event, sub->socket});
    expiries_.erase({sub->expire_time, sub->id});
    by_id_.erase(it);
    return sub;
  }
  // The subscriptions that expire by `now`, in (expire_time, id) order.
  std::vector<SubscriptionPtr> DueBy(absl::Time now) const {
    std::vector<SubscriptionPtr> due;
    for (auto it = expiries_.begin(); it != expiries_.end() && it->first <= now; ++it) {
      if (it->first != absl::InfiniteFuture()) due.push_back(by_id_.at(it->second));
    }
    return due;
  }
  size_t size() const { return by_id_.size(); }
  const std::map<std::string, SubscriptionPtr>& by_id() const { return by_id_; }

  // Everything in (event, socket) order.
  std::vector<SubscriptionPtr> List() const {
    std::vector<SubscriptionPtr> all;
    for (const auto& [key, sub] : by_key_) all.push_back(sub);
    return all;
  }
  // One event's subscribers in (create_time, id) order.
  std::vector<SubscriptionPtr> Subscribers(const std::string& event) const {
    std::vector<SubscriptionPtr> subs;
    for (auto it = by_key_.lower_bound({event, ""});
         it != by_key_.end() && it->first.first == event; ++it) {
      subs.push_back(it->second);
    }
    std::sort(subs.begin(), subs.end(), [](const SubscriptionPtr& a, const SubscriptionPtr& b) {
      return std::tie(a->create_time, a->id) < std::tie(b->create_time, b->id);
    });
    return subs;
  }
  std::vector<EventCount> Events() const {
    std::vector<EventCount> events;
    for (const auto& [key, sub] : by_key_) {
      if (events.empty() || events.back().event != key.first) events.push_back({key.first, 0});
      ++events.back().subscribers;
    }
    return events;
  }
  absl::Time NextExpiry() const {
    return expiries_.empty() ? absl::InfiniteFuture() : expiries_.begin()->first;
  }

 private:
  std::set<std::pair<absl::Time, std::string>> expiries_;
  std::map<std::string, SubscriptionPtr> by_id_;
  std::map<std::pair<std::string, std::string>, SubscriptionPtr> by_key_;
};

std::vector<std::string> Names(const std::vector<EventCount>& events) {
  std::vector<std::string> names;
  for (const EventCount& e : events) names.push_back(absl::StrCat(e.event, "=", e.subscribers));
  return names;
}

// Checks everything the registry answers against the model; `events` are the events whose two
// lists are compared in full.
void ExpectAgrees(const Registry& registry, const Model& model,
                  const std::vector<std::string>& events, std::mt19937& rng) {
  ASSERT_EQ(registry.size(), model.size());
  std::vector<SubscriptionPtr> all = model.List();
  ASSERT_EQ(registry.List(), all);
  ASSERT_EQ(Names(registry.Events()), Names(model.Events()));
  ASSERT_EQ(registry.NextExpiry(), model.NextExpiry());
  for (const std::string& event : events) {
    std::shared_ptr<const SubscriberList> list = registry.Subscribers(event);
    ASSERT_EQ(Contents(*list), model.Subscribers(event)) << event;
    ASSERT_EQ(registry.CountForEvent(event), list->size());
  }
  for (int i = 0; i < 50 && !all.empty(); ++i) {
    const SubscriptionPtr& sub = all[rng() % all.size()];
    ASSERT_EQ(registry.FindById(sub->id), sub);
    ASSERT_EQ(registry.FindByKey(sub->event, sub->socket), sub);
  }
  // Pages of a random size, resumed from the last key of each, concatenate to the whole list.
  PageRequest request;
  request.limit = 500 + rng() % 5000;
  std::vector<SubscriptionPtr> paged;
  for (;;) {
    SubscriptionPage page = registry.ListPage("", request);
    paged.insert(paged.end(), page.subscriptions.begin(), page.subscriptions.end());
    if (!page.more) break;
    request.after = PageKey{paged.back()->event, paged.back()->socket};
  }
  ASSERT_EQ(paged, all);
  // And one event's pages.
  if (!events.empty()) {
    const std::string& event = events[0];
    PageRequest one;
    one.limit = 50 + rng() % 700;
    std::vector<SubscriptionPtr> pages;
    for (;;) {
      SubscriptionPage page = registry.ListPage(event, one);
      pages.insert(pages.end(), page.subscriptions.begin(), page.subscriptions.end());
      if (!page.more) break;
      one.after = PageKey{event, pages.back()->socket};
    }
    std::vector<SubscriptionPtr> expected;
    for (const SubscriptionPtr& sub : all) {
      if (sub->event == event) expected.push_back(sub);
    }
    ASSERT_EQ(pages, expected);
  }
}

// 100k subscriptions: 20k in one event "big", the rest over 800 events; sockets and create times
// random, a third without expiry.
class ScaleTest : public ::testing::Test {
 protected:
  SubscriptionPtr Random(const std::string& id) {
    std::string event = rng_() % 5 == 0 ? std::string("big") : absl::StrCat("ev", rng_() % 800);
    std::string socket =
        absl::StrCat("tcp:10.0.", rng_() % 256, ".", rng_() % 256, ":", 1000 + rng_() % 60000);
    absl::Time create = kT0 + absl::Milliseconds(rng_() % 1000000);
    absl::Time expire =
        rng_() % 3 == 0 ? absl::InfiniteFuture() : kT0 + absl::Milliseconds(1 + rng_() % 5000000);
    return Sub(id, std::move(event), std::move(socket), create, expire);
  }

  std::vector<SubscriptionPtr> Load(size_t n) {
    std::vector<SubscriptionPtr> subs;
    for (size_t i = 0; i < n; ++i) subs.push_back(Random(absl::StrFormat("%016x", i)));
    for (const SubscriptionPtr& sub : subs) model_.Upsert(sub);
    registry_.ReplaceAll(subs);
    return subs;
  }

  // A random existing id (the model's map is ordered: pick by rank among a few).
  std::string SomeId() {
    auto it = model_.by_id().lower_bound(absl::StrFormat("%016x", rng_() % next_id_));
    if (it == model_.by_id().end()) it = model_.by_id().begin();
    return it->first;
  }

  std::mt19937 rng_{1100};
  Registry registry_;
  Model model_;
  uint64_t next_id_ = 100000;
};

TEST_F(ScaleTest, AgreesWithAModelAfterALoadRandomWritesAndBatches) {
  // Duplicates in the load: the later one (by id, or by event and socket) wins.
  std::vector<SubscriptionPtr> subs = Load(100000 / kScaleDivisor);
  std::vector<std::string> events = {"big", "ev0", "ev1", "ev799"};
  ExpectAgrees(registry_, model_, events, rng_);

  for (int round = 0; round < 3; ++round) {
    for (int op = 0; op < 1000; ++op) {
      const int kind = rng_() % 6;
      if (kind == 0) {
        SubscriptionPtr sub = Random(absl::StrFormat("%016x", next_id_++));
        registry_.Upsert(sub);
        model_.Upsert(sub);
      } else if (kind == 1) {
        // A refresh: same id, event, socket and create time; a new expiry.
        SubscriptionPtr old = model_.by_id().at(SomeId());
        SubscriptionPtr sub = Sub(old->id, old->event, old->socket, old->create_time,
                                  kT0 + absl::Milliseconds(rng_() % 5000000));
        registry_.Upsert(sub);
        model_.Upsert(sub);
      } else if (kind == 2) {
        // A new id for an existing (event, socket).
        SubscriptionPtr old = model_.by_id().at(SomeId());
        SubscriptionPtr sub = Sub(absl::StrFormat("%016x", next_id_++), old->event, old->socket,
                                  kT0 + absl::Milliseconds(rng_() % 1000000));
        registry_.Upsert(sub);
        model_.Upsert(sub);
      } else if (kind == 3) {
        std::string id = SomeId();
        EXPECT_EQ(registry_.Remove(id), model_.Remove(id));
      } else if (kind == 4) {
        EXPECT_EQ(registry_.Remove("no such id"), nullptr);
      } else {
        // A batch: new ones, refreshes, removals, and the same id changed twice in it.
        std::vector<Registry::Change> batch;
        for (int i = 0, n = 1 + rng_() % 40; i < n; ++i) {
          int what = rng_() % 4;
          if (what == 0) {
            batch.push_back({Random(absl::StrFormat("%016x", next_id_++)), ""});
          } else if (what == 1) {
            SubscriptionPtr old = model_.by_id().at(SomeId());
            batch.push_back({Sub(old->id, old->event, old->socket, old->create_time,
                                 kT0 + absl::Milliseconds(rng_() % 5000000)),
                             ""});
          } else if (what == 2) {
            batch.push_back({nullptr, SomeId()});
          } else if (!batch.empty() && batch.back().upsert != nullptr) {
            // Remove what this batch just added or refreshed, or move it to another socket.
            SubscriptionPtr last = batch.back().upsert;
            if (rng_() % 2 == 0) {
              batch.push_back({nullptr, last->id});
            } else {
              batch.push_back({Sub(last->id, last->event, last->socket + "9", last->create_time,
                                   last->expire_time),
                               ""});
            }
          }
        }
        for (const Registry::Change& change : batch) {
          if (change.upsert != nullptr) {
            model_.Upsert(change.upsert);
          } else {
            model_.Remove(change.remove_id);
          }
        }
        registry_.Apply(std::move(batch));
      }
    }
    ExpectAgrees(registry_, model_, events, rng_);
  }

  // A big batch: a third of "big" removed and as many added, in one write.
  std::vector<Registry::Change> batch;
  std::vector<SubscriptionPtr> big = model_.Subscribers("big");
  for (size_t i = 0; i < big.size(); i += 3) batch.push_back({nullptr, big[i]->id});
  for (size_t i = 0; i < big.size() / 3; ++i) {
    SubscriptionPtr sub = Random(absl::StrFormat("%016x", next_id_++));
    batch.push_back({Sub(sub->id, "big", sub->socket, sub->create_time, sub->expire_time), ""});
  }
  for (const Registry::Change& change : batch) {
    if (change.upsert != nullptr) {
      model_.Upsert(change.upsert);
    } else {
      model_.Remove(change.remove_id);
    }
  }
  registry_.Apply(std::move(batch));
  ExpectAgrees(registry_, model_, events, rng_);

  // A load over a full registry replaces it all.
  model_ = Model();
  Load(30000 / kScaleDivisor);
  ExpectAgrees(registry_, model_, events, rng_);
}

TEST_F(ScaleTest, ALoadKeepsTheLaterOfTwoDuplicatesAsUpsertsInTurnWould) {
  std::vector<SubscriptionPtr> subs;
  for (size_t i = 0; i < 20000 / kScaleDivisor; ++i)
    subs.push_back(Random(absl::StrFormat("%016x", i)));
  // Same id later; same (event, socket) later; and a chain: c shares a's key, then d shares c's
  // id, so a is gone (c replaced it) and so is c (d replaced it).
  subs.push_back(Sub(subs[5]->id, "dup", "tcp:h:1", kT0));
  subs.push_back(Sub("k2", subs[7]->event, subs[7]->socket, kT0));
  subs.push_back(Sub("c", subs[9]->event, subs[9]->socket, kT0));
  subs.push_back(Sub("c", "other", "tcp:h:2", kT0));
  subs.push_back(nullptr);
  Model model;
  Registry sequential;
  for (const SubscriptionPtr& sub : subs) {
    if (sub == nullptr) continue;
    model.Upsert(sub);
    sequential.Upsert(sub);
  }
  registry_.ReplaceAll(subs);
  EXPECT_EQ(registry_.FindById(subs[9]->id), nullptr);
  EXPECT_EQ(registry_.FindById("c")->event, "other");
  EXPECT_EQ(registry_.List(), model.List());
  EXPECT_EQ(sequential.List(), model.List());
  std::vector<std::string> events = {"dup", "other", subs[7]->event, subs[9]->event};
  ExpectAgrees(registry_, model, events, rng_);
}

TEST_F(ScaleTest, ASnapshotIsUnchangedByLaterWrites) {
  Load(50000 / kScaleDivisor);
  std::shared_ptr<const SubscriberList> big = registry_.Subscribers("big");
  std::vector<SubscriptionPtr> big_then = Contents(*big);
  std::vector<SubscriptionPtr> all_then = registry_.List();
  PageRequest request;
  request.limit = 1000;
  SubscriptionPage page = registry_.ListPage("big", request);
  for (int op = 0; op < 2000; ++op) {
    if (op % 2 == 0) {
      registry_.Upsert(Random(absl::StrFormat("%016x", next_id_++)));
    } else {
      registry_.Remove(SomeId());
    }
  }
  registry_.RemoveExpired(kT0 + absl::Seconds(2000));
  EXPECT_EQ(Contents(*big), big_then);
  EXPECT_NE(Contents(*registry_.Subscribers("big")), big_then);
  EXPECT_EQ(page.subscriptions.size(), 1000u);
  for (const SubscriptionPtr& sub : page.subscriptions) EXPECT_EQ(sub->event, "big");
  EXPECT_NE(registry_.List(), all_then);
}

TEST_F(ScaleTest, RemoveExpiredRemovesExactlyThoseDueAtEveryInstant) {
  Load(100000 / kScaleDivisor);
  absl::Time now = kT0;
  for (int step = 0; step < 60; ++step) {
    // Instants on and between expiries: random milliseconds, sometimes exactly the next one.
    absl::Time next = registry_.NextExpiry();
    ASSERT_EQ(next, model_.NextExpiry());
    now = step % 3 == 0 && next != absl::InfiniteFuture()
              ? next
              : now + absl::Milliseconds(rng_() % 80000);
    std::vector<SubscriptionPtr> due = model_.DueBy(now);
    for (const SubscriptionPtr& sub : due) model_.Remove(sub->id);
    ASSERT_EQ(registry_.RemoveExpired(now), due) << "at step " << step;
    // Refreshes move some expiries later (and some earlier than the next one due).
    for (int i = 0; i < 20; ++i) {
      SubscriptionPtr old = model_.by_id().at(SomeId());
      SubscriptionPtr sub = Sub(old->id, old->event, old->socket, old->create_time,
                                now + absl::Milliseconds(1 + rng_() % 100000));
      registry_.Upsert(sub);
      model_.Upsert(sub);
    }
  }
  ASSERT_EQ(registry_.size(), model_.size());
  std::vector<std::string> events = {"big", "ev3"};
  ExpectAgrees(registry_, model_, events, rng_);
}

// What a write copies (pointers: list nodes, shard maps, trie nodes), counted.
struct Copied {
  uint64_t create, refresh, remove;
};

Copied CopiedPerWrite(size_t n, bool one_event) {
  std::vector<SubscriptionPtr> subs;
  auto make = [&](size_t i, absl::Duration expire) {
    return Sub(absl::StrFormat("%016x", i * 0x9E3779B97F4A7C15ull),
               one_event ? std::string("E") : absl::StrCat("E", i % (n / 10)),
               absl::StrCat("tcp:h", i, ":1"), kT0 + absl::Microseconds(i),
               kT0 + absl::Hours(1) + expire + absl::Microseconds(i));
  };
  for (size_t i = 0; i < n; ++i) subs.push_back(make(i, absl::ZeroDuration()));
  Registry registry;
  registry.ReplaceAll(subs);
  constexpr int kWrites = 50;
  Copied copied{};
  uint64_t start = CopiedEntriesForTesting();
  for (int k = 0; k < kWrites; ++k) registry.Upsert(make(n + k, absl::ZeroDuration()));
  copied.create = (CopiedEntriesForTesting() - start) / kWrites;
  start = CopiedEntriesForTesting();
  for (int k = 0; k < kWrites; ++k) registry.Upsert(make(k * 7919 % n, absl::Minutes(5)));
  copied.refresh = (CopiedEntriesForTesting() - start) / kWrites;
  start = CopiedEntriesForTesting();
  for (int k = 0; k < kWrites; ++k) registry.Remove(subs[k * 7919 % n]->id);
  copied.remove = (CopiedEntriesForTesting() - start) / kWrites;
  return copied;
}

TEST(RegistryCostTest, AWriteCopiesAboutTheSameAt2kAnd100kSubscriptions) {
  for (bool one_event : {false, true}) {
    Copied small = CopiedPerWrite(2000, one_event);
    Copied large = CopiedPerWrite(100000 / kScaleDivisor, one_event);
    SCOPED_TRACE(absl::StrCat(one_event ? "one event" : "spread", ": 2k create/refresh/remove ",
                              small.create, "/", small.refresh, "/", small.remove, ", 100k ",
                              large.create, "/", large.refresh, "/", large.remove));
    // A tree one level deeper per 64x, and nothing that grows with n: at most a few thousand
    // pointers, where a copied list or shard would be 100x as many.
    for (uint64_t copied : {large.create, large.refresh, large.remove}) EXPECT_LE(copied, 3000u);
    EXPECT_LE(large.create, 3 * small.create + 300);
    EXPECT_LE(large.refresh, 3 * small.refresh + 300);
    EXPECT_LE(large.remove, 3 * small.remove + 300);
  }
}

TEST(RegistryCostTest, ABatchChangesEachListOnce) {
  std::vector<SubscriptionPtr> subs;
  for (size_t i = 0; i < 100000 / kScaleDivisor; ++i) {
    subs.push_back(Sub(absl::StrFormat("%016x", i), "E", absl::StrCat("tcp:h", i, ":1"),
                       kT0 + absl::Microseconds(i)));
  }
  Registry registry;
  registry.ReplaceAll(subs);
  // 2,000 refreshes in one batch: each list rebuilt once (a merge) rather than 2,000 path
  // copies; far less than one copy of the event's lists per change (200M pointers).
  std::vector<Registry::Change> batch;
  for (size_t i = 0; i < subs.size() / 50; ++i) {
    const SubscriptionPtr& old = subs[i * 37];
    batch.push_back({Sub(old->id, "E", old->socket, old->create_time, kT0 + absl::Hours(2)), ""});
  }
  uint64_t start = CopiedEntriesForTesting();
  registry.Apply(std::move(batch));
  EXPECT_LE(CopiedEntriesForTesting() - start, 500000u);
  EXPECT_EQ(registry.size(), 100000 / kScaleDivisor);
  EXPECT_EQ(registry.NextExpiry(), kT0 + absl::Hours(2));
  EXPECT_EQ(registry.FindById(subs[37]->id)->expire_time, kT0 + absl::Hours(2));
}

}  // namespace
}  // namespace eventbus::registry
