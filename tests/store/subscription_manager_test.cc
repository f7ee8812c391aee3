#include "server/store/subscription_manager.h"

#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/base/mutex.h"
#include "server/registry/registry.h"
#include "server/store/memory_store.h"
#include "server/uri/socket_uri.h"
#include "tests/testing/fake_clock.h"

namespace eventbus::store {
namespace {

using registry::Actor;
using registry::Subscription;
using registry::SubscriptionPtr;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

// A store whose writes wait until the test releases them, to hold a Subscribe "in flight".
// Thread-safe.
class DeferredStore final : public SubscriptionStore {
 public:
  absl::Status Start(Listener* listener) override {
    listener->OnReload({});
    return absl::OkStatus();
  }
  void Stop() override {}
  void Put(SubscriptionPtr sub, Done done) override {
    Enqueue(true, std::move(sub), std::move(done));
  }
  void Delete(SubscriptionPtr sub, Done done) override {
    Enqueue(false, std::move(sub), std::move(done));
  }
  bool healthy() const override { return true; }
  absl::string_view kind() const override { return "deferred"; }

  size_t pending() const {
    eventbus::MutexLock lock(&mu_);
    return ops_.size();
  }
  // Applies the oldest queued write to `contents_` and completes it with `status`.
  void ReleaseOne(absl::Status status = absl::OkStatus()) {
    Op op;
    {
      eventbus::MutexLock lock(&mu_);
      ASSERT_FALSE(ops_.empty());
      op = std::move(ops_.front());
      ops_.pop_front();
      if (status.ok()) {
        if (op.put) {
          contents_.Put(op.sub, [](absl::Status) {});
        } else {
          contents_.Delete(op.sub, [](absl::Status) {});
        }
      }
    }
    op.done(std::move(status));
  }
  void ReleaseAll() {
    while (pending() > 0) ReleaseOne();
  }
  std::vector<SubscriptionPtr> Contents() const { return contents_.Contents(); }

 private:
  struct Op {
    bool put = true;
    SubscriptionPtr sub;
    Done done;
  };
  void Enqueue(bool put, SubscriptionPtr sub, Done done) {
    eventbus::MutexLock lock(&mu_);
    ops_.push_back({put, std::move(sub), std::move(done)});
  }

  mutable eventbus::Mutex mu_;
  std::deque<Op> ops_ ABSL_GUARDED_BY(mu_);
  MemoryStore contents_;
};

// A memory store that reports, with the real time, each Delete it is asked for.
class WatchedStore final : public SubscriptionStore {
 public:
  absl::Status Start(Listener* listener) override { return inner_.Start(listener); }
  void Stop() override { inner_.Stop(); }
  void Put(SubscriptionPtr sub, Done done) override { inner_.Put(std::move(sub), std::move(done)); }
  void Delete(SubscriptionPtr sub, Done done) override {
    {
      eventbus::MutexLock lock(&mu_);
      deletes_.push_back({sub->id, absl::Now()});
    }
    inner_.Delete(std::move(sub), std::move(done));
  }
  bool healthy() const override { return inner_.healthy(); }
  absl::string_view kind() const override { return "watched"; }

  // Waits up to `timeout` for a Delete of `id`; returns when it was called, or nullopt.
  std::optional<absl::Time> WaitForDelete(const std::string& id, absl::Duration timeout) {
    eventbus::MutexLock lock(&mu_);
    auto deleted = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const auto& [deleted_id, at] : deletes_) {
        if (deleted_id == id) return true;
      }
      return false;
    };
    if (!mu_.AwaitWithTimeout(deleted, timeout)) return std::nullopt;
    for (const auto& [deleted_id, at] : deletes_) {
      if (deleted_id == id) return at;
    }
    return std::nullopt;
  }

 private:
  MemoryStore inner_;
  eventbus::Mutex mu_;
  std::vector<std::pair<std::string, absl::Time>> deletes_ ABSL_GUARDED_BY(mu_);
};

SubscribeRequest Req(std::string event, std::string socket,
                     std::optional<uint32_t> expire = std::nullopt,
                     std::optional<std::string> event_param = std::nullopt) {
  return SubscribeRequest{std::move(event), std::move(socket), expire, std::move(event_param)};
}

// Collects the answer of one call; the manager may answer on any thread.
template <typename T>
class Answer {
 public:
  absl::AnyInvocable<void(T)> Callback() {
    return [this](T value) {
      eventbus::MutexLock lock(&mu_);
      EXPECT_FALSE(value_.has_value()) << "answered twice";
      value_.emplace(std::move(value));
    };
  }
  bool ready() const {
    eventbus::MutexLock lock(&mu_);
    return value_.has_value();
  }
  // Waits (bounded) for the answer.
  T Get() {
    eventbus::MutexLock lock(&mu_);
    auto has = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return value_.has_value(); };
    EXPECT_TRUE(mu_.AwaitWithTimeout(has, absl::Seconds(5)));
    if (!value_.has_value()) return T(absl::DeadlineExceededError("no answer"));
    return *value_;
  }

 private:
  mutable eventbus::Mutex mu_;
  std::optional<T> value_ ABSL_GUARDED_BY(mu_);
};

class SubscriptionManagerTest : public ::testing::Test {
 protected:
  void MakeManager(SubscriptionStore* store = nullptr) {
    manager_ = std::make_unique<SubscriptionManager>(&registry_, store != nullptr ? store : &store_,
                                                     &clock_, limits_);
  }
  void SetUp() override { MakeManager(); }
  void TearDown() override {
    if (manager_ != nullptr) manager_->Stop();
  }

  // As the anonymous caller (authentication off) unless `actor` says otherwise.
  absl::StatusOr<SubscribeResult> Subscribe(SubscribeRequest request,
                                            Actor actor = Actor::Anonymous()) {
    Answer<absl::StatusOr<SubscribeResult>> answer;
    manager_->Subscribe(std::move(actor), std::move(request), answer.Callback());
    return answer.Get();
  }
  absl::StatusOr<int> Unsubscribe(std::string id, std::string event = "", std::string socket = "") {
    return UnsubscribeAs(Actor::Anonymous(), std::move(id), std::move(event), std::move(socket));
  }
  absl::StatusOr<int> UnsubscribeAs(Actor actor, std::string id, std::string event = "",
                                    std::string socket = "") {
    absl::StatusOr<UnsubscribeResult> result =
        UnsubscribeResultAs(std::move(actor), std::move(id), std::move(event), std::move(socket));
    if (!result.ok()) return result.status();
    return result->removed;
  }
  absl::StatusOr<UnsubscribeResult> UnsubscribeResultAs(Actor actor, std::string id,
                                                        std::string event = "",
                                                        std::string socket = "") {
    Answer<absl::StatusOr<UnsubscribeResult>> answer;
    manager_->Unsubscribe(std::move(actor), std::move(id), std::move(event), std::move(socket),
                          answer.Callback());
    return answer.Get();
  }

  testing::FakeClock clock_;
  const absl::Time t0_ = clock_.Now();
  registry::Registry registry_;
  MemoryStore store_;
  SubscriptionLimits limits_;
  std::unique_ptr<SubscriptionManager> manager_;
};

TEST_F(SubscriptionManagerTest, CreatesANormalisedSubscriptionInStoreAndRegistry) {
  absl::StatusOr<SubscribeResult> result = Subscribe(Req("E_PIKE", "tcp:LocalHost:8080/cmd"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->created);
  const Subscription& sub = *result->subscription;
  EXPECT_EQ(sub.id.size(), 16u);
  EXPECT_EQ(sub.event, "E_PIKE");
  EXPECT_EQ(sub.socket, "tcp:localhost:8080/cmd");
  ASSERT_THAT(sub.target.targets, SizeIs(1));
  EXPECT_EQ(sub.target.targets[0].host, "localhost");
  EXPECT_EQ(sub.target.targets[0].method, "cmd");
  EXPECT_EQ(sub.create_time, t0_);
  EXPECT_EQ(sub.expire_time, t0_ + absl::Seconds(3600));
  EXPECT_FALSE(sub.event_param.has_value());
  EXPECT_EQ(registry_.FindById(sub.id), result->subscription);
  EXPECT_THAT(store_.Contents(), ElementsAre(result->subscription));
}

TEST_F(SubscriptionManagerTest, RefreshKeepsIdAndCreateTimeWithANewExpiry) {
  auto first = Subscribe(Req("E", "tcp:h:1", 10));
  ASSERT_TRUE(first.ok());
  clock_.Advance(absl::Seconds(5));
  // Same socket after normalisation.
  auto second = Subscribe(Req("E", "tcp:H:1", 60));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->created);
  EXPECT_EQ(second->subscription->id, first->subscription->id);
  EXPECT_EQ(second->subscription->create_time, t0_);
  EXPECT_EQ(second->subscription->expire_time, t0_ + absl::Seconds(65));
  EXPECT_EQ(registry_.size(), 1u);
  EXPECT_EQ(registry_.FindById(first->subscription->id), second->subscription);
  EXPECT_THAT(store_.Contents(), ElementsAre(second->subscription));
}

TEST_F(SubscriptionManagerTest, SameSocketForAnotherEventIsAnotherSubscription) {
  auto a = Subscribe(Req("A", "tcp:h:1"));
  auto b = Subscribe(Req("B", "tcp:h:1"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(b->created);
  EXPECT_NE(a->subscription->id, b->subscription->id);
  EXPECT_EQ(registry_.size(), 2u);
}

TEST_F(SubscriptionManagerTest, ExpireAbsentUsesTheDefault) {
  limits_.default_expire = absl::Seconds(42);
  MakeManager();
  auto result = Subscribe(Req("E", "tcp:h:1"));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->subscription->expire_time, t0_ + absl::Seconds(42));
}

TEST_F(SubscriptionManagerTest, ExpireZeroNeverExpires) {
  auto result = Subscribe(Req("E", "tcp:h:1", 0));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->subscription->expire_time, absl::InfiniteFuture());
  EXPECT_FALSE(result->subscription->Expires());
}

TEST_F(SubscriptionManagerTest, ExpireNIsNSecondsFromNow) {
  auto result = Subscribe(Req("E", "tcp:h:1", 7));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->subscription->expire_time, t0_ + absl::Seconds(7));
}

TEST_F(SubscriptionManagerTest, RefreshKeepsEventParamUnlessTheRequestGivesOne) {
  auto created = Subscribe(Req("E", "tcp:h:1", 0, "opensips_event"));
  ASSERT_TRUE(created.ok());
  EXPECT_EQ(created->subscription->event_param, "opensips_event");
  auto kept = Subscribe(Req("E", "tcp:h:1", 0));
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->subscription->event_param, "opensips_event");
  auto cleared = Subscribe(Req("E", "tcp:h:1", 0, ""));
  ASSERT_TRUE(cleared.ok());
  EXPECT_EQ(cleared->subscription->event_param, "");
}

TEST_F(SubscriptionManagerTest, RejectsBadEventNames) {
  auto bad_char = Subscribe(Req("a b", "tcp:h:1"));
  EXPECT_EQ(bad_char.status(),
            absl::InvalidArgumentError("event \"a b\": invalid character ' ' at offset 1"));
  EXPECT_EQ(Subscribe(Req("", "tcp:h:1")).status(),
            absl::InvalidArgumentError("event \"\": empty"));
  limits_.max_event_name_bytes = 4;
  MakeManager();
  EXPECT_EQ(Subscribe(Req("ABCDE", "tcp:h:1")).status(),
            absl::InvalidArgumentError("event \"ABCDE\": longer than 4 bytes"));
  EXPECT_EQ(registry_.size(), 0u);
}

TEST_F(SubscriptionManagerTest, RejectsASocketOverTheLengthLimit) {
  limits_.max_socket_bytes = 12;
  MakeManager();
  EXPECT_TRUE(Subscribe(Req("E", "tcp:h:12345")).ok());  // 11 bytes
  EXPECT_EQ(Subscribe(Req("E", "tcp:hh:123456")).status(),
            absl::InvalidArgumentError("socket \"tcp:hh:123456\": longer than 12 bytes"));
}

TEST_F(SubscriptionManagerTest, PassesParseSocketErrorsThrough) {
  for (const char* socket : {"tcp:h:70000", "udp:h:1", "tcp::80", "virtual:PARALLEL tcp:h:0"}) {
    auto result = Subscribe(Req("E", socket));
    EXPECT_EQ(result.status(), uri::ParseSocket(socket).status()) << socket;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << socket;
  }
  EXPECT_EQ(registry_.size(), 0u);
  EXPECT_EQ(store_.size(), 0u);
}

TEST_F(SubscriptionManagerTest, RejectsTooManyVirtualMembers) {
  limits_.max_virtual_members = 2;
  MakeManager();
  EXPECT_TRUE(Subscribe(Req("E", "virtual:FAILOVER tcp:a:1 tcp:b:1")).ok());
  EXPECT_EQ(Subscribe(Req("E", "virtual:FAILOVER tcp:a:1 tcp:b:1 tcp:c:1")).status(),
            absl::InvalidArgumentError("socket \"virtual:FAILOVER tcp:a:1 tcp:b:1 tcp:c:1\": 3 "
                                       "virtual members, more than 2"));
}

TEST_F(SubscriptionManagerTest, NormalisesVirtualSockets) {
  auto result = Subscribe(Req("E", "virtual:ROUND-ROBIN  tcp:A:1\ttcp:b:2/m"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->subscription->socket, "virtual:ROUND-ROBIN tcp:a:1 tcp:b:2/m");
  EXPECT_TRUE(result->subscription->target.is_virtual);
}

// A destination check that refuses hosts named "denied*" from a thread of its own (as a DNS
// lookup answers), the later members first, and counts the targets it was asked about.
class ThreadedCheck {
 public:
  ~ThreadedCheck() {
    for (std::thread& t : threads_) t.join();
  }
  DestinationCheck Check() {
    return [this](const uri::TcpTarget& target, absl::AnyInvocable<void(absl::Status)> done) {
      const int n = asked_.fetch_add(1);
      std::string host = target.host;
      eventbus::MutexLock lock(&mu_);
      threads_.emplace_back([n, host, done = std::move(done)]() mutable {
        absl::SleepFor(absl::Milliseconds(n == 0 ? 20 : 1));
        if (absl::StartsWith(host, "denied")) {
          done(absl::PermissionDeniedError(absl::StrCat("destination ", host, " is denied")));
        } else {
          done(absl::OkStatus());
        }
      });
    };
  }
  int asked() const { return asked_.load(); }

 private:
  std::atomic<int> asked_{0};
  eventbus::Mutex mu_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

TEST_F(SubscriptionManagerTest, ADeniedDestinationIsPermissionDeniedAndNothingIsStored) {
  ThreadedCheck check;
  manager_->set_destination_check(check.Check());
  EXPECT_EQ(Subscribe(Req("E", "tcp:denied.test:80")).status(),
            absl::PermissionDeniedError(
                "socket \"tcp:denied.test:80\": destination denied.test is denied"));
  EXPECT_EQ(registry_.size(), 0u);
  EXPECT_EQ(store_.size(), 0u);
  ASSERT_TRUE(Subscribe(Req("E", "tcp:fine.test:80")).ok());
  EXPECT_EQ(check.asked(), 2);
}

TEST_F(SubscriptionManagerTest, EveryVirtualMemberIsCheckedAndTheFirstRefusalIsNamed) {
  ThreadedCheck check;
  manager_->set_destination_check(check.Check());
  // Member 2 and 3 are refused; the answer names member 2 whichever verdict came first.
  auto result = Subscribe(Req("E", "virtual:PARALLEL tcp:a:1 tcp:DENIED-2:1 tcp:denied-3:1"));
  EXPECT_EQ(result.status(),
            absl::PermissionDeniedError(
                "socket \"virtual:PARALLEL tcp:a:1 tcp:DENIED-2:1 tcp:denied-3:1\": member 2 "
                "\"tcp:denied-2:1\": destination denied-2 is denied"));
  EXPECT_EQ(check.asked(), 3);
  EXPECT_EQ(registry_.size(), 0u);
  ASSERT_TRUE(Subscribe(Req("E", "virtual:FAILOVER tcp:a:1 tcp:b:1")).ok());
}

TEST_F(SubscriptionManagerTest, ARefreshIsCheckedAgainAndARefusalKeepsTheSubscription) {
  auto first = Subscribe(Req("E", "tcp:denied.test:80", 10));
  ASSERT_TRUE(first.ok());  // no check set yet
  ThreadedCheck check;
  manager_->set_destination_check(check.Check());
  EXPECT_EQ(Subscribe(Req("E", "tcp:denied.test:80", 60)).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(registry_.FindById(first->subscription->id), first->subscription);
}

TEST_F(SubscriptionManagerTest, MaxSubscriptionsIsResourceExhaustedButRefreshStillWorks) {
  limits_.max_subscriptions = 2;
  MakeManager();
  ASSERT_TRUE(Subscribe(Req("A", "tcp:h:1")).ok());
  ASSERT_TRUE(Subscribe(Req("B", "tcp:h:1")).ok());
  EXPECT_EQ(Subscribe(Req("C", "tcp:h:1")).status(),
            absl::ResourceExhaustedError("subscribe \"C\": max_subscriptions limit (2) reached"));
  auto refresh = Subscribe(Req("A", "tcp:h:1", 5));
  ASSERT_TRUE(refresh.ok()) << refresh.status();
  EXPECT_FALSE(refresh->created);
  EXPECT_EQ(registry_.size(), 2u);
}

TEST_F(SubscriptionManagerTest, MaxSubscriptionsPerEventIsResourceExhausted) {
  limits_.max_subscriptions_per_event = 1;
  MakeManager();
  ASSERT_TRUE(Subscribe(Req("A", "tcp:h:1")).ok());
  EXPECT_EQ(Subscribe(Req("A", "tcp:h:2")).status(),
            absl::ResourceExhaustedError(
                "subscribe \"A\": max_subscriptions_per_event limit (1) reached"));
  EXPECT_TRUE(Subscribe(Req("B", "tcp:h:2")).ok());
}

TEST_F(SubscriptionManagerTest, CreatesInFlightCountAgainstTheLimit) {
  DeferredStore store;
  limits_.max_subscriptions = 1;
  MakeManager(&store);
  Answer<absl::StatusOr<SubscribeResult>> first;
  manager_->Subscribe(Actor::Anonymous(), Req("A", "tcp:h:1"), first.Callback());
  EXPECT_FALSE(first.ready());
  EXPECT_EQ(Subscribe(Req("B", "tcp:h:1")).status().code(), absl::StatusCode::kResourceExhausted);
  store.ReleaseAll();
  EXPECT_TRUE(first.Get().ok());
}

TEST_F(SubscriptionManagerTest, FailedCreateReleasesItsPlaceUnderTheLimit) {
  limits_.max_subscriptions = 1;
  MakeManager();
  store_.SetAvailable(false);
  EXPECT_EQ(Subscribe(Req("A", "tcp:h:1")).status().code(), absl::StatusCode::kUnavailable);
  store_.SetAvailable(true);
  EXPECT_TRUE(Subscribe(Req("A", "tcp:h:1")).ok());
}

TEST_F(SubscriptionManagerTest, UnsubscribeByIdRemovesOnceThenAnswersZero) {
  auto sub = Subscribe(Req("E", "tcp:h:1"));
  ASSERT_TRUE(sub.ok());
  EXPECT_EQ(Unsubscribe(sub->subscription->id).value_or(-1), 1);
  EXPECT_EQ(registry_.size(), 0u);
  EXPECT_EQ(store_.size(), 0u);
  EXPECT_EQ(Unsubscribe(sub->subscription->id).value_or(-1), 0);
}

TEST_F(SubscriptionManagerTest, UnsubscribeByEventAndSocketNormalisesTheSocket) {
  ASSERT_TRUE(Subscribe(Req("E", "tcp:h:1/m")).ok());
  ASSERT_TRUE(Subscribe(Req("F", "tcp:h:1/m")).ok());
  EXPECT_EQ(Unsubscribe("", "E", "tcp:H:1/m").value_or(-1), 1);
  EXPECT_EQ(registry_.FindByKey("E", "tcp:h:1/m"), nullptr);
  EXPECT_NE(registry_.FindByKey("F", "tcp:h:1/m"), nullptr);
  EXPECT_EQ(Unsubscribe("", "E", "tcp:h:1/m").value_or(-1), 0);
}

TEST_F(SubscriptionManagerTest, UnsubscribeOfUnknownAnswersZeroWithoutTouchingTheStore) {
  DeferredStore store;
  MakeManager(&store);
  EXPECT_EQ(Unsubscribe("0123456789abcdef").value_or(-1), 0);
  EXPECT_EQ(Unsubscribe("", "E", "tcp:h:1").value_or(-1), 0);
  EXPECT_EQ(store.pending(), 0u);
}

TEST_F(SubscriptionManagerTest, UnsubscribeNeedsAnIdOrAnEventAndASocket) {
  const absl::Status expected =
      absl::InvalidArgumentError("unsubscribe: give an id, or an event and a socket");
  EXPECT_EQ(Unsubscribe("").status(), expected);
  EXPECT_EQ(Unsubscribe("", "E", "").status(), expected);
  EXPECT_EQ(Unsubscribe("", "", "tcp:h:1").status(), expected);
}

TEST_F(SubscriptionManagerTest, UnsubscribeWithABadSocketIsInvalidArgument) {
  EXPECT_EQ(Unsubscribe("", "E", "tcp:h:70000").status(), uri::ParseSocket("tcp:h:70000").status());
}

TEST_F(SubscriptionManagerTest, UnsubscribeRejectsASocketOverTheLengthLimitWithAShortMessage) {
  // A megabyte of socket must not come back in the error (gRPC would refuse such a status).
  limits_.max_socket_bytes = 12;
  MakeManager();
  const std::string socket = absl::StrCat("garbage", std::string(100000, 'a'));
  EXPECT_EQ(Unsubscribe("", "E", socket).status(),
            absl::InvalidArgumentError(absl::StrCat("socket \"garbage", std::string(57, 'a'),
                                                    "...\": longer than 12 bytes")));
  EXPECT_EQ(Unsubscribe("", "E", "tcp:hh:123456").status(),
            absl::InvalidArgumentError("socket \"tcp:hh:123456\": longer than 12 bytes"));
}

TEST_F(SubscriptionManagerTest, StoreUnavailableFailsSubscribeAndLeavesTheRegistryAlone) {
  ASSERT_TRUE(manager_->Start().ok());
  auto existing = Subscribe(Req("E", "tcp:h:1", 10));
  ASSERT_TRUE(existing.ok());
  store_.SetAvailable(false);
  EXPECT_TRUE(manager_->stale());

  const absl::Status unavailable = absl::UnavailableError("store memory: unavailable (test)");
  EXPECT_EQ(Subscribe(Req("E", "tcp:h:2")).status(), unavailable);
  EXPECT_EQ(Subscribe(Req("E", "tcp:h:1", 99)).status(), unavailable);
  EXPECT_EQ(Unsubscribe(existing->subscription->id).status(), unavailable);
  EXPECT_EQ(Unsubscribe("", "E", "tcp:h:1").status(), unavailable);
  EXPECT_THAT(registry_.List(), ElementsAre(existing->subscription));

  store_.SetAvailable(true);
  EXPECT_FALSE(manager_->stale());
  EXPECT_EQ(Unsubscribe(existing->subscription->id).value_or(-1), 1);
}

TEST_F(SubscriptionManagerTest, ExpireDueRemovesAtTheExactInstant) {
  auto sub = Subscribe(Req("E", "tcp:h:1", 10));
  auto later = Subscribe(Req("E", "tcp:h:2", 11));
  auto never = Subscribe(Req("E", "tcp:h:3", 0));
  ASSERT_TRUE(sub.ok() && later.ok() && never.ok());

  manager_->ExpireDue(t0_ + absl::Seconds(10) - absl::Nanoseconds(1));
  EXPECT_EQ(registry_.size(), 3u);
  EXPECT_EQ(store_.size(), 3u);

  manager_->ExpireDue(t0_ + absl::Seconds(10));
  EXPECT_EQ(registry_.FindById(sub->subscription->id), nullptr);
  EXPECT_THAT(store_.Contents(), SizeIs(2));
  EXPECT_EQ(registry_.size(), 2u);

  manager_->ExpireDue(t0_ + absl::Hours(100000));
  EXPECT_THAT(registry_.List(), ElementsAre(never->subscription));
  EXPECT_THAT(store_.Contents(), ElementsAre(never->subscription));
}

TEST_F(SubscriptionManagerTest, SubscribingAfterExpiryCreatesANewSubscription) {
  auto old = Subscribe(Req("E", "tcp:h:1", 10));
  ASSERT_TRUE(old.ok());
  clock_.Advance(absl::Seconds(10));  // expired, but nothing collected it yet
  auto fresh = Subscribe(Req("E", "tcp:h:1", 10));
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE(fresh->created);
  EXPECT_NE(fresh->subscription->id, old->subscription->id);
  EXPECT_EQ(fresh->subscription->create_time, clock_.Now());
  EXPECT_THAT(registry_.List(), ElementsAre(fresh->subscription));
  EXPECT_THAT(store_.Contents(), ElementsAre(fresh->subscription));
}

TEST_F(SubscriptionManagerTest, ExpiryDuringAnInFlightRefreshDoesNotUndoIt) {
  DeferredStore store;
  MakeManager(&store);
  Answer<absl::StatusOr<SubscribeResult>> first;
  manager_->Subscribe(Actor::Anonymous(), Req("E", "tcp:h:1", 10), first.Callback());
  store.ReleaseAll();
  ASSERT_TRUE(first.Get().ok());

  clock_.Advance(absl::Seconds(9));
  Answer<absl::StatusOr<SubscribeResult>> refresh;
  manager_->Subscribe(Actor::Anonymous(), Req("E", "tcp:h:1", 10), refresh.Callback());
  ASSERT_EQ(store.pending(), 1u);  // the refresh's Put
  // It expires while the refresh is being written: the store delete waits for the key.
  manager_->ExpireDue(t0_ + absl::Seconds(10));
  EXPECT_EQ(registry_.size(), 0u);
  EXPECT_EQ(store.pending(), 1u);
  store.ReleaseAll();
  auto refreshed = refresh.Get();
  ASSERT_TRUE(refreshed.ok());
  EXPECT_FALSE(refreshed->created);
  EXPECT_EQ(registry_.FindById(refreshed->subscription->id), refreshed->subscription);
  EXPECT_THAT(store.Contents(), ElementsAre(refreshed->subscription));
}

TEST_F(SubscriptionManagerTest, ConcurrentSubscribesOfOneKeyAreSerialised) {
  DeferredStore store;
  MakeManager(&store);
  Answer<absl::StatusOr<SubscribeResult>> first;
  Answer<absl::StatusOr<SubscribeResult>> second;
  manager_->Subscribe(Actor::Anonymous(), Req("E", "tcp:h:1"), first.Callback());
  manager_->Subscribe(Actor::Anonymous(), Req("E", "tcp:H:1"), second.Callback());
  // The second waits for the first: one write in flight.
  EXPECT_EQ(store.pending(), 1u);
  store.ReleaseOne();
  ASSERT_TRUE(first.Get().ok());
  EXPECT_EQ(store.pending(), 1u);
  store.ReleaseOne();
  ASSERT_TRUE(second.Get().ok());
  EXPECT_TRUE(first.Get()->created);
  EXPECT_FALSE(second.Get()->created);
  EXPECT_EQ(first.Get()->subscription->id, second.Get()->subscription->id);
  EXPECT_EQ(registry_.size(), 1u);
}

TEST_F(SubscriptionManagerTest, ConcurrentSubscribesFromManyThreadsMakeOneSubscription) {
  constexpr int kThreads = 4;
  constexpr int kEach = 50;
  std::atomic<int> created{0};
  std::atomic<int> failed{0};
  eventbus::Mutex mu;
  std::vector<std::string> ids;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        manager_->Subscribe(Actor::Anonymous(), Req("E", "tcp:h:1"),
                            [&](absl::StatusOr<SubscribeResult> result) {
                              if (!result.ok()) {
                                failed.fetch_add(1);
                                return;
                              }
                              if (result->created) created.fetch_add(1);
                              eventbus::MutexLock lock(&mu);
                              ids.push_back(result->subscription->id);
                            });
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(created.load(), 1);
  eventbus::MutexLock lock(&mu);
  ASSERT_EQ(ids.size(), static_cast<size_t>(kThreads * kEach));
  for (const std::string& id : ids) EXPECT_EQ(id, ids[0]);
  EXPECT_EQ(registry_.size(), 1u);
  EXPECT_EQ(store_.size(), 1u);
}

TEST_F(SubscriptionManagerTest, StartLoadsTheStoreAndStopIsIdempotent) {
  auto sub = std::make_shared<Subscription>();
  sub->id = "00000000000000aa";
  sub->event = "E";
  sub->socket = "tcp:h:1";
  sub->create_time = t0_;
  store_.Put(sub, [](absl::Status) {});
  ASSERT_TRUE(manager_->Start().ok());
  EXPECT_EQ(registry_.FindById("00000000000000aa"), sub);
  EXPECT_EQ(manager_->Start().code(), absl::StatusCode::kFailedPrecondition);
  manager_->Stop();
  manager_->Stop();
}

TEST_F(SubscriptionManagerTest, ListenerCallsUpdateTheRegistry) {
  auto make = [&](std::string id, std::string socket, absl::Time expire) {
    auto sub = std::make_shared<Subscription>();
    sub->id = std::move(id);
    sub->event = "E";
    sub->socket = std::move(socket);
    sub->create_time = t0_ - absl::Hours(1);
    sub->expire_time = expire;
    return SubscriptionPtr(std::move(sub));
  };
  registry_.Upsert(make("gone", "tcp:h:9", absl::InfiniteFuture()));
  SubscriptionPtr live = make("live", "tcp:h:1", t0_ + absl::Seconds(1));
  SubscriptionPtr expired = make("expired", "tcp:h:2", t0_);
  store_.Put(expired, [](absl::Status) {});

  manager_->OnReload({live, expired});
  EXPECT_THAT(registry_.List(), ElementsAre(live));
  // The expired one goes from the store at the next pass of the expiry timer.
  EXPECT_EQ(store_.size(), 1u);
  manager_->ExpireDue(t0_);
  EXPECT_EQ(store_.size(), 0u);

  SubscriptionPtr other = make("other", "tcp:h:3", absl::InfiniteFuture());
  manager_->OnUpsert(other);
  EXPECT_EQ(registry_.FindById("other"), other);
  manager_->OnRemove("live");
  EXPECT_THAT(registry_.List(), ElementsAre(other));
  manager_->OnRemove("unknown");
  EXPECT_EQ(registry_.size(), 1u);

  EXPECT_FALSE(manager_->stale());
  manager_->OnHealth(false);
  EXPECT_TRUE(manager_->stale());
  manager_->OnHealth(true);
  EXPECT_FALSE(manager_->stale());
}

TEST_F(SubscriptionManagerTest, ABatchOfListenerChangesIsAppliedInOrderAsOneWrite) {
  auto make = [&](std::string id, std::string socket, absl::Time expire) {
    auto sub = std::make_shared<Subscription>();
    sub->id = std::move(id);
    sub->event = "E";
    sub->socket = std::move(socket);
    sub->create_time = t0_ - absl::Hours(1);
    sub->expire_time = expire;
    return SubscriptionPtr(std::move(sub));
  };
  SubscriptionPtr kept = make("kept", "tcp:h:1", absl::InfiniteFuture());
  registry_.Upsert(kept);
  registry_.Upsert(make("gone", "tcp:h:2", absl::InfiniteFuture()));
  std::shared_ptr<const registry::SubscriberList> before = registry_.Subscribers("E");

  SubscriptionPtr added = make("added", "tcp:h:3", t0_ + absl::Seconds(5));
  SubscriptionPtr moved = make("moved", "tcp:h:5", absl::InfiniteFuture());
  std::vector<SubscriptionStore::Listener::Change> changes;
  changes.push_back({added, ""});
  changes.push_back({nullptr, "gone"});
  changes.push_back({make("moved", "tcp:h:4", absl::InfiniteFuture()), ""});
  changes.push_back({moved, ""});  // the same id again, later in the batch: this one wins
  changes.push_back({make("brief", "tcp:h:6", absl::InfiniteFuture()), ""});
  changes.push_back({nullptr, "brief"});
  changes.push_back({nullptr, "unknown"});
  manager_->OnChanges(std::move(changes));

  EXPECT_THAT(registry_.List(), ElementsAre(kept, added, moved));
  EXPECT_EQ(registry_.NextExpiry(), t0_ + absl::Seconds(5));
  // The snapshot taken before is untouched.
  EXPECT_EQ(before->size(), 2u);
}

// The real timer: removes a subscription at its instant, also when it is earlier than the one
// the thread was already waiting for.
TEST(SubscriptionManagerExpiryThreadTest, RemovesA200MsSubscriptionAtItsInstant) {
  registry::Registry registry;
  WatchedStore store;
  SubscriptionManager manager(&registry, &store, base::RealClock::Get(), SubscriptionLimits{});
  ASSERT_TRUE(manager.Start().ok());

  auto make = [](std::string id, std::string socket, absl::Time expire) {
    auto sub = std::make_shared<Subscription>();
    sub->id = std::move(id);
    sub->event = "E";
    sub->socket = std::move(socket);
    sub->create_time = absl::Now();
    sub->expire_time = expire;
    return SubscriptionPtr(std::move(sub));
  };
  // The thread first sleeps until this one...
  manager.OnUpsert(make("hour", "tcp:h:1", absl::Now() + absl::Hours(1)));
  // ...and must wake up early for this one.
  const absl::Time instant = absl::Now() + absl::Milliseconds(200);
  manager.OnUpsert(make("short", "tcp:h:2", instant));

  std::optional<absl::Time> deleted = store.WaitForDelete("short", absl::Seconds(5));
  ASSERT_TRUE(deleted.has_value()) << "not expired within 5 s";
  EXPECT_GE(*deleted, instant);
  RecordProperty("late_us", static_cast<int>(absl::ToInt64Microseconds(*deleted - instant)));
  // "Within a few ms"; generous because the test machine is shared.
  EXPECT_LT(*deleted - instant, absl::Milliseconds(50)) << (*deleted - instant);
  EXPECT_EQ(registry.FindById("short"), nullptr);
  EXPECT_NE(registry.FindById("hour"), nullptr);
  manager.Stop();
}

// Ownership (SPEC §10). The service maps the authenticated caller onto an Actor; with
// authentication off every caller is Actor::Anonymous(), an admin with no name.
const Actor kAlice{"alice", false};
const Actor kBob{"bob", false};
const Actor kRoot{"root", true};

TEST_F(SubscriptionManagerTest, ASubscriptionIsOwnedByTheCallerThatMadeIt) {
  auto mine = Subscribe(Req("E", "tcp:h:1"), kAlice);
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_EQ(mine->subscription->owner, "alice");
  auto anonymous = Subscribe(Req("E", "tcp:h:2"));
  ASSERT_TRUE(anonymous.ok()) << anonymous.status();
  EXPECT_EQ(anonymous->subscription->owner, "");
  // What the store holds carries the owner too.
  std::vector<SubscriptionPtr> stored = store_.Contents();
  ASSERT_THAT(stored, SizeIs(2));
  for (const SubscriptionPtr& sub : stored) {
    EXPECT_EQ(sub->owner, sub->id == mine->subscription->id ? "alice" : "");
  }
}

TEST_F(SubscriptionManagerTest, TheOwnerMayRefreshAndRemoveItsSubscription) {
  auto created = Subscribe(Req("E", "tcp:h:1", 10), kAlice);
  ASSERT_TRUE(created.ok()) << created.status();
  clock_.Advance(absl::Seconds(5));
  auto refreshed = Subscribe(Req("E", "tcp:H:1", 60, "p"), kAlice);
  ASSERT_TRUE(refreshed.ok()) << refreshed.status();
  EXPECT_FALSE(refreshed->created);
  EXPECT_EQ(refreshed->subscription->id, created->subscription->id);
  EXPECT_EQ(refreshed->subscription->owner, "alice");
  EXPECT_EQ(refreshed->subscription->expire_time, t0_ + absl::Seconds(65));
  EXPECT_EQ(refreshed->subscription->event_param, "p");

  absl::StatusOr<UnsubscribeResult> removed =
      UnsubscribeResultAs(kAlice, created->subscription->id);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(removed->removed, 1);
  ASSERT_NE(removed->subscription, nullptr);
  EXPECT_EQ(removed->subscription->owner, "alice");
  EXPECT_EQ(registry_.size(), 0u);
  EXPECT_EQ(store_.size(), 0u);

  ASSERT_TRUE(Subscribe(Req("E", "tcp:h:2"), kAlice).ok());
  EXPECT_EQ(UnsubscribeAs(kAlice, "", "E", "tcp:h:2").value_or(-1), 1);
}

// Issue 9: anyone could re-subscribe someone else's event and socket with expire_seconds=1 and so
// remove it. Now that is PERMISSION_DENIED, and nothing changes.
TEST_F(SubscriptionManagerTest, AnotherCallersRefreshIsPermissionDeniedAndChangesNothing) {
  auto created = Subscribe(Req("E_PIKE", "tcp:h:1/m", 3600, "x"), kAlice);
  ASSERT_TRUE(created.ok()) << created.status();
  const SubscriptionPtr before = created->subscription;

  auto takeover = Subscribe(Req("E_PIKE", "tcp:H:1/m", 1, "y"), kBob);
  ASSERT_EQ(takeover.status().code(), absl::StatusCode::kPermissionDenied) << takeover.status();
  EXPECT_EQ(takeover.status().message(),
            absl::StrCat("subscribe: subscription ", absl::string_view(before->id),
                         " (event \"E_PIKE\", socket \"tcp:h:1/m\") belongs to another caller; "
                         "only its owner or an admin may refresh it"));
  // Who owns it is not the refused caller's business.
  EXPECT_THAT(takeover.status().message(), Not(HasSubstr("alice")));

  EXPECT_EQ(registry_.FindByKey("E_PIKE", "tcp:h:1/m"), before);
  EXPECT_THAT(store_.Contents(), ElementsAre(before));
  EXPECT_EQ(before->expire_time, t0_ + absl::Seconds(3600));
}

TEST_F(SubscriptionManagerTest, AnotherCallersUnsubscribeIsPermissionDeniedByIdAndByKey) {
  auto created = Subscribe(Req("E", "tcp:h:1"), kAlice);
  ASSERT_TRUE(created.ok()) << created.status();
  const std::string& id = created->subscription->id;

  absl::StatusOr<int> by_id = UnsubscribeAs(kBob, id);
  ASSERT_EQ(by_id.status().code(), absl::StatusCode::kPermissionDenied) << by_id.status();
  EXPECT_EQ(by_id.status().message(),
            absl::StrCat("unsubscribe: subscription ", id,
                         " (event \"E\", socket \"tcp:h:1\") belongs to another caller; only its "
                         "owner or an admin may remove it"));
  absl::StatusOr<int> by_key = UnsubscribeAs(kBob, "", "E", "tcp:H:1");
  EXPECT_EQ(by_key.status(), by_id.status());
  EXPECT_EQ(registry_.FindById(id), created->subscription);
  EXPECT_EQ(store_.size(), 1u);
}

TEST_F(SubscriptionManagerTest, UnsubscribeOfAnUnknownIdIsZeroForAnyCaller) {
  ASSERT_TRUE(Subscribe(Req("E", "tcp:h:1"), kAlice).ok());
  EXPECT_EQ(UnsubscribeAs(kBob, "0123456789abcdef").value_or(-1), 0);
  EXPECT_EQ(UnsubscribeAs(kBob, "", "E", "tcp:h:2").value_or(-1), 0);
  absl::StatusOr<UnsubscribeResult> none = UnsubscribeResultAs(kBob, "0123456789abcdef");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->subscription, nullptr);
}

TEST_F(SubscriptionManagerTest, AnAdminMayRefreshAndRemoveAnyonesAndTheOwnerStays) {
  auto created = Subscribe(Req("E", "tcp:h:1", 10), kAlice);
  ASSERT_TRUE(created.ok()) << created.status();
  auto refreshed = Subscribe(Req("E", "tcp:h:1", 99), kRoot);
  ASSERT_TRUE(refreshed.ok()) << refreshed.status();
  EXPECT_FALSE(refreshed->created);
  EXPECT_EQ(refreshed->subscription->owner, "alice");
  EXPECT_EQ(refreshed->subscription->expire_time, t0_ + absl::Seconds(99));
  EXPECT_EQ(store_.Contents().at(0)->owner, "alice");
  // Still alice's: she may refresh it, bob still may not.
  EXPECT_TRUE(Subscribe(Req("E", "tcp:h:1", 10), kAlice).ok());
  EXPECT_EQ(Subscribe(Req("E", "tcp:h:1", 10), kBob).status().code(),
            absl::StatusCode::kPermissionDenied);

  EXPECT_EQ(UnsubscribeAs(kRoot, created->subscription->id).value_or(-1), 1);
  EXPECT_EQ(registry_.size(), 0u);
  ASSERT_TRUE(Subscribe(Req("E", "tcp:h:1"), kBob).ok());
  EXPECT_EQ(UnsubscribeAs(kRoot, "", "E", "tcp:h:1").value_or(-1), 1);
}

TEST_F(SubscriptionManagerTest, ASubscriptionMadeBeforeAuthenticationIsAnAdminsAlone) {
  // Made while authentication was off, then loaded (as a store does at start-up).
  auto legacy = Subscribe(Req("E", "tcp:h:1", 10));
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  ASSERT_EQ(legacy->subscription->owner, "");
  MakeManager();
  ASSERT_TRUE(manager_->Start().ok());
  ASSERT_EQ(registry_.FindById(legacy->subscription->id)->owner, "");

  for (const Actor& actor : {kAlice, Actor{"", false}}) {
    absl::Status refused = Subscribe(Req("E", "tcp:h:1", 1), actor).status();
    EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << refused;
    EXPECT_THAT(refused.message(), HasSubstr("made without authentication and has no owner"));
    EXPECT_EQ(UnsubscribeAs(actor, legacy->subscription->id).status().code(),
              absl::StatusCode::kPermissionDenied);
  }
  auto refreshed = Subscribe(Req("E", "tcp:h:1", 60), kRoot);
  ASSERT_TRUE(refreshed.ok()) << refreshed.status();
  EXPECT_EQ(refreshed->subscription->owner, "");
  EXPECT_EQ(UnsubscribeAs(kRoot, legacy->subscription->id).value_or(-1), 1);
}

TEST_F(SubscriptionManagerTest, WithAuthenticationOffEveryoneMayChangeEverything) {
  // Owned subscriptions made while authentication was on, then turned off: the anonymous caller
  // is an admin, as every caller was before owners existed.
  auto owned = Subscribe(Req("E", "tcp:h:1", 10), kAlice);
  ASSERT_TRUE(owned.ok()) << owned.status();
  auto refreshed = Subscribe(Req("E", "tcp:h:1", 20));
  ASSERT_TRUE(refreshed.ok()) << refreshed.status();
  EXPECT_EQ(refreshed->subscription->owner, "alice");
  EXPECT_EQ(Unsubscribe(owned->subscription->id).value_or(-1), 1);
}

TEST_F(SubscriptionManagerTest, AnExpiredSubscriptionIsNobodysAndASubscribeMakesANewOne) {
  auto old = Subscribe(Req("E", "tcp:h:1", 10), kAlice);
  ASSERT_TRUE(old.ok());
  clock_.Advance(absl::Seconds(10));  // expired, not collected yet
  auto fresh = Subscribe(Req("E", "tcp:h:1", 10), kBob);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_TRUE(fresh->created);
  EXPECT_EQ(fresh->subscription->owner, "bob");
}

// The check runs where writes for one (event, socket) are serialised, against the subscription as
// it is then: a call that arrived while another caller's create was in flight sees that create.
TEST_F(SubscriptionManagerTest, ACallerRacingAnotherCallersCreateIsRefused) {
  DeferredStore store;
  MakeManager(&store);
  Answer<absl::StatusOr<SubscribeResult>> alice;
  manager_->Subscribe(kAlice, Req("E", "tcp:h:1", 60), alice.Callback());
  Answer<absl::StatusOr<SubscribeResult>> bob;
  manager_->Subscribe(kBob, Req("E", "tcp:h:1", 1), bob.Callback());
  Answer<absl::StatusOr<UnsubscribeResult>> bob_remove;
  manager_->Unsubscribe(kBob, "", "E", "tcp:h:1", bob_remove.Callback());
  EXPECT_FALSE(alice.ready());
  EXPECT_FALSE(bob.ready());
  EXPECT_FALSE(bob_remove.ready());

  store.ReleaseOne();  // alice's create
  absl::StatusOr<SubscribeResult> created = alice.Get();
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->created);
  EXPECT_EQ(bob.Get().status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(bob_remove.Get().status().code(), absl::StatusCode::kPermissionDenied);
  // Neither of bob's calls reached the store.
  EXPECT_EQ(store.pending(), 0u);
  EXPECT_THAT(store.Contents(), ElementsAre(created->subscription));
  EXPECT_EQ(registry_.FindByKey("E", "tcp:h:1"), created->subscription);
}

}  // namespace
}  // namespace eventbus::store
