#include "server/registry/registry.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <utility>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"

namespace eventbus::registry {
namespace {

// The index is split into kShards immutable parts per map: a write copies the few parts it
// touches (about 1/kShards of the subscriptions) instead of the whole index.
constexpr int kShardBits = 7;
constexpr size_t kShards = size_t{1} << kShardBits;
static_assert(sizeof(size_t) == 8, "shard selection takes the top bits of a 64-bit hash");

// Keys carry their hash, so copying a shard moves its entries without hashing them again. The
// shard comes from the top bits of the hash; the map inside a shard uses the low ones.
size_t ShardOf(size_t hash) { return hash >> (64 - kShardBits); }

struct StoredHash {
  template <typename K>
  size_t operator()(const K& key) const {
    return key.hash;
  }
};

// An id or an event name.
struct NameKey {
  explicit NameKey(absl::string_view name)
      : hash(absl::Hash<absl::string_view>{}(name)), name(name) {}
  friend bool operator==(const NameKey& a, const NameKey& b) {
    return a.hash == b.hash && a.name == b.name;
  }
  size_t hash;
  absl::string_view name;
};

// (event, socket).
struct SocketKey {
  SocketKey(absl::string_view event, absl::string_view socket)
      : hash(absl::Hash<std::pair<absl::string_view, absl::string_view>>{}({event, socket})),
        event(event),
        socket(socket) {}
  friend bool operator==(const SocketKey& a, const SocketKey& b) {
    return a.hash == b.hash && a.event == b.event && a.socket == b.socket;
  }
  size_t hash;
  absl::string_view event;
  absl::string_view socket;
};

// Every string_view in a key below points into the Subscription held by the same entry (or, for
// events, by the entry's list), so an entry never outlives the text of its key.

// Subscriptions by id, and the (expire_time, id) order of those that expire.
struct IdShard {
  absl::flat_hash_map<NameKey, SubscriptionPtr, StoredHash> subs;
  absl::btree_set<std::pair<absl::Time, absl::string_view>> expiries;
};

struct KeyShard {
  absl::flat_hash_map<SocketKey, SubscriptionPtr, StoredHash> subs;
};

// The subscribers of one event, in the two orders its readers want. Never empty.
struct EventLists {
  // By create_time, then id: what Raise fans out to.
  std::shared_ptr<const SubscriberList> list;
  // By socket (unique within an event): what the List* pages read.
  std::shared_ptr<const SubscriberList> by_socket;
};

// Event -> its subscribers. The map's key and the name in `names` point into the first
// subscription of the event's `list`.
struct EventShard {
  absl::flat_hash_map<NameKey, EventLists, StoredHash> lists;
  // The events of `lists` in name order: pages merge the shards' orders instead of sorting.
  absl::btree_set<absl::string_view> names;
};

template <typename Shard>
using Shards = std::array<std::shared_ptr<const Shard>, kShards>;

template <typename Shard>
void FillEmpty(Shards<Shard>& shards) {
  // One shared empty part; the first write to a shard copies it.
  shards.fill(std::make_shared<const Shard>());
}

bool ListOrder(const SubscriptionPtr& a, const SubscriptionPtr& b) {
  if (a->create_time != b->create_time) return a->create_time < b->create_time;
  return a->id < b->id;
}

bool SocketOrder(const SubscriptionPtr& a, const SubscriptionPtr& b) {
  return a->socket < b->socket;
}

const std::shared_ptr<const SubscriberList>& EmptyList() {
  static const auto* empty =
      new std::shared_ptr<const SubscriberList>(std::make_shared<const SubscriberList>());
  return *empty;
}

}  // namespace

// One immutable version of the whole index (once published).
struct Registry::Index {
  Index() {
    FillEmpty(ids);
    FillEmpty(keys);
    FillEmpty(events);
  }

  SubscriptionPtr FindById(absl::string_view id) const {
    NameKey key(id);
    const auto& subs = ids[ShardOf(key.hash)]->subs;
    auto it = subs.find(key);
    return it == subs.end() ? nullptr : it->second;
  }

  SubscriptionPtr FindByKey(const SocketKey& key) const {
    const auto& subs = keys[ShardOf(key.hash)]->subs;
    auto it = subs.find(key);
    return it == subs.end() ? nullptr : it->second;
  }

  const std::shared_ptr<const SubscriberList>& Subscribers(absl::string_view event) const {
    const EventLists* lists = Lists(event);
    return lists == nullptr ? EmptyList() : lists->list;
  }

  // The lists of `event`; null when it has no subscribers.
  const EventLists* Lists(absl::string_view event) const {
    NameKey key(event);
    const auto& lists = events[ShardOf(key.hash)]->lists;
    auto it = lists.find(key);
    return it == lists.end() ? nullptr : &it->second;
  }

  Shards<IdShard> ids;
  Shards<KeyShard> keys;
  Shards<EventShard> events;
  size_t size = 0;
};

// Changes an unpublished Index in place: copies each shard on its first change, and rebuilds
// each touched event's list once, in Finish().
class Registry::Edit {
 public:
  explicit Edit(Index* index) : index_(index) {}
  Edit(const Edit&) = delete;
  Edit& operator=(const Edit&) = delete;

  // Inserts `sub`; nothing with its id or its (event, socket) may be present.
  void Insert(SubscriptionPtr sub) {
    NameKey id(sub->id);
    IdShard& ids = Mutable(index_->ids, ids_, ShardOf(id.hash));
    ids.subs.emplace(id, sub);
    if (sub->Expires()) ids.expiries.emplace(sub->expire_time, absl::string_view(sub->id));
    SocketKey key(sub->event, sub->socket);
    Mutable(index_->keys, keys_, ShardOf(key.hash)).subs.emplace(key, sub);
    ++index_->size;
    changes_[sub->event].added.push_back(std::move(sub));
  }

  // Inserts `sub` in place of the subscription with its id or its (event, socket), if any.
  void Replace(SubscriptionPtr sub) {
    Remove(sub->id);
    if (SubscriptionPtr same_key = index_->FindByKey(SocketKey(sub->event, sub->socket))) {
      Remove(same_key->id);
    }
    Insert(std::move(sub));
  }

  // Removes the subscription with `id`. Returns it, or null when there is none.
  SubscriptionPtr Remove(absl::string_view id) {
    SubscriptionPtr sub = index_->FindById(id);
    if (sub == nullptr) return nullptr;
    // `sub` keeps the key texts alive while the entries pointing into it are erased.
    NameKey id_key(sub->id);
    IdShard& ids = Mutable(index_->ids, ids_, ShardOf(id_key.hash));
    ids.subs.erase(id_key);
    if (sub->Expires()) ids.expiries.erase({sub->expire_time, absl::string_view(sub->id)});
    SocketKey key(sub->event, sub->socket);
    KeyShard& keys = Mutable(index_->keys, keys_, ShardOf(key.hash));
    auto it = keys.subs.find(key);
    if (it != keys.subs.end() && it->second == sub) keys.subs.erase(it);
    --index_->size;
    EventChange& change = changes_[sub->event];
    change.added.erase(
        std::remove_if(change.added.begin(), change.added.end(),
                       [&](const SubscriptionPtr& added) { return added->id == sub->id; }),
        change.added.end());
    change.removed.insert(sub->id);
    return sub;
  }

  // Rebuilds the lists of the events touched. Call once, after the last change.
  void Finish() {
    // (shard, name) of the events to enter into the shards' `names`, entered in name order below.
    std::vector<std::pair<size_t, absl::string_view>> names;
    for (auto& [event, change] : changes_) {
      NameKey event_key(event);
      EventShard& shard = Mutable(index_->events, events_, ShardOf(event_key.hash));
      EventLists old;
      auto it = shard.lists.find(event_key);
      if (it != shard.lists.end()) {
        old = it->second;  // keeps the key texts (here and in `names`) alive across the erases
        shard.lists.erase(it);
        shard.names.erase(absl::string_view(event));
      }
      auto list = Rebuilt(old.list.get(), change, ListOrder);
      if (list->empty()) continue;
      auto by_socket = Rebuilt(old.by_socket.get(), change, SocketOrder);
      NameKey key(list->front()->event);
      names.emplace_back(ShardOf(key.hash), key.name);
      shard.lists.emplace(key, EventLists{std::move(list), std::move(by_socket)});
    }
    changes_.clear();
    // In order, each insert lands next to the one before (the hint): a bulk load (start-up, a
    // resync) of a million events costs a sort instead of a million searches of the tree, each of
    // which reads names from cold subscriptions.
    std::sort(names.begin(), names.end());
    for (size_t i = 0; i < names.size();) {
      auto& set = Mutable(index_->events, events_, names[i].first).names;
      auto hint = set.end();
      for (size_t shard = names[i].first; i < names.size() && names[i].first == shard; ++i) {
        hint = std::next(set.insert(hint, names[i].second));
      }
    }
  }

 private:
  struct EventChange;

  // Returns `old` (null: empty) without the removed subscriptions and with the added ones, in
  // `order`: a merge, so the cost grows with the event's subscribers, not with their log.
  template <typename Order>
  static std::shared_ptr<const SubscriberList> Rebuilt(const SubscriberList* old,
                                                       EventChange& change, Order order) {
    auto list = std::make_shared<SubscriberList>();
    if (old != nullptr) {
      list->reserve(old->size() + change.added.size());
      if (change.removed.empty()) {
        list->assign(old->begin(), old->end());
      } else {
        for (const SubscriptionPtr& sub : *old) {
          if (!change.removed.contains(sub->id)) list->push_back(sub);
        }
      }
    }
    size_t kept = list->size();
    std::sort(change.added.begin(), change.added.end(), order);
    list->insert(list->end(), change.added.begin(), change.added.end());
    std::inplace_merge(list->begin(), list->begin() + kept, list->end(), order);
    return list;
  }

  struct EventChange {
    absl::flat_hash_set<std::string> removed;
    std::vector<SubscriptionPtr> added;
  };

  // Returns shard `i`, copied first unless this edit already did.
  template <typename Shard>
  Shard& Mutable(Shards<Shard>& published, std::array<std::shared_ptr<Shard>, kShards>& copies,
                 size_t i) {
    if (copies[i] == nullptr) {
      copies[i] = std::make_shared<Shard>(*published[i]);
      published[i] = copies[i];
    }
    return *copies[i];
  }

  Index* index_;
  std::array<std::shared_ptr<IdShard>, kShards> ids_;
  std::array<std::shared_ptr<KeyShard>, kShards> keys_;
  std::array<std::shared_ptr<EventShard>, kShards> events_;
  absl::flat_hash_map<std::string, EventChange> changes_;
};

Registry::Registry() : index_(std::make_shared<const Index>()) {}

std::shared_ptr<const Registry::Index> Registry::Snapshot() const {
  eventbus::MutexLock lock(&mu_);
  return index_;
}

void Registry::Publish(std::shared_ptr<const Index> next) {
  {
    eventbus::MutexLock lock(&mu_);
    index_.swap(next);
  }
  // `next` now holds the previous index: whatever only it referenced is freed here, outside mu_.
}

std::shared_ptr<const SubscriberList> Registry::Subscribers(absl::string_view event) const {
  return Snapshot()->Subscribers(event);
}

SubscriptionPtr Registry::FindById(absl::string_view id) const { return Snapshot()->FindById(id); }

SubscriptionPtr Registry::FindByKey(absl::string_view event, absl::string_view socket) const {
  return Snapshot()->FindByKey(SocketKey(event, socket));
}

// Walks the events of every shard of one Index in name order: a k-way merge of the shards'
// `names`, so a page costs O(kShards log) to start and O(log kShards) per event, whatever the
// registry holds. The index must outlive the walk.
class Registry::EventWalk {
 public:
  // Starts at the first event after `after` (nullopt: at the first event).
  EventWalk(const Index& index, std::optional<absl::string_view> after) : index_(index) {
    heads_.reserve(kShards);
    for (size_t i = 0; i < kShards; ++i) {
      const auto& names = index.events[i]->names;
      auto it = after.has_value() ? names.upper_bound(*after) : names.begin();
      if (it != names.end()) heads_.push_back({it, i});
    }
    std::make_heap(heads_.begin(), heads_.end(), Later);
  }

  // The next event's lists, its name in `*name`; null after the last.
  const EventLists* Next(absl::string_view* name) {
    if (heads_.empty()) return nullptr;
    std::pop_heap(heads_.begin(), heads_.end(), Later);
    Head& head = heads_.back();
    *name = *head.it;
    const auto& names = index_.events[head.shard]->names;
    if (++head.it == names.end()) {
      heads_.pop_back();
    } else {
      std::push_heap(heads_.begin(), heads_.end(), Later);
    }
    return index_.Lists(*name);
  }

 private:
  struct Head {
    absl::btree_set<absl::string_view>::const_iterator it;
    size_t shard;
  };
  // The heap's order: the smallest name on top.
  static bool Later(const Head& a, const Head& b) { return *a.it > *b.it; }

  const Index& index_;
  std::vector<Head> heads_;
};

std::vector<SubscriptionPtr> Registry::List(absl::string_view event) const {
  PageRequest all;
  all.limit = std::numeric_limits<size_t>::max();
  return ListPage(event, all).subscriptions;
}

SubscriptionPage Registry::ListPage(absl::string_view event, const PageRequest& request) const {
  std::shared_ptr<const Index> index = Snapshot();
  SubscriptionPage page;
  // Appends the subscriptions of one event's `by_socket` list after `after_socket` (nullopt: all
  // of them). Returns false once the page is full and one more that matches was seen.
  auto take = [&](const SubscriberList& by_socket, std::optional<absl::string_view> after_socket) {
    auto it = by_socket.begin();
    if (after_socket.has_value()) {
      it = std::upper_bound(by_socket.begin(), by_socket.end(), *after_socket,
                            [](absl::string_view socket, const SubscriptionPtr& sub) {
                              return socket < sub->socket;
                            });
    }
    for (; it != by_socket.end(); ++it) {
      if (request.filter && !request.filter(**it)) continue;
      if (page.subscriptions.size() >= request.limit) {
        page.more = true;
        return false;
      }
      page.subscriptions.push_back(*it);
    }
    return true;
  };
  const std::optional<PageKey>& after = request.after;
  if (!event.empty()) {
    const EventLists* lists = index->Lists(event);
    if (lists == nullptr) return page;
    if (!after.has_value() || after->event < event) {
      take(*lists->by_socket, std::nullopt);
    } else if (after->event == event) {
      take(*lists->by_socket, after->socket);
    }
    return page;
  }
  // The event of `after` itself is resumed after its socket; the walk starts behind it.
  if (after.has_value()) {
    if (const EventLists* lists = index->Lists(after->event)) {
      if (!take(*lists->by_socket, after->socket)) return page;
    }
  }
  EventWalk walk(*index,
                 after.has_value() ? std::optional<absl::string_view>(after->event) : std::nullopt);
  absl::string_view name;
  while (const EventLists* lists = walk.Next(&name)) {
    if (!take(*lists->by_socket, std::nullopt)) break;
  }
  return page;
}

EventPage Registry::EventsPage(const PageRequest& request) const {
  std::shared_ptr<const Index> index = Snapshot();
  EventPage page;
  EventWalk walk(*index, request.after.has_value()
                             ? std::optional<absl::string_view>(request.after->event)
                             : std::nullopt);
  absl::string_view name;
  while (const EventLists* lists = walk.Next(&name)) {
    size_t count = lists->list->size();
    if (request.filter) {
      count = std::count_if(lists->list->begin(), lists->list->end(),
                            [&](const SubscriptionPtr& sub) { return request.filter(*sub); });
      if (count == 0) continue;
    }
    if (page.events.size() >= request.limit) {
      page.more = true;
      break;
    }
    page.events.push_back({std::string(name), count});
  }
  return page;
}

std::vector<EventCount> Registry::Events() const {
  PageRequest all;
  all.limit = std::numeric_limits<size_t>::max();
  return EventsPage(all).events;
}

std::vector<EventCount> Registry::EventsOwnedBy(absl::string_view owner) const {
  PageRequest all;
  all.limit = std::numeric_limits<size_t>::max();
  std::string name(owner);
  all.filter = [&name](const Subscription& sub) { return sub.owner == name; };
  return EventsPage(all).events;
}

size_t Registry::size() const { return Snapshot()->size; }

size_t Registry::CountForEvent(absl::string_view event) const {
  return Snapshot()->Subscribers(event)->size();
}

void Registry::Upsert(SubscriptionPtr sub) {
  if (sub == nullptr) return;
  eventbus::MutexLock write_lock(&write_mu_);
  auto next = std::make_shared<Index>(*Snapshot());
  Edit edit(next.get());
  edit.Replace(std::move(sub));
  edit.Finish();
  Publish(std::move(next));
}

SubscriptionPtr Registry::Remove(absl::string_view id) {
  eventbus::MutexLock write_lock(&write_mu_);
  std::shared_ptr<const Index> current = Snapshot();
  if (current->FindById(id) == nullptr) return nullptr;
  auto next = std::make_shared<Index>(*current);
  current.reset();
  Edit edit(next.get());
  SubscriptionPtr removed = edit.Remove(id);
  edit.Finish();
  Publish(std::move(next));
  return removed;
}

void Registry::ReplaceAll(std::vector<SubscriptionPtr> subs) {
  eventbus::MutexLock write_lock(&write_mu_);
  auto next = std::make_shared<Index>();
  Edit edit(next.get());
  for (SubscriptionPtr& sub : subs) {
    if (sub == nullptr) continue;
    // Duplicates: the later one wins, as with Upsert.
    edit.Replace(std::move(sub));
  }
  edit.Finish();
  Publish(std::move(next));
}

absl::Time Registry::NextExpiry() const {
  std::shared_ptr<const Index> index = Snapshot();
  absl::Time next = absl::InfiniteFuture();
  for (const auto& shard : index->ids) {
    if (!shard->expiries.empty()) next = std::min(next, shard->expiries.begin()->first);
  }
  return next;
}

std::vector<SubscriptionPtr> Registry::RemoveExpired(absl::Time now) {
  eventbus::MutexLock write_lock(&write_mu_);
  std::shared_ptr<const Index> current = Snapshot();
  std::vector<SubscriptionPtr> expired;
  for (const auto& shard : current->ids) {
    for (const auto& [expire_time, id] : shard->expiries) {
      if (expire_time > now) break;
      expired.push_back(shard->subs.at(NameKey(id)));
    }
  }
  if (expired.empty()) return expired;
  std::sort(expired.begin(), expired.end(), [](const SubscriptionPtr& a, const SubscriptionPtr& b) {
    if (a->expire_time != b->expire_time) return a->expire_time < b->expire_time;
    return a->id < b->id;
  });
  auto next = std::make_shared<Index>(*current);
  current.reset();
  Edit edit(next.get());
  for (const SubscriptionPtr& sub : expired) edit.Remove(sub->id);
  edit.Finish();
  Publish(std::move(next));
  return expired;
}

}  // namespace eventbus::registry
