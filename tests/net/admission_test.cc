// Admission of async notifications (net/admission.h, issue 11 part 6): the flush plan's arithmetic
// on its own, then the rule through a real one-loop writer pool on a fake clock, so that every
// decision is exact: a notification is refused up front (kOverloaded) when its loop would write it
// after its deadline, and what is accepted is written.
#include "server/net/admission.h"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/net/writer_pool.h"
#include "tests/net/loopback_peer.h"
#include "tests/net/test_sync.h"
#include "tests/testing/fake_clock.h"

namespace eventbus::net {
namespace {

constexpr absl::Duration kWait = absl::Seconds(10);

FlushCosts Costs(absl::Duration connect, absl::Duration write, absl::Duration enqueue) {
  FlushCosts costs;
  costs.connect = connect;
  costs.write = write;
  costs.enqueue = enqueue;
  return costs;
}

// --- FlushPlan ---

TEST(FlushPlanTest, OffsetCountsTheConnectsAndWritesAhead) {
  FlushPlan plan(Costs(absl::Milliseconds(100), absl::Milliseconds(10), absl::ZeroDuration()));
  EXPECT_EQ(plan.Offset(/*connect=*/true), absl::Milliseconds(100));
  EXPECT_EQ(plan.Add(/*connect=*/true), absl::Milliseconds(100));
  EXPECT_EQ(plan.Add(/*connect=*/false), absl::Milliseconds(110));
  EXPECT_EQ(plan.Add(/*connect=*/true), absl::Milliseconds(210));
  // Offset() only looks.
  EXPECT_EQ(plan.Offset(/*connect=*/false), absl::Milliseconds(220));
  EXPECT_EQ(plan.Offset(/*connect=*/false), absl::Milliseconds(220));
  EXPECT_EQ(plan.planned_connects(), 2u);
  EXPECT_EQ(plan.planned_writes(), 1u);
  EXPECT_EQ(plan.DescribeAhead(), "3 connections to flush first, 2 to connect");
}

TEST(FlushPlanTest, ClearForgetsThePlanButKeepsTheCosts) {
  FlushPlan plan(Costs(absl::Milliseconds(100), absl::Milliseconds(10), absl::ZeroDuration()));
  plan.Add(true);
  plan.Promise(absl::FromUnixSeconds(100), absl::Milliseconds(100));
  plan.Clear();
  EXPECT_EQ(plan.Offset(true), absl::Milliseconds(100));
  EXPECT_EQ(plan.latest_start(), absl::InfiniteFuture());
  EXPECT_EQ(plan.planned_connects(), 0u);
}

TEST(FlushPlanTest, LatestStartIsTheTightestPromise) {
  FlushPlan plan;
  const absl::Time t = absl::FromUnixSeconds(1000);
  plan.Promise(t + absl::Seconds(1), absl::Milliseconds(300));
  plan.Promise(t + absl::Seconds(2), absl::Milliseconds(400));
  plan.Promise(t + absl::Milliseconds(500), absl::Milliseconds(100));
  EXPECT_EQ(plan.latest_start(), t + absl::Milliseconds(400));
}

TEST(FlushPlanTest, FlushesFirstWhenTheNextBatchWouldStartTheFlushTooLate) {
  FlushPlan plan(Costs(absl::Milliseconds(100), absl::Milliseconds(10), absl::Milliseconds(1)));
  const absl::Time t = absl::FromUnixSeconds(1000);
  // Nothing planned: nothing to flush, however large the batch.
  EXPECT_FALSE(plan.ShouldFlushBefore(t, 1000000));
  // One connection written at +10 ms, due by +60 ms: the flush may start up to +50 ms.
  plan.Promise(t + absl::Milliseconds(60), plan.Add(false));
  ASSERT_EQ(plan.latest_start(), t + absl::Milliseconds(50));
  EXPECT_FALSE(plan.ShouldFlushBefore(t, 50));  // enqueueing 50 ends at +50 ms: still in time
  EXPECT_TRUE(plan.ShouldFlushBefore(t, 51));
  EXPECT_TRUE(plan.ShouldFlushBefore(t + absl::Milliseconds(51), 0));
}

TEST(FlushPlanTest, CostsMoveAnEighthTowardEachSample) {
  FlushPlan plan(Costs(absl::Microseconds(800), absl::Microseconds(80), absl::Microseconds(8)));
  plan.LearnConnect(absl::Microseconds(1600));
  plan.LearnWrite(absl::ZeroDuration());
  plan.LearnEnqueue(absl::Microseconds(16));
  EXPECT_EQ(plan.costs().connect, absl::Microseconds(900));
  EXPECT_EQ(plan.costs().write, absl::Microseconds(70));
  EXPECT_EQ(plan.costs().enqueue, absl::Microseconds(9));
  // A clock that stepped back gives a negative sample: taken as zero.
  plan.LearnWrite(-absl::Seconds(1));
  EXPECT_GE(plan.costs().write, absl::ZeroDuration());
}

// --- Through a writer pool on a fake clock ---

// Collects outcomes from whatever thread completes them.
class Outcomes {
 public:
  OutcomeCallback Callback(int index) {
    std::lock_guard<std::mutex> lock(mu_);
    if (static_cast<int>(slots_.size()) <= index) slots_.resize(index + 1);
    return [this, index](Outcome outcome) {
      std::lock_guard<std::mutex> lock(mu_);
      slots_[index] = std::move(outcome);
      ++completed_;
      cv_.notify_all();
    };
  }
  bool WaitFor(int count) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(kWait),
                        [&] { return completed_ >= count; });
  }
  // The outcome of message `index`; kQueued while it has none.
  Outcome Get(int index) {
    std::lock_guard<std::mutex> lock(mu_);
    if (slots_[index].has_value()) return *slots_[index];
    Outcome pending;
    pending.code = DeliveryCode::kQueued;
    return pending;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::optional<Outcome>> slots_;  // guarded by mu_
  int completed_ = 0;                          // guarded by mu_
};

std::shared_ptr<const std::string> Body() {
  return std::make_shared<const std::string>(R"("jsonrpc":"2.0","method":"E"})");
}

class AdmissionPoolTest : public ::testing::Test {
 protected:
  // One loop, so that every target shares one flush plan; costs fixed by the test. The fake clock
  // stands still unless the test moves it, so the costs the loop measures are zero: each test
  // checks the decisions of its first batches, made with the costs it set. Costs and budgets are
  // seconds: the connections' own deadline timers run on the real clock (the fake one starts at
  // the real time), and nothing accepted may expire there however slow the machine (TSan).
  void StartPool(FlushCosts costs) {
    PoolOptions options;
    options.num_loops = 1;
    options.initial_flush_costs = costs;
    options.clock = &clock_;
    auto pool = WriterPool::Create(options);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = std::move(*pool);
  }
  void TearDown() override {
    if (pool_ != nullptr) pool_->Shutdown();
  }

  // A peer that answers requests (sync) and takes notifications.
  LoopbackPeer* NewPeer() {
    peers_.push_back(LoopbackPeer::Start({}, [](int, const std::string& message) {
      const int64_t id = LoopbackPeer::IdOf(message);
      return id == 0 ? std::string()
                     : absl::StrCat(R"({"jsonrpc":"2.0","id":)", id, R"(,"result":true})");
    }));
    return peers_.back().get();
  }

  Request Notify(const LoopbackPeer* peer, absl::Duration budget, OutcomeCallback done) {
    Request r;
    r.target.host = "127.0.0.1";
    r.target.port = peer->port();
    r.body = Body();
    r.deadline = clock_.Now() + budget;
    r.done = std::move(done);
    return r;
  }

  // Connects to `peer` with one request, answered before this returns: by then the loop has
  // finished the flush that wrote it (the answer is read in a later iteration), so the next
  // Submit does not find it busy.
  void Warm(LoopbackPeer* peer) {
    Outcomes warm;
    std::vector<Request> batch;
    batch.push_back(Notify(peer, absl::Hours(1), warm.Callback(0)));
    batch.back().expect_reply = true;
    pool_->Submit(std::move(batch));
    ASSERT_TRUE(warm.WaitFor(1));
    ASSERT_EQ(warm.Get(0).code, DeliveryCode::kOk) << warm.Get(0).detail;
  }

  testing::FakeClock clock_{absl::Now()};
  std::vector<std::unique_ptr<LoopbackPeer>> peers_;
  std::unique_ptr<WriterPool> pool_;
};

TEST_F(AdmissionPoolTest, RefusesNewTargetsWhoseConnectsAheadPassTheDeadline) {
  StartPool(Costs(absl::Seconds(10), absl::Seconds(1), absl::ZeroDuration()));
  // Five new targets in one batch, due within 25 s: connected and written at +10 s, +20 s, and the
  // third would be at +30 s (refused ones add nothing to the plan).
  std::vector<LoopbackPeer*> peers;
  Outcomes outcomes;
  std::vector<Request> batch;
  for (int i = 0; i < 5; ++i) {
    peers.push_back(NewPeer());
    batch.push_back(Notify(peers.back(), absl::Seconds(25), outcomes.Callback(i)));
  }
  TestEvent enqueued;
  pool_->Submit(std::move(batch), [&] { enqueued.Notify(); });
  ASSERT_TRUE(enqueued.WaitFor(kWait));
  // The refusals come with the batch, before the answer could go out.
  for (int i = 2; i < 5; ++i) {
    Outcome o = outcomes.Get(i);
    EXPECT_EQ(o.code, DeliveryCode::kOverloaded) << i;
    EXPECT_EQ(o.detail,
              "not queued: the writer loop would write it in 30s, with 25s left (2 connections "
              "to flush first, 2 to connect)");
  }
  ASSERT_TRUE(outcomes.WaitFor(5));
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(outcomes.Get(i).code, DeliveryCode::kOk) << i << " " << outcomes.Get(i).detail;
    EXPECT_TRUE(peers[i]->WaitForMessages(1, kWait));
  }
  // Nothing was opened for the refused ones.
  for (int i = 2; i < 5; ++i) {
    EXPECT_FALSE(pool_->Stats(absl::StrCat("127.0.0.1:", peers[i]->port())).has_value()) << i;
    EXPECT_EQ(peers[i]->connections(), 0) << i;
  }
}

TEST_F(AdmissionPoolTest, AMessageForAConnectionAlreadyPlannedRidesAlong) {
  StartPool(Costs(absl::Seconds(10), absl::Seconds(1), absl::ZeroDuration()));
  LoopbackPeer* first = NewPeer();
  LoopbackPeer* second = NewPeer();
  Outcomes outcomes;
  std::vector<Request> batch;
  // `first` is flushed at +10 s: all three of its messages share that write; `second` would be
  // at +20 s, past 15 s.
  for (int i = 0; i < 3; ++i) {
    batch.push_back(Notify(first, absl::Seconds(15), outcomes.Callback(i)));
  }
  batch.push_back(Notify(second, absl::Seconds(15), outcomes.Callback(3)));
  pool_->Submit(std::move(batch));
  ASSERT_TRUE(outcomes.WaitFor(4));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(outcomes.Get(i).code, DeliveryCode::kOk) << i;
  EXPECT_EQ(outcomes.Get(3).code, DeliveryCode::kOverloaded);
  EXPECT_TRUE(first->WaitForMessages(3, kWait));
}

TEST_F(AdmissionPoolTest, ConnectedTargetsCostAWriteEach) {
  StartPool(Costs(absl::Seconds(100), absl::Seconds(10), absl::ZeroDuration()));
  std::vector<LoopbackPeer*> peers;
  for (int i = 0; i < 4; ++i) {
    peers.push_back(NewPeer());
    Warm(peers.back());
  }
  // Connected: flushed at +10, +20, +30, +40 s; due within 25 s.
  Outcomes outcomes;
  std::vector<Request> batch;
  for (int i = 0; i < 4; ++i) {
    batch.push_back(Notify(peers[i], absl::Seconds(25), outcomes.Callback(i)));
  }
  pool_->Submit(std::move(batch));
  ASSERT_TRUE(outcomes.WaitFor(4));
  EXPECT_EQ(outcomes.Get(0).code, DeliveryCode::kOk);
  EXPECT_EQ(outcomes.Get(1).code, DeliveryCode::kOk);
  EXPECT_EQ(outcomes.Get(2).code, DeliveryCode::kOverloaded);
  EXPECT_EQ(outcomes.Get(3).code, DeliveryCode::kOverloaded);
  // A refusal on a connection is counted there, with the other failures (as QUEUE_FULL is).
  std::optional<TargetStats> stats = pool_->Stats(absl::StrCat("127.0.0.1:", peers[3]->port()));
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->delivered, 1u);  // the warm-up
  EXPECT_EQ(stats->failed, 1u);
  EXPECT_EQ(stats->expired, 0u);
}

TEST_F(AdmissionPoolTest, RefusesABatchThatWaitedForTheLoopPastItsDeadline) {
  StartPool(Costs(absl::Milliseconds(1), absl::Milliseconds(1), absl::ZeroDuration()));
  LoopbackPeer* peer = NewPeer();
  // Hold the loop (not in a flush): a request's answer is read on the loop, and its callback
  // waits there until released.
  TestEvent holding, release;
  std::vector<Request> hold;
  hold.push_back(Notify(peer, absl::Hours(1), [&](Outcome o) {
    EXPECT_EQ(o.code, DeliveryCode::kOk);
    holding.Notify();
    release.WaitFor(kWait);
  }));
  hold.back().expect_reply = true;
  pool_->Submit(std::move(hold));
  ASSERT_TRUE(holding.WaitFor(kWait));
  // Posted now, run 2 s (of the fake clock) later: past its 1 s.
  Outcomes outcomes;
  std::vector<Request> batch;
  batch.push_back(Notify(peer, absl::Seconds(1), outcomes.Callback(0)));
  pool_->Submit(std::move(batch));
  clock_.Advance(absl::Seconds(2));
  release.Notify();
  ASSERT_TRUE(outcomes.WaitFor(1));
  EXPECT_EQ(outcomes.Get(0).code, DeliveryCode::kOverloaded);
  EXPECT_EQ(outcomes.Get(0).detail,
            "not queued: its deadline passed while it waited 2s for the writer loop");
  EXPECT_EQ(peer->message_count(), 1u);  // the held request only
}

TEST_F(AdmissionPoolTest, SubmitRefusesAtOnceWhatIsDueBeforeItsBusyLoopIsFree) {
  StartPool(Costs(absl::Seconds(100), absl::Seconds(10), absl::ZeroDuration()));
  LoopbackPeer* peer = NewPeer();
  Warm(peer);
  // Hold the loop inside a flush planned to take 10 s: the held notification's callback runs
  // when it is written, and waits there.
  TestEvent holding, release;
  std::vector<Request> hold;
  hold.push_back(Notify(peer, absl::Hours(1), [&](Outcome o) {
    EXPECT_EQ(o.code, DeliveryCode::kOk);
    holding.Notify();
    release.WaitFor(kWait);
  }));
  pool_->Submit(std::move(hold));
  ASSERT_TRUE(holding.WaitFor(kWait));
  // A batch posted now is taken after that flush: due within 5 s, refused before Submit returns,
  // on this thread; due within 20 s, posted, and written by the next flush (+10 s).
  Outcomes outcomes;
  std::vector<Request> batch;
  batch.push_back(Notify(peer, absl::Seconds(5), outcomes.Callback(0)));
  batch.push_back(Notify(peer, absl::Seconds(20), outcomes.Callback(1)));
  pool_->Submit(std::move(batch));
  Outcome refused = outcomes.Get(0);
  EXPECT_EQ(refused.code, DeliveryCode::kOverloaded);
  EXPECT_EQ(refused.detail, "not queued: the writer loop is busy for another 10s, with 5s left");
  EXPECT_EQ(outcomes.Get(1).code, DeliveryCode::kQueued);  // not yet
  release.Notify();
  ASSERT_TRUE(outcomes.WaitFor(2));
  EXPECT_EQ(outcomes.Get(1).code, DeliveryCode::kOk) << outcomes.Get(1).detail;
  EXPECT_TRUE(peer->WaitForMessages(3, kWait));  // warm-up, held, and the one posted
}

TEST_F(AdmissionPoolTest, SyncRequestsAreNeverRefused) {
  StartPool(Costs(absl::Seconds(10), absl::Seconds(10), absl::ZeroDuration()));
  // Due within 5 s, flushed (by the plan) at +10 s.
  auto peer = LoopbackPeer::Start({}, [](int, const std::string& message) {
    return absl::StrCat(R"({"jsonrpc":"2.0","id":)", LoopbackPeer::IdOf(message),
                        R"(,"result":true})");
  });
  ASSERT_NE(peer, nullptr);
  Outcomes outcomes;
  std::vector<Request> batch;
  batch.push_back(Notify(peer.get(), absl::Seconds(5), outcomes.Callback(0)));
  batch.back().expect_reply = true;
  pool_->Submit(std::move(batch));
  ASSERT_TRUE(outcomes.WaitFor(1));
  // Its answer says what happened anyway: admission leaves it to its own deadline.
  EXPECT_EQ(outcomes.Get(0).code, DeliveryCode::kOk) << outcomes.Get(0).detail;
}

}  // namespace
}  // namespace eventbus::net
