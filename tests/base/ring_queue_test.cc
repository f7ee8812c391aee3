// RingQueue (server/base/ring_queue.h) against std::deque as a model: random pushes and pops
// across growth, wrap-around and shrinking, with an element type that counts its live instances
// (so a leaked or doubly destroyed element shows) and is move-only (as the writer pool's messages).
#include "server/base/ring_queue.h"

#include <deque>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace eventbus::base {
namespace {

int live = 0;

struct Counted {
  explicit Counted(int v) : value(std::make_unique<int>(v)) { ++live; }
  Counted(Counted&& other) noexcept : value(std::move(other.value)) { ++live; }
  Counted& operator=(Counted&&) = delete;
  ~Counted() { --live; }
  std::unique_ptr<int> value;
};

TEST(RingQueueTest, MatchesADequeThroughGrowthWrapAndShrink) {
  live = 0;
  {
    RingQueue<Counted> ring;
    std::deque<int> model;
    std::mt19937 rng(7);
    int next = 0;
    for (int step = 0; step < 20000; ++step) {
      // Phases of mostly pushing, then mostly popping, so the ring grows to hundreds and shrinks.
      const bool filling = (step / 2000) % 2 == 0;
      const bool push = model.empty() || (rng() % 10) < (filling ? 7u : 3u);
      if (push) {
        ring.push_back(Counted(next));
        model.push_back(next++);
      } else {
        ASSERT_EQ(*ring.front().value, model.front());
        ring.pop_front();
        model.pop_front();
      }
      ASSERT_EQ(ring.size(), model.size());
      ASSERT_EQ(live, static_cast<int>(model.size()));
      if (!model.empty()) {
        const size_t i = rng() % model.size();
        ASSERT_EQ(*ring[i].value, model[i]) << "step " << step;
      }
    }
    std::vector<int> seen;
    ring.ForEach([&](Counted& c) { seen.push_back(*c.value); });
    EXPECT_EQ(seen, std::vector<int>(model.begin(), model.end()));
  }
  EXPECT_EQ(live, 0);
}

// A queue that fills to a few dozen and drains at every flush (a busy connection) keeps its ring:
// it neither halves while draining nor doubles again while filling.
TEST(RingQueueTest, RepeatedFillAndDrainKeepsItsCapacity) {
  RingQueue<Counted> ring;
  for (int cycle = 0; cycle < 100; ++cycle) {
    for (int i = 0; i < 48; ++i) ring.push_back(Counted(i));
    ASSERT_EQ(ring.capacity(), 64u) << "cycle " << cycle;
    while (!ring.empty()) ring.pop_front();
    ASSERT_EQ(ring.capacity(), 64u) << "cycle " << cycle;
  }
}

// A burst's memory is given back once the queue has drained a few times holding far less.
TEST(RingQueueTest, ABurstsMemoryIsGivenBackAfterQuietDrains) {
  RingQueue<Counted> ring;
  auto two_in_two_out = [&] {
    ring.push_back(Counted(1));
    ring.push_back(Counted(2));
    ASSERT_EQ(*ring.front().value, 1);
    ring.pop_front();
    ring.pop_front();
  };
  for (int i = 0; i < 10000; ++i) ring.push_back(Counted(i));
  ASSERT_EQ(ring.capacity(), 16384u);
  while (!ring.empty()) ring.pop_front();
  // Draining the burst itself was not quiet: the ring is kept for the next one.
  EXPECT_EQ(ring.capacity(), 16384u);
  // Two at a time from now on: each halving takes kQuietDrains drains.
  for (int cycle = 0; cycle < RingQueue<Counted>::kQuietDrains - 1; ++cycle) two_in_two_out();
  EXPECT_EQ(ring.capacity(), 16384u);
  two_in_two_out();
  EXPECT_EQ(ring.capacity(), 8192u);
  for (int cycle = 0; cycle < 200; ++cycle) two_in_two_out();
  EXPECT_EQ(ring.capacity(), RingQueue<Counted>::kMinCapacity);
  // clear() counts as a drain too.
  for (int i = 0; i < 3; ++i) ring.push_back(Counted(i));
  ring.clear();
  EXPECT_EQ(ring.size(), 0u);
}

TEST(RingQueueTest, MoveTakesTheElementsAndClearDestroysThem) {
  live = 0;
  RingQueue<Counted> a;
  for (int i = 0; i < 10; ++i) a.push_back(Counted(i));
  a.pop_front();
  RingQueue<Counted> b = std::move(a);
  EXPECT_TRUE(a.empty());
  ASSERT_EQ(b.size(), 9u);
  EXPECT_EQ(*b.front().value, 1);
  EXPECT_EQ(*b[8].value, 9);
  EXPECT_EQ(live, 9);
  b.clear();
  EXPECT_EQ(live, 0);
  b.push_back(Counted(42));
  EXPECT_EQ(*b.front().value, 42);
  b.clear();
  EXPECT_EQ(live, 0);
}

}  // namespace
}  // namespace eventbus::base
