// The in-memory index of live subscriptions: by id, by (event, socket), and per event as two
// immutable SubscriberLists (create order for Raise, socket order for the List* pages). Raise
// reads a snapshot (a shared_ptr copy) and never waits on a write. Every part is persistent: a
// write copies only the few shards and list nodes on its path (a two-level shard table and
// path-copied B+trees, subscriber_list.h), so its cost does not grow with the registry or the
// event. Fed by store/SubscriptionManager, loads and watch batches as one write each (Apply,
// ReplaceAll). The service's List* calls read it page by page, in (event, socket) order, from one
// snapshot each.
#ifndef EVENTBUS_SERVER_REGISTRY_REGISTRY_H_
#define EVENTBUS_SERVER_REGISTRY_REGISTRY_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
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

// A position in the listing order: an event and, for subscriptions, a socket. Pages start strictly
// after the key of the last entry the previous page returned, so entries added or removed between
// two pages move no other entry across the boundary.
struct PageKey {
  std::string event;
  // Empty for a page of events.
  std::string socket;
};

// What one page of ListPage or EventsPage holds.
struct PageRequest {
  // Start strictly after this key; nullopt: from the first entry.
  std::optional<PageKey> after;
  // At most this many entries (0 returns none, and says whether there are any).
  size_t limit = 1000;
  // Only subscriptions for which it returns true (EventsPage: counts only those, and leaves out
  // events with none); empty: every subscription.
  std::function<bool(const Subscription&)> filter;
};

struct SubscriptionPage {
  // In (event, socket) order.
  std::vector<SubscriptionPtr> subscriptions;
  // True when entries that match come after the last one here.
  bool more = false;
};

struct EventPage {
  // In name order.
  std::vector<EventCount> events;
  bool more = false;
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
  // One page of List(event): the subscriptions after `request.after` that pass its filter, at
  // most `request.limit`. Costs O(log n + what it returns + what the filter skips), read from one
  // snapshot: it never copies or sorts the registry.
  SubscriptionPage ListPage(absl::string_view event, const PageRequest& request) const;
  // One page of Events() (or, with a filter, of the events of the subscriptions that pass it).
  EventPage EventsPage(const PageRequest& request) const;
  // Events with at least one subscription, sorted by name.
  std::vector<EventCount> Events() const;
  // Events with at least one subscription owned by `owner`, sorted by name, counting only those.
  std::vector<EventCount> EventsOwnedBy(absl::string_view owner) const;
  size_t size() const;
  size_t CountForEvent(absl::string_view event) const;

  // One change of a batch (Apply).
  struct Change {
    // Set: insert it, or replace the subscription with its id or its (event, socket), as Upsert.
    SubscriptionPtr upsert;
    // When `upsert` is null: remove the subscription with this id (if any), as Remove.
    std::string remove_id;
  };

  // Inserts `sub`, or replaces the subscription with the same id or the same (event, socket).
  void Upsert(SubscriptionPtr sub);
  // Applies `changes` in order and publishes the result once: readers see all of them or none.
  // Costs what the changes touch (each event's lists rebuilt at most once), not one index copy
  // per change.
  void Apply(std::vector<Change> changes);
  // Removes by id. Returns the removed subscription, or null when there was none.
  SubscriptionPtr Remove(absl::string_view id);
  // Replaces everything (store load or resync): builds the index bottom-up, O(n log n).
  void ReplaceAll(std::vector<SubscriptionPtr> subs);

  // The earliest expire_time of all subscriptions (InfiniteFuture when none expires).
  absl::Time NextExpiry() const;
  // Removes every subscription with expire_time <= now and returns them.
  std::vector<SubscriptionPtr> RemoveExpired(absl::Time now);

 private:
  struct Index;
  class Edit;
  class EventWalk;

  std::shared_ptr<const Index> Snapshot() const;
  // Swaps `next` in; the previous index is released after mu_ is unlocked.
  void Publish(std::shared_ptr<const Index> next);

  // Serialises writers, so each builds on the index the previous one published.
  eventbus::Mutex write_mu_;
  mutable eventbus::Mutex mu_;
  // Readers copy this pointer under mu_; writers copy the index, change it, and swap it in. The
  // index is made of immutable parts, so a write copies only the parts it touches.
  std::shared_ptr<const Index> index_ ABSL_GUARDED_BY(mu_);
};

// Pointers copied so far by this thread's registry writes (list nodes, shard maps, the index's
// top tables): what a write costs, counted rather than timed, for tests and the benchmark.
uint64_t CopiedEntriesForTesting();

}  // namespace eventbus::registry

#endif  // EVENTBUS_SERVER_REGISTRY_REGISTRY_H_
