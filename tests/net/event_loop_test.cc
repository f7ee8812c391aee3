#include "server/net/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/net/test_sync.h"

namespace eventbus::net {
namespace {

constexpr absl::Duration kWait = absl::Seconds(10);

// Runs a loop on its own thread for the duration of a test.
class LoopThread {
 public:
  LoopThread() {
    auto loop = EventLoop::Create();
    EXPECT_TRUE(loop.ok()) << loop.status();
    loop_ = *std::move(loop);
  }
  ~LoopThread() { Stop(); }
  void Start() {
    thread_ = std::thread([this] { loop_->Run(); });
  }
  void Stop() {
    loop_->Stop();
    if (thread_.joinable()) thread_.join();
  }
  EventLoop* loop() { return loop_.get(); }

 private:
  std::unique_ptr<EventLoop> loop_;
  std::thread thread_;
};

// Runs `fn` on the loop thread and waits for it.
void RunOnLoop(EventLoop* loop, absl::AnyInvocable<void()> fn) {
  TestEvent done;
  loop->Post([&] {
    fn();
    done.Notify();
  });
  ASSERT_TRUE(done.WaitFor(kWait));
}

TEST(EventLoopTest, PostFromManyThreadsKeepsEachThreadsOrder) {
  LoopThread lt;
  lt.Start();
  constexpr int kThreads = 4;
  constexpr int kPerThread = 2000;
  std::vector<std::vector<int>> seen(kThreads);  // loop thread only
  int total = 0;                                 // loop thread only
  TestEvent all_ran;
  std::vector<std::thread> posters;
  for (int t = 0; t < kThreads; ++t) {
    posters.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        lt.loop()->Post([&, t, i] {
          seen[t].push_back(i);
          if (++total == kThreads * kPerThread) all_ran.Notify();
        });
      }
    });
  }
  for (auto& p : posters) p.join();
  ASSERT_TRUE(all_ran.WaitFor(kWait));
  lt.Stop();
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(seen[t].size(), static_cast<size_t>(kPerThread));
    for (int i = 0; i < kPerThread; ++i) ASSERT_EQ(seen[t][i], i) << "thread " << t;
  }
}

TEST(EventLoopTest, TimersFireInOrderNeverEarlyAndWithinAFewMilliseconds) {
  LoopThread lt;
  lt.Start();
  std::vector<std::pair<int, absl::Time>> fired;  // (delay ms, fire time); loop thread only
  TestEvent all_fired;
  absl::Time start;
  RunOnLoop(lt.loop(), [&] {
    start = absl::Now();
    for (int ms : {30, 10, 20, 5}) {
      lt.loop()->RunAt(start + absl::Milliseconds(ms), [&, ms] {
        fired.emplace_back(ms, absl::Now());
        if (fired.size() == 4) all_fired.Notify();
      });
    }
  });
  ASSERT_TRUE(all_fired.WaitFor(kWait));
  std::vector<int> order;
  for (const auto& [ms, when] : fired) {
    order.push_back(ms);
    absl::Duration late = when - (start + absl::Milliseconds(ms));
    EXPECT_GE(late, absl::ZeroDuration()) << ms << " ms timer fired early";
    // Precision is ~1 ms; the margin is for a busy shared test machine.
    EXPECT_LT(late, absl::Milliseconds(25)) << ms << " ms timer fired late";
  }
  EXPECT_EQ(order, (std::vector<int>{5, 10, 20, 30}));
}

TEST(EventLoopTest, TimersWithTheSameInstantFireInCreationOrder) {
  LoopThread lt;
  lt.Start();
  std::vector<int> order;
  TestEvent done;
  RunOnLoop(lt.loop(), [&] {
    absl::Time when = absl::Now() + absl::Milliseconds(2);
    for (int i = 0; i < 5; ++i) lt.loop()->RunAt(when, [&, i] { order.push_back(i); });
    lt.loop()->RunAt(when, [&] { done.Notify(); });
  });
  ASSERT_TRUE(done.WaitFor(kWait));
  lt.Stop();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(EventLoopTest, CancelledTimerNeverRuns) {
  LoopThread lt;
  lt.Start();
  bool cancelled_ran = false;
  TestEvent later_ran;
  RunOnLoop(lt.loop(), [&] {
    EventLoop::TimerId id =
        lt.loop()->RunAfter(absl::Milliseconds(5), [&] { cancelled_ran = true; });
    lt.loop()->RunAfter(absl::Milliseconds(20), [&] { later_ran.Notify(); });
    lt.loop()->Cancel(id);
    lt.loop()->Cancel(id);  // a second cancel is a no-op
  });
  ASSERT_TRUE(later_ran.WaitFor(kWait));
  lt.Stop();
  EXPECT_FALSE(cancelled_ran);
}

TEST(EventLoopTest, TimerCancelledByAnEarlierTimerOfTheSamePassNeverRuns) {
  LoopThread lt;
  lt.Start();
  bool second_ran = false;
  TestEvent third_ran;
  EventLoop::TimerId second = 0;
  RunOnLoop(lt.loop(), [&] {
    absl::Time when = absl::Now() + absl::Milliseconds(2);
    lt.loop()->RunAt(when, [&] { lt.loop()->Cancel(second); });
    second = lt.loop()->RunAt(when, [&] { second_ran = true; });
    lt.loop()->RunAt(when, [&] { third_ran.Notify(); });
  });
  ASSERT_TRUE(third_ran.WaitFor(kWait));
  lt.Stop();
  EXPECT_FALSE(second_ran);
}

TEST(EventLoopTest, PastTimerRunsOnTheNextIteration) {
  LoopThread lt;
  lt.Start();
  TestEvent ran;
  RunOnLoop(lt.loop(),
            [&] { lt.loop()->RunAt(absl::Now() - absl::Seconds(1), [&] { ran.Notify(); }); });
  EXPECT_TRUE(ran.WaitFor(kWait));
}

class CountingHandler : public IoHandler {
 public:
  explicit CountingHandler(int fd) : fd_(fd) {}
  void OnIo(uint32_t events) override {
    uint64_t value;
    if (::read(fd_, &value, sizeof(value)) == sizeof(value)) {
      std::lock_guard<std::mutex> lock(mu_);
      total_ += value;
      last_events_ = events;
      cv_.notify_all();
    }
  }
  bool WaitForTotal(uint64_t total) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(kWait), [&] { return total_ == total; });
  }
  uint32_t last_events() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_events_;
  }

 private:
  const int fd_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t total_ = 0;        // guarded by mu_
  uint32_t last_events_ = 0;  // guarded by mu_
};

TEST(EventLoopTest, ReadableFdCallsItsHandlerUntilRemoved) {
  LoopThread lt;
  lt.Start();
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  CountingHandler handler(fd);
  RunOnLoop(lt.loop(), [&] { lt.loop()->Add(fd, EPOLLIN, &handler); });
  uint64_t three = 3;
  ASSERT_EQ(::write(fd, &three, sizeof(three)), 8);
  ASSERT_TRUE(handler.WaitForTotal(3));
  EXPECT_TRUE(handler.last_events() & EPOLLIN);

  RunOnLoop(lt.loop(), [&] { lt.loop()->Remove(fd); });
  ASSERT_EQ(::write(fd, &three, sizeof(three)), 8);
  // One full loop iteration after the write: a removed fd must not have been delivered.
  RunOnLoop(lt.loop(), [] {});
  RunOnLoop(lt.loop(), [] {});
  lt.Stop();
  EXPECT_TRUE(handler.WaitForTotal(3));
  ::close(fd);
}

TEST(EventLoopTest, RunAtEndOfIterationRunsAfterTheIterationsCallbacks) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  EventLoop* l = loop->get();
  std::vector<std::string> order;
  // Both posted before Run(): they run in the same iteration.
  l->Post([&] {
    order.push_back("a");
    l->RunAtEndOfIteration([&] { order.push_back("end"); });
  });
  l->Post([&] {
    order.push_back("b");
    l->Stop();
  });
  l->Run();
  EXPECT_EQ(order, (std::vector<std::string>{"a", "b", "end"}));
}

TEST(EventLoopTest, CallbacksPostedBeforeStopStillRun) {
  LoopThread lt;
  lt.Start();
  std::atomic<int> ran{0};
  for (int i = 0; i < 100; ++i) lt.loop()->Post([&] { ran.fetch_add(1); });
  lt.Stop();
  EXPECT_EQ(ran.load(), 100);
}

TEST(EventLoopTest, InLoopThreadIsTrueOnlyInsideRun) {
  LoopThread lt;
  EXPECT_FALSE(lt.loop()->InLoopThread());
  lt.Start();
  bool inside = false;
  RunOnLoop(lt.loop(), [&] { inside = lt.loop()->InLoopThread(); });
  EXPECT_TRUE(inside);
  EXPECT_FALSE(lt.loop()->InLoopThread());
}

}  // namespace
}  // namespace eventbus::net
