#include "server/registry/registry.h"

#include <algorithm>
#include <array>
#include <cstdint>
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

// Event -> its subscribers, ordered by create_time then id. Never holds an empty list; the key
// points into the list's first subscription.
struct EventShard {
  absl::flat_hash_map<NameKey, std::shared_ptr<const SubscriberList>, StoredHash> lists;
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

bool EventSocketOrder(const SubscriptionPtr& a, const SubscriptionPtr& b) {
  if (a->event != b->event) return a->event < b->event;
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
    NameKey key(event);
    const auto& lists = events[ShardOf(key.hash)]->lists;
    auto it = lists.find(key);
    return it == lists.end() ? EmptyList() : it->second;
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
    for (auto& [event, change] : changes_) {
      NameKey event_key(event);
      EventShard& shard = Mutable(index_->events, events_, ShardOf(event_key.hash));
      std::shared_ptr<const SubscriberList> old;
      auto it = shard.lists.find(event_key);
      if (it != shard.lists.end()) {
        old = it->second;  // keeps the key text alive across the erase
        shard.lists.erase(it);
      }
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
      std::sort(change.added.begin(), change.added.end(), ListOrder);
      list->insert(list->end(), change.added.begin(), change.added.end());
      std::inplace_merge(list->begin(), list->begin() + kept, list->end(), ListOrder);
      if (list->empty()) continue;
      NameKey key(list->front()->event);
      shard.lists.emplace(key, std::shared_ptr<const SubscriberList>(std::move(list)));
    }
    changes_.clear();
  }

 private:
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

std::vector<SubscriptionPtr> Registry::List(absl::string_view event) const {
  std::shared_ptr<const Index> index = Snapshot();
  std::vector<SubscriptionPtr> out;
  if (!event.empty()) {
    const SubscriberList& list = *index->Subscribers(event);
    out.assign(list.begin(), list.end());
  } else {
    out.reserve(index->size);
    for (const auto& shard : index->events) {
      for (const auto& [name, list] : shard->lists)
        out.insert(out.end(), list->begin(), list->end());
    }
  }
  std::sort(out.begin(), out.end(), EventSocketOrder);
  return out;
}

std::vector<EventCount> Registry::Events() const {
  std::shared_ptr<const Index> index = Snapshot();
  std::vector<EventCount> out;
  for (const auto& shard : index->events) {
    for (const auto& [key, list] : shard->lists)
      out.push_back({std::string(key.name), list->size()});
  }
  std::sort(out.begin(), out.end(),
            [](const EventCount& a, const EventCount& b) { return a.event < b.event; });
  return out;
}

std::vector<EventCount> Registry::EventsOwnedBy(absl::string_view owner) const {
  std::shared_ptr<const Index> index = Snapshot();
  std::vector<EventCount> out;
  for (const auto& shard : index->events) {
    for (const auto& [key, list] : shard->lists) {
      size_t owned = 0;
      for (const SubscriptionPtr& sub : *list) owned += sub->owner == owner ? 1 : 0;
      if (owned > 0) out.push_back({std::string(key.name), owned});
    }
  }
  std::sort(out.begin(), out.end(),
            [](const EventCount& a, const EventCount& b) { return a.event < b.event; });
  return out;
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
