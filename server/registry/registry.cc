#include "server/registry/registry.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cstdint>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"

namespace eventbus::registry {
namespace {

// Each map is split into 65536 immutable shards, the leaves of a persistent trie of 16-way nodes
// (four levels) indexed by the top 16 bits of the key's hash. A write copies the path to each
// shard it touches: four nodes of 16 pointers and the shard, about n / 65536 entries (15 at a
// million subscriptions). Each pointer copied is a reference count touched, most of them on cold
// cache lines: what a write costs at a million is mostly that count.
constexpr int kTrieBits = 4;
constexpr int kTrieLevels = 4;
constexpr size_t kTrieFanout = size_t{1} << kTrieBits;
static_assert(sizeof(size_t) == 8, "shard selection takes the top bits of a 64-bit hash");

// The slot of level `level` (0: the root) on the way to the shard of `hash`.
size_t Digit(size_t hash, int level) {
  return (hash >> (64 - (level + 1) * kTrieBits)) & (kTrieFanout - 1);
}

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
  NameKey(absl::string_view name, size_t hash) : hash(hash), name(name) {}
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
  SocketKey(absl::string_view event, absl::string_view socket, size_t hash)
      : hash(hash), event(event), socket(socket) {}
  friend bool operator==(const SocketKey& a, const SocketKey& b) {
    return a.hash == b.hash && a.event == b.event && a.socket == b.socket;
  }
  size_t hash;
  absl::string_view event;
  absl::string_view socket;
};

// The id and socket maps are sets of the subscriptions themselves with their key's hash, looked
// up by a NameKey or a SocketKey: a slot is 24 bytes, against 40 and 56 with the key's views
// beside the pointer. The stored hash spares a copied or growing shard from reading each
// subscription (a cold cache line) to hash it again.
struct Entry {
  SubscriptionPtr sub;
  size_t hash;
};

struct ById {
  using is_transparent = void;
  size_t operator()(const NameKey& key) const { return key.hash; }
  size_t operator()(const Entry& entry) const { return entry.hash; }
  static absl::string_view IdOf(const NameKey& key) { return key.name; }
  static absl::string_view IdOf(const Entry& entry) { return entry.sub->id; }
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return IdOf(a) == IdOf(b);
  }
};

struct BySocketKey {
  using is_transparent = void;
  size_t operator()(const SocketKey& key) const { return key.hash; }
  size_t operator()(const Entry& entry) const { return entry.hash; }
  static std::pair<absl::string_view, absl::string_view> KeyOf(const SocketKey& key) {
    return {key.event, key.socket};
  }
  static std::pair<absl::string_view, absl::string_view> KeyOf(const Entry& entry) {
    return {entry.sub->event, entry.sub->socket};
  }
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return KeyOf(a) == KeyOf(b);
  }
};

struct IdShard {
  absl::flat_hash_set<Entry, ById, ById> subs;
};

struct KeyShard {
  absl::flat_hash_set<Entry, BySocketKey, BySocketKey> subs;
};

// The subscribers of one event, in the two orders its readers want. Never empty.
struct EventLists {
  // By create_time, then id: what Raise fans out to.
  std::shared_ptr<const SubscriberList> list;
  // By socket (unique within an event): what the List* pages read. The same object as `list`
  // while the event has one subscriber.
  std::shared_ptr<const SubscriberList> by_socket;
  // One of the event's subscriptions, the same one Index::names holds: the map's key points into
  // its event name.
  SubscriptionPtr rep;
};

struct EventShard {
  absl::flat_hash_map<NameKey, EventLists, StoredHash> lists;
};

// A node of a shard trie: its slots hold nodes of the next level, or shards at the last.
struct TrieNode {
  std::array<std::shared_ptr<const void>, kTrieFanout> slots;
};

template <typename Shard>
struct Shards {
  Shards() {
    // One shared empty shard under one shared chain of nodes; the first write to a shard copies
    // its path.
    std::shared_ptr<const void> below = std::make_shared<const Shard>();
    for (int level = kTrieLevels - 1; level >= 0; --level) {
      auto node = std::make_shared<TrieNode>();
      node->slots.fill(below);
      below = node;
    }
    root = std::static_pointer_cast<const TrieNode>(below);
  }

  const Shard& For(size_t hash) const {
    const TrieNode* node = root.get();
    for (int level = 0; level + 1 < kTrieLevels; ++level) {
      node = static_cast<const TrieNode*>(node->slots[Digit(hash, level)].get());
    }
    return *static_cast<const Shard*>(node->slots[Digit(hash, kTrieLevels - 1)].get());
  }

  std::shared_ptr<const TrieNode> root;
};

// The orders of the lists: each is a strict order in which no two subscriptions of one list tie.
bool ListBefore(const Subscription& a, const Subscription& b) {
  if (a.create_time != b.create_time) return a.create_time < b.create_time;
  return a.id < b.id;
}
bool SocketBefore(const Subscription& a, const Subscription& b) { return a.socket < b.socket; }
bool EventBefore(const Subscription& a, const Subscription& b) { return a.event < b.event; }
bool ExpiryBefore(const Subscription& a, const Subscription& b) {
  if (a.expire_time != b.expire_time) return a.expire_time < b.expire_time;
  return a.id < b.id;
}

const std::shared_ptr<const SubscriberList>& EmptyList() {
  static const auto* empty =
      new std::shared_ptr<const SubscriberList>(std::make_shared<const SubscriberList>());
  return *empty;
}

// With this many changes or more per entry of a list, rebuilding it whole (a merge, O(n)) is
// cheaper than path-copying each change (a few hundred pointers each).
constexpr size_t kRebuildFactor = 256;

// `old` without `removed` (entries of it; repeats allowed) and with `added` (none in it; repeats
// allowed), in the order `before`.
template <typename Before>
SubscriberList Applied(const SubscriberList& old, std::vector<const Subscription*> removed,
                       std::vector<SubscriptionPtr> added, Before before) {
  if (removed.empty() && added.empty()) return old;
  auto less = [&](const auto& a, const auto& b) { return before(*a, *b); };
  auto same = [](const auto& a, const auto& b) { return &*a == &*b; };
  // Repeats of one object sort next to each other (no two objects of one list share a key).
  std::sort(added.begin(), added.end(), less);
  added.erase(std::unique(added.begin(), added.end(), same), added.end());
  if (old.empty()) return SubscriberList(added);
  if ((removed.size() + added.size()) * kRebuildFactor >= old.size()) {
    absl::flat_hash_set<const Subscription*> gone(removed.begin(), removed.end());
    std::vector<SubscriptionPtr> merged;
    merged.reserve(old.size() + added.size());
    auto next = added.begin();
    for (const SubscriptionPtr& sub : old) {
      if (!gone.empty() && gone.contains(sub.get())) continue;
      while (next != added.end() && before(**next, *sub)) merged.push_back(std::move(*next++));
      merged.push_back(sub);
    }
    for (; next != added.end(); ++next) merged.push_back(std::move(*next));
    list_internal::copied_entries += merged.size();
    return SubscriberList(merged);
  }
  std::sort(removed.begin(), removed.end(), less);
  removed.erase(std::unique(removed.begin(), removed.end(), same), removed.end());
  auto position = [&](const SubscriberList& list, const Subscription& sub) {
    return list.PartitionPoint([&](const Subscription& s) { return before(s, sub); });
  };
  SubscriberList list = old;
  // A removed entry and an added one with the same key (a refresh, in an order its change does
  // not move it in) take one path copy: the new one replaces the old in place.
  std::vector<const Subscription*> only_removed;
  std::vector<SubscriptionPtr> only_added;
  size_t r = 0;
  for (SubscriptionPtr& sub : added) {
    while (r < removed.size() && before(*removed[r], *sub)) only_removed.push_back(removed[r++]);
    if (r < removed.size() && !before(*sub, *removed[r])) {
      size_t pos = position(list, *removed[r++]);
      assert(pos < list.size() && list.at(pos).get() == removed[r - 1]);
      list = list.Replaced(pos, std::move(sub));
    } else {
      only_added.push_back(std::move(sub));
    }
  }
  while (r < removed.size()) only_removed.push_back(removed[r++]);
  for (const Subscription* sub : only_removed) {
    size_t pos = position(list, *sub);
    assert(pos < list.size() && list.at(pos).get() == sub);
    list = list.Erased(pos);
  }
  for (SubscriptionPtr& sub : only_added) {
    size_t pos = position(list, *sub);
    list = list.Inserted(pos, std::move(sub));
  }
  return list;
}

}  // namespace

uint64_t CopiedEntriesForTesting() { return list_internal::copied_entries; }

// One immutable version of the whole index (once published).
struct Registry::Index {
  // The subscription with `id` (not counted: for comparing identities only).
  const Subscription* FindRaw(absl::string_view id) const {
    NameKey key(id);
    const auto& subs = ids.For(key.hash).subs;
    auto it = subs.find(key);
    return it == subs.end() ? nullptr : it->sub.get();
  }

  SubscriptionPtr FindById(absl::string_view id) const {
    NameKey key(id);
    const auto& subs = ids.For(key.hash).subs;
    auto it = subs.find(key);
    return it == subs.end() ? nullptr : it->sub;
  }

  SubscriptionPtr FindByKey(const SocketKey& key) const {
    const auto& subs = keys.For(key.hash).subs;
    auto it = subs.find(key);
    return it == subs.end() ? nullptr : it->sub;
  }

  const std::shared_ptr<const SubscriberList>& Subscribers(absl::string_view event) const {
    const EventLists* lists = Lists(event);
    return lists == nullptr ? EmptyList() : lists->list;
  }

  // The lists of `event`; null when it has no subscribers.
  const EventLists* Lists(absl::string_view event) const {
    NameKey key(event);
    const auto& lists = events.For(key.hash).lists;
    auto it = lists.find(key);
    return it == lists.end() ? nullptr : &it->second;
  }

  Shards<IdShard> ids;
  Shards<KeyShard> keys;
  Shards<EventShard> events;
  // One subscription per event (its EventLists::rep), by event name: the order of the pages.
  SubscriberList names;
  // The subscriptions that expire, by (expire_time, id).
  SubscriberList expiries;
  size_t size = 0;
};

// Changes an unpublished Index in place: copies each shard (and its group) on its first change,
// and changes each touched list once, in Finish(), by what the edit did to it overall.
class Registry::Edit {
 public:
  // `index` is a copy of `base` (null: of an empty index), which must outlive the edit. `bulk`:
  // for an edit that touches most shards (a load).
  Edit(Index* index, const Index* base, bool bulk = false) : index_(index), base_(base) {
    if (bulk) {
      constexpr size_t kShards = size_t{1} << (kTrieLevels * kTrieBits);
      ids_.direct.resize(kShards);
      keys_.direct.resize(kShards);
      events_.direct.resize(kShards);
    }
  }
  Edit(const Edit&) = delete;
  Edit& operator=(const Edit&) = delete;

  // Inserts `sub`; nothing with its id or its (event, socket) may be present.
  void Insert(SubscriptionPtr sub) {
    NameKey id(sub->id);
    AddUnder(Mutable(index_->ids, ids_, id.hash).subs, id, sub);
    SocketKey key(sub->event, sub->socket);
    AddUnder(Mutable(index_->keys, keys_, key.hash).subs, key, sub);
    ++index_->size;
    if (sub->Expires()) expiry_added_.push_back(sub);
    Touch(sub).added.push_back(std::move(sub));
  }

  // Fills the (empty) index with `subs`, as if each were upserted in turn: of two with the same
  // id or the same (event, socket), the later wins. Each map is filled shard by shard at its
  // final size, so a shard's table stays in cache while it fills.
  void Load(std::vector<SubscriptionPtr> subs) {
    subs.erase(std::remove(subs.begin(), subs.end(), nullptr), subs.end());
    const size_t n = subs.size();
    // Each subscription is read once here (they are cold: a load is mostly cache misses); the
    // passes below read these.
    std::vector<NameKey> ids;
    std::vector<SocketKey> keys;
    std::vector<bool> expires(n);
    ids.reserve(n);
    keys.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      const Subscription& sub = *subs[i];
      ids.emplace_back(sub.id);
      keys.emplace_back(sub.event, sub.socket);
      expires[i] = sub.Expires();
    }
    // Read backwards, the first of a key in a map is its latest: a later one shares the key of
    // every one that fails to go in, which therefore loses (in both maps).
    std::vector<bool> lost(n);
    Fill(index_->ids, ids_, ids, subs, lost);
    Fill(index_->keys, keys_, keys, subs, lost);
    for (size_t i = 0; i < n; ++i) {
      if (lost[i]) {
        // It may have gone into the other map, where no later one shares its key.
        auto& by_id = Mutable(index_->ids, ids_, ids[i].hash).subs;
        auto id_it = by_id.find(ids[i]);
        if (id_it != by_id.end() && id_it->sub == subs[i]) by_id.erase(id_it);
        auto& by_key = Mutable(index_->keys, keys_, keys[i].hash).subs;
        auto key_it = by_key.find(keys[i]);
        if (key_it != by_key.end() && key_it->sub == subs[i]) by_key.erase(key_it);
        continue;
      }
      ++index_->size;
      if (expires[i]) expiry_added_.push_back(subs[i]);
      Touch(subs[i], keys[i].event).added.push_back(subs[i]);
    }
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
    removed_any_ = true;
    // `sub` keeps the key texts alive while the entries pointing into it are erased.
    NameKey id_key(sub->id);
    Mutable(index_->ids, ids_, id_key.hash).subs.erase(id_key);
    SocketKey key(sub->event, sub->socket);
    KeyShard& keys = Mutable(index_->keys, keys_, key.hash);
    auto it = keys.subs.find(key);
    if (it != keys.subs.end() && it->sub == sub) keys.subs.erase(it);
    --index_->size;
    if (sub->Expires()) expiry_removed_.push_back(sub.get());
    Touch(sub).removed.push_back(sub);
    return sub;
  }

  // Changes the lists of the events touched, the names and the expiries. Call once, after the
  // last change.
  void Finish() {
    std::vector<const Subscription*> names_removed;
    std::vector<SubscriptionPtr> names_added;
    for (auto& [event, change] : changes_) {
      std::vector<const Subscription*> removed = FinalRemoved(change.removed);
      std::vector<SubscriptionPtr> added = FinalAdded(std::move(change.added));
      if (removed.empty() && added.empty()) continue;
      NameKey event_key(event);
      EventShard& shard = Mutable(index_->events, events_, event_key.hash);
      EventLists old;
      auto it = shard.lists.find(event_key);
      if (it != shard.lists.end()) {
        old = std::move(it->second);  // keeps the key's text alive across the erase
        shard.lists.erase(it);
      }
      static const SubscriberList kEmpty;
      SubscriberList list = Applied(old.list ? *old.list : kEmpty, removed, added, ListBefore);
      if (list.empty()) {
        if (old.rep) names_removed.push_back(old.rep.get());
        continue;
      }
      EventLists lists;
      lists.list = std::make_shared<const SubscriberList>(std::move(list));
      if (lists.list->size() == 1) {
        lists.by_socket = lists.list;
      } else {
        lists.by_socket = std::make_shared<const SubscriberList>(Applied(
            old.by_socket ? *old.by_socket : kEmpty, removed, std::move(added), SocketBefore));
      }
      // The representative stays while it is one of the event's subscriptions.
      if (old.rep && index_->FindRaw(old.rep->id) == old.rep.get()) {
        lists.rep = std::move(old.rep);
      } else {
        if (old.rep) names_removed.push_back(old.rep.get());
        lists.rep = lists.by_socket->front();
        names_added.push_back(lists.rep);
      }
      NameKey key(lists.rep->event);
      shard.lists.emplace(key, std::move(lists));
      // `old` (and the text of the erased key) is released here, after the emplace.
    }
    index_->names = Applied(index_->names, names_removed, std::move(names_added), EventBefore);
    index_->expiries = Applied(index_->expiries, FinalRemoved(expiry_removed_),
                               FinalAdded(std::move(expiry_added_)), ExpiryBefore);
    // Last: until here, changes_ keeps alive what the edit removed after adding it.
    changes_.clear();
  }

 private:
  struct EventChange {
    // Keeps the text of the changes_ key alive.
    SubscriptionPtr keeper;
    // Every subscription of the event removed or added by this edit (an object may be in both, or
    // twice); Finish sorts out what changed overall.
    std::vector<SubscriptionPtr> removed;
    std::vector<SubscriptionPtr> added;
  };

  // The change of `sub`'s event (`event`: its name, when the caller has it at hand).
  EventChange& Touch(const SubscriptionPtr& sub, absl::string_view event = {}) {
    if (event.data() == nullptr) event = sub->event;
    auto it = changes_.find(event);
    if (it == changes_.end()) {
      it = changes_.emplace(event, EventChange{}).first;
      it->second.keeper = sub;
    }
    return it->second;
  }

  // Of the subscriptions the edit removed, those that were in the base and are not in the result.
  template <typename T>
  std::vector<const Subscription*> FinalRemoved(const std::vector<T>& removed) const {
    std::vector<const Subscription*> out;
    if (base_ == nullptr) return out;
    for (const T& item : removed) {
      const Subscription* sub = &*item;
      if (base_->FindRaw(sub->id) == sub && index_->FindRaw(sub->id) != sub) out.push_back(sub);
    }
    return out;
  }

  // Of the subscriptions the edit added, those that are in the result and were not in the base.
  std::vector<SubscriptionPtr> FinalAdded(std::vector<SubscriptionPtr> added) const {
    // Only inserts into an empty index (a bulk load): every one is final.
    if (base_ == nullptr && !removed_any_) return added;
    std::vector<SubscriptionPtr> out;
    out.reserve(added.size());
    for (SubscriptionPtr& sub : added) {
      if (index_->FindRaw(sub->id) != sub.get()) continue;
      if (base_ != nullptr && base_->FindRaw(sub->id) == sub.get()) continue;
      out.push_back(std::move(sub));
    }
    return out;
  }

  // The copies this edit made of one map's trie nodes (by level and prefix) and shards (by
  // index): changed in place until the index is published.
  template <typename Shard>
  struct Copies {
    absl::flat_hash_map<size_t, TrieNode*> nodes;
    absl::flat_hash_map<size_t, Shard*> shards;
    // A bulk edit's shards, by index: a load touches every shard, many times each.
    std::vector<Shard*> direct;
  };

  // Returns the shard for `hash`, copied first (with its path) unless this edit already did.
  template <typename Shard>
  Shard& Mutable(Shards<Shard>& published, Copies<Shard>& copies, size_t hash) {
    const size_t index = hash >> (64 - kTrieLevels * kTrieBits);
    if (!copies.direct.empty() && copies.direct[index] != nullptr) return *copies.direct[index];
    auto [shard, new_shard] = copies.shards.try_emplace(index);
    if (!new_shard) return *shard->second;
    TrieNode* node = nullptr;
    for (int level = 0; level < kTrieLevels; ++level) {
      // Level and prefix: the prefix of level L has L * kTrieBits bits.
      const size_t prefix = level == 0 ? 0 : hash >> (64 - level * kTrieBits);
      auto [copy, fresh] = copies.nodes.try_emplace((size_t{1} << 60) * level + prefix);
      if (fresh) {
        if (level == 0) {
          auto root = std::make_shared<TrieNode>(*published.root);
          copy->second = root.get();
          published.root = std::move(root);
        } else {
          std::shared_ptr<const void>& slot = node->slots[Digit(hash, level - 1)];
          auto next = std::make_shared<TrieNode>(*static_cast<const TrieNode*>(slot.get()));
          copy->second = next.get();
          slot = std::move(next);
        }
        list_internal::copied_entries += kTrieFanout;
      }
      node = copy->second;
    }
    std::shared_ptr<const void>& slot = node->slots[Digit(hash, kTrieLevels - 1)];
    auto next = std::make_shared<Shard>(*static_cast<const Shard*>(slot.get()));
    shard->second = next.get();
    slot = std::move(next);
    list_internal::copied_entries += CountOf(*shard->second);
    if (!copies.direct.empty()) copies.direct[index] = shard->second;
    return *shard->second;
  }
  // Puts subs[i] into the map of `shards` under keys[i], latest first, shard by shard; marks
  // `lost` those whose key is taken already.
  template <typename Shard, typename Key>
  void Fill(Shards<Shard>& shards, Copies<Shard>& copies, const std::vector<Key>& keys,
            const std::vector<SubscriptionPtr>& subs, std::vector<bool>& lost) {
    const size_t n = keys.size();
    auto shard_of = [](size_t hash) { return hash >> (64 - kTrieLevels * kTrieBits); };
    // A counting sort of the positions by shard, each shard's latest first.
    std::vector<uint32_t> start((size_t{1} << (kTrieLevels * kTrieBits)) + 1);
    for (const Key& key : keys) ++start[shard_of(key.hash) + 1];
    for (size_t s = 1; s < start.size(); ++s) start[s] += start[s - 1];
    std::vector<uint32_t> order(n);
    std::vector<uint32_t> next(start.begin(), start.end() - 1);
    for (size_t i = n; i-- > 0;) order[next[shard_of(keys[i].hash)]++] = static_cast<uint32_t>(i);
    for (size_t s = 0; s + 1 < start.size(); ++s) {
      if (start[s] == start[s + 1]) continue;
      auto& map = Mutable(shards, copies, keys[order[start[s]]].hash).subs;
      map.reserve(map.size() + (start[s + 1] - start[s]));
      for (uint32_t j = start[s]; j < start[s + 1]; ++j) {
        const uint32_t i = order[j];
        if (!AddUnder(map, keys[i], subs[i])) lost[i] = true;
      }
    }
  }

  // Inserts `sub` into `set` under `key` (its own, hashed already) unless the key is taken.
  // Returns whether it went in.
  template <typename Set, typename Key>
  static bool AddUnder(Set& set, const Key& key, const SubscriptionPtr& sub) {
    bool inserted = false;
    set.lazy_emplace(key, [&](const typename Set::constructor& construct) {
      inserted = true;
      construct(Entry{sub, key.hash});
    });
    return inserted;
  }

  static size_t CountOf(const IdShard& shard) { return shard.subs.size(); }
  static size_t CountOf(const KeyShard& shard) { return shard.subs.size(); }
  static size_t CountOf(const EventShard& shard) { return shard.lists.size(); }

  Index* index_;
  const Index* base_;
  bool removed_any_ = false;
  Copies<IdShard> ids_;
  Copies<KeyShard> keys_;
  Copies<EventShard> events_;
  absl::flat_hash_map<absl::string_view, EventChange> changes_;
  std::vector<const Subscription*> expiry_removed_;
  std::vector<SubscriptionPtr> expiry_added_;
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

// Walks the events of one Index in name order, along its `names`: a page costs O(log n) to
// start and O(1) per event, whatever the registry holds. The index must outlive the walk.
class Registry::EventWalk {
 public:
  // Starts at the first event after `after` (nullopt: at the first event).
  EventWalk(const Index& index, std::optional<absl::string_view> after)
      : index_(index),
        it_(after.has_value()
                ? index.names.Seek([&](const Subscription& sub) { return sub.event <= *after; })
                : index.names.begin()) {}

  // The next event's lists, its name in `*name`; null after the last.
  const EventLists* Next(absl::string_view* name) {
    if (it_ == index_.names.end()) return nullptr;
    *name = (*it_)->event;
    ++it_;
    return index_.Lists(*name);
  }

 private:
  const Index& index_;
  SubscriberList::const_iterator it_;
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
    auto it =
        after_socket.has_value()
            ? by_socket.Seek([&](const Subscription& sub) { return sub.socket <= *after_socket; })
            : by_socket.begin();
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
  std::vector<Change> changes(1);
  changes[0].upsert = std::move(sub);
  Apply(std::move(changes));
}

void Registry::Apply(std::vector<Change> changes) {
  eventbus::MutexLock write_lock(&write_mu_);
  std::shared_ptr<const Index> current = Snapshot();
  auto next = std::make_shared<Index>(*current);
  Edit edit(next.get(), current.get());
  for (Change& change : changes) {
    if (change.upsert != nullptr) {
      edit.Replace(std::move(change.upsert));
    } else {
      edit.Remove(change.remove_id);
    }
  }
  edit.Finish();
  Publish(std::move(next));
}

SubscriptionPtr Registry::Remove(absl::string_view id) {
  eventbus::MutexLock write_lock(&write_mu_);
  std::shared_ptr<const Index> current = Snapshot();
  if (current->FindRaw(id) == nullptr) return nullptr;
  auto next = std::make_shared<Index>(*current);
  Edit edit(next.get(), current.get());
  SubscriptionPtr removed = edit.Remove(id);
  edit.Finish();
  Publish(std::move(next));
  return removed;
}

void Registry::ReplaceAll(std::vector<SubscriptionPtr> subs) {
  eventbus::MutexLock write_lock(&write_mu_);
  auto next = std::make_shared<Index>();
  {
    Edit edit(next.get(), nullptr, /*bulk=*/subs.size() > 4096);
    edit.Load(std::move(subs));
    edit.Finish();
  }
  Publish(std::move(next));
}

absl::Time Registry::NextExpiry() const {
  std::shared_ptr<const Index> index = Snapshot();
  return index->expiries.empty() ? absl::InfiniteFuture() : index->expiries.front()->expire_time;
}

std::vector<SubscriptionPtr> Registry::RemoveExpired(absl::Time now) {
  eventbus::MutexLock write_lock(&write_mu_);
  std::shared_ptr<const Index> current = Snapshot();
  // In (expire_time, id) order already.
  std::vector<SubscriptionPtr> expired;
  for (const SubscriptionPtr& sub : current->expiries) {
    if (sub->expire_time > now) break;
    expired.push_back(sub);
  }
  if (expired.empty()) return expired;
  auto next = std::make_shared<Index>(*current);
  {
    Edit edit(next.get(), current.get());
    for (const SubscriptionPtr& sub : expired) edit.Remove(sub->id);
    edit.Finish();
  }
  Publish(std::move(next));
  return expired;
}

}  // namespace eventbus::registry
