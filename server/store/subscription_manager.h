// SubscriptionManager applies Subscribe and Unsubscribe (SPEC §6): validates, enforces limits and
// ownership (SPEC §10: who may change which subscription, for the registry::Actor the service
// names), writes through the store, then updates the registry; and removes expired subscriptions
// with a timer at their exact expiry instant. It is also the store's Listener, so changes made on
// other replicas reach the registry.
#ifndef EVENTBUS_SERVER_STORE_SUBSCRIPTION_MANAGER_H_
#define EVENTBUS_SERVER_STORE_SUBSCRIPTION_MANAGER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/base/clock.h"
#include "server/base/mutex.h"
#include "server/registry/registry.h"
#include "server/store/subscription_store.h"
#include "server/uri/socket_uri.h"

namespace eventbus::store {

struct SubscriptionLimits {
  size_t max_event_name_bytes = 128;
  size_t max_socket_bytes = 1024;
  size_t max_virtual_members = 16;
  size_t max_subscriptions = 100000;           // RESOURCE_EXHAUSTED beyond
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

// Decides whether a subscription may deliver to `target` (one member of its socket): the
// destination policy (SPEC §10). Runs `done` exactly once, on any thread, possibly inline: OK, or
// the status to refuse the Subscribe with (PERMISSION_DENIED, naming the destination and why).
using DestinationCheck =
    std::function<void(const uri::TcpTarget& target, absl::AnyInvocable<void(absl::Status)> done)>;

struct UnsubscribeResult {
  // 0 or 1.
  int removed = 0;
  // What was removed; null when nothing was.
  registry::SubscriptionPtr subscription;
};

// Thread-safe. Completion callbacks run on any thread (possibly inline, possibly a store thread).
class SubscriptionManager : public SubscriptionStore::Listener {
 public:
  // `registry`, `store` and `clock` must outlive the manager.
  SubscriptionManager(registry::Registry* registry, SubscriptionStore* store,
                      const base::Clock* clock, SubscriptionLimits limits);
  ~SubscriptionManager() override;

  // Sets the check every member of a Subscribe's socket must pass (in parallel) before the
  // subscription is stored, refreshes included. Before Start(); none by default. Subscriptions
  // that arrive from the store (a restart, another replica) are not checked here: delivery checks
  // every address it connects to anyway.
  void set_destination_check(DestinationCheck check) { destination_check_ = std::move(check); }

  // Starts the store (loading it into the registry) and the expiry timer.
  absl::Status Start();
  // Stops the expiry timer and the store. Idempotent.
  void Stop();

  // Creates the subscription, owned by `actor`, or refreshes the one with the same event and
  // normalised socket (keeping its id, create_time and owner, with a new expiry). INVALID_ARGUMENT
  // for a bad event name or socket, PERMISSION_DENIED naming the subscription when it is not
  // `actor`'s to refresh (registry::MayChange), RESOURCE_EXHAUSTED over a limit, UNAVAILABLE when
  // the store cannot be written.
  void Subscribe(registry::Actor actor, SubscribeRequest request,
                 absl::AnyInvocable<void(absl::StatusOr<SubscribeResult>)> done);
  // Removes by id (when `id` is set) or by event + socket; answers how many were removed (0 or 1,
  // 0 when there is no such subscription). INVALID_ARGUMENT when neither form is given or the
  // socket does not parse; PERMISSION_DENIED naming the subscription when it is not `actor`'s to
  // remove; UNAVAILABLE when the store cannot be written.
  //
  // Ownership is checked against the subscription as it is when the work for its key runs, so two
  // callers racing for one (event, socket) cannot get around it. An id's owner never changes, so
  // replicas sharing a store, each checking against the owner its record carries, agree.
  void Unsubscribe(registry::Actor actor, std::string id, std::string event, std::string socket,
                   absl::AnyInvocable<void(absl::StatusOr<UnsubscribeResult>)> done);

  // True while the store is unhealthy: lists may be stale.
  bool stale() const { return !store_healthy_.load(); }
  const SubscriptionLimits& limits() const { return limits_; }

  // Removes what expired by `now` (the timer thread calls it; tests with a fake clock too).
  void ExpireDue(absl::Time now);

  // SubscriptionStore::Listener.
  void OnReload(std::vector<registry::SubscriptionPtr> all) override;
  void OnUpsert(registry::SubscriptionPtr sub) override;
  void OnRemove(const std::string& id) override;
  // One registry write for the whole batch.
  void OnChanges(std::vector<Change> changes) override;
  void OnHealth(bool healthy) override;

 private:
  // (event, normalised socket).
  using Key = std::pair<std::string, std::string>;

  // Parses `socket` after checking it against max_socket_bytes (INVALID_ARGUMENT either way).
  absl::StatusOr<uri::SocketUri> ParseSocketWithinLimit(const std::string& socket) const;
  // Runs destination_check_ on every member of `target` and `done` once with OK, or with the first
  // refusal (in member order) prefixed by `socket "TEXT": ` (and `member N "tcp:...": `).
  void CheckDestinations(const std::string& text, const uri::SocketUri& target,
                         absl::AnyInvocable<void(absl::Status)> done) const;
  void ExpiryThread();
  // Wakes the expiry thread when `expiry` is earlier than the instant it waits for.
  void WakeExpiry(absl::Time expiry);

  // Runs `work` now, or after the work already running or queued for `key`: Subscribe,
  // Unsubscribe and expiry of one (event, socket) never overlap. `work` must end by calling
  // FinishKey(key), possibly later from a store callback.
  void RunKeyed(const Key& key, absl::AnyInvocable<void()> work);
  void FinishKey(const Key& key);

  void SubscribeKeyed(const Key& key, const registry::Actor& actor, SubscribeRequest request,
                      uri::SocketUri target,
                      absl::AnyInvocable<void(absl::StatusOr<SubscribeResult>)> done);
  void UnsubscribeKeyed(const Key& key, const registry::Actor& actor, registry::SubscriptionPtr sub,
                        absl::AnyInvocable<void(absl::StatusOr<UnsubscribeResult>)> done);
  // Deletes an expired subscription (already out of the registry) from the store, unless a
  // refresh put it back meanwhile.
  void DeleteExpired(registry::SubscriptionPtr sub);
  // Counts a subscription about to be created against the limits; RESOURCE_EXHAUSTED over one.
  absl::Status Reserve(const std::string& event);
  void Unreserve(const std::string& event);

  registry::Registry* registry_;
  SubscriptionStore* store_;
  const base::Clock* clock_;
  SubscriptionLimits limits_;
  DestinationCheck destination_check_;  // set before Start, read-only afterwards
  std::atomic<bool> store_healthy_{true};

  eventbus::Mutex mu_;
  eventbus::CondVar expiry_cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  // Bumped whenever the earliest expiry may have moved earlier.
  uint64_t expiry_generation_ ABSL_GUARDED_BY(mu_) = 0;
  // The instant the expiry thread sleeps until; InfiniteFuture while it is working.
  absl::Time expiry_wait_until_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  // Expired subscriptions found by OnReload, deleted from the store by the next ExpireDue (not
  // from inside the store's own Start).
  std::vector<registry::SubscriptionPtr> reload_expired_ ABSL_GUARDED_BY(mu_);
  // Keys with work running; each holds the work queued behind it.
  absl::flat_hash_map<Key, std::deque<absl::AnyInvocable<void()>>> keyed_ ABSL_GUARDED_BY(mu_);
  // Creations admitted by Reserve whose store write has not finished yet.
  size_t pending_creates_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, size_t> pending_creates_by_event_ ABSL_GUARDED_BY(mu_);
  std::thread expiry_thread_;
};

}  // namespace eventbus::store

#endif  // EVENTBUS_SERVER_STORE_SUBSCRIPTION_MANAGER_H_
