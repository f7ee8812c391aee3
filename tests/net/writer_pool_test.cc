#include "server/net/writer_pool.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/net/deadline_queue.h"
#include "tests/net/loopback_peer.h"
#include "tests/net/test_sync.h"
#include "tests/testing/wait.h"

namespace eventbus::net {
namespace {

constexpr absl::Duration kWait = absl::Seconds(10);

// Collects the outcomes of a test's messages, whatever thread completes them.
class Outcomes {
 public:
  // The `done` of message `index`: records the outcome and when it arrived.
  OutcomeCallback Callback(int index) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (static_cast<int>(slots_.size()) <= index) slots_.resize(index + 1);
    }
    return [this, index](Outcome outcome) {
      std::lock_guard<std::mutex> lock(mu_);
      Slot& slot = slots_[index];
      ++slot.calls;
      slot.outcome = std::move(outcome);
      slot.at = absl::Now();
      ++completed_;
      cv_.notify_all();
    };
  }
  bool WaitFor(int count, absl::Duration timeout = kWait) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                        [&] { return completed_ >= count; });
  }
  Outcome Get(int index) {
    std::lock_guard<std::mutex> lock(mu_);
    if (slots_[index].outcome.has_value()) return *slots_[index].outcome;
    Outcome pending;
    pending.code = DeliveryCode::kQueued;
    return pending;
  }
  bool Done(int index) {
    std::lock_guard<std::mutex> lock(mu_);
    return slots_[index].outcome.has_value();
  }
  absl::Time At(int index) {
    std::lock_guard<std::mutex> lock(mu_);
    return slots_[index].at;
  }
  int Calls(int index) {
    std::lock_guard<std::mutex> lock(mu_);
    return slots_[index].calls;
  }
  int completed() {
    std::lock_guard<std::mutex> lock(mu_);
    return completed_;
  }

 private:
  struct Slot {
    std::optional<Outcome> outcome;
    absl::Time at;
    int calls = 0;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  // std:: primitives so that ThreadSanitizer sees them (see test_sync.h).
  std::vector<Slot> slots_;  // guarded by mu_
  int completed_ = 0;        // guarded by mu_
};

uri::TcpTarget Target(uint16_t port, std::string host = "127.0.0.1") {
  uri::TcpTarget t;
  t.host = std::move(host);
  t.port = port;
  return t;
}

std::shared_ptr<const std::string> Body(absl::string_view method, absl::string_view params = "") {
  std::string body = absl::StrCat("\"jsonrpc\":\"2.0\",\"method\":\"", method, "\"");
  if (!params.empty()) absl::StrAppend(&body, ",\"params\":", params);
  body += "}";
  return std::make_shared<const std::string>(std::move(body));
}

// A body larger than the socket buffers can grow (tcp_wmem max 4 MiB): it stays half-written while
// its peer does not read.
std::shared_ptr<const std::string> UnwritableBody() {
  return std::make_shared<const std::string>(absl::StrCat(
      "\"jsonrpc\":\"2.0\",\"method\":\"E\",\"params\":[\"", std::string(8 << 20, 'x'), "\"]}"));
}

// A peer that reads nothing (until SetReading) and receives into a 4 KiB buffer.
std::unique_ptr<LoopbackPeer> StartStalledPeer() {
  LoopbackPeer::Options options;
  options.reading = false;
  options.receive_buffer = 4096;
  return LoopbackPeer::Start(options);
}

Request Notification(uint16_t port, std::shared_ptr<const std::string> body, OutcomeCallback done,
                     absl::Duration timeout = absl::Seconds(5)) {
  Request r;
  r.target = Target(port);
  r.body = std::move(body);
  r.expect_reply = false;
  r.deadline = absl::Now() + timeout;
  r.done = std::move(done);
  return r;
}

Request Call(uint16_t port, std::shared_ptr<const std::string> body, OutcomeCallback done,
             absl::Duration timeout = absl::Seconds(5)) {
  Request r = Notification(port, std::move(body), std::move(done), timeout);
  r.expect_reply = true;
  return r;
}

// Submits one request and returns.
void SubmitOne(WriterPool& pool, Request r) {
  std::vector<Request> batch;
  batch.push_back(std::move(r));
  pool.Submit(std::move(batch));
}

std::string ResultReply(int64_t id, absl::string_view result) {
  return absl::StrCat("{\"jsonrpc\":\"2.0\",\"id\":", id, ",\"result\":", result, "}");
}

// The "method" member of a message, as the peer received it.
std::string MethodOf(const std::string& message) {
  size_t at = message.find("\"method\":\"");
  if (at == std::string::npos) return "";
  at += 10;
  return message.substr(at, message.find('"', at) - at);
}

// A port where connect() is refused: bound, never listening, held for the whole test.
class ClosedPort {
 public:
  ClosedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~ClosedPort() { ::close(fd_); }
  uint16_t port() const { return port_; }

 private:
  int fd_;
  uint16_t port_;
};

// A port whose SYNs go unanswered, so connect() neither succeeds nor fails: a listener with
// backlog 0 whose accept queue is already full (one connection, never accepted) drops them.
class BlackholePort {
 public:
  BlackholePort() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listen_fd_, 0), 0);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    filler_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(::connect(filler_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  ~BlackholePort() {
    ::close(filler_fd_);
    ::close(listen_fd_);
  }
  uint16_t port() const { return port_; }

 private:
  int listen_fd_;
  int filler_fd_;
  uint16_t port_;
};

class WriterPoolTest : public ::testing::Test {
 protected:
  void StartPool(PoolOptions options = PoolOptions()) {
    if (options.num_loops == 0) options.num_loops = 2;
    auto pool = WriterPool::Create(options);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
  }

  // Waits until `pred` holds for the stats of `key`.
  template <typename Pred>
  bool WaitForStats(const std::string& key, Pred pred, absl::Duration timeout = kWait) {
    absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      std::optional<TargetStats> stats = pool_->Stats(key);
      if (pred(stats)) return true;
      absl::SleepFor(absl::Milliseconds(1));  // polling a condition, bounded by the deadline
    }
    return false;
  }

  // Declared before pool_: the pool (destroyed first) may still complete messages into them.
  Outcomes outcomes_;
  Outcomes other_outcomes_;
  std::unique_ptr<WriterPool> pool_;
};

TEST_F(WriterPoolTest, NotificationArrivesByteExactAndCompletesOk) {
  auto peer = LoopbackPeer::Start({});
  StartPool();
  auto body = Body("E_PIKE_BLOCKED", R"({"ip":"192.168.2.11","count":3})");
  SubmitOne(*pool_, Notification(peer->port(), body, outcomes_.Callback(0)));
  std::string expected =
      R"({"jsonrpc":"2.0","method":"E_PIKE_BLOCKED","params":{"ip":"192.168.2.11","count":3}})";
  ASSERT_TRUE(peer->WaitForBytes(0, expected.size(), kWait));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  EXPECT_EQ(peer->Received(0), expected);
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kOk);
}

TEST_F(WriterPoolTest, TwoNotificationsArriveBackToBackOnOneConnection) {
  auto peer = LoopbackPeer::Start({});
  StartPool();
  SubmitOne(*pool_, Notification(peer->port(), Body("A"), outcomes_.Callback(0)));
  SubmitOne(*pool_, Notification(peer->port(), Body("B"), outcomes_.Callback(1)));
  std::string expected = R"({"jsonrpc":"2.0","method":"A"}{"jsonrpc":"2.0","method":"B"})";
  ASSERT_TRUE(peer->WaitForBytes(0, expected.size(), kWait));
  ASSERT_TRUE(outcomes_.WaitFor(2));
  EXPECT_EQ(peer->Received(0), expected);
  EXPECT_EQ(peer->connections(), 1);
}

TEST_F(WriterPoolTest, BatchOfThousandNotificationsArrivesCompleteAndInOrderOnOneConnection) {
  auto peer = LoopbackPeer::Start({});
  StartPool();
  constexpr int kCount = 1000;
  std::vector<Request> batch;
  std::string expected;
  for (int i = 0; i < kCount; ++i) {
    auto body = Body("E", absl::StrCat("[", i, "]"));
    absl::StrAppend(&expected, "{", *body);
    batch.push_back(Notification(peer->port(), body, outcomes_.Callback(i)));
  }
  TestEvent enqueued;
  pool_->Submit(std::move(batch), [&] { enqueued.Notify(); });
  ASSERT_TRUE(enqueued.WaitFor(kWait));
  ASSERT_TRUE(peer->WaitForBytes(0, expected.size(), kWait));
  ASSERT_TRUE(outcomes_.WaitFor(kCount));
  EXPECT_EQ(peer->Received(0), expected);
  EXPECT_EQ(peer->connections(), 1);
  for (int i = 0; i < kCount; ++i) EXPECT_EQ(outcomes_.Get(i).code, DeliveryCode::kOk);
  auto stats = pool_->Stats(Target(peer->port()).Key());
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->delivered, static_cast<uint64_t>(kCount));
}

TEST_F(WriterPoolTest, RequestCarriesAPositiveIdAndItsReplyCompletesIt) {
  auto peer = LoopbackPeer::Start({}, [](int, const std::string& m) {
    return ResultReply(LoopbackPeer::IdOf(m), R"({"ok":true,"n":[1,2]})");
  });
  StartPool();
  SubmitOne(*pool_, Call(peer->port(), Body("E", "{}"), outcomes_.Callback(0)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  Outcome o = outcomes_.Get(0);
  EXPECT_EQ(o.code, DeliveryCode::kOk) << o.detail;
  EXPECT_EQ(o.result, R"({"ok":true,"n":[1,2]})");
  std::vector<std::string> messages = peer->Messages();
  ASSERT_EQ(messages.size(), 1u);
  int64_t id = LoopbackPeer::IdOf(messages[0]);
  EXPECT_GT(id, 0);
  EXPECT_LT(id, int64_t{1} << 31);
  EXPECT_EQ(messages[0],
            absl::StrCat(R"({"id":)", id, R"(,"jsonrpc":"2.0","method":"E","params":{}})"));
}

TEST_F(WriterPoolTest, ErrorReplyCompletesWithRpcError) {
  auto peer = LoopbackPeer::Start({}, [](int, const std::string& m) {
    return absl::StrCat(R"({"jsonrpc":"2.0","id":)", LoopbackPeer::IdOf(m),
                        R"(,"error":{"code":-32601,"message":"no such method","data":[1]}})");
  });
  StartPool();
  SubmitOne(*pool_, Call(peer->port(), Body("E"), outcomes_.Callback(0)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  Outcome o = outcomes_.Get(0);
  EXPECT_EQ(o.code, DeliveryCode::kRpcError) << o.detail;
  EXPECT_EQ(o.error_code, -32601);
  EXPECT_EQ(o.error_message, "no such method");
  EXPECT_EQ(o.error_data, "[1]");
  // An error reply is a failed delivery in the target's counters, not a delivered one.
  std::optional<TargetStats> stats = pool_->Stats(Target(peer->port()).Key());
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->delivered, 0u);
  EXPECT_EQ(stats->failed, 1u);
}

TEST_F(WriterPoolTest, OutOfOrderRepliesCompleteTheirOwnRequests) {
  constexpr int kCount = 5;
  // Holds the requests until all arrived, then answers newest first, each with its method name.
  std::mutex mu;
  std::vector<std::string> held;
  std::unique_ptr<LoopbackPeer> peer;
  peer = LoopbackPeer::Start({}, [&](int conn, const std::string& m) {
    std::string replies;
    std::lock_guard<std::mutex> lock(mu);
    held.push_back(m);
    if (held.size() == kCount) {
      for (auto it = held.rbegin(); it != held.rend(); ++it) {
        absl::StrAppend(
            &replies, ResultReply(LoopbackPeer::IdOf(*it), absl::StrCat("\"", MethodOf(*it), "\"")),
            "\n");
      }
    }
    return replies;
  });
  StartPool();
  std::vector<Request> batch;
  for (int i = 0; i < kCount; ++i) {
    batch.push_back(Call(peer->port(), Body(absl::StrCat("m", i)), outcomes_.Callback(i)));
  }
  pool_->Submit(std::move(batch));
  ASSERT_TRUE(outcomes_.WaitFor(kCount));
  for (int i = 0; i < kCount; ++i) {
    Outcome o = outcomes_.Get(i);
    EXPECT_EQ(o.code, DeliveryCode::kOk) << o.detail;
    EXPECT_EQ(o.result, absl::StrCat("\"m", i, "\""));
  }
}

TEST_F(WriterPoolTest, ThousandPipelinedRequestsAreAllMatched) {
  auto peer = LoopbackPeer::Start({}, [](int, const std::string& m) {
    return ResultReply(LoopbackPeer::IdOf(m), absl::StrCat("\"", MethodOf(m), "\""));
  });
  StartPool();
  constexpr int kCount = 1000;
  std::vector<Request> batch;
  for (int i = 0; i < kCount; ++i) {
    batch.push_back(Call(peer->port(), Body(absl::StrCat("m", i)), outcomes_.Callback(i)));
  }
  pool_->Submit(std::move(batch));
  ASSERT_TRUE(outcomes_.WaitFor(kCount));
  for (int i = 0; i < kCount; ++i) {
    Outcome o = outcomes_.Get(i);
    ASSERT_EQ(o.code, DeliveryCode::kOk) << i << ": " << o.detail;
    ASSERT_EQ(o.result, absl::StrCat("\"m", i, "\""));
    ASSERT_EQ(outcomes_.Calls(i), 1);
  }
  EXPECT_EQ(peer->connections(), 1);
}

TEST_F(WriterPoolTest, UnansweredRequestTimesOutWithinAFewMillisecondsOfItsDeadline) {
  auto peer = LoopbackPeer::Start({});  // reads, never replies
  StartPool();
  Request r = Call(peer->port(), Body("E"), outcomes_.Callback(0), absl::Milliseconds(100));
  absl::Time deadline = r.deadline;
  SubmitOne(*pool_, std::move(r));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  Outcome o = outcomes_.Get(0);
  EXPECT_EQ(o.code, DeliveryCode::kTimeout);
  EXPECT_TRUE(absl::StrContains(o.detail, "no reply")) << o.detail;
  EXPECT_GE(outcomes_.At(0), deadline);
  // Timers are precise to ~1 ms; the margin is for a busy shared test machine.
  EXPECT_LT(outcomes_.At(0) - deadline, absl::Milliseconds(25));
  ASSERT_TRUE(WaitForStats(Target(peer->port()).Key(), [](const std::optional<TargetStats>& s) {
    // Written, then no reply: a failure, not an expiry.
    return s && s->outstanding_requests == 0 && s->failed == 1 && s->expired == 0;
  }));
}

TEST_F(WriterPoolTest, LateReplyIsCountedAsUnmatchedAndTheConnectionStays) {
  auto peer = LoopbackPeer::Start({});
  StartPool();
  SubmitOne(*pool_, Call(peer->port(), Body("E"), outcomes_.Callback(0), absl::Milliseconds(20)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kTimeout);
  ASSERT_EQ(peer->message_count(), 1u);
  peer->Send(0, ResultReply(LoopbackPeer::IdOf(peer->Messages()[0]), "1"));
  peer->Send(0, R"({"jsonrpc":"2.0","method":"no_id"})");
  std::string key = Target(peer->port()).Key();
  ASSERT_TRUE(WaitForStats(
      key, [](const std::optional<TargetStats>& s) { return s && s->unmatched_replies == 2; }));
  EXPECT_EQ(pool_->Stats(key)->state, ConnState::kConnected);
  EXPECT_EQ(peer->connections(), 1);
}

TEST_F(WriterPoolTest, RefusedPortFailsWithConnectFailedBeforeTheDeadline) {
  ClosedPort closed;
  PoolOptions options;
  options.min_backoff = absl::Seconds(5);  // the retry comes after the deadline: fail now
  options.max_backoff = absl::Seconds(5);
  StartPool(options);
  absl::Time start = absl::Now();
  SubmitOne(*pool_, Call(closed.port(), Body("E"), outcomes_.Callback(0), absl::Seconds(2)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  Outcome o = outcomes_.Get(0);
  EXPECT_EQ(o.code, DeliveryCode::kConnectFailed);
  EXPECT_EQ(o.detail, absl::StrCat("connect to 127.0.0.1:", closed.port(), ": Connection refused"));
  EXPECT_LT(outcomes_.At(0) - start, absl::Seconds(1));
  auto stats = pool_->Stats(Target(closed.port()).Key());
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->state, ConnState::kBackoff);
}

// Records what the pool tells its observer, from any loop thread.
class RecordingObserver : public PoolObserver {
 public:
  void OnComplete(const std::string& target_key, const Outcome& outcome, bool expired,
                  absl::Duration latency) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(absl::StrCat("complete ", target_key, " ", DeliveryCodeName(outcome.code),
                                   expired ? " expired" : ""));
    EXPECT_GE(latency, absl::ZeroDuration());
  }
  void OnStateChange(const std::string& target_key, ConnState from, ConnState to,
                     absl::string_view detail) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(absl::StrCat("state ", target_key, " ", ConnStateName(from), "->",
                                   ConnStateName(to), detail.empty() ? "" : " ", detail));
  }
  std::vector<std::string> Events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> events_;
};

TEST_F(WriterPoolTest, ObserverHearsEveryCompletionAndStateChangeWithTheReason) {
  RecordingObserver observer;
  auto peer = LoopbackPeer::Start({});
  ClosedPort closed;
  PoolOptions options;
  options.observer = &observer;
  options.min_backoff = absl::Seconds(5);
  options.max_backoff = absl::Seconds(5);
  StartPool(options);
  SubmitOne(*pool_, Notification(peer->port(), Body("E"), outcomes_.Callback(0)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  // The observer hears of written notifications at the end of the loop's iteration, after the
  // request's own callback: the second target starts only once it has.
  const std::string written = absl::StrCat("complete ", Target(peer->port()).Key(), " OK");
  ASSERT_TRUE(eventbus::testing::WaitFor(absl::Seconds(10), [&] {
    std::vector<std::string> events = observer.Events();
    return std::find(events.begin(), events.end(), written) != events.end();
  }));
  SubmitOne(*pool_, Call(closed.port(), Body("E"), other_outcomes_.Callback(0), absl::Seconds(2)));
  ASSERT_TRUE(other_outcomes_.WaitFor(1));
  pool_->Shutdown();
  const std::string good = Target(peer->port()).Key();
  const std::string bad = Target(closed.port()).Key();
  const std::vector<std::string> expected = {
      absl::StrCat("state ", good, " IDLE->RESOLVING"),
      absl::StrCat("state ", good, " RESOLVING->CONNECTING"),
      absl::StrCat("state ", good, " CONNECTING->CONNECTED"),
      absl::StrCat("complete ", good, " OK"),
      absl::StrCat("state ", bad, " IDLE->RESOLVING"),
      absl::StrCat("state ", bad, " RESOLVING->CONNECTING"),
      absl::StrCat("state ", bad, " CONNECTING->BACKOFF connect to 127.0.0.1:", closed.port(),
                   ": Connection refused"),
      absl::StrCat("complete ", bad, " CONNECT_FAILED"),
  };
  std::vector<std::string> events = observer.Events();
  ASSERT_GE(events.size(), expected.size());
  EXPECT_EQ(std::vector<std::string>(events.begin(), events.begin() + expected.size()), expected);
  // Shutdown closes both (to IDLE, saying why; the loops in either order); nothing else follows.
  std::vector<std::string> rest(events.begin() + expected.size(), events.end());
  std::sort(rest.begin(), rest.end());
  std::vector<std::string> closed_at_shutdown = {
      absl::StrCat("state ", good, " CONNECTED->IDLE shutting down"),
      absl::StrCat("state ", bad, " BACKOFF->IDLE shutting down")};
  std::sort(closed_at_shutdown.begin(), closed_at_shutdown.end());
  EXPECT_EQ(rest, closed_at_shutdown);
}

TEST_F(WriterPoolTest, RefusedPortKeepsMessagesQueuedAcrossRetriesUntilTheDeadline) {
  ClosedPort closed;
  PoolOptions options;
  options.min_backoff = absl::Milliseconds(10);
  options.max_backoff = absl::Milliseconds(20);
  StartPool(options);
  Request r =
      Notification(closed.port(), Body("E"), outcomes_.Callback(0), absl::Milliseconds(150));
  absl::Time deadline = r.deadline;
  SubmitOne(*pool_, std::move(r));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  Outcome o = outcomes_.Get(0);
  EXPECT_EQ(o.code, DeliveryCode::kConnectFailed);
  EXPECT_TRUE(absl::StrContains(o.detail, "Connection refused")) << o.detail;
  // Failed once the next retry would come after the deadline (<= 24 ms before it).
  EXPECT_GT(outcomes_.At(0), deadline - absl::Milliseconds(40));
}

TEST_F(WriterPoolTest, BlackholedTargetFailsWithConnectTimedOutAtTheDeadline) {
  BlackholePort blackhole;
  PoolOptions options;
  options.connect_timeout = absl::Seconds(30);
  StartPool(options);
  Request r = Call(blackhole.port(), Body("E"), outcomes_.Callback(0), absl::Milliseconds(100));
  absl::Time deadline = r.deadline;
  SubmitOne(*pool_, std::move(r));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  Outcome o = outcomes_.Get(0);
  EXPECT_EQ(o.code, DeliveryCode::kConnectFailed);
  EXPECT_EQ(o.detail, absl::StrCat("connect to 127.0.0.1:", blackhole.port(), ": timed out"));
  EXPECT_GE(outcomes_.At(0), deadline);
  std::optional<TargetStats> stats = pool_->Stats(Target(blackhole.port()).Key());
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->state, ConnState::kConnecting);
  EXPECT_EQ(stats->expired, 1u);  // its deadline came before it could be written
  EXPECT_EQ(stats->failed, 0u);
}

TEST_F(WriterPoolTest, ConnectTimeoutEndsTheAttemptAndBacksOff) {
  BlackholePort blackhole;
  PoolOptions options;
  options.connect_timeout = absl::Milliseconds(50);
  options.min_backoff = absl::Seconds(10);  // the retry comes after the deadline: fail now
  options.max_backoff = absl::Seconds(10);
  StartPool(options);
  absl::Time start = absl::Now();
  SubmitOne(*pool_, Call(blackhole.port(), Body("E"), outcomes_.Callback(0), absl::Seconds(5)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  Outcome o = outcomes_.Get(0);
  EXPECT_EQ(o.code, DeliveryCode::kConnectFailed);
  EXPECT_EQ(o.detail, absl::StrCat("connect to 127.0.0.1:", blackhole.port(), ": timed out"));
  EXPECT_GE(outcomes_.At(0) - start, absl::Milliseconds(50));
  EXPECT_LT(outcomes_.At(0) - start, absl::Seconds(2));
  EXPECT_EQ(pool_->Stats(Target(blackhole.port()).Key())->state, ConnState::kBackoff);
}

TEST_F(WriterPoolTest, FailFastMessageFailsWithTheFirstFailedAttemptOthersWaitForRetries) {
  ClosedPort closed;
  PoolOptions options;
  options.min_backoff = absl::Milliseconds(100);  // retries come well before the deadline
  options.max_backoff = absl::Milliseconds(100);
  StartPool(options);
  absl::Time start = absl::Now();
  std::vector<Request> batch;
  batch.push_back(Call(closed.port(), Body("E"), outcomes_.Callback(0), absl::Seconds(1)));
  batch.back().fail_fast = true;
  batch.push_back(Call(closed.port(), Body("E"), outcomes_.Callback(1), absl::Seconds(1)));
  pool_->Submit(std::move(batch));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kConnectFailed);
  EXPECT_TRUE(absl::StrContains(outcomes_.Get(0).detail, "Connection refused"))
      << outcomes_.Get(0).detail;
  EXPECT_LT(outcomes_.At(0) - start, absl::Milliseconds(80));
  EXPECT_FALSE(outcomes_.Done(1));  // still queued for the retries
  ASSERT_TRUE(outcomes_.WaitFor(2));
  EXPECT_EQ(outcomes_.Get(1).code, DeliveryCode::kConnectFailed);
  EXPECT_GT(outcomes_.At(1) - start, absl::Milliseconds(500));
}

TEST_F(WriterPoolTest, UnresolvableHostFailsWithResolveFailed) {
  PoolOptions options;
  options.min_backoff = absl::Seconds(5);
  options.max_backoff = absl::Seconds(5);
  StartPool(options);
  Request r = Call(9, Body("E"), outcomes_.Callback(0), absl::Seconds(3));
  r.target.host = "no-such-host.invalid";
  SubmitOne(*pool_, std::move(r));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  Outcome o = outcomes_.Get(0);
  EXPECT_EQ(o.code, DeliveryCode::kResolveFailed) << o.detail;
  EXPECT_TRUE(absl::StartsWith(o.detail, "resolve \"no-such-host.invalid\": ")) << o.detail;
}

TEST_F(WriterPoolTest, HostNameIsResolvedAndConnected) {
  auto peer = LoopbackPeer::Start({});
  StartPool();
  Request r = Notification(peer->port(), Body("E"), outcomes_.Callback(0));
  r.target.host = "localhost";
  SubmitOne(*pool_, std::move(r));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kOk) << outcomes_.Get(0).detail;
  ASSERT_TRUE(peer->WaitForMessages(1, kWait));
}

TEST_F(WriterPoolTest, Ipv6LiteralTargetIsConnected) {
  LoopbackPeer::Options v6;
  v6.ipv6 = true;
  auto peer = LoopbackPeer::Start(
      v6, [](int, const std::string& m) { return ResultReply(LoopbackPeer::IdOf(m), "6"); });
  StartPool();
  Request r = Call(peer->port(), Body("E"), outcomes_.Callback(0));
  r.target.host = "::1";
  std::string key = r.target.Key();
  EXPECT_EQ(key, absl::StrCat("[::1]:", peer->port()));
  SubmitOne(*pool_, std::move(r));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kOk) << outcomes_.Get(0).detail;
  EXPECT_EQ(outcomes_.Get(0).result, "6");
  EXPECT_TRUE(pool_->Stats(key).has_value());
}

TEST_F(WriterPoolTest, PeerClosingWithARequestOutstandingLosesIt) {
  std::unique_ptr<LoopbackPeer> peer;
  peer = LoopbackPeer::Start({}, [&](int conn, const std::string&) {
    peer->CloseConnection(conn);
    return std::string();
  });
  StartPool();
  SubmitOne(*pool_, Call(peer->port(), Body("E"), outcomes_.Callback(0)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  Outcome o = outcomes_.Get(0);
  EXPECT_EQ(o.code, DeliveryCode::kConnectionLost);
  EXPECT_TRUE(absl::StrContains(o.detail, "closed by peer")) << o.detail;
}

TEST_F(WriterPoolTest, GarbageReplyIsBadReplyAndTheNextRequestReconnects) {
  std::atomic<bool> garbage{true};
  auto peer = LoopbackPeer::Start({}, [&](int, const std::string& m) {
    if (garbage.exchange(false)) return std::string("{\"id\":1,]]] not json");
    return ResultReply(LoopbackPeer::IdOf(m), "2");
  });
  StartPool();
  SubmitOne(*pool_, Call(peer->port(), Body("E"), outcomes_.Callback(0)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kBadReply) << outcomes_.Get(0).detail;

  SubmitOne(*pool_, Call(peer->port(), Body("E"), outcomes_.Callback(1)));
  ASSERT_TRUE(outcomes_.WaitFor(2));
  EXPECT_EQ(outcomes_.Get(1).code, DeliveryCode::kOk) << outcomes_.Get(1).detail;
  EXPECT_EQ(outcomes_.Get(1).result, "2");
  EXPECT_EQ(peer->connections(), 2);
  auto stats = pool_->Stats(Target(peer->port()).Key());
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->reconnects, 1u);
}

TEST_F(WriterPoolTest, GarbageWithTwoRequestsOutstandingFailsTheOldestAsBadReplyOtherLost) {
  std::mutex mu;
  int seen = 0;
  auto peer = LoopbackPeer::Start({}, [&](int, const std::string&) {
    std::lock_guard<std::mutex> lock(mu);
    return ++seen == 2 ? std::string("%%garbage") : std::string();
  });
  StartPool();
  std::vector<Request> batch;
  batch.push_back(Call(peer->port(), Body("first"), outcomes_.Callback(0)));
  batch.push_back(Call(peer->port(), Body("second"), outcomes_.Callback(1)));
  pool_->Submit(std::move(batch));
  ASSERT_TRUE(outcomes_.WaitFor(2));
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kBadReply) << outcomes_.Get(0).detail;
  EXPECT_EQ(outcomes_.Get(1).code, DeliveryCode::kConnectionLost) << outcomes_.Get(1).detail;
}

TEST_F(WriterPoolTest, ReplyLargerThanTheLimitIsBadReply) {
  auto peer = LoopbackPeer::Start({}, [](int, const std::string& m) {
    return ResultReply(LoopbackPeer::IdOf(m), absl::StrCat("\"", std::string(500, 'r'), "\""));
  });
  PoolOptions options;
  options.max_reply_bytes = 256;
  StartPool(options);
  SubmitOne(*pool_, Call(peer->port(), Body("E"), outcomes_.Callback(0)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  Outcome o = outcomes_.Get(0);
  EXPECT_EQ(o.code, DeliveryCode::kBadReply);
  EXPECT_TRUE(absl::StrContains(o.detail, "larger than 256 bytes")) << o.detail;
}

TEST_F(WriterPoolTest, ReplyOfExactlyTheLimitIsDelivered) {
  auto peer = LoopbackPeer::Start({}, [](int, const std::string& m) {
    int64_t id = LoopbackPeer::IdOf(m);
    std::string pad(256 - ResultReply(id, "\"\"").size(), 'r');
    return ResultReply(id, absl::StrCat("\"", pad, "\""));
  });
  PoolOptions options;
  options.max_reply_bytes = 256;
  StartPool(options);
  SubmitOne(*pool_, Call(peer->port(), Body("E"), outcomes_.Callback(0)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kOk) << outcomes_.Get(0).detail;
  EXPECT_GT(outcomes_.Get(0).result.size(), 200u);  // the reply itself is 256 bytes
}

TEST_F(WriterPoolTest, PeerTalkingOnANotificationConnectionIsCountedAndTheConnectionStays) {
  auto peer = LoopbackPeer::Start(
      {}, [](int, const std::string&) { return std::string(R"({"jsonrpc":"2.0","id":99})"); });
  StartPool();
  for (int i = 0; i < 5; ++i) {
    SubmitOne(*pool_, Notification(peer->port(), Body("E"), outcomes_.Callback(i)));
    ASSERT_TRUE(outcomes_.WaitFor(i + 1));
    EXPECT_EQ(outcomes_.Get(i).code, DeliveryCode::kOk);
  }
  ASSERT_TRUE(WaitForStats(Target(peer->port()).Key(), [](const std::optional<TargetStats>& s) {
    return s && s->unmatched_replies == 5;
  }));
  EXPECT_EQ(peer->connections(), 1);
}

TEST_F(WriterPoolTest, ReplyWithoutResultOrErrorIsBadReplyAndTheConnectionStays) {
  auto peer = LoopbackPeer::Start({}, [](int, const std::string& m) {
    return absl::StrCat(R"({"jsonrpc":"2.0","id":)", LoopbackPeer::IdOf(m), "}");
  });
  StartPool();
  SubmitOne(*pool_, Call(peer->port(), Body("E"), outcomes_.Callback(0)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kBadReply);
  SubmitOne(*pool_, Call(peer->port(), Body("E"), outcomes_.Callback(1)));
  ASSERT_TRUE(outcomes_.WaitFor(2));
  EXPECT_EQ(peer->connections(), 1);
}

TEST_F(WriterPoolTest, NonReadingPeerGetsQueueFullWhileAnotherTargetGetsEverything) {
  auto stuck = StartStalledPeer();
  auto healthy = LoopbackPeer::Start({});
  PoolOptions options;
  options.num_loops = 1;  // both targets on the same loop: the stuck one must not delay the other
  options.max_queue_bytes = 64 << 10;
  StartPool(options);

  auto big = std::make_shared<const std::string>(absl::StrCat(
      "\"jsonrpc\":\"2.0\",\"method\":\"E\",\"params\":[\"", std::string(4000, 'x'), "\"]}"));
  constexpr int kRounds = 2000;
  int stuck_sent = 0;
  int healthy_sent = 0;
  bool queue_full = false;
  for (int round = 0; round < kRounds && !queue_full; ++round) {
    std::vector<Request> batch;
    for (int i = 0; i < 16; ++i) {
      batch.push_back(
          Notification(stuck->port(), big, outcomes_.Callback(stuck_sent++), absl::Minutes(1)));
    }
    batch.push_back(Notification(healthy->port(), Body("H", absl::StrCat("[", healthy_sent, "]")),
                                 other_outcomes_.Callback(healthy_sent)));
    ++healthy_sent;
    TestEvent enqueued;
    pool_->Submit(std::move(batch), [&] { enqueued.Notify(); });
    ASSERT_TRUE(enqueued.WaitFor(kWait));
    // kQueueFull completes inside the batch, before all_enqueued.
    for (int i = stuck_sent - 16; i < stuck_sent; ++i) {
      if (outcomes_.Done(i) && outcomes_.Get(i).code == DeliveryCode::kQueueFull) {
        queue_full = true;
      }
    }
  }
  ASSERT_TRUE(queue_full);
  ASSERT_TRUE(healthy->WaitForMessages(healthy_sent, kWait));
  ASSERT_TRUE(other_outcomes_.WaitFor(healthy_sent));
  std::vector<std::string> messages = healthy->Messages();
  for (int i = 0; i < healthy_sent; ++i) {
    ASSERT_EQ(messages[i], absl::StrCat(R"({"jsonrpc":"2.0","method":"H","params":[)", i, "]}"));
    ASSERT_EQ(other_outcomes_.Get(i).code, DeliveryCode::kOk);
  }
  auto stats = pool_->Stats(Target(stuck->port()).Key());
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->state, ConnState::kConnected);
  EXPECT_GT(stats->queued_messages, 0u);
  EXPECT_GT(stats->failed, 0u);

  // Once the peer reads again, everything still queued is written.
  stuck->SetReading(true);
  int accepted = 0;
  for (int i = 0; i < stuck_sent; ++i) {
    if (!outcomes_.Done(i) || outcomes_.Get(i).code != DeliveryCode::kQueueFull) {
      ++accepted;
    }
  }
  ASSERT_TRUE(stuck->WaitForMessages(accepted, kWait));
  ASSERT_TRUE(outcomes_.WaitFor(stuck_sent));
}

TEST_F(WriterPoolTest, QueueFullIsReportedInsideTheBatchWithoutAffectingOthers) {
  auto peer = LoopbackPeer::Start({});  // never replies: requests stay outstanding
  PoolOptions options;
  options.max_queue_messages = 3;
  StartPool(options);
  std::vector<Request> batch;
  for (int i = 0; i < 5; ++i) batch.push_back(Call(peer->port(), Body("E"), outcomes_.Callback(i)));
  std::atomic<int> completed_before_enqueued{-1};
  TestEvent enqueued;
  pool_->Submit(std::move(batch), [&] {
    completed_before_enqueued = outcomes_.completed();
    enqueued.Notify();
  });
  ASSERT_TRUE(enqueued.WaitFor(kWait));
  EXPECT_EQ(completed_before_enqueued.load(), 2);
  EXPECT_EQ(outcomes_.Get(3).code, DeliveryCode::kQueueFull);
  EXPECT_EQ(outcomes_.Get(4).code, DeliveryCode::kQueueFull);
  ASSERT_TRUE(peer->WaitForMessages(3, kWait));
  EXPECT_FALSE(outcomes_.Done(0));
}

TEST_F(WriterPoolTest, PeerRestartedOnTheSamePortGetsLaterMessages) {
  auto peer = LoopbackPeer::Start({});
  uint16_t port = peer->port();
  PoolOptions options;
  options.min_backoff = absl::Milliseconds(5);
  options.max_backoff = absl::Milliseconds(20);
  StartPool(options);
  SubmitOne(*pool_, Notification(port, Body("before"), outcomes_.Callback(0)));
  ASSERT_TRUE(peer->WaitForMessages(1, kWait));
  peer->Stop();
  std::string key = Target(port).Key();
  // The pool notices the close (EPOLLIN stays armed on notification connections).
  ASSERT_TRUE(WaitForStats(key, [](const std::optional<TargetStats>& s) {
    return s && s->state != ConnState::kConnected;
  }));

  LoopbackPeer::Options same_port;
  same_port.port = port;
  auto restarted = LoopbackPeer::Start(same_port);
  ASSERT_NE(restarted, nullptr);
  SubmitOne(*pool_, Notification(port, Body("after"), outcomes_.Callback(1)));
  ASSERT_TRUE(restarted->WaitForMessages(1, kWait));
  EXPECT_EQ(restarted->Messages()[0], R"({"jsonrpc":"2.0","method":"after"})");
  ASSERT_TRUE(outcomes_.WaitFor(2));
  EXPECT_EQ(outcomes_.Get(1).code, DeliveryCode::kOk);
  EXPECT_EQ(pool_->Stats(key)->reconnects, 1u);
}

TEST_F(WriterPoolTest, HalfWrittenMessageTimesOutAndTheNextMessageGoesOnAFreshConnection) {
  auto peer = StartStalledPeer();
  StartPool();
  auto huge = UnwritableBody();
  SubmitOne(*pool_,
            Notification(peer->port(), huge, outcomes_.Callback(0), absl::Milliseconds(200)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  Outcome o = outcomes_.Get(0);
  EXPECT_EQ(o.code, DeliveryCode::kTimeout);
  EXPECT_TRUE(absl::StrContains(o.detail, "not completely written")) << o.detail;

  SubmitOne(*pool_, Notification(peer->port(), Body("next"), outcomes_.Callback(1)));
  ASSERT_TRUE(peer->WaitForConnections(2, kWait));
  peer->SetReading(true);
  std::string expected = R"({"jsonrpc":"2.0","method":"next"})";
  ASSERT_TRUE(peer->WaitForBytes(1, expected.size(), kWait));
  EXPECT_EQ(peer->Received(1), expected);
  ASSERT_TRUE(outcomes_.WaitFor(2));
  EXPECT_EQ(outcomes_.Get(1).code, DeliveryCode::kOk);
}

TEST_F(WriterPoolTest, MessagesQueuedBehindAHalfWrittenTimeoutGoOutIntactAndInOrder) {
  auto peer = StartStalledPeer();
  StartPool();
  auto huge = UnwritableBody();
  std::vector<Request> batch;
  batch.push_back(Notification(peer->port(), huge, outcomes_.Callback(0), absl::Milliseconds(200)));
  batch.push_back(Notification(peer->port(), Body("B"), outcomes_.Callback(1), absl::Seconds(30)));
  batch.push_back(Call(peer->port(), Body("C"), outcomes_.Callback(2), absl::Seconds(30)));
  batch.push_back(Notification(peer->port(), Body("D"), outcomes_.Callback(3), absl::Seconds(30)));
  pool_->Submit(std::move(batch));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kTimeout) << outcomes_.Get(0).detail;
  ASSERT_TRUE(peer->WaitForConnections(2, kWait));
  peer->SetReading(true);
  ASSERT_TRUE(peer->WaitForMessages(3, kWait));
  ASSERT_TRUE(outcomes_.WaitFor(3));
  // The fresh connection carries exactly B, C, D: nothing of the half-written message, no repeat.
  std::string received = peer->Received(1);
  int64_t id = LoopbackPeer::IdOf(peer->Messages()[1]);
  EXPECT_EQ(received,
            absl::StrCat(R"({"jsonrpc":"2.0","method":"B"}{"id":)", id,
                         R"(,"jsonrpc":"2.0","method":"C"}{"jsonrpc":"2.0","method":"D"})"));
  EXPECT_EQ(outcomes_.Get(1).code, DeliveryCode::kOk);
  EXPECT_EQ(outcomes_.Get(3).code, DeliveryCode::kOk);
  EXPECT_FALSE(outcomes_.Done(2));  // written, awaiting its reply
  EXPECT_EQ(outcomes_.Calls(0), 1);
}

TEST_F(WriterPoolTest, UnwrittenNotificationTimesOutWhileConnected) {
  auto peer = StartStalledPeer();
  StartPool();
  auto huge = UnwritableBody();
  std::vector<Request> batch;
  batch.push_back(Notification(peer->port(), huge, outcomes_.Callback(0), absl::Seconds(30)));
  batch.push_back(
      Notification(peer->port(), Body("E"), outcomes_.Callback(1), absl::Milliseconds(50)));
  pool_->Submit(std::move(batch));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  Outcome o = outcomes_.Get(1);
  EXPECT_EQ(o.code, DeliveryCode::kTimeout);
  EXPECT_TRUE(absl::StartsWith(o.detail, "not written")) << o.detail;
  EXPECT_FALSE(outcomes_.Done(0));
  // Expired in the queue: counted apart from failures, so that for a target accepted = delivered
  // + failed + expired + queued + outstanding (SPEC §11).
  std::optional<TargetStats> stats = pool_->Stats(Target(peer->port()).Key());
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->expired, 1u);
  EXPECT_EQ(stats->failed, 0u);
  EXPECT_EQ(stats->delivered + stats->failed + stats->expired + stats->queued_messages +
                stats->outstanding_requests,
            2u);
}

TEST_F(WriterPoolTest, StatsShowStateAndCounters) {
  auto peer = LoopbackPeer::Start({}, [](int, const std::string& m) {
    if (LoopbackPeer::IdOf(m) == 0) return std::string();
    return ResultReply(LoopbackPeer::IdOf(m), "null");
  });
  StartPool();
  std::string key = Target(peer->port()).Key();
  EXPECT_FALSE(pool_->Stats(key).has_value());
  std::vector<Request> batch;
  batch.push_back(Notification(peer->port(), Body("N"), outcomes_.Callback(0)));
  batch.push_back(Call(peer->port(), Body("R"), outcomes_.Callback(1)));
  pool_->Submit(std::move(batch));
  ASSERT_TRUE(outcomes_.WaitFor(2));
  std::optional<TargetStats> stats = pool_->Stats(key);
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->key, key);
  EXPECT_EQ(stats->state, ConnState::kConnected);
  EXPECT_EQ(stats->delivered, 2u);
  EXPECT_EQ(stats->failed, 0u);
  EXPECT_EQ(stats->expired, 0u);
  EXPECT_EQ(stats->queued_messages, 0u);
  EXPECT_EQ(stats->outstanding_requests, 0u);
  EXPECT_EQ(stats->reconnects, 0u);
  std::vector<TargetStats> all = pool_->AllStats();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].key, key);
  EXPECT_EQ(ConnStateName(stats->state), "CONNECTED");
}

TEST_F(WriterPoolTest, IdleConnectionIsClosedAndForgotten) {
  auto peer = LoopbackPeer::Start({});
  PoolOptions options;
  options.idle_timeout = absl::Milliseconds(50);
  StartPool(options);
  SubmitOne(*pool_, Notification(peer->port(), Body("E"), outcomes_.Callback(0)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  ASSERT_TRUE(peer->WaitForClosed(0, kWait));
  EXPECT_TRUE(WaitForStats(Target(peer->port()).Key(),
                           [](const std::optional<TargetStats>& s) { return !s.has_value(); }));
}

TEST_F(WriterPoolTest, DrainWaitsUntilEverythingIsAnswered) {
  TestEvent answer;
  std::unique_ptr<LoopbackPeer> peer;
  peer = LoopbackPeer::Start({}, [&](int, const std::string& m) {
    answer.WaitFor(kWait);
    return ResultReply(LoopbackPeer::IdOf(m), "1");
  });
  StartPool();
  SubmitOne(*pool_, Call(peer->port(), Body("E"), outcomes_.Callback(0)));
  EXPECT_FALSE(pool_->Drain(absl::Now() + absl::Milliseconds(20)));
  answer.Notify();
  EXPECT_TRUE(pool_->Drain(absl::Now() + kWait));
  EXPECT_TRUE(outcomes_.Done(0));
}

TEST_F(WriterPoolTest, ShutdownCompletesEverythingWithConnectionLost) {
  auto peer = LoopbackPeer::Start({});  // never replies
  ClosedPort closed;
  PoolOptions options;
  options.min_backoff = absl::Seconds(10);
  options.max_backoff = absl::Seconds(10);
  StartPool(options);
  std::vector<Request> batch;
  for (int i = 0; i < 10; ++i) {
    batch.push_back(Call(peer->port(), Body("E"), outcomes_.Callback(i), absl::Minutes(1)));
  }
  // Refused, and queued for a retry that comes before its deadline.
  batch.push_back(Call(closed.port(), Body("E"), outcomes_.Callback(10), absl::Minutes(1)));
  pool_->Submit(std::move(batch));
  ASSERT_TRUE(peer->WaitForMessages(10, kWait));
  pool_->Shutdown();
  ASSERT_TRUE(outcomes_.WaitFor(11, absl::ZeroDuration()));
  for (int i = 0; i < 11; ++i) {
    Outcome o = outcomes_.Get(i);
    EXPECT_EQ(o.code, DeliveryCode::kConnectionLost) << i;
    EXPECT_EQ(o.detail, "shutting down");
    EXPECT_EQ(outcomes_.Calls(i), 1);
  }
  // After Shutdown, Submit completes at once.
  SubmitOne(*pool_, Call(peer->port(), Body("E"), outcomes_.Callback(11)));
  EXPECT_EQ(outcomes_.Get(11).code, DeliveryCode::kConnectionLost);
  pool_->Shutdown();  // idempotent
}

TEST_F(WriterPoolTest, ShutdownRightAfterSubmitCompletesEveryMessageExactlyOnce) {
  auto peer = LoopbackPeer::Start({});  // never replies
  ClosedPort closed;
  constexpr int kCount = 30;
  for (int round = 0; round < 10; ++round) {
    // Declared before the pool, which may still complete messages into it.
    Outcomes outcomes;
    PoolOptions options;
    options.num_loops = 2;
    auto pool = WriterPool::Create(options);
    ASSERT_TRUE(pool.ok()) << pool.status();
    // Literal and resolved hosts, requests and notifications, a live and a refusing port: the
    // batch is still being enqueued, flushed, resolved or connected when Shutdown comes.
    std::vector<Request> batch;
    for (int i = 0; i < kCount; ++i) {
      Request r = i % 2 == 1 ? Call(peer->port(), Body("E"), outcomes.Callback(i), absl::Minutes(1))
                             : Notification(peer->port(), Body("E"), outcomes.Callback(i));
      if (i % 3 == 0) r.target.host = "localhost";
      if (i % 5 == 0) r.target.port = closed.port();
      batch.push_back(std::move(r));
    }
    std::atomic<int> all_enqueued{0};
    (*pool)->Submit(std::move(batch), [&] { all_enqueued.fetch_add(1); });
    if (round % 2 == 1) (*pool)->Drain(absl::Now() + absl::Milliseconds(round));
    (*pool)->Shutdown();
    ASSERT_TRUE(outcomes.WaitFor(kCount, absl::ZeroDuration()));
    EXPECT_EQ(all_enqueued.load(), 1);
    for (int i = 0; i < kCount; ++i) {
      ASSERT_EQ(outcomes.Calls(i), 1) << i;
      Outcome o = outcomes.Get(i);
      if (i % 2 == 1 && i % 5 != 0) {
        EXPECT_EQ(o.code, DeliveryCode::kConnectionLost) << i << ": " << o.detail;
        EXPECT_EQ(o.detail, "shutting down");
      }
    }
    EXPECT_TRUE((*pool)->Drain(absl::Now()));
  }
}

TEST_F(WriterPoolTest, EmptyBatchRunsAllEnqueuedInline) {
  StartPool();
  bool ran = false;
  pool_->Submit(std::vector<Request>{}, [&] { ran = true; });
  EXPECT_TRUE(ran);
}

TEST_F(WriterPoolTest, BatchOverManyTargetsRunsAllEnqueuedOnce) {
  std::vector<std::unique_ptr<LoopbackPeer>> peers;
  for (int i = 0; i < 6; ++i) peers.push_back(LoopbackPeer::Start({}));
  PoolOptions options;
  options.num_loops = 3;
  StartPool(options);
  std::vector<Request> batch;
  for (int i = 0; i < 60; ++i) {
    batch.push_back(Notification(peers[i % 6]->port(), Body("E"), outcomes_.Callback(i)));
  }
  std::atomic<int> calls{0};
  TestEvent enqueued;
  pool_->Submit(std::move(batch), [&] {
    calls.fetch_add(1);
    enqueued.Notify();
  });
  ASSERT_TRUE(enqueued.WaitFor(kWait));
  ASSERT_TRUE(outcomes_.WaitFor(60));
  for (auto& p : peers) ASSERT_TRUE(p->WaitForMessages(10, kWait));
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(pool_->AllStats().size(), 6u);
}

// Records a Fanout's outcomes by slot, whatever thread delivers them.
class RecordingReceiver final : public FanoutReceiver {
 public:
  void OnOutcome(uint32_t slot, Outcome outcome) override {
    std::lock_guard<std::mutex> lock(mu_);
    outcomes_.emplace_back(slot, std::move(outcome));
    cv_.notify_all();
  }
  void OnWritten(size_t count) override {
    std::lock_guard<std::mutex> lock(mu_);
    written_ += count;
    cv_.notify_all();
  }
  // Waits until `outcomes` outcomes and `written` writes were told.
  bool WaitFor(size_t outcomes, size_t written) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(kWait),
                        [&] { return outcomes_.size() >= outcomes && written_ >= written; });
  }
  std::vector<std::pair<uint32_t, Outcome>> outcomes() {
    std::lock_guard<std::mutex> lock(mu_);
    auto sorted = outcomes_;
    std::sort(sorted.begin(), sorted.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    return sorted;
  }
  size_t written() {
    std::lock_guard<std::mutex> lock(mu_);
    return written_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<uint32_t, Outcome>> outcomes_;  // guarded by mu_
  size_t written_ = 0;                                  // guarded by mu_
};

TEST_F(WriterPoolTest, FanoutWritesEachTargetItsBodyAndCountsTheWrites) {
  std::vector<std::unique_ptr<LoopbackPeer>> peers;
  std::vector<uri::TcpTarget> targets;
  for (int i = 0; i < 6; ++i) {
    peers.push_back(LoopbackPeer::Start({}));
    targets.push_back(Target(peers.back()->port()));
  }
  PoolOptions options;
  options.num_loops = 3;
  StartPool(options);
  auto receiver = std::make_shared<RecordingReceiver>();
  std::weak_ptr<RecordingReceiver> alive = receiver;
  Fanout fanout;
  fanout.bodies = {Body("A"), Body("B")};
  fanout.deadline = absl::Now() + absl::Seconds(5);
  fanout.receiver = receiver;
  // Every target twice, with the two bodies: 12 deliveries over 3 loops.
  for (uint32_t i = 0; i < 12; ++i) fanout.targets.push_back({&targets[i % 6], i, i / 6});
  std::atomic<int> calls{0};
  pool_->Submit(std::move(fanout), [&] { calls.fetch_add(1); });
  receiver.reset();
  ASSERT_TRUE(alive.lock()->WaitFor(0, 12));
  for (auto& peer : peers) {
    ASSERT_TRUE(peer->WaitForMessages(2, kWait));
    // In order, byte for byte: the connection's "{" and the shared body.
    EXPECT_EQ(peer->Messages(), (std::vector<std::string>{R"({"jsonrpc":"2.0","method":"A"})",
                                                          R"({"jsonrpc":"2.0","method":"B"})"}));
  }
  EXPECT_TRUE(pool_->Drain(absl::Now() + kWait));
  EXPECT_EQ(calls.load(), 1);
  // Written notifications are counted, not told one by one; the pool let go of the fan-out.
  EXPECT_TRUE(alive.expired());
}

TEST_F(WriterPoolTest, FanoutTellsEachSlotItsReplyOrFailure) {
  auto peer = LoopbackPeer::Start({}, [](int, const std::string& m) {
    return ResultReply(LoopbackPeer::IdOf(m), R"({"n":1})");
  });
  ClosedPort closed;
  PoolOptions options;
  options.min_backoff = absl::Seconds(10);
  options.max_backoff = absl::Seconds(10);
  StartPool(options);
  const uri::TcpTarget live = Target(peer->port());
  const uri::TcpTarget refused = Target(closed.port());
  auto receiver = std::make_shared<RecordingReceiver>();
  Fanout fanout;
  fanout.bodies = {Body("E")};
  fanout.expect_reply = true;
  fanout.deadline = absl::Now() + absl::Seconds(5);
  fanout.receiver = receiver;
  fanout.targets = {{&live, 7, 0}, {&refused, 3, 0}, {&live, 5, 0}};
  pool_->Submit(std::move(fanout));
  ASSERT_TRUE(receiver->WaitFor(3, 0));
  auto outcomes = receiver->outcomes();
  ASSERT_EQ(outcomes.size(), 3u);
  EXPECT_EQ(outcomes[0].first, 3u);
  EXPECT_EQ(outcomes[0].second.code, DeliveryCode::kConnectFailed) << outcomes[0].second.detail;
  EXPECT_EQ(outcomes[1].first, 5u);
  EXPECT_EQ(outcomes[1].second.code, DeliveryCode::kOk);
  EXPECT_EQ(outcomes[1].second.result, R"({"n":1})");
  EXPECT_EQ(outcomes[2].first, 7u);
  EXPECT_EQ(outcomes[2].second.result, R"({"n":1})");
  EXPECT_EQ(receiver->written(), 0u);
  EXPECT_TRUE(pool_->Drain(absl::Now() + kWait));
}

TEST_F(WriterPoolTest, FanoutAfterShutdownFailsEveryTargetAtOnce) {
  auto peer = LoopbackPeer::Start({});
  StartPool();
  pool_->Shutdown();
  const uri::TcpTarget target = Target(peer->port());
  auto receiver = std::make_shared<RecordingReceiver>();
  Fanout fanout;
  fanout.bodies = {Body("E")};
  fanout.deadline = absl::Now() + absl::Seconds(5);
  fanout.receiver = receiver;
  fanout.targets = {{&target, 0, 0}, {&target, 1, 0}};
  bool enqueued = false;
  pool_->Submit(std::move(fanout), [&] { enqueued = true; });
  EXPECT_TRUE(enqueued);
  auto outcomes = receiver->outcomes();
  ASSERT_EQ(outcomes.size(), 2u);
  for (const auto& [slot, o] : outcomes) {
    EXPECT_EQ(o.code, DeliveryCode::kConnectionLost) << slot;
    EXPECT_EQ(o.detail, "shutting down");
  }
}

// ---------------------------------------------------------------------------------------------
// Issue 7: a member's connect share (defect 4), cancellation (defect 5), buffered replies
// (defect 6), the cap on target connections (defect 2).

TEST_F(WriterPoolTest, ConnectDeadlineFailsOneRequestWhileTheSharedConnectionKeepsTrying) {
  BlackholePort blackhole;
  PoolOptions options;
  options.connect_timeout = absl::Seconds(2);
  StartPool(options);
  // A: the whole budget. B: connected within 200 ms or it fails (a group member's share).
  SubmitOne(*pool_, Call(blackhole.port(), Body("A"), outcomes_.Callback(0), absl::Seconds(5)));
  Request b = Call(blackhole.port(), Body("B"), outcomes_.Callback(1), absl::Seconds(5));
  const absl::Time start = absl::Now();
  b.connect_deadline = start + absl::Milliseconds(200);
  SubmitOne(*pool_, std::move(b));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  EXPECT_TRUE(outcomes_.Done(1));
  EXPECT_FALSE(outcomes_.Done(0));
  EXPECT_EQ(outcomes_.Get(1).code, DeliveryCode::kConnectFailed);
  EXPECT_TRUE(absl::StrContains(outcomes_.Get(1).detail, "share of the budget"))
      << outcomes_.Get(1).detail;
  EXPECT_GE(outcomes_.At(1) - start, absl::Milliseconds(195));
  EXPECT_LT(outcomes_.At(1) - start, absl::Milliseconds(600));
  // The connection itself is still trying, for A.
  std::optional<TargetStats> stats = pool_->Stats(absl::StrCat("127.0.0.1:", blackhole.port()));
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->state, ConnState::kConnecting);
  EXPECT_EQ(stats->queued_messages, 1u);
  // A ends with the connection's own timeout.
  ASSERT_TRUE(outcomes_.WaitFor(2));
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kConnectFailed);
  EXPECT_GE(outcomes_.At(0) - start, absl::Milliseconds(1900));
}

TEST_F(WriterPoolTest, ConnectDeadlineDoesNotFailARequestOnceConnected) {
  auto peer = LoopbackPeer::Start({}, [](int, const std::string& message) {
    return ResultReply(LoopbackPeer::IdOf(message), "1");
  });
  StartPool();
  Request r = Call(peer->port(), Body("A"), outcomes_.Callback(0), absl::Seconds(5));
  r.connect_deadline = absl::Now() + absl::Milliseconds(100);
  SubmitOne(*pool_, std::move(r));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kOk) << outcomes_.Get(0).detail;
}

TEST_F(WriterPoolTest, CancelForgetsOutstandingAndQueuedRequestsOfItsToken) {
  // The peer reads but never answers; the black hole never connects.
  auto silent = LoopbackPeer::Start({}, [](int, const std::string&) { return std::string(); });
  BlackholePort blackhole;
  StartPool();
  constexpr int kCalls = 100;
  auto token = std::make_shared<CancelToken>();
  auto other = std::make_shared<CancelToken>();
  std::vector<Request> batch;
  for (int i = 0; i < kCalls; ++i) {
    batch.push_back(Call(silent->port(), Body("E"), outcomes_.Callback(i), absl::Hours(1)));
    batch.back().cancel = token;
  }
  batch.push_back(Call(blackhole.port(), Body("Q"), outcomes_.Callback(kCalls), absl::Hours(1)));
  batch.back().cancel = token;
  // Same targets, another token: untouched by the cancellation.
  batch.push_back(
      Call(silent->port(), Body("KEEP"), other_outcomes_.Callback(0), absl::Seconds(3)));
  batch.back().cancel = other;
  pool_->Submit(std::move(batch));
  const std::string key = absl::StrCat("127.0.0.1:", silent->port());
  ASSERT_TRUE(WaitForStats(key, [&](const std::optional<TargetStats>& s) {
    return s && s->outstanding_requests == kCalls + 1;
  }));

  pool_->Cancel(token, {key, absl::StrCat("127.0.0.1:", blackhole.port()), key});
  ASSERT_TRUE(outcomes_.WaitFor(kCalls + 1, absl::Seconds(5)));
  for (int i = 0; i <= kCalls; ++i) {
    ASSERT_EQ(outcomes_.Get(i).code, DeliveryCode::kTimeout) << i;
    ASSERT_EQ(outcomes_.Calls(i), 1);
  }
  EXPECT_TRUE(absl::StrContains(outcomes_.Get(0).detail, "abandoned"));
  EXPECT_TRUE(WaitForStats(key, [](const std::optional<TargetStats>& s) {
    return s && s->outstanding_requests == 1 && s->queued_messages == 0;
  }));
  EXPECT_FALSE(other_outcomes_.Done(0));

  // A late reply to a forgotten request is unmatched; the connection stays up. The request is
  // outstanding once written; wait until the peer has read it too.
  ASSERT_TRUE(silent->WaitForMessages(1, absl::Seconds(5)));
  silent->Send(0, ResultReply(LoopbackPeer::IdOf(silent->Messages()[0]), "1"));
  EXPECT_TRUE(WaitForStats(
      key, [](const std::optional<TargetStats>& s) { return s && s->unmatched_replies == 1; }));
  EXPECT_EQ(pool_->Stats(key)->state, ConnState::kConnected);

  // A request of the cancelled token submitted afterwards fails at once.
  Outcomes late;
  Request r = Call(silent->port(), Body("LATE"), late.Callback(0), absl::Hours(1));
  r.cancel = token;
  SubmitOne(*pool_, std::move(r));
  ASSERT_TRUE(late.WaitFor(1));
  EXPECT_EQ(late.Get(0).code, DeliveryCode::kTimeout);
  ASSERT_TRUE(other_outcomes_.WaitFor(1));
  EXPECT_EQ(other_outcomes_.Get(0).code, DeliveryCode::kTimeout);  // its own 3 s
}

// The start of a reply that never ends: {"jsonrpc":"2.0","id":ID,"result":"xxxx...
std::string UnterminatedReply(int64_t id, size_t bytes) {
  std::string out = absl::StrCat(R"({"jsonrpc":"2.0","id":)", id, R"(,"result":")");
  out.append(bytes - out.size(), 'x');
  return out;
}

TEST_F(WriterPoolTest, PartialRepliesAreDroppedOnceNoRequestIsOutstanding) {
  // Many subscribers each answer with the start of a 512 KiB reply that never ends.
  constexpr int kPeers = 16;
  constexpr size_t kReply = 512 << 10;
  StartPool();
  std::vector<std::unique_ptr<LoopbackPeer>> peers;
  for (int i = 0; i < kPeers; ++i) {
    peers.push_back(LoopbackPeer::Start({}, [](int, const std::string& message) {
      return UnterminatedReply(LoopbackPeer::IdOf(message), kReply);
    }));
    SubmitOne(*pool_, Call(peers.back()->port(), Body("E"), outcomes_.Callback(i),
                           absl::Milliseconds(1000)));
  }
  auto total_buffered = [&] {
    uint64_t total = 0;
    for (const TargetStats& s : pool_->AllStats()) total += s.reply_buffer_bytes;
    return total;
  };
  // While the requests wait, their partial replies are held (and shown).
  absl::Time deadline = absl::Now() + kWait;
  while (total_buffered() < kPeers * (kReply - 1024) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));  // polling a condition, bounded by the deadline
  }
  ASSERT_GE(total_buffered(), kPeers * (kReply - 1024));
  ASSERT_TRUE(outcomes_.WaitFor(kPeers));
  for (int i = 0; i < kPeers; ++i) EXPECT_EQ(outcomes_.Get(i).code, DeliveryCode::kTimeout);
  // Then they can only be unmatched: the connections are closed and the bytes freed at once,
  // not after the idle timeout (5 minutes).
  deadline = absl::Now() + absl::Seconds(2);
  while (total_buffered() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(total_buffered(), 0u);
  for (auto& peer : peers) EXPECT_TRUE(peer->WaitForClosed(0, absl::Seconds(2)));
}

TEST_F(WriterPoolTest, UnsolicitedPartialReplyClosesTheConnection) {
  auto peer = LoopbackPeer::Start({});
  StartPool();
  const std::string key = absl::StrCat("127.0.0.1:", peer->port());
  SubmitOne(*pool_, Notification(peer->port(), Body("E"), outcomes_.Callback(0)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  ASSERT_TRUE(peer->WaitForMessages(1, kWait));  // accepted: Send() has a connection to use
  peer->Send(0, UnterminatedReply(7, 256 << 10));
  EXPECT_TRUE(peer->WaitForClosed(0, absl::Seconds(2)));
  EXPECT_TRUE(WaitForStats(
      key, [](const std::optional<TargetStats>& s) { return !s || s->reply_buffer_bytes == 0; }));
}

TEST_F(WriterPoolTest, LoopBoundOnBufferedRepliesClosesTheLargest) {
  constexpr int kPeers = 8;
  constexpr size_t kReply = 900 << 10;  // below max_reply_bytes (1 MiB)
  constexpr size_t kLimit = 2 << 20;
  PoolOptions options;
  options.num_loops = 1;
  options.max_reply_buffer_bytes_per_loop = kLimit;
  StartPool(options);
  std::vector<std::unique_ptr<LoopbackPeer>> peers;
  for (int i = 0; i < kPeers; ++i) {
    peers.push_back(LoopbackPeer::Start({}, [](int, const std::string& message) {
      return UnterminatedReply(LoopbackPeer::IdOf(message), kReply);
    }));
    SubmitOne(*pool_, Call(peers.back()->port(), Body("E"), outcomes_.Callback(i), absl::Hours(1)));
  }
  // At most two 900 KiB replies fit; the others' connections are closed as they grow.
  ASSERT_TRUE(outcomes_.WaitFor(kPeers - 2, absl::Seconds(20)));
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  uint64_t total = 0;
  do {
    total = 0;
    for (const TargetStats& s : pool_->AllStats()) total += s.reply_buffer_bytes;
  } while (total > kLimit && absl::Now() < deadline);
  EXPECT_LE(total, kLimit);
  int closed = 0;
  for (int i = 0; i < kPeers; ++i) {
    if (!outcomes_.Done(i)) continue;
    ++closed;
    EXPECT_EQ(outcomes_.Get(i).code, DeliveryCode::kConnectionLost);
    EXPECT_TRUE(absl::StrContains(outcomes_.Get(i).detail, "unfinished reply"))
        << outcomes_.Get(i).detail;
  }
  EXPECT_GE(closed, kPeers - 2);
}

TEST_F(WriterPoolTest, CapOnTargetConnectionsRejectsNewTargetsAndReapsIdleOnes) {
  constexpr int kLimit = 4;
  PoolOptions options;
  options.max_target_connections = kLimit;
  StartPool(options);
  EXPECT_EQ(pool_->max_target_connections(), static_cast<size_t>(kLimit));
  // Silent peers: a call stays outstanding, so its connection is busy.
  std::vector<std::unique_ptr<LoopbackPeer>> peers;
  for (int i = 0; i <= kLimit; ++i) {
    peers.push_back(LoopbackPeer::Start({}, [](int, const std::string&) { return std::string(); }));
  }
  for (int i = 0; i < kLimit; ++i) {
    SubmitOne(*pool_, Call(peers[i]->port(), Body("BUSY"), outcomes_.Callback(i), absl::Hours(1)));
  }
  for (int i = 0; i < kLimit; ++i) ASSERT_TRUE(peers[i]->WaitForMessages(1, kWait));

  // A fifth target fails at once, and says why.
  Outcomes fifth;
  SubmitOne(*pool_, Call(peers[kLimit]->port(), Body("NEW"), fifth.Callback(0)));
  ASSERT_TRUE(fifth.WaitFor(1));
  EXPECT_EQ(fifth.Get(0).code, DeliveryCode::kConnectFailed);
  EXPECT_TRUE(absl::StrContains(fifth.Get(0).detail, "too many target connections (limit 4)"))
      << fifth.Get(0).detail;
  EXPECT_FALSE(pool_->Stats(absl::StrCat("127.0.0.1:", peers[kLimit]->port())).has_value());

  // The existing connections keep working.
  SubmitOne(*pool_, Notification(peers[0]->port(), Body("MORE"), other_outcomes_.Callback(0)));
  ASSERT_TRUE(other_outcomes_.WaitFor(1));
  EXPECT_EQ(other_outcomes_.Get(0).code, DeliveryCode::kOk);

  // Once one goes idle (its call answered), it is closed to make room for the new target. It may
  // live on another loop: the first refusal there asks it to reap, the next attempt gets in.
  peers[0]->Send(0, ResultReply(LoopbackPeer::IdOf(peers[0]->Messages()[0]), "1"));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kOk);
  bool delivered = false;
  for (int attempt = 0; attempt < 50 && !delivered; ++attempt) {
    Outcomes retry;
    SubmitOne(*pool_, Notification(peers[kLimit]->port(), Body("NEW"), retry.Callback(0)));
    ASSERT_TRUE(retry.WaitFor(1));
    delivered = retry.Get(0).code == DeliveryCode::kOk;
    if (!delivered) absl::SleepFor(absl::Milliseconds(10));  // lets the other loop reap
  }
  EXPECT_TRUE(delivered);
  EXPECT_TRUE(peers[kLimit]->WaitForMessages(1, kWait));
  EXPECT_TRUE(peers[0]->WaitForClosed(0, kWait));
}

// ---------------------------------------------------------------------------------------------
// Issue 11, part 3: deadlines in a FIFO, with a heap only for those that arrive out of order
// (net/deadline_queue.h). Each message must still expire at its own deadline, whatever order the
// deadlines came in, and completed messages must not pile up entries. Connection timers run on the
// real clock (PoolOptions::clock is admission's only), hence the margins: wide enough for a busy
// test machine, far narrower than the gaps between the deadlines, so that a message expiring at
// another's time fails.

constexpr absl::Duration kLate = absl::Milliseconds(60);

// Expects message `index` of `outcomes` completed with kTimeout, not before `deadline` and not
// more than kLate after it.
void ExpectExpiredAt(Outcomes& outcomes, int index, absl::Time deadline, absl::string_view detail) {
  ASSERT_TRUE(outcomes.Done(index)) << "message " << index;
  Outcome o = outcomes.Get(index);
  EXPECT_EQ(o.code, DeliveryCode::kTimeout) << "message " << index << ": " << o.detail;
  EXPECT_TRUE(absl::StrContains(o.detail, detail)) << "message " << index << ": " << o.detail;
  EXPECT_GE(outcomes.At(index), deadline) << "message " << index << " expired early";
  EXPECT_LT(outcomes.At(index) - deadline, kLate) << "message " << index << " expired late";
}

TEST_F(WriterPoolTest, LaterRequestWithAShorterTimeoutExpiresFirstAtItsOwnDeadline) {
  auto peer = LoopbackPeer::Start({}, [](int, const std::string&) { return std::string(); });
  StartPool();
  // One connection; three Raises in time order, the later ones with shorter timeouts.
  Request a = Call(peer->port(), Body("A"), outcomes_.Callback(0), absl::Milliseconds(450));
  const absl::Time a_deadline = a.deadline;
  SubmitOne(*pool_, std::move(a));
  Request b = Call(peer->port(), Body("B"), outcomes_.Callback(1), absl::Milliseconds(150));
  const absl::Time b_deadline = b.deadline;
  SubmitOne(*pool_, std::move(b));
  Request c = Call(peer->port(), Body("C"), outcomes_.Callback(2), absl::Milliseconds(300));
  const absl::Time c_deadline = c.deadline;
  SubmitOne(*pool_, std::move(c));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  ExpectExpiredAt(outcomes_, 1, b_deadline, "no reply");
  ASSERT_TRUE(outcomes_.WaitFor(2));
  ExpectExpiredAt(outcomes_, 2, c_deadline, "no reply");
  ASSERT_TRUE(outcomes_.WaitFor(3));
  ExpectExpiredAt(outcomes_, 0, a_deadline, "no reply");
  EXPECT_EQ(peer->message_count(), 3u);
}

TEST_F(WriterPoolTest, UnwrittenNotificationsExpireEachAtItsOwnDeadline) {
  auto peer = StartStalledPeer();
  StartPool();
  // A head the peer never lets through, then notifications whose deadlines go up and down.
  auto huge = UnwritableBody();
  SubmitOne(*pool_, Notification(peer->port(), huge, other_outcomes_.Callback(0), kWait));
  const std::vector<int> timeouts_ms = {400, 120, 280, 200, 400};
  std::vector<absl::Time> deadlines;
  for (size_t i = 0; i < timeouts_ms.size(); ++i) {
    Request r = Notification(peer->port(), Body(absl::StrCat("N", i)), outcomes_.Callback(i),
                             absl::Milliseconds(timeouts_ms[i]));
    deadlines.push_back(r.deadline);
    SubmitOne(*pool_, std::move(r));
  }
  // In the order of their deadlines: 1, 3, 2, then 0 and 4.
  ASSERT_TRUE(outcomes_.WaitFor(1));
  ExpectExpiredAt(outcomes_, 1, deadlines[1], "not written");
  EXPECT_FALSE(outcomes_.Done(3));
  ASSERT_TRUE(outcomes_.WaitFor(2));
  ExpectExpiredAt(outcomes_, 3, deadlines[3], "not written");
  ASSERT_TRUE(outcomes_.WaitFor(3));
  ExpectExpiredAt(outcomes_, 2, deadlines[2], "not written");
  ASSERT_TRUE(outcomes_.WaitFor(5));
  ExpectExpiredAt(outcomes_, 0, deadlines[0], "not written");
  ExpectExpiredAt(outcomes_, 4, deadlines[4], "not written");
  EXPECT_FALSE(other_outcomes_.Done(0));
  std::optional<TargetStats> stats = pool_->Stats(Target(peer->port()).Key());
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->expired, 5u);
  EXPECT_EQ(stats->queued_messages, 1u);
}

TEST_F(WriterPoolTest, InterleavedSyncAndAsyncEachExpireOrCompleteOnTheirOwn) {
  // Reads everything, answers nothing: notifications complete once written, requests expire.
  auto peer = LoopbackPeer::Start({}, [](int, const std::string&) { return std::string(); });
  StartPool();
  const std::vector<int> call_timeouts_ms = {350, 120, 230};
  std::vector<absl::Time> deadlines;
  std::vector<Request> batch;
  int index = 0;
  for (int timeout_ms : call_timeouts_ms) {
    batch.push_back(
        Call(peer->port(), Body("C"), outcomes_.Callback(index++), absl::Milliseconds(timeout_ms)));
    deadlines.push_back(batch.back().deadline);
    // Notifications between them, with deadlines before, between and after theirs.
    for (int ms : {50, 300, 5000}) {
      batch.push_back(Notification(peer->port(), Body("N"), other_outcomes_.Callback(index++),
                                   absl::Milliseconds(ms)));
    }
  }
  pool_->Submit(std::move(batch));
  ASSERT_TRUE(other_outcomes_.WaitFor(9));
  for (int i = 0; i < index; ++i) {
    if (i % 4 != 0) {
      EXPECT_EQ(other_outcomes_.Get(i).code, DeliveryCode::kOk) << i;
    }
  }
  ASSERT_TRUE(outcomes_.WaitFor(1));
  ExpectExpiredAt(outcomes_, 4, deadlines[1], "no reply");
  ASSERT_TRUE(outcomes_.WaitFor(2));
  ExpectExpiredAt(outcomes_, 8, deadlines[2], "no reply");
  ASSERT_TRUE(outcomes_.WaitFor(3));
  ExpectExpiredAt(outcomes_, 0, deadlines[0], "no reply");
  ASSERT_TRUE(WaitForStats(Target(peer->port()).Key(), [](const std::optional<TargetStats>& s) {
    return s && s->failed == 3 && s->delivered == 9 && s->expired == 0 && s->deadline_entries == 0;
  }));
}

TEST_F(WriterPoolTest, CompletedMessagesDoNotPileUpDeadlineEntries) {
  auto peer = LoopbackPeer::Start({}, [](int, const std::string&) { return std::string(); });
  StartPool();
  const std::string key = Target(peer->port()).Key();
  // An outstanding request keeps the connection busy, so its deadlines are not simply cleared.
  // Its deadline comes before the notifications', so theirs can go after it in the FIFO.
  SubmitOne(*pool_, Call(peer->port(), Body("HOLD"), outcomes_.Callback(0), absl::Seconds(10)));
  ASSERT_TRUE(peer->WaitForMessages(1, kWait));
  // Thousands of notifications, written and completed at once: first with rising deadlines (the
  // FIFO), then falling ones (each earlier than the last: the heap).
  constexpr int kBatches = 40;
  constexpr int kPerBatch = 100;
  int index = 0;
  for (int b = 0; b < kBatches; ++b) {
    std::vector<Request> batch;
    for (int i = 0; i < kPerBatch; ++i) {
      const absl::Duration timeout = b < kBatches / 2
                                         ? absl::Seconds(20) + absl::Milliseconds(index)
                                         : absl::Seconds(20) - absl::Milliseconds(index);
      batch.push_back(
          Notification(peer->port(), Body("N"), other_outcomes_.Callback(index++), timeout));
    }
    pool_->Submit(std::move(batch));
  }
  ASSERT_TRUE(other_outcomes_.WaitFor(kBatches * kPerBatch));
  ASSERT_TRUE(peer->WaitForMessages(1 + kBatches * kPerBatch, kWait));
  // One more once they are all written: at its enqueue two messages are live (it and the
  // request), so whatever the loop held of the burst (batches drained in one iteration are
  // enqueued together) is dropped now if it is over the compaction rule's floor.
  Outcomes last;
  SubmitOne(*pool_, Notification(peer->port(), Body("LAST"), last.Callback(0)));
  ASSERT_TRUE(last.WaitFor(1));
  // Bounded by the compaction rule (dropped once over 64 and four per live message), not by the
  // 4,002 messages queued since the request. (Published after the flush: waited for.)
  EXPECT_TRUE(WaitForStats(key, [](const std::optional<TargetStats>& s) {
    return s && s->delivered == kBatches * kPerBatch + 1 && s->deadline_entries >= 1 &&
           s->deadline_entries <= DeadlineQueue::kMinCompactSize;
  })) << pool_->Stats(key)->deadline_entries;
  EXPECT_EQ(pool_->Stats(key)->outstanding_requests, 1u);
  // The request still expires (or is answered) normally: answered here, and then nothing is held.
  peer->Send(0, ResultReply(LoopbackPeer::IdOf(peer->Messages()[0]), "1"));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kOk);
  EXPECT_TRUE(WaitForStats(
      key, [](const std::optional<TargetStats>& s) { return s && s->deadline_entries == 0; }));
}

TEST_F(WriterPoolTest, ConnectDeadlinesOutOfOrderEachFailAtTheirOwnTime) {
  BlackholePort blackhole;
  PoolOptions options;
  options.connect_timeout = absl::Seconds(5);
  StartPool(options);
  const absl::Time start = absl::Now();
  // Same overall deadline; connect shares of 350 ms, then 150 ms, then none.
  Request a = Call(blackhole.port(), Body("A"), outcomes_.Callback(0), absl::Seconds(5));
  a.connect_deadline = start + absl::Milliseconds(350);
  SubmitOne(*pool_, std::move(a));
  Request b = Call(blackhole.port(), Body("B"), outcomes_.Callback(1), absl::Seconds(5));
  b.connect_deadline = start + absl::Milliseconds(150);
  SubmitOne(*pool_, std::move(b));
  SubmitOne(*pool_, Call(blackhole.port(), Body("C"), outcomes_.Callback(2), absl::Seconds(5)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  ASSERT_TRUE(outcomes_.Done(1));
  EXPECT_FALSE(outcomes_.Done(0));
  EXPECT_EQ(outcomes_.Get(1).code, DeliveryCode::kConnectFailed) << outcomes_.Get(1).detail;
  EXPECT_GE(outcomes_.At(1) - start, absl::Milliseconds(150));
  EXPECT_LT(outcomes_.At(1) - start, absl::Milliseconds(150) + kLate);
  ASSERT_TRUE(outcomes_.WaitFor(2));
  ASSERT_TRUE(outcomes_.Done(0));
  EXPECT_EQ(outcomes_.Get(0).code, DeliveryCode::kConnectFailed) << outcomes_.Get(0).detail;
  EXPECT_TRUE(absl::StrContains(outcomes_.Get(0).detail, "share of the budget"))
      << outcomes_.Get(0).detail;
  EXPECT_GE(outcomes_.At(0) - start, absl::Milliseconds(350));
  EXPECT_LT(outcomes_.At(0) - start, absl::Milliseconds(350) + kLate);
  // C has no share: it waits for the connection's own timeout (then fails at shutdown here).
  EXPECT_FALSE(outcomes_.Done(2));
}

TEST_F(WriterPoolTest, DeadlineTimerLeftArmedWhenIdleDoesNotPostponeTheIdleClose) {
  auto peer = LoopbackPeer::Start({});
  PoolOptions options;
  options.idle_timeout = absl::Milliseconds(400);
  StartPool(options);
  // Written at once: the connection is idle from then on, with its deadline timer (due in 200 ms)
  // still armed. Its firing must not count as activity.
  SubmitOne(*pool_,
            Notification(peer->port(), Body("E"), outcomes_.Callback(0), absl::Milliseconds(200)));
  ASSERT_TRUE(outcomes_.WaitFor(1));
  const absl::Time written = outcomes_.At(0);
  ASSERT_TRUE(peer->WaitForClosed(0, kWait));
  const absl::Duration idle_for = absl::Now() - written;
  EXPECT_GE(idle_for, absl::Milliseconds(400));
  // Restarting the idle timeout at 200 ms would close it at 600 ms.
  EXPECT_LT(idle_for, absl::Milliseconds(550));
}

}  // namespace
}  // namespace eventbus::net
