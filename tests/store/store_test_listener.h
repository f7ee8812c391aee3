// Test support for the durable store tests: a SubscriptionStore::Listener that records what it is
// told and lets a test wait for a condition on it, plus helpers to build subscriptions and to run
// a store write synchronously.
#ifndef EVENTBUS_TESTS_STORE_STORE_TEST_LISTENER_H_
#define EVENTBUS_TESTS_STORE_STORE_TEST_LISTENER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/base/mutex.h"
#include "server/registry/subscription.h"
#include "server/store/subscription_store.h"
#include "server/uri/socket_uri.h"

namespace eventbus::store {

// What a RecordingListener has been told.
struct ListenerState {
  // The subscriptions as the listener's owner would hold them: reloads replace, upserts add.
  std::map<std::string, registry::SubscriptionPtr> subs;
  int reloads = 0;
  int upserts = 0;
  int removes = 0;
  // Every OnHealth value, in order.
  std::vector<bool> health;
  // Set when two listener calls overlapped (the store must serialise them).
  bool overlapped = false;
};

// Thread-safe.
class RecordingListener : public SubscriptionStore::Listener {
 public:
  void OnReload(std::vector<registry::SubscriptionPtr> all) override {
    Enter();
    eventbus::MutexLock lock(&mu_);
    state_.subs.clear();
    for (registry::SubscriptionPtr& sub : all) state_.subs[sub->id] = std::move(sub);
    ++state_.reloads;
    Leave();
  }
  void OnUpsert(registry::SubscriptionPtr sub) override {
    Enter();
    eventbus::MutexLock lock(&mu_);
    state_.subs[sub->id] = std::move(sub);
    ++state_.upserts;
    Leave();
  }
  void OnRemove(const std::string& id) override {
    Enter();
    eventbus::MutexLock lock(&mu_);
    state_.subs.erase(id);
    ++state_.removes;
    Leave();
  }
  void OnHealth(bool healthy) override {
    Enter();
    eventbus::MutexLock lock(&mu_);
    state_.health.push_back(healthy);
    Leave();
  }

  ListenerState state() const {
    eventbus::MutexLock lock(&mu_);
    return state_;
  }

  // Waits until `pred` holds for the state, at most `timeout`; returns whether it does.
  bool WaitFor(std::function<bool(const ListenerState&)> pred,
               absl::Duration timeout = absl::Seconds(10)) const {
    eventbus::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pred(state_); },
                                timeout);
  }

 private:
  void Enter() {
    if (in_call_.exchange(true)) {
      eventbus::MutexLock lock(&mu_);
      state_.overlapped = true;
    }
  }
  void Leave() { in_call_.store(false); }

  mutable eventbus::Mutex mu_;
  ListenerState state_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> in_call_{false};
};

// Builds a subscription as the manager would (the socket parsed and normalised).
inline registry::SubscriptionPtr MakeSubscription(
    std::string id, std::string event, absl::string_view socket, absl::Time create_time,
    absl::Time expire_time = absl::InfiniteFuture(),
    std::optional<std::string> event_param = std::nullopt) {
  absl::StatusOr<uri::SocketUri> target = uri::ParseSocket(socket);
  EXPECT_TRUE(target.ok()) << target.status();
  auto sub = std::make_shared<registry::Subscription>();
  sub->id = std::move(id);
  sub->event = std::move(event);
  sub->target = *target;
  sub->socket = target->ToString();
  sub->create_time = create_time;
  sub->expire_time = expire_time;
  sub->event_param = std::move(event_param);
  return sub;
}

// Runs one store write and waits for its done (at most `timeout`; DEADLINE_EXCEEDED after).
inline absl::Status WriteAndWait(SubscriptionStore& store, bool put, registry::SubscriptionPtr sub,
                                 absl::Duration timeout = absl::Seconds(10)) {
  struct Result {
    eventbus::Notification done;
    absl::Status status;
  };
  auto result = std::make_shared<Result>();
  auto done = [result](absl::Status status) {
    result->status = std::move(status);
    result->done.Notify();
  };
  if (put) {
    store.Put(std::move(sub), done);
  } else {
    store.Delete(std::move(sub), done);
  }
  if (!result->done.WaitForNotificationWithTimeout(timeout)) {
    return absl::DeadlineExceededError("store write not acknowledged in time");
  }
  return result->status;
}

inline absl::Status PutAndWait(SubscriptionStore& store, registry::SubscriptionPtr sub) {
  return WriteAndWait(store, /*put=*/true, std::move(sub));
}
inline absl::Status DeleteAndWait(SubscriptionStore& store, registry::SubscriptionPtr sub) {
  return WriteAndWait(store, /*put=*/false, std::move(sub));
}

// Compares what a store returns with what was written: times at microsecond precision.
inline void ExpectSameSubscription(const registry::Subscription& got,
                                   const registry::Subscription& want) {
  EXPECT_EQ(got.id, want.id);
  EXPECT_EQ(got.event, want.event);
  EXPECT_EQ(got.socket, want.socket);
  EXPECT_EQ(got.target.ToString(), want.target.ToString());
  EXPECT_EQ(absl::ToUnixMicros(got.create_time), absl::ToUnixMicros(want.create_time));
  if (want.Expires()) {
    EXPECT_EQ(absl::ToUnixMicros(got.expire_time), absl::ToUnixMicros(want.expire_time));
  } else {
    EXPECT_FALSE(got.Expires());
  }
  EXPECT_EQ(got.event_param, want.event_param);
  EXPECT_EQ(got.owner, want.owner);
}

// `sub` with `owner` as its owner.
inline registry::SubscriptionPtr OwnedBy(registry::SubscriptionPtr sub, std::string owner) {
  auto owned = std::make_shared<registry::Subscription>(*sub);
  owned->owner = std::move(owner);
  return owned;
}

}  // namespace eventbus::store

#endif  // EVENTBUS_TESTS_STORE_STORE_TEST_LISTENER_H_
