// Dispatcher against a real WriterPool and real loopback JSON-RPC peers: fan-out, per-target
// statuses in sync and async mode, and the virtual-group policies of SPEC §7.
#include "server/delivery/dispatcher.h"

#include <algorithm>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/uri/socket_uri.h"
#include "tests/testing/jsonrpc_peer.h"
#include "tests/testing/ports.h"
#include "tests/testing/wait.h"

namespace eventbus::delivery {
namespace {

using net::DeliveryCode;
using ::testing::ElementsAre;
using testing::JsonRpcPeer;
using testing::PeerMode;
using ::testing::SizeIs;

constexpr absl::Duration kWait = absl::Seconds(10);

std::unique_ptr<JsonRpcPeer> StartPeer(PeerMode mode = PeerMode::kReplyResult) {
  JsonRpcPeer::Options options;
  options.behavior.mode = mode;
  auto peer = JsonRpcPeer::Start(options);
  EXPECT_TRUE(peer.ok()) << peer.status();
  return std::move(*peer);
}

registry::SubscriptionPtr Sub(const std::string& id, const std::string& socket,
                              std::optional<std::string> event_param = std::nullopt) {
  auto parsed = uri::ParseSocket(socket);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  auto sub = std::make_shared<registry::Subscription>();
  sub->id = id;
  sub->event = "E_TEST";
  sub->socket = parsed->ToString();
  sub->target = *parsed;
  sub->create_time = absl::Now();
  sub->event_param = std::move(event_param);
  return sub;
}

std::string ClosedSocket() { return absl::StrCat("tcp:127.0.0.1:", testing::ClosedPort()); }

// Records what the dispatcher tells a DeliveryObserver, per scope (event and mode).
class RecordingObserver final : public DeliveryObserver {
 public:
  struct Scope final : EventScope {
    std::string event;
    bool sync = false;
  };

  EventScope* OnRaise(const std::string& event, bool sync, size_t deliveries) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto& scope = scopes_[{event, sync}];
    if (scope == nullptr) {
      scope = std::make_unique<Scope>();
      scope->event = event;
      scope->sync = sync;
    }
    ++raises_;
    accepted_ += deliveries;
    return scope.get();
  }
  void OnOutcome(EventScope* scope, DeliveryCode code, absl::Duration latency) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto* s = static_cast<Scope*>(scope);
    ++outcomes_[{s->sync, code}];
    ++completed_;
    if (latency < absl::ZeroDuration()) ++negative_latencies_;
  }

  size_t raises() {
    std::lock_guard<std::mutex> lock(mu_);
    return raises_;
  }
  size_t accepted() {
    std::lock_guard<std::mutex> lock(mu_);
    return accepted_;
  }
  size_t completed() {
    std::lock_guard<std::mutex> lock(mu_);
    return completed_;
  }
  size_t outcomes(bool sync, DeliveryCode code) {
    std::lock_guard<std::mutex> lock(mu_);
    return outcomes_[{sync, code}];
  }
  size_t negative_latencies() {
    std::lock_guard<std::mutex> lock(mu_);
    return negative_latencies_;
  }

 private:
  std::mutex mu_;
  std::map<std::pair<std::string, bool>, std::unique_ptr<Scope>> scopes_;
  std::map<std::pair<bool, DeliveryCode>, size_t> outcomes_;
  size_t raises_ = 0, accepted_ = 0, completed_ = 0, negative_latencies_ = 0;
};

class DispatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    net::PoolOptions options;
    options.num_loops = 2;
    options.min_backoff = absl::Milliseconds(20);
    options.max_backoff = absl::Milliseconds(200);
    auto pool = net::WriterPool::Create(options);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = std::move(*pool);
    MakeDispatcher(DispatcherOptions{});
  }

  // Outcomes still in flight call back into the dispatcher: the pool goes first.
  void TearDown() override {
    if (pool_ != nullptr) pool_->Shutdown();
  }

  // A pool of two loops whose target queues hold one message each (the second to a target in one
  // Raise is refused, QUEUE_FULL), and a dispatcher on it.
  void RestartWithQueuesOfOneMessage() {
    net::PoolOptions pool_options;
    pool_options.num_loops = 2;
    pool_options.max_queue_messages = 1;
    pool_->Shutdown();
    auto pool = net::WriterPool::Create(pool_options);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = std::move(*pool);
    MakeDispatcher(DispatcherOptions{});
  }

  // A dispatcher that tells `observer` (which must outlive it) of every Raise and outcome.
  void MakeDispatcherTelling(DeliveryObserver* observer) {
    DispatcherOptions options;
    options.observer = observer;
    MakeDispatcher(options);
  }

  void MakeDispatcher(DispatcherOptions options) {
    dispatcher_ =
        std::make_unique<Dispatcher>(pool_.get(), base::RealClock::Get(), std::move(options));
  }

  // Raises and waits for the answer.
  RaiseResult RaiseFor(std::vector<registry::SubscriptionPtr> subs, const RaiseOptions& options,
                       jsonrpc::Params params = {}) {
    auto list = std::make_shared<const registry::SubscriberList>(std::move(subs));
    // std::promise, not absl::Notification: ThreadSanitizer sees its synchronisation (Debian's
    // abseil is not annotated), so a TSan run checks the dispatcher's hand-off for real.
    auto promise = std::make_shared<std::promise<RaiseResult>>();
    std::future<RaiseResult> result = promise->get_future();
    dispatcher_->Raise("E_TEST", params, options, list,
                       [promise](RaiseResult r) { promise->set_value(std::move(r)); });
    if (result.wait_for(absl::ToChronoSeconds(kWait)) != std::future_status::ready) {
      ADD_FAILURE() << "Raise did not complete";
      return {};
    }
    return result.get();
  }

  // Raises and waits for the reports (every one, QUEUED included).
  std::vector<DeliveryReport> Raise(std::vector<registry::SubscriptionPtr> subs, bool sync,
                                    jsonrpc::Params params = {},
                                    absl::Duration timeout = absl::Milliseconds(1000)) {
    RaiseOptions options;
    options.sync = sync;
    options.timeout = timeout;
    RaiseResult result = RaiseFor(std::move(subs), options, std::move(params));
    const size_t queued = std::count_if(result.reports.begin(), result.reports.end(), [](auto& r) {
      return r.outcome.code == DeliveryCode::kQueued;
    });
    EXPECT_EQ(result.targets, result.reports.size());
    EXPECT_EQ(result.queued, queued);
    return std::move(result.reports);
  }

  static std::vector<DeliveryCode> Codes(const std::vector<DeliveryReport>& reports) {
    std::vector<DeliveryCode> codes;
    for (const auto& r : reports) codes.push_back(r.outcome.code);
    return codes;
  }

  std::unique_ptr<net::WriterPool> pool_;
  std::unique_ptr<Dispatcher> dispatcher_;
};

TEST_F(DispatcherTest, NoSubscribersAnswersAtOnceWithNoReports) {
  EXPECT_THAT(Raise({}, /*sync=*/true), SizeIs(0));
}

TEST_F(DispatcherTest, AsyncQueuesEveryTargetAndSendsExactBytes) {
  auto a = StartPeer(), b = StartPeer();
  jsonrpc::Params params{jsonrpc::Params::Kind::kNamed, R"({"ip":"192.168.2.11","count":3})"};
  auto reports = Raise({Sub("s1", a->socket()), Sub("s2", b->socket("handle_cmd"))},
                       /*sync=*/false, params);
  EXPECT_THAT(Codes(reports), ElementsAre(DeliveryCode::kQueued, DeliveryCode::kQueued));
  EXPECT_EQ(reports[0].subscription_id, "s1");
  ASSERT_TRUE(a->WaitForMessages(1, kWait));
  ASSERT_TRUE(b->WaitForMessages(1, kWait));
  EXPECT_EQ(a->Received(),
            R"({"jsonrpc":"2.0","method":"E_TEST","params":{"ip":"192.168.2.11","count":3}})");
  EXPECT_EQ(b->Received(),
            R"({"jsonrpc":"2.0","method":"handle_cmd","params":{"ip":"192.168.2.11","count":3}})");
}

TEST_F(DispatcherTest, SubscriptionEventParamOverridesServerDefault) {
  DispatcherOptions options;
  options.event_param = "opensips_event";
  MakeDispatcher(options);
  auto a = StartPeer(), b = StartPeer();
  jsonrpc::Params params{jsonrpc::Params::Kind::kPositional, "[3,5]"};
  Raise({Sub("s1", a->socket()), Sub("s2", b->socket(), /*event_param=*/"")}, false, params);
  ASSERT_TRUE(a->WaitForMessages(1, kWait));
  ASSERT_TRUE(b->WaitForMessages(1, kWait));
  EXPECT_EQ(a->Received(), R"({"jsonrpc":"2.0","method":"E_TEST","params":["E_TEST",3,5]})");
  EXPECT_EQ(b->Received(), R"({"jsonrpc":"2.0","method":"E_TEST","params":[3,5]})");
}

// The body is encoded once per distinct (method, event_param): every combination, repeated and
// interleaved on one connection, still gets its own exact bytes.
TEST_F(DispatcherTest, EachMethodAndEventParamCombinationGetsItsOwnBody) {
  DispatcherOptions options;
  options.event_param = "ev";
  MakeDispatcher(options);
  auto a = StartPeer();
  jsonrpc::Params params{jsonrpc::Params::Kind::kNamed, R"({"n":1})"};
  Raise(
      {Sub("s1", a->socket("m1")), Sub("s2", a->socket("m2"), ""), Sub("s3", a->socket("m1"), "k"),
       Sub("s4", a->socket("m1")), Sub("s5", a->socket("m2"), ""), Sub("s6", a->socket("m2"), "k"),
       Sub("s7", a->socket(), "")},
      /*sync=*/false, params);
  ASSERT_TRUE(a->WaitForMessages(7, kWait));
  EXPECT_THAT(a->Messages(),
              ElementsAre(R"({"jsonrpc":"2.0","method":"m1","params":{"ev":"E_TEST","n":1}})",
                          R"({"jsonrpc":"2.0","method":"m2","params":{"n":1}})",
                          R"({"jsonrpc":"2.0","method":"m1","params":{"k":"E_TEST","n":1}})",
                          R"({"jsonrpc":"2.0","method":"m1","params":{"ev":"E_TEST","n":1}})",
                          R"({"jsonrpc":"2.0","method":"m2","params":{"n":1}})",
                          R"({"jsonrpc":"2.0","method":"m2","params":{"k":"E_TEST","n":1}})",
                          R"({"jsonrpc":"2.0","method":"E_TEST","params":{"n":1}})"));
}

// Thousands of distinct methods on one target (the body cache is a hash map, not a list): each
// subscription gets the body of its own method, in subscription order.
TEST_F(DispatcherTest, ThousandsOfDistinctMethodsEachGetTheirOwnBody) {
  constexpr int kSubs = 3000;
  auto a = StartPeer();
  std::vector<registry::SubscriptionPtr> subs;
  for (int i = 0; i < kSubs; ++i) {
    subs.push_back(Sub(absl::StrCat("s", i), a->socket(absl::StrCat("m", i % 1500))));
  }
  jsonrpc::Params params{jsonrpc::Params::Kind::kPositional, "[1]"};
  auto reports = Raise(std::move(subs), /*sync=*/false, params);
  ASSERT_THAT(reports, SizeIs(kSubs));
  ASSERT_TRUE(a->WaitForMessages(kSubs, kWait));
  std::vector<std::string> messages = a->Messages();
  ASSERT_THAT(messages, SizeIs(kSubs));
  for (int i = 0; i < kSubs; ++i) {
    ASSERT_EQ(messages[i],
              absl::StrCat(R"({"jsonrpc":"2.0","method":"m)", i % 1500, R"(","params":[1]})"))
        << "subscription " << i;
  }
}

// Async without queued reports: the QUEUED deliveries are only counted; what failed at once is
// still reported, named, in subscription order.
TEST_F(DispatcherTest, AsyncWithoutQueuedReportsCountsQueuedAndListsOnlyFailures) {
  auto a = StartPeer(), b = StartPeer();
  RaiseOptions options;
  options.queued_reports = false;
  // The immediate failure: a queue of one message, refusing the second one (QUEUE_FULL).
  RestartWithQueuesOfOneMessage();
  // Two subscriptions to `b` (one queue of one message: the second is refused), one to `a`.
  RaiseResult result = RaiseFor(
      {Sub("s1", a->socket()), Sub("s2", b->socket()), Sub("s3", b->socket("m"))}, options);
  EXPECT_EQ(result.targets, 3u);
  EXPECT_EQ(result.queued, 2u);
  ASSERT_THAT(result.reports, SizeIs(1));
  EXPECT_EQ(result.reports[0].subscription_id, "s3");
  EXPECT_EQ(result.reports[0].socket, b->socket("m"));
  EXPECT_EQ(result.reports[0].outcome.code, DeliveryCode::kQueueFull);
  ASSERT_TRUE(a->WaitForMessages(1, kWait));
  ASSERT_TRUE(b->WaitForMessages(1, kWait));
}

// Failures told by different loops, in whatever order they come, are listed in subscription order.
TEST_F(DispatcherTest, AsyncWithoutQueuedReportsListsFailuresFromEveryLoopInOrder) {
  std::vector<std::unique_ptr<JsonRpcPeer>> peers;
  for (int i = 0; i < 4; ++i) peers.push_back(StartPeer());
  RestartWithQueuesOfOneMessage();
  // Each peer's first subscription is queued, its second refused (QUEUE_FULL).
  std::vector<registry::SubscriptionPtr> subs;
  for (int round = 0; round < 2; ++round) {
    for (int p = 0; p < 4; ++p) {
      subs.push_back(
          Sub(absl::StrCat("s", round * 4 + p), peers[p]->socket(round == 0 ? "" : "m")));
    }
  }
  RaiseOptions options;
  options.queued_reports = false;
  RaiseResult result = RaiseFor(std::move(subs), options);
  EXPECT_EQ(result.targets, 8u);
  EXPECT_EQ(result.queued, 4u);
  ASSERT_THAT(result.reports, SizeIs(4));
  for (int p = 0; p < 4; ++p) {
    EXPECT_EQ(result.reports[p].subscription_id, absl::StrCat("s", 4 + p));
    EXPECT_EQ(result.reports[p].outcome.code, DeliveryCode::kQueueFull);
  }
  for (auto& peer : peers) ASSERT_TRUE(peer->WaitForMessages(1, kWait));
}

TEST_F(DispatcherTest, AsyncWithoutQueuedReportsToHealthyTargetsListsNothing) {
  auto a = StartPeer();
  std::vector<registry::SubscriptionPtr> subs;
  for (int i = 0; i < 100; ++i) subs.push_back(Sub(absl::StrCat("s", i), a->socket()));
  RaiseOptions options;
  options.queued_reports = false;
  RaiseResult result = RaiseFor(std::move(subs), options);
  EXPECT_EQ(result.targets, 100u);
  EXPECT_EQ(result.queued, 100u);
  EXPECT_THAT(result.reports, SizeIs(0));
  ASSERT_TRUE(a->WaitForMessages(100, kWait));
}

// Sync answers report every target whatever queued_reports says.
TEST_F(DispatcherTest, SyncReportsEveryTargetEvenWithoutQueuedReports) {
  auto ok = StartPeer(PeerMode::kReplyResult), err = StartPeer(PeerMode::kReplyError);
  RaiseOptions options;
  options.sync = true;
  options.queued_reports = false;
  RaiseResult result = RaiseFor({Sub("s1", ok->socket()), Sub("s2", err->socket())}, options);
  EXPECT_EQ(result.targets, 2u);
  EXPECT_EQ(result.queued, 0u);
  EXPECT_THAT(Codes(result.reports), ElementsAre(DeliveryCode::kOk, DeliveryCode::kRpcError));
  EXPECT_EQ(result.reports[1].subscription_id, "s2");
}

TEST_F(DispatcherTest, ExpiredSubscriptionGetsNothing) {
  auto a = StartPeer();
  auto sub = std::const_pointer_cast<registry::Subscription>(Sub("s1", a->socket()));
  sub->expire_time = absl::Now() - absl::Milliseconds(1);
  EXPECT_THAT(Raise({sub}, false), SizeIs(0));
}

TEST_F(DispatcherTest, SyncReportsResultErrorAndTimeoutPerTarget) {
  auto ok = StartPeer(PeerMode::kReplyResult);
  auto err = StartPeer(PeerMode::kReplyError);
  auto silent = StartPeer(PeerMode::kNeverReply);
  absl::Time start = absl::Now();
  auto reports =
      Raise({Sub("ok", ok->socket()), Sub("err", err->socket()), Sub("silent", silent->socket())},
            /*sync=*/true, {}, absl::Milliseconds(300));
  absl::Duration took = absl::Now() - start;
  EXPECT_THAT(Codes(reports),
              ElementsAre(DeliveryCode::kOk, DeliveryCode::kRpcError, DeliveryCode::kTimeout));
  EXPECT_EQ(reports[1].subscription_id, "err");
  EXPECT_EQ(reports[1].socket, err->socket());
  EXPECT_EQ(reports[0].outcome.result, "\"ok\"");
  EXPECT_EQ(reports[1].outcome.error_code, -32000);
  EXPECT_EQ(reports[1].outcome.error_message, "peer error");
  EXPECT_GE(took, absl::Milliseconds(295));
  EXPECT_LT(took, absl::Milliseconds(600));
  EXPECT_GE(reports[2].latency, absl::Milliseconds(295));
}

TEST_F(DispatcherTest, ParallelGroupReportsEveryMember) {
  auto a = StartPeer(), b = StartPeer();
  std::string socket =
      absl::StrCat("virtual:PARALLEL ", a->socket(), " ", ClosedSocket(), " ", b->socket());
  auto reports = Raise({Sub("g", socket)}, /*sync=*/true, {}, absl::Milliseconds(500));
  ASSERT_THAT(reports, SizeIs(1));
  EXPECT_EQ(reports[0].subscription_id, "g");
  EXPECT_EQ(reports[0].socket, socket);
  ASSERT_THAT(reports[0].attempts, SizeIs(3));
  EXPECT_EQ(reports[0].attempts[0].outcome.code, DeliveryCode::kOk);
  EXPECT_EQ(reports[0].attempts[1].outcome.code, DeliveryCode::kConnectFailed);
  EXPECT_EQ(reports[0].attempts[2].outcome.code, DeliveryCode::kOk);
  EXPECT_EQ(reports[0].outcome.code, DeliveryCode::kConnectFailed);
  EXPECT_EQ(reports[0].attempts[0].member, a->socket());
}

TEST_F(DispatcherTest, FailoverSkipsDeadFirstMemberAndRemembersIt) {
  DispatcherOptions options;
  options.failover_timeout = absl::Milliseconds(400);
  MakeDispatcher(options);
  auto good = StartPeer();
  std::string dead = ClosedSocket();
  auto sub = Sub("g", absl::StrCat("virtual:FAILOVER ", dead, " ", good->socket()));

  auto first = Raise({sub}, /*sync=*/true);
  ASSERT_THAT(first, SizeIs(1));
  EXPECT_EQ(first[0].outcome.code, DeliveryCode::kOk);
  ASSERT_THAT(first[0].attempts, SizeIs(2));
  EXPECT_EQ(first[0].attempts[0].member, dead);
  EXPECT_EQ(first[0].attempts[0].outcome.code, DeliveryCode::kConnectFailed);
  EXPECT_EQ(first[0].attempts[1].outcome.code, DeliveryCode::kOk);

  // Within failover_timeout the dead member is skipped altogether.
  auto second = Raise({sub}, /*sync=*/true);
  ASSERT_THAT(second[0].attempts, SizeIs(1));
  EXPECT_EQ(second[0].attempts[0].member, good->socket());

  // After it, the first member is tried again.
  absl::SleepFor(absl::Milliseconds(450));  // waits out a configured interval, not a race
  auto third = Raise({sub}, /*sync=*/true);
  ASSERT_THAT(third[0].attempts, SizeIs(2));
  EXPECT_EQ(third[0].attempts[0].member, dead);
}

TEST_F(DispatcherTest, FailoverPassesOverAMemberWhoseSharedConnectionIsReconnecting) {
  auto good = StartPeer();
  std::string dead = ClosedSocket();
  // A plain subscription to the dead target leaves its shared connection waiting to reconnect.
  auto plain = Raise({Sub("plain", dead)}, /*sync=*/true, {}, absl::Milliseconds(300));
  ASSERT_EQ(plain[0].outcome.code, DeliveryCode::kConnectFailed);
  // The Raise may end while a retry is still being refused: wait for the backoff it leads to.
  std::optional<net::TargetStats> stats;
  absl::Time deadline = absl::Now() + kWait;
  for (;;) {
    stats = pool_->Stats(uri::ParseTcpSocket(dead)->Key());
    if ((stats && stats->state == net::ConnState::kBackoff) || absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(1));  // polling a condition, bounded by the deadline
  }
  ASSERT_TRUE(stats.has_value());
  ASSERT_EQ(stats->state, net::ConnState::kBackoff);

  absl::Time start = absl::Now();
  auto reports = Raise({Sub("g", absl::StrCat("virtual:FAILOVER ", dead, " ", good->socket()))},
                       /*sync=*/true);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(100));
  ASSERT_THAT(reports, SizeIs(1));
  EXPECT_EQ(reports[0].outcome.code, DeliveryCode::kOk);
  ASSERT_THAT(reports[0].attempts, SizeIs(1));
  EXPECT_EQ(reports[0].attempts[0].member, good->socket());
}

TEST_F(DispatcherTest, FailoverTriesSkippedMembersWhenAllOthersFail) {
  auto good = StartPeer();
  auto sub = Sub("g", absl::StrCat("virtual:FAILOVER ", good->socket(), " ", ClosedSocket()));
  // Mark the good member failed by making it refuse once.
  good->Stop();
  auto down = Raise({sub}, /*sync=*/true, {}, absl::Milliseconds(300));
  EXPECT_NE(down[0].outcome.code, DeliveryCode::kOk);
  ASSERT_TRUE(good->Restart().ok());
  // Both members are now marked failed; the group still tries them, in order.
  auto up = Raise({sub}, /*sync=*/true, {}, absl::Milliseconds(1500));
  EXPECT_EQ(up[0].outcome.code, DeliveryCode::kOk) << up[0].outcome.detail;
}

TEST_F(DispatcherTest, FailoverAsyncDeliversToFirstWritableMember) {
  auto good = StartPeer();
  auto sub = Sub("g", absl::StrCat("virtual:FAILOVER ", ClosedSocket(), " ", good->socket()));
  auto reports = Raise({sub}, /*sync=*/false, {}, absl::Milliseconds(1000));
  EXPECT_THAT(Codes(reports), ElementsAre(DeliveryCode::kQueued));
  EXPECT_TRUE(good->WaitForMessages(1, kWait));
}

std::unique_ptr<testing::BlackholeListener> StartBlackhole() {
  auto blackhole = testing::BlackholeListener::Start();
  EXPECT_TRUE(blackhole.ok()) << blackhole.status();
  return std::move(*blackhole);
}

// Issue 7, defect 4: the pool's connect timeout (2 s, the default) exceeds the Raise budget
// (1 s); the primary gets only its share of the budget, so the group hands over in time.
TEST_F(DispatcherTest, FailoverSyncHandsOverFromBlackholedPrimaryWithinBudget) {
  auto blackhole = StartBlackhole();
  auto good = StartPeer();
  auto sub = Sub("g", absl::StrCat("virtual:FAILOVER ", blackhole->socket(), " ", good->socket()));
  absl::Time start = absl::Now();
  auto reports = Raise({sub}, /*sync=*/true, {}, absl::Milliseconds(1000));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(1000));
  ASSERT_THAT(reports, SizeIs(1));
  EXPECT_EQ(reports[0].outcome.code, DeliveryCode::kOk) << reports[0].outcome.detail;
  ASSERT_THAT(reports[0].attempts, SizeIs(2));
  EXPECT_EQ(reports[0].attempts[0].member, blackhole->socket());
  EXPECT_EQ(reports[0].attempts[0].outcome.code, DeliveryCode::kConnectFailed);
  // Its share: half of the budget (two members), give or take timer precision.
  EXPECT_GE(reports[0].attempts[0].latency, absl::Milliseconds(490));
  EXPECT_LT(reports[0].attempts[0].latency, absl::Milliseconds(700));
  EXPECT_EQ(reports[0].attempts[1].outcome.code, DeliveryCode::kOk);
}

TEST_F(DispatcherTest, FailoverAsyncEventsAllReachSecondaryBehindBlackholedPrimary) {
  auto blackhole = StartBlackhole();
  auto good = StartPeer();
  auto sub = Sub("g", absl::StrCat("virtual:FAILOVER ", blackhole->socket(), " ", good->socket()));
  constexpr int kEvents = 8;
  for (int i = 0; i < kEvents; ++i) {
    EXPECT_THAT(Codes(Raise({sub}, /*sync=*/false)), ElementsAre(DeliveryCode::kQueued));
  }
  EXPECT_TRUE(good->WaitForMessages(kEvents, kWait)) << good->message_count();
  EXPECT_EQ(good->message_count(), static_cast<size_t>(kEvents));
}

TEST_F(DispatcherTest, RoundRobinSyncHandsOverFromBlackholedMemberWithinBudget) {
  auto blackhole = StartBlackhole();
  auto good = StartPeer();
  auto sub =
      Sub("g", absl::StrCat("virtual:ROUND-ROBIN ", blackhole->socket(), " ", good->socket()));
  for (int i = 0; i < 4; ++i) {
    absl::Time start = absl::Now();
    auto reports = Raise({sub}, /*sync=*/true, {}, absl::Milliseconds(1000));
    EXPECT_LT(absl::Now() - start, absl::Milliseconds(1000));
    ASSERT_THAT(reports, SizeIs(1));
    EXPECT_EQ(reports[0].outcome.code, DeliveryCode::kOk) << i << ": " << reports[0].outcome.detail;
  }
  EXPECT_EQ(good->message_count(), 4u);
}

TEST_F(DispatcherTest, RoundRobinAsyncEventsAllReachHealthyMemberBehindBlackholedOne) {
  auto blackhole = StartBlackhole();
  auto good = StartPeer();
  auto sub =
      Sub("g", absl::StrCat("virtual:ROUND-ROBIN ", blackhole->socket(), " ", good->socket()));
  constexpr int kEvents = 6;
  for (int i = 0; i < kEvents; ++i) {
    EXPECT_THAT(Codes(Raise({sub}, /*sync=*/false)), ElementsAre(DeliveryCode::kQueued));
  }
  EXPECT_TRUE(good->WaitForMessages(kEvents, kWait)) << good->message_count();
}

// Issue 7, defect 5: a cancelled sync Raise releases what it holds on its targets' connections.
TEST_F(DispatcherTest, CancelAbandonsASyncRaiseOnItsTargetsAndAnswersPromptly) {
  auto silent = StartPeer(PeerMode::kNeverReply);
  auto blackhole = StartBlackhole();
  auto good = StartPeer(PeerMode::kNeverReply);
  std::vector<registry::SubscriptionPtr> subs = {
      Sub("plain", silent->socket()),
      Sub("group", absl::StrCat("virtual:FAILOVER ", blackhole->socket(), " ", good->socket())),
      Sub("parallel",
          absl::StrCat("virtual:PARALLEL ", silent->socket("m"), " ", blackhole->socket()))};
  auto list = std::make_shared<const registry::SubscriberList>(std::move(subs));
  auto promise = std::make_shared<std::promise<std::vector<DeliveryReport>>>();
  std::future<std::vector<DeliveryReport>> reports = promise->get_future();
  RaiseOptions options;
  options.sync = true;
  options.timeout = absl::Hours(1);
  Dispatcher::RaiseHandle handle =
      dispatcher_->Raise("E_TEST", {}, options, list,
                         [promise](RaiseResult r) { promise->set_value(std::move(r.reports)); });
  const std::string key = uri::ParseTcpSocket(silent->socket())->Key();
  absl::Time deadline = absl::Now() + kWait;
  while (absl::Now() < deadline) {
    auto stats = pool_->Stats(key);
    if (stats && stats->outstanding_requests == 2) break;
    absl::SleepFor(absl::Milliseconds(1));  // polling a condition, bounded by the deadline
  }
  ASSERT_EQ(pool_->Stats(key)->outstanding_requests, 2u);

  absl::Time start = absl::Now();
  dispatcher_->Cancel(handle);
  ASSERT_EQ(reports.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  std::vector<DeliveryReport> r = reports.get();
  ASSERT_THAT(r, SizeIs(3));
  EXPECT_EQ(r[0].outcome.code, DeliveryCode::kTimeout);
  EXPECT_THAT(r[0].outcome.detail, ::testing::HasSubstr("abandoned"));
  // The group tried no further member after its first one was abandoned.
  ASSERT_THAT(r[1].attempts, SizeIs(1));
  EXPECT_EQ(r[1].attempts[0].member, blackhole->socket());
  EXPECT_EQ(good->message_count(), 0u);
  auto stats = pool_->Stats(key);
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->outstanding_requests, 0u);
  auto hole = pool_->Stats(uri::ParseTcpSocket(blackhole->socket())->Key());
  EXPECT_TRUE(!hole || hole->queued_messages == 0);
  // Cancelling again, or after the answer, is a no-op.
  dispatcher_->Cancel(handle);
  dispatcher_->Cancel(Dispatcher::RaiseHandle());
}

TEST_F(DispatcherTest, RoundRobinSpreadsEvenly) {
  auto a = StartPeer(), b = StartPeer(), c = StartPeer();
  auto sub = Sub(
      "g", absl::StrCat("virtual:ROUND-ROBIN ", a->socket(), " ", b->socket(), " ", c->socket()));
  for (int i = 0; i < 9; ++i) {
    auto reports = Raise({sub}, /*sync=*/true);
    ASSERT_EQ(reports[0].outcome.code, DeliveryCode::kOk);
    ASSERT_THAT(reports[0].attempts, SizeIs(1));
  }
  EXPECT_EQ(a->message_count(), 3u);
  EXPECT_EQ(b->message_count(), 3u);
  EXPECT_EQ(c->message_count(), 3u);
}

TEST_F(DispatcherTest, RoundRobinSyncHandsFailedEventToNextMember) {
  auto a = StartPeer(), c = StartPeer();
  auto sub = Sub("g", absl::StrCat("virtual:ROUND-ROBIN ", a->socket(), " ", ClosedSocket(), " ",
                                   c->socket()));
  for (int i = 0; i < 6; ++i) {
    auto reports = Raise({sub}, /*sync=*/true);
    ASSERT_EQ(reports[0].outcome.code, DeliveryCode::kOk) << i;
  }
  // Six events, none lost: the dead member's two went to the member after it.
  EXPECT_EQ(a->message_count() + c->message_count(), 6u);
  EXPECT_EQ(a->message_count(), 2u);
  EXPECT_EQ(c->message_count(), 4u);
}

TEST_F(DispatcherTest, RotationsOfGoneSubscriptionsDoNotPileUp) {
  auto peer = StartPeer();
  constexpr int kGroups = 1500;
  {
    std::vector<registry::SubscriptionPtr> subs;
    for (int i = 0; i < kGroups; ++i) {
      subs.push_back(
          Sub(absl::StrCat("rr", i), absl::StrCat("virtual:ROUND-ROBIN ", peer->socket())));
    }
    EXPECT_THAT(Raise(std::move(subs), /*sync=*/false), SizeIs(kGroups));
  }
  ASSERT_TRUE(peer->WaitForMessages(kGroups, kWait));
  // Those subscriptions are gone; new ones make the map prune what they left behind.
  absl::Time deadline = absl::Now() + kWait;
  for (int i = 0; dispatcher_->RotationsForTesting() > 1100 && absl::Now() < deadline; ++i) {
    Raise({Sub(absl::StrCat("new", i), absl::StrCat("virtual:ROUND-ROBIN ", peer->socket()))},
          /*sync=*/false);
  }
  EXPECT_LE(dispatcher_->RotationsForTesting(), 1100u);
}

TEST_F(DispatcherTest, RoundRobinAsyncRotates) {
  auto a = StartPeer(), b = StartPeer();
  auto sub = Sub("g", absl::StrCat("virtual:ROUND-ROBIN ", a->socket(), " ", b->socket()));
  for (int i = 0; i < 4; ++i) {
    EXPECT_THAT(Codes(Raise({sub}, /*sync=*/false)), ElementsAre(DeliveryCode::kQueued));
  }
  EXPECT_TRUE(a->WaitForMessages(2, kWait));
  EXPECT_TRUE(b->WaitForMessages(2, kWait));
}

}  // namespace
}  // namespace eventbus::delivery

namespace eventbus::delivery {
namespace {

// One subscription of each kind: a healthy peer, a closed port, a PARALLEL group with one dead
// member, a FAILOVER group whose first member is dead, and a ROUND-ROBIN group.
std::vector<registry::SubscriptionPtr> MixedSubscriptions(const JsonRpcPeer& good) {
  return {Sub("plain", good.socket()), Sub("dead", ClosedSocket()),
          Sub("par", absl::StrCat("virtual:PARALLEL ", good.socket(), " ", ClosedSocket())),
          Sub("fo", absl::StrCat("virtual:FAILOVER ", ClosedSocket(), " ", good.socket())),
          Sub("rr", absl::StrCat("virtual:ROUND-ROBIN ", good.socket(), " ", good.socket("m")))};
}

TEST_F(DispatcherTest, ObserverHearsEachSyncDeliveryOnceWithItsReportedStatus) {
  RecordingObserver observer;
  MakeDispatcherTelling(&observer);
  auto good = StartPeer();
  auto reports = Raise(MixedSubscriptions(*good), /*sync=*/true, {}, absl::Milliseconds(500));
  ASSERT_THAT(reports, SizeIs(5));
  // The answer comes after every outcome was told.
  EXPECT_EQ(observer.raises(), 1u);
  EXPECT_EQ(observer.accepted(), 5u);
  EXPECT_EQ(observer.completed(), 5u);
  std::map<DeliveryCode, size_t> answered;
  for (const DeliveryReport& r : reports) ++answered[r.outcome.code];
  for (const auto& [code, n] : answered) {
    EXPECT_EQ(observer.outcomes(true, code), n) << net::DeliveryCodeName(code);
  }
  EXPECT_EQ(observer.negative_latencies(), 0u);
}

TEST_F(DispatcherTest, ObserverHearsEachAsyncDeliveryOnceAfterTheAnswer) {
  RecordingObserver observer;
  MakeDispatcherTelling(&observer);
  auto good = StartPeer();
  std::vector<registry::SubscriptionPtr> subs = MixedSubscriptions(*good);
  // A PARALLEL group whose members both fail: the group's outcome comes with its last member's.
  subs.push_back(
      Sub("par2", absl::StrCat("virtual:PARALLEL ", ClosedSocket(), " ", ClosedSocket(), "/m")));
  auto reports = Raise(subs, /*sync=*/false, {}, absl::Milliseconds(300));
  ASSERT_THAT(reports, SizeIs(6));
  EXPECT_EQ(observer.accepted(), 6u);
  // Every delivery gets exactly one outcome, also those decided after the QUEUED answer.
  ASSERT_TRUE(pool_->Drain(absl::Now() + kWait));
  ASSERT_TRUE(testing::WaitFor(kWait, [&] { return observer.completed() >= 6; }));
  EXPECT_EQ(observer.completed(), 6u);
  // plain, FAILOVER (second member) and ROUND-ROBIN are written; the closed port and the
  // PARALLEL groups with a dead member are not.
  EXPECT_EQ(observer.outcomes(false, DeliveryCode::kOk), 3u);
  EXPECT_EQ(observer.outcomes(false, DeliveryCode::kConnectFailed), 3u);
  EXPECT_EQ(observer.outcomes(false, DeliveryCode::kQueued), 0u);
}

TEST_F(DispatcherTest, ObserverHearsOfARaiseWithNoSubscribers) {
  RecordingObserver observer;
  MakeDispatcherTelling(&observer);
  EXPECT_THAT(Raise({}, /*sync=*/false), SizeIs(0));
  EXPECT_EQ(observer.raises(), 1u);
  EXPECT_EQ(observer.accepted(), 0u);
}

// What a Batch is given, one event at a time.
struct BatchEvent {
  std::string event;
  std::vector<registry::SubscriptionPtr> subs;
  bool queued_reports = false;
  int n = 0;  // params {"n":N}
};

class BatchTest : public DispatcherTest {
 protected:
  // Adds `events` to one batch, in order, and waits for its answer.
  std::vector<RaiseResult> RaiseBatch(const std::vector<BatchEvent>& events) {
    auto promise = std::make_shared<std::promise<std::vector<RaiseResult>>>();
    std::future<std::vector<RaiseResult>> answer = promise->get_future();
    Dispatcher::Batch batch = dispatcher_->NewBatch();
    for (const BatchEvent& e : events) {
      RaiseOptions options;
      options.queued_reports = e.queued_reports;
      jsonrpc::Params params{jsonrpc::Params::Kind::kNamed, absl::StrCat(R"({"n":)", e.n, "}")};
      batch.Add(e.event, params, options, std::make_shared<const registry::SubscriberList>(e.subs));
    }
    EXPECT_EQ(batch.size(), events.size());
    batch.Finish([promise](std::vector<RaiseResult> r) { promise->set_value(std::move(r)); });
    if (answer.wait_for(absl::ToChronoSeconds(kWait)) != std::future_status::ready) {
      ADD_FAILURE() << "the batch was not answered";
      return {};
    }
    return answer.get();
  }

  static std::string Notification(const std::string& method, int n) {
    return absl::StrCat(R"({"jsonrpc":"2.0","method":")", method, R"(","params":{"n":)", n, "}}");
  }
};

// Events of several names, one with nobody subscribed and one whose subscribers include a
// FAILOVER group (raised on its own, between the Fanouts), reach each target in the order they
// were added, byte-exact; each event gets the answer Raise would give it.
TEST_F(BatchTest, EventsReachEachTargetInOrderAndEachGetsItsOwnAnswer) {
  auto a = StartPeer(), b = StartPeer();
  const std::string group = absl::StrCat("virtual:FAILOVER ", b->socket(), " ", ClosedSocket());
  std::vector<BatchEvent> events = {
      {"E1", {Sub("s1", a->socket()), Sub("s2", b->socket())}, false, 1},
      {"E2", {Sub("s3", a->socket("m"))}, false, 2},
      {"E3", {}, false, 3},
      {"E4", {Sub("s4", a->socket()), Sub("g", group)}, true, 4},
      {"E1", {Sub("s5", b->socket()), Sub("s6", a->socket())}, true, 5},
  };
  std::vector<RaiseResult> results = RaiseBatch(events);
  ASSERT_THAT(results, SizeIs(5));
  const size_t targets[] = {2, 1, 0, 2, 2};
  for (size_t e = 0; e < results.size(); ++e) {
    EXPECT_EQ(results[e].targets, targets[e]) << "event " << e;
    EXPECT_EQ(results[e].queued, targets[e]) << "event " << e;
  }
  // Sparse answers list nothing; the dense ones (all_deliveries: the group's event, raised on its
  // own, and the last) list every target as QUEUED, named, in subscription order.
  EXPECT_THAT(results[0].reports, SizeIs(0));
  EXPECT_THAT(results[1].reports, SizeIs(0));
  ASSERT_THAT(results[3].reports, SizeIs(2));
  EXPECT_EQ(results[3].reports[1].subscription_id, "g");
  ASSERT_THAT(results[4].reports, SizeIs(2));
  EXPECT_EQ(results[4].reports[0].subscription_id, "s5");
  EXPECT_EQ(results[4].reports[0].socket, b->socket());
  EXPECT_EQ(results[4].reports[0].outcome.code, DeliveryCode::kQueued);
  EXPECT_EQ(results[4].reports[1].subscription_id, "s6");

  ASSERT_TRUE(a->WaitForMessages(4, kWait));
  ASSERT_TRUE(b->WaitForMessages(3, kWait));
  EXPECT_THAT(a->Messages(), ElementsAre(Notification("E1", 1), Notification("m", 2),
                                         Notification("E4", 4), Notification("E1", 5)));
  EXPECT_THAT(b->Messages(),
              ElementsAre(Notification("E1", 1), Notification("E4", 4), Notification("E1", 5)));
}

// Immediate failures are listed under the event they belong to, in subscription order, whether
// its answer lists only failures or every target.
TEST_F(BatchTest, EachFailureIsListedUnderItsOwnEvent) {
  auto a = StartPeer(), b = StartPeer(), c = StartPeer();
  RestartWithQueuesOfOneMessage();
  std::vector<RaiseResult> results = RaiseBatch({
      {"E", {Sub("s1", a->socket())}, false, 1},
      {"E", {Sub("s2", a->socket()), Sub("s3", b->socket())}, false, 2},
      {"E", {Sub("s4", b->socket()), Sub("s5", c->socket())}, true, 3},
  });
  ASSERT_THAT(results, SizeIs(3));
  EXPECT_EQ(results[0].targets, 1u);
  EXPECT_EQ(results[0].queued, 1u);
  EXPECT_THAT(results[0].reports, SizeIs(0));
  EXPECT_EQ(results[1].targets, 2u);
  EXPECT_EQ(results[1].queued, 1u);
  ASSERT_THAT(results[1].reports, SizeIs(1));
  EXPECT_EQ(results[1].reports[0].subscription_id, "s2");
  EXPECT_EQ(results[1].reports[0].outcome.code, DeliveryCode::kQueueFull);
  EXPECT_EQ(results[2].targets, 2u);
  EXPECT_EQ(results[2].queued, 1u);
  ASSERT_THAT(results[2].reports, SizeIs(2));
  EXPECT_EQ(results[2].reports[0].subscription_id, "s4");
  EXPECT_EQ(results[2].reports[0].outcome.code, DeliveryCode::kQueueFull);
  EXPECT_EQ(results[2].reports[1].subscription_id, "s5");
  EXPECT_EQ(results[2].reports[1].outcome.code, DeliveryCode::kQueued);
}

// A batch bigger than max_batch_targets goes out in several Fanouts, still in order, and says it
// is full once it holds that many deliveries.
TEST_F(BatchTest, ABigBatchGoesInSeveralFanoutsInOrder) {
  DispatcherOptions options;
  options.max_batch_targets = 4;
  MakeDispatcher(options);
  auto a = StartPeer(), b = StartPeer();
  std::vector<BatchEvent> events;
  std::vector<std::string> expected;
  for (int n = 0; n < 7; ++n) {
    events.push_back({"E", {Sub("s1", a->socket()), Sub("s2", b->socket())}, false, n});
    expected.push_back(Notification("E", n));
  }
  Dispatcher::Batch batch = dispatcher_->NewBatch();
  jsonrpc::Params params{jsonrpc::Params::Kind::kNamed, R"({"n":0})"};
  batch.Add("E", params, RaiseOptions{},
            std::make_shared<const registry::SubscriberList>(events[0].subs));
  EXPECT_FALSE(batch.full());
  batch.Add("E", params, RaiseOptions{},
            std::make_shared<const registry::SubscriberList>(events[0].subs));
  EXPECT_TRUE(batch.full());
  batch.Finish(nullptr);
  ASSERT_TRUE(a->WaitForMessages(2, kWait));

  std::vector<RaiseResult> results = RaiseBatch(events);
  ASSERT_THAT(results, SizeIs(7));
  for (const RaiseResult& r : results) EXPECT_EQ(r.queued, 2u);
  ASSERT_TRUE(a->WaitForMessages(9, kWait));
  ASSERT_TRUE(b->WaitForMessages(9, kWait));
  std::vector<std::string> got = a->Messages();
  got.erase(got.begin(), got.begin() + 2);
  EXPECT_EQ(got, expected);
  got = b->Messages();
  got.erase(got.begin(), got.begin() + 2);
  EXPECT_EQ(got, expected);
}

// The observer hears of each event of a batch as of a Raise, with its own event's scope, and of
// every delivery once.
TEST_F(BatchTest, ObserverHearsOfEachEventAndEachDeliveryOnce) {
  RecordingObserver observer;
  MakeDispatcherTelling(&observer);
  auto good = StartPeer();
  std::vector<RaiseResult> results = RaiseBatch({
      {"E1", {Sub("s1", good->socket()), Sub("dead", ClosedSocket())}, false, 1},
      {"E2", {Sub("s2", good->socket())}, false, 2},
      {"E1", {}, false, 3},
      {"E1", MixedSubscriptions(*good), false, 4},
  });
  ASSERT_THAT(results, SizeIs(4));
  EXPECT_EQ(observer.raises(), 4u);
  EXPECT_EQ(observer.accepted(), 3u + 5u);
  ASSERT_TRUE(pool_->Drain(absl::Now() + kWait));
  ASSERT_TRUE(testing::WaitFor(kWait, [&] { return observer.completed() >= 8; }));
  EXPECT_EQ(observer.completed(), 8u);
  // Written: s1, s2, and of the mixed ones plain, FAILOVER and ROUND-ROBIN.
  EXPECT_EQ(observer.outcomes(false, DeliveryCode::kOk), 5u);
  EXPECT_EQ(observer.outcomes(false, DeliveryCode::kConnectFailed), 3u);
  EXPECT_EQ(observer.negative_latencies(), 0u);
}

}  // namespace
}  // namespace eventbus::delivery
