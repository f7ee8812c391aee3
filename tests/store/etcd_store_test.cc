#include "server/store/etcd_store.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/store/store_codec.h"
#include "tests/store/store_test_listener.h"
#include "tests/testing/delay_proxy.h"
#include "tests/testing/etcd_harness.h"
#include "tests/testing/ports.h"

namespace eventbus::store {
namespace {

using ::eventbus::testing::EtcdHarness;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kPrefix[] = "/eventbus-test";

// Ids are unique per test: every test has its own etcd anyway.
registry::SubscriptionPtr Sub(const std::string& id, absl::Time expire = absl::InfiniteFuture(),
                              std::optional<std::string> event_param = std::nullopt) {
  return MakeSubscription(id, "E_TEST", absl::StrCat("tcp:127.0.0.1:", 1000 + id.size()),
                          absl::FromUnixMicros(absl::ToUnixMicros(absl::Now())), expire,
                          std::move(event_param));
}

bool Has(const ListenerState& state, const std::string& id) { return state.subs.count(id) > 0; }

class EtcdStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!EtcdHarness::Available()) {
      GTEST_SKIP() << EtcdHarness::kEtcdBinary << " is not installed (package etcd-server)";
    }
    absl::StatusOr<std::unique_ptr<EtcdHarness>> etcd = EtcdHarness::Start();
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
  }

  void TearDown() override {
    for (const auto& listener : listeners_) {
      EXPECT_FALSE(listener->state().overlapped) << "listener calls overlapped";
    }
  }

  EtcdStoreOptions Options() {
    EtcdStoreOptions options;
    options.endpoints = {etcd_->endpoint()};
    options.prefix = kPrefix;
    return options;
  }

  // Starts a store ("a replica") with its own listener; both live until the test ends.
  struct Replica {
    EtcdStore* store;
    RecordingListener* listener;
  };
  Replica Open(EtcdStoreOptions options) {
    listeners_.push_back(std::make_unique<RecordingListener>());
    stores_.push_back(std::make_unique<EtcdStore>(std::move(options)));
    absl::Status status = stores_.back()->Start(listeners_.back().get());
    EXPECT_TRUE(status.ok()) << status;
    return Replica{stores_.back().get(), listeners_.back().get()};
  }
  Replica Open() { return Open(Options()); }

  std::string Key(const std::string& id) { return absl::StrCat(kPrefix, "/subscriptions/", id); }

  // Destroyed in reverse: stores stop before their listeners go, and before etcd does.
  std::unique_ptr<EtcdHarness> etcd_;
  std::vector<std::unique_ptr<RecordingListener>> listeners_;
  std::vector<std::unique_ptr<EtcdStore>> stores_;
};

TEST_F(EtcdStoreTest, StartLoadsWhatIsAlreadyStored) {
  auto [a, listener_a] = Open();
  auto x = Sub("x1", absl::Now() + absl::Hours(1), "opensips_event");
  auto y = Sub("y1");
  ASSERT_TRUE(PutAndWait(*a, x).ok());
  ASSERT_TRUE(PutAndWait(*a, y).ok());

  auto [b, listener_b] = Open();
  EXPECT_EQ(b->kind(), "etcd");
  EXPECT_TRUE(b->healthy());
  ListenerState state = listener_b->state();
  EXPECT_EQ(state.reloads, 1);
  ASSERT_EQ(state.subs.size(), 2u);
  ExpectSameSubscription(*state.subs["x1"], *x);
  ExpectSameSubscription(*state.subs["y1"], *y);
}

TEST_F(EtcdStoreTest, APutOnOneReplicaReachesTheOtherWithinASecond) {
  auto [a, listener_a] = Open();
  auto [b, listener_b] = Open();
  auto x = Sub("x1", absl::Now() + absl::Hours(1), "");
  ASSERT_TRUE(PutAndWait(*a, x).ok());
  ASSERT_TRUE(
      listener_b->WaitFor([](const ListenerState& s) { return Has(s, "x1"); }, absl::Seconds(1)));
  ExpectSameSubscription(*listener_b->state().subs["x1"], *x);

  // Both replicas converge on etcd's order: A's own put and delete, then B's write.
  ASSERT_TRUE(DeleteAndWait(*a, x).ok());
  ASSERT_TRUE(PutAndWait(*b, Sub("y1")).ok());
  ASSERT_TRUE(
      listener_a->WaitFor([](const ListenerState& s) { return Has(s, "y1"); }, absl::Seconds(1)));
  ASSERT_TRUE(listener_b->WaitFor([](const ListenerState& s) { return !Has(s, "x1"); }));
  // A's listener is not asserted on x1: the watch may echo A's own put before its ack, and skips
  // A's own delete when the ack came first. The SubscriptionManager applies its own acknowledged
  // writes, so it stays consistent; this recording listener does not.
}

TEST_F(EtcdStoreTest, ADeleteOnOneReplicaReachesTheOther) {
  auto [a, listener_a] = Open();
  auto [b, listener_b] = Open();
  auto x = Sub("x1");
  ASSERT_TRUE(PutAndWait(*a, x).ok());
  ASSERT_TRUE(listener_b->WaitFor([](const ListenerState& s) { return Has(s, "x1"); }));
  ASSERT_TRUE(DeleteAndWait(*a, x).ok());
  ASSERT_TRUE(
      listener_b->WaitFor([](const ListenerState& s) { return !Has(s, "x1"); }, absl::Seconds(1)));
  absl::StatusOr<std::optional<EtcdHarness::KeyValue>> kv = etcd_->Get(Key("x1"));
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_FALSE(kv->has_value());
  // Deleting what is not there is fine.
  EXPECT_TRUE(DeleteAndWait(*b, x).ok());
}

TEST_F(EtcdStoreTest, EachSubscriptionIsOneKeyHoldingItsJson) {
  auto [a, listener] = Open();
  auto expiring = Sub("x1", absl::Now() + absl::Seconds(100));
  auto forever = Sub("y1");
  ASSERT_TRUE(PutAndWait(*a, expiring).ok());
  ASSERT_TRUE(PutAndWait(*a, forever).ok());

  absl::StatusOr<std::optional<EtcdHarness::KeyValue>> kv = etcd_->Get(Key("x1"));
  ASSERT_TRUE(kv.ok()) << kv.status();
  ASSERT_TRUE(kv->has_value());
  EXPECT_EQ((*kv)->value, EncodeSubscriptionJson(*expiring));
  ASSERT_NE((*kv)->lease, 0);
  absl::StatusOr<int64_t> ttl = etcd_->LeaseTtl((*kv)->lease);
  ASSERT_TRUE(ttl.ok()) << ttl.status();
  EXPECT_GT(*ttl, 90);
  EXPECT_LE(*ttl, 100);

  kv = etcd_->Get(Key("y1"));
  ASSERT_TRUE(kv.ok()) << kv.status();
  ASSERT_TRUE(kv->has_value());
  EXPECT_EQ((*kv)->value, EncodeSubscriptionJson(*forever));
  EXPECT_EQ((*kv)->lease, 0);  // never expires: no lease
}

TEST_F(EtcdStoreTest, AnExpiredLeaseRemovesTheSubscriptionEverywhere) {
  auto [a, listener_a] = Open();
  auto [b, listener_b] = Open();
  (void)b;
  ASSERT_TRUE(PutAndWait(*a, Sub("x1", absl::Now() + absl::Seconds(2))).ok());
  ASSERT_TRUE(listener_b->WaitFor([](const ListenerState& s) { return Has(s, "x1"); }));
  // etcd expires the 2 s lease (it checks leases every 500 ms) and both replicas hear the delete.
  EXPECT_TRUE(
      listener_b->WaitFor([](const ListenerState& s) { return !Has(s, "x1"); }, absl::Seconds(10)));
  EXPECT_TRUE(listener_a->WaitFor([](const ListenerState& s) { return s.removes == 1; },
                                  absl::Seconds(10)));
  absl::StatusOr<std::optional<EtcdHarness::KeyValue>> kv = etcd_->Get(Key("x1"));
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_FALSE(kv->has_value());
}

TEST_F(EtcdStoreTest, ARefreshMovesTheKeyToANewLeaseAndRevokesTheOld) {
  auto [a, listener_a] = Open();
  auto [b, listener_b] = Open();
  auto lease_of = [&](const std::string& id) -> int64_t {
    absl::StatusOr<std::optional<EtcdHarness::KeyValue>> kv = etcd_->Get(Key(id));
    EXPECT_TRUE(kv.ok() && kv->has_value()) << id;
    return kv.ok() && kv->has_value() ? (*kv)->lease : -1;
  };
  auto ttl_of = [&](int64_t lease) -> int64_t {
    absl::StatusOr<int64_t> ttl = etcd_->LeaseTtl(lease);
    EXPECT_TRUE(ttl.ok()) << ttl.status();
    return ttl.ok() ? *ttl : -2;
  };
  // The old lease is revoked after the write is acknowledged (best-effort cleanup: the key has
  // already left it), so wait for that with a deadline.
  auto revoked = [&](int64_t lease) {
    absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (ttl_of(lease) != -1) {
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return true;
  };

  ASSERT_TRUE(PutAndWait(*a, Sub("x1", absl::Now() + absl::Seconds(3))).ok());
  int64_t first = lease_of("x1");
  ASSERT_GT(first, 0);

  // Refreshed on the same replica.
  ASSERT_TRUE(PutAndWait(*a, Sub("x1", absl::Now() + absl::Seconds(60))).ok());
  int64_t second = lease_of("x1");
  EXPECT_NE(second, first);
  EXPECT_GT(ttl_of(second), 50);
  EXPECT_TRUE(revoked(first));

  // Refreshed on the other replica, which learnt the lease from its watch.
  ASSERT_TRUE(listener_b->WaitFor([&](const ListenerState& s) {
    return Has(s, "x1") && s.subs.at("x1")->expire_time > absl::Now() + absl::Seconds(30);
  }));
  ASSERT_TRUE(PutAndWait(*b, Sub("x1", absl::Now() + absl::Seconds(120))).ok());
  int64_t third = lease_of("x1");
  EXPECT_NE(third, second);
  EXPECT_GT(ttl_of(third), 110);
  EXPECT_TRUE(revoked(second));

  // Made permanent: no lease any more, and the last one revoked.
  ASSERT_TRUE(PutAndWait(*b, Sub("x1")).ok());
  EXPECT_EQ(lease_of("x1"), 0);
  EXPECT_TRUE(revoked(third));

  // Still there after the first lease's 3 s would have run out: wait for an unrelated change made
  // later to reach A, then check x1 was never removed.
  ASSERT_TRUE(PutAndWait(*b, Sub("z1")).ok());
  ASSERT_TRUE(listener_a->WaitFor([](const ListenerState& s) { return Has(s, "z1"); }));
  EXPECT_EQ(listener_a->state().removes, 0);
}

// Issue 7, defect 1: a refresh whose put lands in etcd but whose reply comes after the call
// timeout used to revoke the new lease, which already carried the key, and so deleted the
// acknowledged subscription from etcd and every replica.
TEST_F(EtcdStoreTest, ARefreshWhoseReplyComesAfterTheTimeoutKeepsTheSubscription) {
  absl::StatusOr<std::unique_ptr<testing::DelayProxy>> proxy =
      testing::DelayProxy::Start(etcd_->client_port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  // A replica that reads etcd directly, and one that reaches it through the proxy.
  auto [watcher, watcher_listener] = Open();
  EtcdStoreOptions options = Options();
  options.endpoints = {(*proxy)->endpoint()};
  options.call_timeout = absl::Seconds(1);
  auto [a, listener_a] = Open(options);

  auto first = Sub("x1", absl::Now() + absl::Hours(1));
  ASSERT_TRUE(PutAndWait(*a, first).ok());
  ASSERT_TRUE(watcher_listener->WaitFor([](const ListenerState& s) { return Has(s, "x1"); }));

  // etcd serves the refresh at once, but its answer to the put reaches A 1.5 s later, after A's
  // 1 s deadline. The lease grant before it is answered at once: only the put request (carrying
  // the 20 KB subscription) is large enough to arm the delay.
  (*proxy)->DelayRepliesAfter(absl::Milliseconds(1500), 10000);
  auto refreshed = Sub("x1", absl::Now() + absl::Hours(2), std::string(20000, 'p'));
  absl::Status status = PutAndWait(*a, refreshed);
  EXPECT_TRUE(status.code() == absl::StatusCode::kUnavailable ||
              status.code() == absl::StatusCode::kDeadlineExceeded)
      << status;
  // Stop waits for every call A still has in flight (each bounded by its 1 s deadline), so
  // whatever A's failure path sent to etcd has been sent and served.
  a->Stop();

  // The key is in etcd, as acknowledged or as refreshed (the refresh's outcome was unknown to
  // A), with a live lease.
  absl::StatusOr<std::optional<EtcdHarness::KeyValue>> kv = etcd_->Get(Key("x1"));
  ASSERT_TRUE(kv.ok()) << kv.status();
  ASSERT_TRUE(kv->has_value()) << "the subscription was deleted from etcd";
  EXPECT_THAT((*kv)->value,
              ::testing::AnyOf(EncodeSubscriptionJson(*first), EncodeSubscriptionJson(*refreshed)));
  ASSERT_NE((*kv)->lease, 0);
  absl::StatusOr<int64_t> ttl = etcd_->LeaseTtl((*kv)->lease);
  ASSERT_TRUE(ttl.ok()) << ttl.status();
  EXPECT_GT(*ttl, 3000);

  // A replica starting now loads it...
  auto [b, listener_b] = Open();
  EXPECT_TRUE(Has(listener_b->state(), "x1"));
  // ...and the one that was watching all along never heard it removed: a later change reaches it
  // with x1 still there.
  ASSERT_TRUE(PutAndWait(*b, Sub("z1")).ok());
  ASSERT_TRUE(watcher_listener->WaitFor([](const ListenerState& s) { return Has(s, "z1"); }));
  EXPECT_TRUE(Has(watcher_listener->state(), "x1"));
  EXPECT_EQ(watcher_listener->state().removes, 0);
}

// The same with a delete: a timed-out delete revokes nothing, and a later successful refresh
// through the same store works as before.
TEST_F(EtcdStoreTest, AFailedWriteThroughABlackHoleChangesNothing) {
  absl::StatusOr<std::unique_ptr<testing::DelayProxy>> proxy =
      testing::DelayProxy::Start(etcd_->client_port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  EtcdStoreOptions options = Options();
  options.endpoints = {(*proxy)->endpoint()};
  options.call_timeout = absl::Milliseconds(500);
  auto [a, listener_a] = Open(options);
  auto first = Sub("x1", absl::Now() + absl::Hours(1));
  ASSERT_TRUE(PutAndWait(*a, first).ok());
  absl::StatusOr<std::optional<EtcdHarness::KeyValue>> before = etcd_->Get(Key("x1"));
  ASSERT_TRUE(before.ok() && before->has_value());

  (*proxy)->SetBlackHole(true);
  EXPECT_EQ(PutAndWait(*a, Sub("x1", absl::Now() + absl::Hours(2))).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(DeleteAndWait(*a, first).code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(a->healthy());
  absl::StatusOr<std::optional<EtcdHarness::KeyValue>> after = etcd_->Get(Key("x1"));
  ASSERT_TRUE(after.ok() && after->has_value());
  EXPECT_EQ((*after)->mod_revision, (*before)->mod_revision);
  EXPECT_EQ((*after)->lease, (*before)->lease);
}

// Issue 7, defect 7: a subscription too large for etcd used to fail UNAVAILABLE, so clients
// retried it forever. It is the client's error: INVALID_ARGUMENT, naming it, and the stored one
// stays as it was.
TEST_F(EtcdStoreTest, ASubscriptionTooLargeForEtcdIsInvalidArgument) {
  auto [a, listener_a] = Open();
  auto small = Sub("x1", absl::Now() + absl::Hours(1));
  ASSERT_TRUE(PutAndWait(*a, small).ok());
  const std::string stored = EncodeSubscriptionJson(*small);

  // Refused before anything is sent (limit: etcd's default 1.5 MiB).
  absl::Status status =
      PutAndWait(*a, Sub("x1", absl::Now() + absl::Hours(2), std::string(2 << 20, 'p')));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("subscription \"x1\" is too large"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("exceeds the limit of 1572864 bytes"));
  EXPECT_TRUE(a->healthy());

  // A store configured above etcd's limit gets etcd's own refusal, mapped the same way: etcd's
  // "request is too large" just above its limit, gRPC's RESOURCE_EXHAUSTED beyond 2 MiB.
  EtcdStoreOptions options = Options();
  options.max_request_bytes = 64 << 20;
  auto [b, listener_b] = Open(options);
  for (size_t size : {size_t{1600} << 10, size_t{3} << 20}) {
    status = PutAndWait(*b, Sub("x1", absl::Now() + absl::Hours(2), std::string(size, 'p')));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << size << ": " << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("subscription \"x1\" is too large"));
    EXPECT_THAT(std::string(status.message()), HasSubstr("refused by etcd"));
    EXPECT_TRUE(b->healthy());
  }
  absl::StatusOr<std::optional<EtcdHarness::KeyValue>> kv = etcd_->Get(Key("x1"));
  ASSERT_TRUE(kv.ok() && kv->has_value());
  EXPECT_EQ((*kv)->value, stored);
  // Just below the limit is fine.
  EXPECT_TRUE(PutAndWait(*a, Sub("x2", absl::InfiniteFuture(), std::string(1500 << 10, 'p'))).ok());
}

TEST_F(EtcdStoreTest, WhileEtcdIsDownWritesFailAndHealthFollowsReachability) {
  auto [a, listener_a] = Open();
  auto [b, listener_b] = Open();
  ASSERT_TRUE(PutAndWait(*a, Sub("x1")).ok());
  ASSERT_TRUE(PutAndWait(*a, Sub("y1")).ok());
  ASSERT_TRUE(
      listener_b->WaitFor([](const ListenerState& s) { return Has(s, "x1") && Has(s, "y1"); }));

  ASSERT_TRUE(etcd_->Stop().ok());
  absl::Status status = PutAndWait(*a, Sub("w1"));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(std::string(status.message()),
              StartsWith(absl::StrCat("store etcd (", etcd_->endpoint(), "): ")));
  EXPECT_FALSE(a->healthy());
  // B's watch breaks and it cannot resynchronise.
  EXPECT_TRUE(listener_b->WaitFor(
      [](const ListenerState& s) { return !s.health.empty() && !s.health.back(); }));
  EXPECT_FALSE(b->healthy());

  ASSERT_TRUE(etcd_->Restart().ok());
  // Another client changes things before B is back.
  EtcdStore* c = Open().store;
  ASSERT_TRUE(DeleteAndWait(*c, Sub("x1")).ok());
  ASSERT_TRUE(PutAndWait(*c, Sub("z1")).ok());

  EXPECT_TRUE(listener_b->WaitFor(
      [](const ListenerState& s) {
        return !s.health.empty() && s.health.back() && !Has(s, "x1") && Has(s, "y1") &&
               Has(s, "z1") && s.subs.size() == 2;
      },
      absl::Seconds(15)))
      << "B's view: " << listener_b->state().subs.size() << " subscriptions";
  EXPECT_TRUE(b->healthy());
  EXPECT_TRUE(listener_a->WaitFor(
      [](const ListenerState& s) { return !s.health.empty() && s.health.back(); },
      absl::Seconds(15)));
  EXPECT_TRUE(a->healthy());
  EXPECT_TRUE(PutAndWait(*a, Sub("w1")).ok());
}

TEST_F(EtcdStoreTest, AWatchThatFallsBehindACompactionResynchronises) {
  auto [a, listener_a] = Open();
  auto [b, listener_b] = Open();
  ASSERT_TRUE(PutAndWait(*a, Sub("x1")).ok());
  ASSERT_TRUE(listener_b->WaitFor([](const ListenerState& s) { return Has(s, "x1"); }));
  absl::StatusOr<int64_t> old_revision = etcd_->CurrentRevision();
  ASSERT_TRUE(old_revision.ok()) << old_revision.status();

  ASSERT_TRUE(PutAndWait(*a, Sub("y1")).ok());
  ASSERT_TRUE(DeleteAndWait(*a, Sub("x1")).ok());
  absl::StatusOr<int64_t> revision = etcd_->CurrentRevision();
  ASSERT_TRUE(revision.ok()) << revision.status();
  ASSERT_TRUE(etcd_->Compact(*revision).ok());

  // B's watch restarts from a revision the compaction removed, as one that fell behind would.
  b->RewatchFromForTesting(*old_revision);
  EXPECT_TRUE(listener_b->WaitFor(
      [](const ListenerState& s) { return s.reloads == 2 && s.subs.size() == 1 && Has(s, "y1"); },
      absl::Seconds(5)))
      << "reloads=" << listener_b->state().reloads;
  EXPECT_TRUE(b->healthy());

  // And it follows changes again from the resynchronised revision.
  ASSERT_TRUE(PutAndWait(*a, Sub("z1")).ok());
  EXPECT_TRUE(listener_b->WaitFor([](const ListenerState& s) { return Has(s, "z1"); }));
}

TEST_F(EtcdStoreTest, TheOwnerTravelsWithTheRecordToEveryReplica) {
  auto [a, listener_a] = Open();
  auto [b, listener_b] = Open();
  auto x = OwnedBy(Sub("x1", absl::Now() + absl::Hours(1)), "alice");
  ASSERT_TRUE(PutAndWait(*a, x).ok());

  absl::StatusOr<std::optional<EtcdHarness::KeyValue>> kv = etcd_->Get(Key("x1"));
  ASSERT_TRUE(kv.ok()) << kv.status();
  ASSERT_TRUE(kv->has_value());
  EXPECT_THAT((*kv)->value, HasSubstr(R"("owner":"alice")"));
  // Through the watch...
  ASSERT_TRUE(listener_b->WaitFor([](const ListenerState& s) { return Has(s, "x1"); }));
  ExpectSameSubscription(*listener_b->state().subs["x1"], *x);
  // ...and through a replica's start-up read.
  auto [c, listener_c] = Open();
  (void)c;
  ASSERT_TRUE(Has(listener_c->state(), "x1"));
  EXPECT_EQ(listener_c->state().subs["x1"]->owner, "alice");
}

// What a build that kept no owners wrote: read with owner "", at start-up and through the watch.
TEST_F(EtcdStoreTest, ARecordWrittenWithoutAnOwnerHasNone) {
  ASSERT_TRUE(etcd_
                  ->Put(Key("old1"),
                        R"({"v":1,"id":"old1","event":"E","socket":"tcp:h:1","create_time_us":5})")
                  .ok());
  auto [a, listener_a] = Open();
  (void)a;
  ASSERT_TRUE(Has(listener_a->state(), "old1"));
  EXPECT_EQ(listener_a->state().subs["old1"]->owner, "");
  ASSERT_TRUE(etcd_
                  ->Put(Key("old2"),
                        R"({"v":1,"id":"old2","event":"E","socket":"tcp:h:2","create_time_us":5})")
                  .ok());
  ASSERT_TRUE(listener_a->WaitFor([](const ListenerState& s) { return Has(s, "old2"); }));
  EXPECT_EQ(listener_a->state().subs["old2"]->owner, "");
}

TEST_F(EtcdStoreTest, UndecodableValuesAreIgnored) {
  ASSERT_TRUE(etcd_->Put(Key("junk1"), "not json").ok());
  auto [a, listener_a] = Open();
  auto [b, listener_b] = Open();
  (void)b;
  EXPECT_TRUE(listener_b->state().subs.empty());
  ASSERT_TRUE(etcd_->Put(Key("junk2"), R"({"v":1,"id":"junk2"})").ok());
  ASSERT_TRUE(PutAndWait(*a, Sub("x1")).ok());
  ASSERT_TRUE(listener_b->WaitFor([](const ListenerState& s) { return Has(s, "x1"); }));
  EXPECT_EQ(listener_b->state().subs.size(), 1u);
}

TEST_F(EtcdStoreTest, StoresWithDifferentPrefixesDoNotSeeEachOther) {
  auto [a, listener_a] = Open();
  EtcdStoreOptions options = Options();
  options.prefix = "/eventbus-test-other/";  // a trailing '/' is ignored
  auto [other, listener_other] = Open(options);
  ASSERT_TRUE(PutAndWait(*a, Sub("x1")).ok());
  ASSERT_TRUE(PutAndWait(*other, Sub("y1")).ok());
  absl::StatusOr<std::optional<EtcdHarness::KeyValue>> kv =
      etcd_->Get("/eventbus-test-other/subscriptions/y1");
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_TRUE(kv->has_value());

  // Loading reads only the store's own prefix...
  ListenerState state = Open().listener->state();
  EXPECT_EQ(state.subs.size(), 1u);
  EXPECT_TRUE(Has(state, "x1"));
  state = Open(options).listener->state();
  EXPECT_EQ(state.subs.size(), 1u);
  EXPECT_TRUE(Has(state, "y1"));

  // ...and so does the watch: y2 comes before z1 in etcd's order, so A would have heard it first.
  ASSERT_TRUE(PutAndWait(*other, Sub("y2")).ok());
  ASSERT_TRUE(PutAndWait(*Open().store, Sub("z1")).ok());
  ASSERT_TRUE(listener_a->WaitFor([](const ListenerState& s) { return Has(s, "z1"); }));
  EXPECT_FALSE(Has(listener_a->state(), "y2"));
  EXPECT_FALSE(Has(listener_other->state(), "z1"));
}

TEST_F(EtcdStoreTest, AnUnreachableEndpointIsSkippedForTheNext) {
  EtcdStoreOptions options = Options();
  const std::string dead = absl::StrCat("127.0.0.1:", testing::ClosedPort());
  options.endpoints = {dead, etcd_->endpoint()};
  auto [a, listener_a] = Open(options);
  options.endpoints = {etcd_->endpoint(), dead};
  auto [b, listener_b] = Open(options);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(PutAndWait(*a, Sub(absl::StrCat("a", i))).ok());
    ASSERT_TRUE(PutAndWait(*b, Sub(absl::StrCat("b", i))).ok());
  }
  EXPECT_TRUE(listener_b->WaitFor([](const ListenerState& s) {
    return Has(s, "a0") && Has(s, "a1") && Has(s, "a2") && Has(s, "a3");
  }));
  EXPECT_TRUE(listener_a->WaitFor([](const ListenerState& s) {
    return Has(s, "b0") && Has(s, "b1") && Has(s, "b2") && Has(s, "b3");
  }));
  EXPECT_TRUE(a->healthy());
  EXPECT_TRUE(b->healthy());
}

TEST_F(EtcdStoreTest, StartFailsNamingTheEndpointWhenEtcdIsUnreachable) {
  EtcdStoreOptions options = Options();
  const std::string dead = absl::StrCat("127.0.0.1:", testing::ClosedPort());
  options.endpoints = {dead};
  options.start_timeout = absl::Milliseconds(500);
  RecordingListener listener;
  EtcdStore store(options);
  absl::Status status = store.Start(&listener);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(std::string(status.message()), StartsWith(absl::StrCat("store etcd (", dead, "): ")));
  EXPECT_EQ(listener.state().reloads, 0);
  // Writes on a store that did not start fail at once.
  EXPECT_EQ(PutAndWait(store, Sub("x1")).code(), absl::StatusCode::kUnavailable);
}

TEST_F(EtcdStoreTest, WritesAfterStopFailUnavailable) {
  auto [a, listener] = Open();
  a->Stop();
  a->Stop();
  absl::Status status = PutAndWait(*a, Sub("x1"));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
}

TEST_F(EtcdStoreTest, OpenStoreEtcdUrlNamesTheEndpointsAndThePrefix) {
  const std::string dead = absl::StrCat("127.0.0.1:", testing::ClosedPort());
  for (const auto& [url, key] : std::vector<std::pair<std::string, std::string>>{
           {absl::StrCat("etcd://", etcd_->endpoint(), "/custom/prefix"),
            "/custom/prefix/subscriptions/x1"},
           {absl::StrCat("etcd://", dead, ",", etcd_->endpoint()), "/eventbus/subscriptions/x1"},
           {absl::StrCat("etcd://", etcd_->endpoint(), "/p?max_request_bytes=100000"),
            "/p/subscriptions/x1"},
       }) {
    absl::StatusOr<std::unique_ptr<SubscriptionStore>> store = OpenStore(url, "");
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ((*store)->kind(), "etcd");
    RecordingListener listener;
    ASSERT_TRUE((*store)->Start(&listener).ok()) << url;
    ASSERT_TRUE(PutAndWait(**store, Sub("x1")).ok()) << url;
    (*store)->Stop();
    absl::StatusOr<std::optional<EtcdHarness::KeyValue>> kv = etcd_->Get(key);
    ASSERT_TRUE(kv.ok()) << kv.status();
    EXPECT_TRUE(kv->has_value()) << url;
  }
}

TEST_F(EtcdStoreTest, OpenStoreEtcdUrlSetsTheRequestLimit) {
  absl::StatusOr<std::unique_ptr<SubscriptionStore>> store =
      OpenStore(absl::StrCat("etcd://", etcd_->endpoint(), "?max_request_bytes=1000"), "");
  ASSERT_TRUE(store.ok()) << store.status();
  RecordingListener listener;
  ASSERT_TRUE((*store)->Start(&listener).ok());
  EXPECT_TRUE(PutAndWait(**store, Sub("x1", absl::InfiniteFuture(), std::string(500, 'p'))).ok());
  absl::Status status =
      PutAndWait(**store, Sub("x2", absl::InfiniteFuture(), std::string(1000, 'p')));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("exceeds the limit of 1000 bytes"));
  (*store)->Stop();
}

TEST(EtcdStoreUrlTest, OpenStoreRejectsAMalformedEtcdUrl) {
  for (const char* url : {"etcd://", "etcd:///prefix", "etcd://host", "etcd://host:0",
                          "etcd://host:70000", "etcd://host:x", "etcd://a:1,,b:2", "etcd://:1",
                          "etcd://host:1/p?max_request_bytes=0", "etcd://host:1?max_request_bytes=",
                          "etcd://host:1?size=10", "etcd://host:1?max_request_bytes=1&x"}) {
    absl::StatusOr<std::unique_ptr<SubscriptionStore>> store = OpenStore(url, "");
    EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument) << url;
    EXPECT_THAT(store.status().message(), HasSubstr(absl::StrCat("store \"", url, "\"")));
  }
}

}  // namespace
}  // namespace eventbus::store
