// The in-memory index of live subscriptions: by id, by (event, socket), and per event as an
// immutable list. Raise reads a copy-on-write snapshot (a shared_ptr copy), so it never waits on
// Subscribe; writers build a new list and publish it. Fed by store/SubscriptionManager.
#ifndef EVENTBUS_SERVER_REGISTRY_REGISTRY_H_
#define EVENTBUS_SERVER_REGISTRY_REGISTRY_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/base/mutex.h"
#include "server/registry/subscription.h"

namespace eventbus::registry {

struct EventCount {
  std::string event;
  size_t subscribers = 0;
};

// Thread-safe.
class Registry {
 public:
  Registry();

  // The subscribers of `event` (never null; empty when none). May hold subscriptions that expired
  // a moment ago: callers filter with Subscription::LiveAt(now).
  std::shared_ptr<const SubscriberList> Subscribers(absl::string_view event) const;

  SubscriptionPtr FindById(absl::string_view id) const;
  SubscriptionPtr FindByKey(absl::string_view event, absl::string_view socket) const;
  // Sorted by event, then socket. `event` empty: all.
  std::vector<SubscriptionPtr> List(absl::string_view event = {}) const;
  // Events with at least one subscription, sorted by name.
  std::vector<EventCount> Events() const;
  // Events with at least one subscription owned by `owner`, sorted by name, counting only those.
  std::vector<EventCount> EventsOwnedBy(absl::string_view owner) const;
  size_t size() const;
  size_t CountForEvent(absl::string_view event) const;

  // Inserts `sub`, or replaces the subscription with the same id or the same (event, socket).
  void Upsert(SubscriptionPtr sub);
  // Removes by id. Returns the removed subscription, or null when there was none.
  SubscriptionPtr Remove(absl::string_view id);
  // Replaces everything (store load or resync).
  void ReplaceAll(std::vector<SubscriptionPtr> subs);

  // The earliest expire_time of all subscriptions (InfiniteFuture when none expires).
  absl::Time NextExpiry() const;
  // Removes every subscription with expire_time <= now and returns them.
  std::vector<SubscriptionPtr> RemoveExpired(absl::Time now);

 private:
  struct Index;
  class Edit;

  std::shared_ptr<const Index> Snapshot() const;
  // Swaps `next` in; the previous index is released after mu_ is unlocked.
  void Publish(std::shared_ptr<const Index> next);

  // Serialises writers, so each builds on the index the previous one published.
  eventbus::Mutex write_mu_;
  mutable eventbus::Mutex mu_;
  // Readers copy this pointer under mu_; writers copy the index, change it, and swap it in. The
  // index is sharded into immutable parts, so a write copies only the parts it touches.
  std::shared_ptr<const Index> index_ ABSL_GUARDED_BY(mu_);
};

}  // namespace eventbus::registry

#endif  // EVENTBUS_SERVER_REGISTRY_REGISTRY_H_
