// The destination policy in server/net: the address filters, and a real WriterPool that checks
// every address before it connects (a DNS answer that changes after Subscribe cannot get around
// it) and at Subscribe (CheckDestination). Names resolve through ResolverOptions::lookup, the
// resolver's test seam, to loopback addresses only.
#include "server/net/destination_check.h"

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/net/writer_pool.h"
#include "tests/net/loopback_peer.h"
#include "tests/net/test_sync.h"

namespace eventbus::net {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(10);

policy::PolicyConfig Flags(const std::string& allow, const std::string& deny) {
  absl::StatusOr<policy::PolicyConfig> config = policy::ParsePolicyFlags(allow, deny);
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *std::move(config) : policy::PolicyConfig{};
}

SocketAddress Address(const std::string& ip, uint16_t port) {
  std::optional<SocketAddress> address = ParseIpLiteral(ip, port);
  EXPECT_TRUE(address.has_value()) << ip;
  return address.value_or(SocketAddress{});
}

// Records what the pool tells its observers about denials (any thread).
class DenialRecorder final : public PoolObserver {
 public:
  void OnComplete(const std::string&, const Outcome&, bool, absl::Duration) override {}
  void OnStateChange(const std::string& key, ConnState, ConnState to,
                     absl::string_view detail) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (to == ConnState::kBackoff) backoff_details_.push_back(std::string(detail));
  }
  void OnDestinationDenied(const std::string& key, DenialStage stage,
                           absl::string_view detail) override {
    std::lock_guard<std::mutex> lock(mu_);
    denials_.push_back(absl::StrCat(DenialStageName(stage), " ", key, " ", detail));
  }
  std::vector<std::string> denials() {
    std::lock_guard<std::mutex> lock(mu_);
    return denials_;
  }
  std::vector<std::string> backoff_details() {
    std::lock_guard<std::mutex> lock(mu_);
    return backoff_details_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> denials_;
  std::vector<std::string> backoff_details_;
};

// ---------------------------------------------------------------------------------------------
// The filters

TEST(FilterDeniedAddressesTest, SkipsDeniedAddressesAndKeepsTheRestInOrder) {
  policy::DestinationPolicy policy(Flags("", "127.0.0.2"), {});
  DenialRecorder recorder;
  std::vector<SocketAddress> addresses = {Address("127.0.0.1", 80), Address("127.0.0.2", 80),
                                          Address("::1", 80)};
  EXPECT_EQ(FilterDeniedAddresses(&policy, &recorder, "h:80", &addresses), std::nullopt);
  ASSERT_EQ(addresses.size(), 2u);
  EXPECT_EQ(addresses[0].text, "127.0.0.1:80");
  EXPECT_EQ(addresses[1].text, "[::1]:80");
  EXPECT_THAT(recorder.denials(),
              ::testing::ElementsAre("connect h:80 destination 127.0.0.2:80 is denied by the "
                                     "destination policy (127.0.0.2/32, --deny_targets)"));
}

TEST(FilterDeniedAddressesTest, NamesTheAddressAndTheRuleWhenNoneIsLeft) {
  policy::DestinationPolicy policy(Flags("", ""), {});
  std::vector<SocketAddress> one = {Address("169.254.169.254", 80)};
  EXPECT_EQ(FilterDeniedAddresses(&policy, nullptr, "169.254.169.254:80", &one),
            "connect to 169.254.169.254:80: destination 169.254.169.254:80 is denied by the "
            "destination policy (169.254.0.0/16, default)");
  EXPECT_TRUE(one.empty());

  std::vector<SocketAddress> two = {Address("169.254.1.1", 80), Address("fe80::1", 80)};
  EXPECT_EQ(FilterDeniedAddresses(&policy, nullptr, "meta:80", &two),
            "connect to meta:80: every address is denied by the destination policy: "
            "169.254.1.1:80 (169.254.0.0/16, default); [fe80::1]:80 (fe80::/10, default)");
}

TEST(FilterDeniedAddressesTest, WithoutAPolicyOrAddressesNothingIsDenied) {
  std::vector<SocketAddress> addresses = {Address("169.254.169.254", 80)};
  EXPECT_EQ(FilterDeniedAddresses(nullptr, nullptr, "k", &addresses), std::nullopt);
  EXPECT_EQ(addresses.size(), 1u);
  policy::DestinationPolicy policy(Flags("", ""), {});
  std::vector<SocketAddress> none;
  EXPECT_EQ(FilterDeniedAddresses(&policy, nullptr, "k", &none), std::nullopt);
}

TEST(CheckAddressesAtSubscribeTest, RefusesWhenAnyAddressIsDenied) {
  policy::DestinationPolicy policy(Flags("", ""), {});
  DenialRecorder recorder;
  absl::Status literal = CheckAddressesAtSubscribe(&policy, &recorder, "169.254.169.254:80", false,
                                                   {Address("169.254.169.254", 80)});
  EXPECT_EQ(literal.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(literal.message(),
            "destination 169.254.169.254:80 is denied by the destination policy (169.254.0.0/16, "
            "default)");
  absl::Status name =
      CheckAddressesAtSubscribe(&policy, &recorder, "meta.test:80", true,
                                {Address("127.0.0.1", 80), Address("::ffff:169.254.169.254", 80)});
  EXPECT_EQ(name.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(name.message(),
            "destination meta.test:80 resolves to [::ffff:169.254.169.254]:80, which is denied "
            "by the destination policy (169.254.0.0/16, default)");
  EXPECT_EQ(recorder.denials().size(), 2u);
  EXPECT_TRUE(CheckAddressesAtSubscribe(&policy, &recorder, "ok:80", true,
                                        {Address("127.0.0.1", 80), Address("::1", 80)})
                  .ok());
}

// ---------------------------------------------------------------------------------------------
// Through a real writer pool

// A pool whose resolver answers from `answers` (host -> the addresses of the next lookups, one
// list per lookup; the last list repeats).
class PolicyPoolTest : public ::testing::Test {
 protected:
  void StartPool(const std::string& allow, const std::string& deny) {
    policy_ = std::make_unique<policy::DestinationPolicy>(Flags(allow, deny),
                                                          std::vector<policy::IpAddress>{});
    PoolOptions options;
    options.num_loops = 2;
    options.min_backoff = absl::Milliseconds(20);
    options.max_backoff = absl::Milliseconds(40);
    options.observer = &recorder_;
    options.destination_policy = policy_.get();
    options.resolve_lookup = [this](const std::string& host) -> ResolveResult {
      std::lock_guard<std::mutex> lock(mu_);
      ++lookups_;
      auto it = answers_.find(host);
      if (it == answers_.end() || it->second.empty()) {
        return absl::NotFoundError(absl::StrCat("resolve \"", host, "\": no such name"));
      }
      std::vector<std::string> ips = it->second.front();
      if (it->second.size() > 1) it->second.erase(it->second.begin());
      std::vector<SocketAddress> out;
      for (const std::string& ip : ips) out.push_back(Address(ip, 0));
      return out;
    };
    absl::StatusOr<std::unique_ptr<WriterPool>> pool = WriterPool::Create(options);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
  }
  void TearDown() override {
    if (pool_ != nullptr) pool_->Shutdown();
  }

  void Answer(const std::string& host, std::vector<std::vector<std::string>> lists) {
    std::lock_guard<std::mutex> lock(mu_);
    answers_[host] = std::move(lists);
  }

  // Sends one sync request to `host`:`port` and waits for its outcome.
  Outcome Send(const std::string& host, uint16_t port, absl::Duration timeout = absl::Seconds(2)) {
    auto outcome = std::make_shared<Outcome>();
    auto done = std::make_shared<TestEvent>();
    Request r;
    r.target.host = host;
    r.target.port = port;
    r.body = std::make_shared<const std::string>("\"jsonrpc\":\"2.0\",\"method\":\"E\"}");
    r.expect_reply = true;
    r.deadline = absl::Now() + timeout;
    r.done = [outcome, done](Outcome o) {
      *outcome = std::move(o);
      done->Notify();
    };
    std::vector<Request> batch;
    batch.push_back(std::move(r));
    pool_->Submit(std::move(batch));
    EXPECT_TRUE(done->WaitFor(kWait));
    return *outcome;
  }

  absl::Status Check(const std::string& host, uint16_t port) {
    uri::TcpTarget target;
    target.host = host;
    target.port = port;
    auto status = std::make_shared<absl::Status>(absl::UnknownError("not called"));
    auto done = std::make_shared<TestEvent>();
    pool_->CheckDestination(target, [status, done](absl::Status s) {
      *status = std::move(s);
      done->Notify();
    });
    EXPECT_TRUE(done->WaitFor(kWait));
    return *status;
  }

  static LoopbackPeer::Handler Echo() {
    return [](int, const std::string& message) {
      return absl::StrCat("{\"jsonrpc\":\"2.0\",\"id\":", LoopbackPeer::IdOf(message),
                          ",\"result\":\"ok\"}");
    };
  }

  DenialRecorder recorder_;
  std::unique_ptr<policy::DestinationPolicy> policy_;
  std::unique_ptr<WriterPool> pool_;
  std::mutex mu_;
  std::map<std::string, std::vector<std::vector<std::string>>> answers_;  // guarded by mu_
  int lookups_ = 0;                                                       // guarded by mu_
};

TEST_F(PolicyPoolTest, ADeniedLiteralIsNeverConnectedToAndCompletesDestinationDenied) {
  auto peer = LoopbackPeer::Start({}, Echo());
  ASSERT_NE(peer, nullptr);
  StartPool("", absl::StrCat("127.0.0.1:", peer->port()));
  Outcome outcome = Send("127.0.0.1", peer->port(), absl::Milliseconds(300));
  EXPECT_EQ(outcome.code, DeliveryCode::kDestinationDenied) << outcome.detail;
  EXPECT_EQ(outcome.detail, absl::StrCat("connect to 127.0.0.1:", peer->port(),
                                         ": destination 127.0.0.1:", peer->port(),
                                         " is denied by the destination policy (127.0.0.1/32:",
                                         peer->port(), ", --deny_targets)"));
  EXPECT_EQ(peer->connections(), 0);
  // A connect failure: backoff, reported with the detail, and retried (denied again).
  std::optional<TargetStats> stats = pool_->Stats(absl::StrCat("127.0.0.1:", peer->port()));
  ASSERT_TRUE(stats.has_value());
  EXPECT_NE(stats->last_connect_failure, absl::InfinitePast());
  EXPECT_EQ(stats->failed, 1u);
  ASSERT_FALSE(recorder_.backoff_details().empty());
  EXPECT_THAT(recorder_.backoff_details()[0], HasSubstr("is denied by the destination policy"));
  EXPECT_GE(recorder_.denials().size(), 2u);  // the first attempt and at least one retry
  // Other ports of the same address are fine.
  auto other = LoopbackPeer::Start({}, Echo());
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(Send("127.0.0.1", other->port()).code, DeliveryCode::kOk);
}

TEST_F(PolicyPoolTest, ANameThatResolvesToADeniedAddressAtConnectTimeIsDenied) {
  // DNS rebinding: the name resolved to an allowed address when it was subscribed; now it
  // resolves to a denied one, where a live peer listens.
  auto peer = LoopbackPeer::Start({}, Echo());
  ASSERT_NE(peer, nullptr);
  StartPool("", absl::StrCat("127.0.0.1:", peer->port()));
  Answer("rebind.test", {{"127.0.0.2"}, {"127.0.0.1"}});
  EXPECT_TRUE(Check("rebind.test", peer->port()).ok());
  Outcome outcome = Send("rebind.test", peer->port(), absl::Milliseconds(300));
  EXPECT_EQ(outcome.code, DeliveryCode::kDestinationDenied) << outcome.detail;
  EXPECT_THAT(outcome.detail,
              HasSubstr(absl::StrCat("connect to rebind.test:", peer->port(),
                                     ": destination 127.0.0.1:", peer->port(), " is denied")));
  EXPECT_EQ(peer->connections(), 0);
  EXPECT_EQ(peer->message_count(), 0u);
}

TEST_F(PolicyPoolTest, DeniedAddressesOfANameAreSkippedAndTheAllowedOnesTried) {
  LoopbackPeer::Options v6;
  v6.ipv6 = true;
  auto allowed = LoopbackPeer::Start(v6, Echo());
  ASSERT_NE(allowed, nullptr);
  // The name resolves to 127.0.0.1 (denied) first, then to [::1], where the peer listens.
  StartPool("", "127.0.0.0/8");
  Answer("mixed.test", {{"127.0.0.1", "::1"}});
  Outcome outcome = Send("mixed.test", allowed->port());
  EXPECT_EQ(outcome.code, DeliveryCode::kOk) << outcome.detail;
  EXPECT_EQ(allowed->message_count(), 1u);
  ASSERT_EQ(recorder_.denials().size(), 1u);
  EXPECT_THAT(recorder_.denials()[0], HasSubstr("connect mixed.test:"));
}

TEST_F(PolicyPoolTest, CheckDestinationAtSubscribe) {
  StartPool("", "127.0.0.2");
  // Literals: checked at once.
  EXPECT_TRUE(Check("127.0.0.1", 80).ok());
  absl::Status literal = Check("169.254.169.254", 80);
  EXPECT_EQ(literal.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(literal.message()), HasSubstr("(169.254.0.0/16, default)"));
  EXPECT_EQ(Check("::ffff:169.254.169.254", 80).code(), absl::StatusCode::kPermissionDenied);
  // Names: every address they resolve to must be allowed.
  Answer("meta.test", {{"127.0.0.1", "127.0.0.2"}});
  absl::Status name = Check("meta.test", 80);
  EXPECT_EQ(name.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(name.message(),
            "destination meta.test:80 resolves to 127.0.0.2:80, which is denied by the "
            "destination policy (127.0.0.2/32, --deny_targets)");
  Answer("fine.test", {{"127.0.0.1", "::1"}});
  EXPECT_TRUE(Check("fine.test", 80).ok());
  // A name that does not resolve is accepted: checked when it is connected to.
  EXPECT_TRUE(Check("nowhere.test", 80).ok());
  std::vector<std::string> denials = recorder_.denials();
  ASSERT_EQ(denials.size(), 3u);
  EXPECT_THAT(denials[0], HasSubstr("subscribe 169.254.169.254:80 destination"));
}

TEST_F(PolicyPoolTest, CheckDestinationAfterShutdownIsUnavailable) {
  StartPool("", "");
  pool_->Shutdown();
  Answer("late.test", {{"127.0.0.1"}});
  EXPECT_EQ(Check("late.test", 80).code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace eventbus::net
