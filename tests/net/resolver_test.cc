#include "server/net/resolver.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/net/event_loop.h"
#include "tests/net/test_sync.h"

namespace eventbus::net {
namespace {

constexpr absl::Duration kWait = absl::Seconds(10);

TEST(ParseIpLiteralTest, ConvertsIpv4WithThePort) {
  std::optional<SocketAddress> addr = ParseIpLiteral("127.0.0.1", 8080);
  ASSERT_TRUE(addr.has_value());
  EXPECT_EQ(addr->storage.ss_family, AF_INET);
  EXPECT_EQ(addr->length, sizeof(sockaddr_in));
  EXPECT_EQ(ntohs(reinterpret_cast<const sockaddr_in*>(&addr->storage)->sin_port), 8080);
  EXPECT_EQ(addr->text, "127.0.0.1:8080");
}

TEST(ParseIpLiteralTest, ConvertsIpv6AndBracketsItsText) {
  std::optional<SocketAddress> addr = ParseIpLiteral("::1", 9);
  ASSERT_TRUE(addr.has_value());
  EXPECT_EQ(addr->storage.ss_family, AF_INET6);
  EXPECT_EQ(addr->length, sizeof(sockaddr_in6));
  EXPECT_EQ(addr->text, "[::1]:9");
}

TEST(ParseIpLiteralTest, RejectsNamesAndBracketedIpv6) {
  EXPECT_FALSE(ParseIpLiteral("localhost", 1).has_value());
  EXPECT_FALSE(ParseIpLiteral("[::1]", 1).has_value());
  EXPECT_FALSE(ParseIpLiteral("1.2.3", 1).has_value());
}

TEST(ResolveBlockingTest, ResolvesLocalhostToLoopbackWithThePort) {
  ResolveResult result = ResolveBlocking("localhost", 4242);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_FALSE(result->empty());
  for (const SocketAddress& addr : *result) {
    EXPECT_TRUE(addr.text == "127.0.0.1:4242" || addr.text == "[::1]:4242") << addr.text;
  }
}

TEST(ResolveBlockingTest, UnknownNameIsNotFoundNamingTheHost) {
  ResolveResult result = ResolveBlocking("no-such-host.invalid", 80);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StartsWith(result.status().message(), "resolve \"no-such-host.invalid\": "))
      << result.status();
}

// A lookup function standing in for a DNS server: names listed in `slow` block until
// Release(name) (or Release() for all); every other name answers 192.0.2.1 at once. It counts
// calls per name and the most lookups running at one time. Held by shared_ptr: a resolver thread
// may still be inside it when a test ends.
class FakeDns : public std::enable_shared_from_this<FakeDns> {
 public:
  static std::shared_ptr<FakeDns> Create(std::set<std::string> slow) {
    auto dns = std::make_shared<FakeDns>();
    dns->slow_ = std::move(slow);
    return dns;
  }

  std::function<ResolveResult(const std::string&)> Lookup() {
    return [self = shared_from_this()](const std::string& host) { return self->Run(host); };
  }

  void Release(const std::string& host) {
    std::lock_guard<std::mutex> lock(mu_);
    released_.insert(host);
    cv_.notify_all();
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    release_all_ = true;
    cv_.notify_all();
  }
  int calls(const std::string& host) {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_[host];
  }
  int max_running() {
    std::lock_guard<std::mutex> lock(mu_);
    return max_running_;
  }
  // Waits until `host` has been looked up `n` times (the lookup may still be running).
  bool WaitForCalls(const std::string& host, int n, absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                        [&] { return calls_[host] >= n; });
  }

 private:
  ResolveResult Run(const std::string& host) {
    std::unique_lock<std::mutex> lock(mu_);
    ++calls_[host];
    ++running_;
    max_running_ = std::max(max_running_, running_);
    cv_.notify_all();
    if (slow_.count(host) > 0) {
      cv_.wait(lock, [&] { return release_all_ || released_.count(host) > 0; });
    }
    --running_;
    SocketAddress addr = *ParseIpLiteral("192.0.2.1", 0);
    return std::vector<SocketAddress>{addr};
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> slow_;
  std::set<std::string> released_;    // guarded by mu_
  bool release_all_ = false;          // guarded by mu_
  std::map<std::string, int> calls_;  // guarded by mu_
  int running_ = 0;                   // guarded by mu_
  int max_running_ = 0;               // guarded by mu_
};

// An event loop running on its own thread for the length of a test.
class LoopThread {
 public:
  LoopThread() : loop_(*EventLoop::Create()), thread_([this] { loop_->Run(); }) {}
  ~LoopThread() {
    loop_->Stop();
    thread_.join();
  }
  EventLoop* get() { return loop_.get(); }

 private:
  std::unique_ptr<EventLoop> loop_;
  std::thread thread_;
};

// What one Resolve() call received: thread-safe, waits with a deadline.
class Answer {
 public:
  absl::AnyInvocable<void(ResolveResult)> Callback(EventLoop* loop) {
    return [this, loop](ResolveResult result) {
      std::lock_guard<std::mutex> lock(mu_);
      ++count_;
      on_loop_ = loop->InLoopThread();
      at_ = absl::Now();
      result_ = std::move(result);
      cv_.notify_all();
    };
  }
  bool Wait(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return count_ > 0; });
  }
  int count() {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }
  bool on_loop() {
    std::lock_guard<std::mutex> lock(mu_);
    return on_loop_;
  }
  absl::Time at() {
    std::lock_guard<std::mutex> lock(mu_);
    return at_;
  }
  ResolveResult result() {
    std::lock_guard<std::mutex> lock(mu_);
    return result_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;
  bool on_loop_ = false;
  absl::Time at_;
  ResolveResult result_ = absl::UnknownError("no answer");
};

// Runs one callback on `loop` at `when` and waits for it: every timer due before `when` on that
// loop has run by then (timers run in deadline order).
void WaitForLoopTime(EventLoop* loop, absl::Time when) {
  TestEvent reached;
  loop->Post([&] { loop->RunAt(when, [&] { reached.Notify(); }); });
  ASSERT_TRUE(reached.WaitFor(when - absl::Now() + kWait));
}

ResolverOptions FakeOptions(const std::shared_ptr<FakeDns>& dns, absl::Duration timeout,
                            int max_threads = 32) {
  ResolverOptions options;
  options.timeout = timeout;
  options.max_threads = max_threads;
  options.lookup = dns->Lookup();
  return options;
}

TEST(ResolverTest, DeliversTheResultOnTheRequestingLoop) {
  LoopThread loop;
  Resolver resolver;
  Answer answer;
  resolver.Resolve("localhost", 1, loop.get(), answer.Callback(loop.get()));
  ASSERT_TRUE(answer.Wait(kWait));
  EXPECT_TRUE(answer.on_loop());
  EXPECT_TRUE(answer.result().ok()) << answer.result().status();
}

TEST(ResolverTest, GivesEachRequesterItsOwnPort) {
  auto dns = FakeDns::Create({});
  LoopThread loop;
  Resolver resolver(FakeOptions(dns, kWait));
  Answer a, b;
  resolver.Resolve("name.test", 80, loop.get(), a.Callback(loop.get()));
  resolver.Resolve("name.test", 8080, loop.get(), b.Callback(loop.get()));
  ASSERT_TRUE(a.Wait(kWait));
  ASSERT_TRUE(b.Wait(kWait));
  ASSERT_TRUE(a.result().ok());
  ASSERT_TRUE(b.result().ok());
  EXPECT_EQ((*a.result())[0].text, "192.0.2.1:80");
  EXPECT_EQ((*b.result())[0].text, "192.0.2.1:8080");
}

TEST(ResolverTest, AHangingLookupTimesOutOnTimeOnTheRequestingLoop) {
  auto dns = FakeDns::Create({"slow.test"});
  LoopThread loop;
  constexpr absl::Duration kTimeout = absl::Milliseconds(200);
  Resolver resolver(FakeOptions(dns, kTimeout));
  Answer answer;
  const absl::Time start = absl::Now();
  resolver.Resolve("slow.test", 53, loop.get(), answer.Callback(loop.get()));
  ASSERT_TRUE(answer.Wait(kWait));
  const absl::Duration took = answer.at() - start;
  EXPECT_GE(took, kTimeout);
  EXPECT_LT(took, kTimeout + absl::Seconds(1));
  EXPECT_TRUE(answer.on_loop());
  EXPECT_EQ(answer.result().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(answer.result().status().message(), "resolve \"slow.test\": timed out after 200 ms");

  // The late result is not delivered a second time.
  dns->Release();
  Answer after;
  resolver.Resolve("other.test", 1, loop.get(), after.Callback(loop.get()));
  ASSERT_TRUE(after.Wait(kWait));
  WaitForLoopTime(loop.get(), absl::Now() + absl::Milliseconds(50));
  EXPECT_EQ(answer.count(), 1);
}

TEST(ResolverTest, OtherNamesAreNotDelayedBySlowOnes) {
  // Far more slow names than the two threads the resolver used to have.
  std::set<std::string> slow;
  for (int i = 0; i < 8; ++i) slow.insert(absl::StrCat("slow", i, ".test"));
  auto dns = FakeDns::Create(slow);
  LoopThread loop;
  Resolver resolver(FakeOptions(dns, absl::Seconds(60)));
  std::vector<std::unique_ptr<Answer>> slow_answers;
  for (const std::string& host : slow) {
    slow_answers.push_back(std::make_unique<Answer>());
    resolver.Resolve(host, 1, loop.get(), slow_answers.back()->Callback(loop.get()));
  }
  for (const std::string& host : slow) ASSERT_TRUE(dns->WaitForCalls(host, 1, kWait)) << host;

  Answer fast;
  resolver.Resolve("fast.test", 1, loop.get(), fast.Callback(loop.get()));
  // Far below the 60 s timeout: the fast name did not wait for a slow one.
  ASSERT_TRUE(fast.Wait(kWait));
  EXPECT_TRUE(fast.result().ok()) << fast.result().status();
  for (auto& answer : slow_answers) EXPECT_EQ(answer->count(), 0);
  dns->Release();
  for (auto& answer : slow_answers) ASSERT_TRUE(answer->Wait(kWait));
}

TEST(ResolverTest, RequestsForOneNameShareOneLookup) {
  auto dns = FakeDns::Create({"slow.test"});
  LoopThread loop;
  Resolver resolver(FakeOptions(dns, absl::Seconds(60)));
  std::vector<std::unique_ptr<Answer>> answers;
  for (int i = 0; i < 20; ++i) {
    answers.push_back(std::make_unique<Answer>());
    resolver.Resolve("slow.test", static_cast<uint16_t>(1000 + i), loop.get(),
                     answers.back()->Callback(loop.get()));
  }
  ASSERT_TRUE(dns->WaitForCalls("slow.test", 1, kWait));
  dns->Release("slow.test");
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(answers[i]->Wait(kWait));
    ASSERT_TRUE(answers[i]->result().ok());
    EXPECT_EQ((*answers[i]->result())[0].text, absl::StrCat("192.0.2.1:", 1000 + i));
  }
  EXPECT_EQ(dns->calls("slow.test"), 1);
  EXPECT_EQ(dns->max_running(), 1);
}

TEST(ResolverTest, ARequestAfterATimeoutJoinsTheRunningLookup) {
  auto dns = FakeDns::Create({"slow.test"});
  LoopThread loop;
  Resolver resolver(FakeOptions(dns, absl::Milliseconds(100)));
  Answer first;
  resolver.Resolve("slow.test", 1, loop.get(), first.Callback(loop.get()));
  ASSERT_TRUE(first.Wait(kWait));
  EXPECT_EQ(first.result().status().code(), absl::StatusCode::kDeadlineExceeded);

  // The reconnect after the timeout: the lookup still runs, so this request waits for it rather
  // than starting a second one, and gets its (fresh) answer.
  Answer second;
  resolver.Resolve("slow.test", 2, loop.get(), second.Callback(loop.get()));
  dns->Release("slow.test");
  ASSERT_TRUE(second.Wait(kWait));
  // Either the lookup returned within the second request's 100 ms, or it timed out too; in both
  // cases only one lookup ran.
  EXPECT_EQ(dns->calls("slow.test"), 1);
}

TEST(ResolverTest, ThreadCapHoldsAndQueuedLookupsStillTimeOut) {
  auto dns = FakeDns::Create({"slow1.test", "slow2.test", "slow3.test"});
  LoopThread loop;
  constexpr absl::Duration kTimeout = absl::Milliseconds(300);
  Resolver resolver(FakeOptions(dns, kTimeout, /*max_threads=*/2));
  Answer a1, a2, a3;
  const absl::Time start = absl::Now();
  resolver.Resolve("slow1.test", 1, loop.get(), a1.Callback(loop.get()));
  resolver.Resolve("slow2.test", 1, loop.get(), a2.Callback(loop.get()));
  resolver.Resolve("slow3.test", 1, loop.get(), a3.Callback(loop.get()));
  ASSERT_TRUE(a3.Wait(kWait));
  // The third name never got a thread, yet its request ended at its deadline.
  EXPECT_GE(a3.at() - start, kTimeout);
  EXPECT_LT(a3.at() - start, kTimeout + absl::Seconds(1));
  EXPECT_EQ(a3.result().status().message(), "resolve \"slow3.test\": timed out after 300 ms");
  ASSERT_TRUE(a1.Wait(kWait));
  ASSERT_TRUE(a2.Wait(kWait));
  EXPECT_EQ(dns->max_running(), 2);
  EXPECT_EQ(dns->calls("slow3.test"), 0);

  // Once threads are free again, the abandoned queued name is not looked up for nobody.
  dns->Release();
  Answer next;
  resolver.Resolve("next.test", 1, loop.get(), next.Callback(loop.get()));
  ASSERT_TRUE(next.Wait(kWait));
  EXPECT_TRUE(next.result().ok());
  EXPECT_EQ(dns->calls("slow3.test"), 0);
  EXPECT_LE(dns->max_running(), 2);
}

TEST(ResolverTest, CloseDoesNotWaitForALookupAndDropsEveryAnswer) {
  auto dns = FakeDns::Create({"slow.test"});
  LoopThread loop;
  constexpr absl::Duration kTimeout = absl::Milliseconds(100);
  Resolver resolver(FakeOptions(dns, kTimeout));
  Answer answer;
  const absl::Time start = absl::Now();
  resolver.Resolve("slow.test", 1, loop.get(), answer.Callback(loop.get()));
  ASSERT_TRUE(dns->WaitForCalls("slow.test", 1, kWait));
  resolver.Close();  // returns although the lookup is blocked
  // Past the request's deadline: its timer has run on the loop, and ran nothing.
  WaitForLoopTime(loop.get(), start + kTimeout + absl::Milliseconds(50));
  dns->Release();
  WaitForLoopTime(loop.get(), absl::Now() + absl::Milliseconds(50));
  EXPECT_EQ(answer.count(), 0);
}

TEST(ResolverTest, NothingIsDeliveredAfterClose) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  Resolver resolver;
  resolver.Close();
  bool ran = false;
  resolver.Resolve("localhost", 1, loop->get(), [&](ResolveResult) { ran = true; });
  // Run one iteration of the loop: nothing was posted to it.
  (*loop)->Post([&] { (*loop)->Stop(); });
  (*loop)->Run();
  EXPECT_FALSE(ran);
}

}  // namespace
}  // namespace eventbus::net
