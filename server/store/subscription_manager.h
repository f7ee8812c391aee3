// SubscriptionManager applies Subscribe and Unsubscribe (SPEC §6): validates, enforces limits,
// writes through the store, then updates the registry; and removes expired subscriptions with a
// timer at their exact expiry instant. It is also the store's Listener, so changes made on other
// replicas reach the registry.
#ifndef EVENTBUS_SERVER_STORE_SUBSCRIPTION_MANAGER_H_
#define EVENTBUS_SERVER_STORE_SUBSCRIPTION_MANAGER_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/base/clock.h"
#include "server/registry/registry.h"
#include "server/store/subscription_store.h"

namespace eventbus::store {

struct SubscriptionLimits {
  size_t max_event_name_bytes = 128;
  size_t max_socket_bytes = 1024;
  size_t max_virtual_members = 16;
  size_t max_subscriptions = 100000;          // RESOURCE_EXHAUSTED beyond
  size_t max_subscriptions_per_event = 10000;  // RESOURCE_EXHAUSTED beyond
  absl::Duration default_expire = absl::Seconds(3600);
};

struct SubscribeRequest {
  std::string event;
  std::string socket;
  // Absent: default_expire. 0: never.
  std::optional<uint32_t> expire_seconds;
  std::optional<std::string> event_param;
};

struct SubscribeResult {
  registry::SubscriptionPtr subscription;
  bool created = false;
};

// Thread-safe. Completion callbacks run on any thread (possibly inline, possibly a store thread).
class SubscriptionManager : public SubscriptionStore::Listener {
 public:
  // `registry`, `store` and `clock` must outlive the manager.
  SubscriptionManager(registry::Registry* registry, SubscriptionStore* store,
                      const base::Clock* clock, SubscriptionLimits limits);
  ~SubscriptionManager() override;

  // Starts the store (loading it into the registry) and the expiry timer.
  absl::Status Start();
  // Stops the expiry timer and the store. Idempotent.
  void Stop();

  // Creates the subscription or refreshes the one with the same event and normalised socket
  // (keeping its id and create_time, with a new expiry). INVALID_ARGUMENT for a bad event name or
  // socket, RESOURCE_EXHAUSTED over a limit, UNAVAILABLE when the store cannot be written.
  void Subscribe(SubscribeRequest request,
                 absl::AnyInvocable<void(absl::StatusOr<SubscribeResult>)> done);
  // Removes by id (when `id` is set) or by event + socket; answers how many were removed (0 or 1).
  // INVALID_ARGUMENT when neither form is given or the socket does not parse; UNAVAILABLE when the
  // store cannot be written.
  void Unsubscribe(std::string id, std::string event, std::string socket,
                   absl::AnyInvocable<void(absl::StatusOr<int>)> done);

  // True while the store is unhealthy: lists may be stale.
  bool stale() const { return !store_healthy_.load(); }
  const SubscriptionLimits& limits() const { return limits_; }

  // Removes what expired by `now` (the timer thread calls it; tests with a fake clock too).
  void ExpireDue(absl::Time now);

  // SubscriptionStore::Listener.
  void OnReload(std::vector<registry::SubscriptionPtr> all) override;
  void OnUpsert(registry::SubscriptionPtr sub) override;
  void OnRemove(const std::string& id) override;
  void OnHealth(bool healthy) override;

 private:
  void ExpiryThread();
  void WakeExpiry();

  registry::Registry* registry_;
  SubscriptionStore* store_;
  const base::Clock* clock_;
  SubscriptionLimits limits_;
  std::atomic<bool> store_healthy_{true};

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  // Bumped whenever the earliest expiry may have moved earlier.
  uint64_t expiry_generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread expiry_thread_;
};

}  // namespace eventbus::store

#endif  // EVENTBUS_SERVER_STORE_SUBSCRIPTION_MANAGER_H_
