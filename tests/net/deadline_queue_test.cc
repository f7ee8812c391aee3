// The per-connection deadline bookkeeping (net/deadline_queue.h) on its own: entries come out
// earliest first whatever order they went in, in-order entries never reach the heap, and dead
// entries are dropped so that the queue stays bounded by its live messages. Deterministic: no
// clock, no loop (the timing through a real connection is in writer_pool_test).
#include "server/net/deadline_queue.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace eventbus::net {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1700000000);

DeadlineEntry At(int64_t ms, uint64_t seq) {
  DeadlineEntry e;
  e.when = kStart + absl::Milliseconds(ms);
  e.seq = seq;
  return e;
}

// What the connection does after each enqueue.
template <typename IsLive>
void MaybeCompact(DeadlineQueue& q, size_t live, IsLive is_live) {
  if (q.TooLarge(live)) q.Compact(live, is_live);
}

std::vector<uint64_t> PopAllSeqs(DeadlineQueue& q, absl::Time now) {
  std::vector<DeadlineEntry> due;
  q.PopDue(now, &due);
  std::vector<uint64_t> seqs;
  for (const DeadlineEntry& e : due) seqs.push_back(e.seq);
  return seqs;
}

TEST(DeadlineQueueTest, InOrderEntriesStayOutOfTheHeapAndComeOutInOrder) {
  DeadlineQueue q;
  for (uint64_t i = 0; i < 1000; ++i) q.Push(At(static_cast<int64_t>(i / 10), i));  // ties too
  EXPECT_EQ(q.size(), 1000u);
  EXPECT_EQ(q.out_of_order(), 0u);
  EXPECT_EQ(q.Earliest(), kStart);
  std::vector<uint64_t> seqs = PopAllSeqs(q, kStart + absl::Milliseconds(49));
  ASSERT_EQ(seqs.size(), 500u);
  for (uint64_t i = 0; i < 500; ++i) ASSERT_EQ(seqs[i], i);
  EXPECT_EQ(q.Earliest(), kStart + absl::Milliseconds(50));
}

TEST(DeadlineQueueTest, ALaterEntryWithAnEarlierDeadlineComesOutFirst) {
  DeadlineQueue q;
  q.Push(At(400, 1));  // a Raise with a 400 ms timeout
  q.Push(At(500, 2));
  q.Push(At(100, 3));  // a later Raise with a shorter timeout
  q.Push(At(600, 4));
  q.Push(At(300, 5));
  EXPECT_EQ(q.out_of_order(), 2u);
  EXPECT_EQ(q.Earliest(), kStart + absl::Milliseconds(100));
  // Not before its time, and exactly at it.
  EXPECT_TRUE(PopAllSeqs(q, kStart + absl::Milliseconds(99)).empty());
  EXPECT_EQ(PopAllSeqs(q, kStart + absl::Milliseconds(100)), (std::vector<uint64_t>{3}));
  EXPECT_EQ(q.Earliest(), kStart + absl::Milliseconds(300));
  EXPECT_EQ(PopAllSeqs(q, kStart + absl::Milliseconds(450)), (std::vector<uint64_t>{5, 1}));
  EXPECT_EQ(PopAllSeqs(q, kStart + absl::Milliseconds(600)), (std::vector<uint64_t>{2, 4}));
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.Earliest(), absl::InfiniteFuture());
}

TEST(DeadlineQueueTest, RandomOrderComesOutSortedAgainstAReference) {
  absl::BitGen rng;
  DeadlineQueue q;
  std::vector<DeadlineEntry> reference;
  uint64_t seq = 0;
  int64_t clock_ms = 0;
  for (int round = 0; round < 200; ++round) {
    // Mostly non-decreasing (the common case), some earlier ones.
    for (int i = 0; i < 20; ++i) {
      int64_t when =
          clock_ms + 1000 +
          (absl::Bernoulli(rng, 0.2) ? -absl::Uniform(rng, 0, 900) : absl::Uniform(rng, 0, 50));
      q.Push(At(when, seq));
      reference.push_back(At(when, seq));
      ++seq;
    }
    clock_ms += absl::Uniform(rng, 0, 40);
    const absl::Time now = kStart + absl::Milliseconds(clock_ms);
    std::vector<DeadlineEntry> due;
    q.PopDue(now, &due);
    std::vector<DeadlineEntry> rest;
    std::vector<DeadlineEntry> due_reference;
    for (const DeadlineEntry& e : reference) {
      if (e.when <= now) {
        due_reference.push_back(e);
      } else {
        rest.push_back(e);
      }
    }
    reference = std::move(rest);
    ASSERT_EQ(due.size(), due_reference.size()) << "round " << round;
    // Earliest first; the same entries.
    for (size_t i = 1; i < due.size(); ++i) ASSERT_LE(due[i - 1].when, due[i].when);
    absl::flat_hash_set<uint64_t> got;
    for (const DeadlineEntry& e : due) got.insert(e.seq);
    for (const DeadlineEntry& e : due_reference) ASSERT_TRUE(got.contains(e.seq)) << e.seq;
    ASSERT_EQ(q.size(), reference.size());
    absl::Time earliest = absl::InfiniteFuture();
    for (const DeadlineEntry& e : reference) earliest = std::min(earliest, e.when);
    ASSERT_EQ(q.Earliest(), earliest);
  }
}

TEST(DeadlineQueueTest, CompletedInOrderEntriesAreDroppedFromTheFrontWithoutAFullPass) {
  DeadlineQueue q;
  // Messages completed in order (written notifications): every seq below `front` is dead.
  uint64_t front = 0;
  int looked_at = 0;
  auto is_live = [&](const DeadlineEntry& e) {
    ++looked_at;
    return e.seq >= front;
  };
  for (uint64_t seq = 0; seq < 100000; ++seq) {
    q.Push(At(static_cast<int64_t>(seq), seq));
    if (seq % 3 == 2) front = seq + 1;  // three queued, then written
    MaybeCompact(q, seq + 1 - front, is_live);
    ASSERT_LE(q.size(), DeadlineQueue::kMinCompactSize + 1);
  }
  // Each dead entry was looked at once, plus one live front per compaction.
  EXPECT_LT(looked_at, 100000 + 100000 / 60);
  EXPECT_EQ(q.out_of_order(), 0u);
}

TEST(DeadlineQueueTest, DeadEntriesBehindALiveOneAreDroppedAndMemoryIsBounded) {
  DeadlineQueue q;
  // Seq 0 stays live (an outstanding request with a long deadline); everything after it completes
  // at once, and half of it arrives out of order.
  auto is_live = [](const DeadlineEntry& e) { return e.seq == 0; };
  q.Push(At(1000000, 0));
  for (uint64_t seq = 1; seq <= 200000; ++seq) {
    const int64_t when = seq % 2 == 0 ? 1000000 + static_cast<int64_t>(seq) : 500;
    q.Push(At(when, seq));
    MaybeCompact(q, 1, is_live);
    ASSERT_LE(q.size(), DeadlineQueue::kMinCompactSize + 1);
  }
  EXPECT_LE(q.capacity(), 2 * DeadlineQueue::kKeepCapacity);
  // What is left is the live entry (and at most kMinCompactSize dead ones, skipped when due).
  std::vector<DeadlineEntry> due;
  q.PopDue(absl::InfiniteFuture(), &due);
  EXPECT_EQ(std::count_if(due.begin(), due.end(), is_live), 1);
}

TEST(DeadlineQueueTest, NothingIsDroppedWhileMostEntriesAreLive) {
  DeadlineQueue q;
  for (uint64_t seq = 0; seq < 1000; ++seq) q.Push(At(1000 - static_cast<int64_t>(seq % 7), seq));
  MaybeCompact(q, 1000, [](const DeadlineEntry&) { return false; });  // 1000 live: no compaction
  EXPECT_EQ(q.size(), 1000u);
  MaybeCompact(q, 200, [](const DeadlineEntry& e) { return e.seq % 5 == 0; });
  EXPECT_EQ(q.size(), 200u);
  std::vector<DeadlineEntry> due;
  q.PopDue(absl::InfiniteFuture(), &due);
  ASSERT_EQ(due.size(), 200u);
  for (size_t i = 0; i < due.size(); ++i) {
    EXPECT_EQ(due[i].seq % 5, 0u);
    if (i > 0) {
      EXPECT_LE(due[i - 1].when, due[i].when);
    }
  }
}

TEST(DeadlineQueueTest, ClearEmptiesAndGivesBackTheMemoryOfABurst) {
  DeadlineQueue q;
  for (uint64_t seq = 0; seq < 100000; ++seq) {
    q.Push(At(static_cast<int64_t>(seq % 2 == 0 ? seq : 100000 - seq), seq));
  }
  EXPECT_GT(q.out_of_order(), 0u);
  EXPECT_GE(q.capacity(), 100000u);
  q.clear();
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.size(), 0u);
  EXPECT_EQ(q.Earliest(), absl::InfiniteFuture());
  // What a small queue needs may stay; the burst's memory goes.
  EXPECT_LE(q.capacity(), DeadlineQueue::kKeepCapacity);
  // Usable again.
  q.Push(At(5, 1));
  q.Push(At(3, 2));
  EXPECT_EQ(PopAllSeqs(q, kStart + absl::Milliseconds(10)), (std::vector<uint64_t>{2, 1}));
}

}  // namespace
}  // namespace eventbus::net
