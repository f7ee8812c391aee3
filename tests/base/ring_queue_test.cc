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
      // Never more than four times what it holds, past the minimum.
      ASSERT_LE(ring.capacity(),
                std::max<size_t>(RingQueue<Counted>::kMinCapacity, 4 * ring.size()));
    }
    std::vector<int> seen;
    ring.ForEach([&](Counted& c) { seen.push_back(*c.value); });
    EXPECT_EQ(seen, std::vector<int>(model.begin(), model.end()));
  }
  EXPECT_EQ(live, 0);
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
