#include "server/registry/shared_text.h"

#include <array>
#include <atomic>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "server/base/mutex.h"

namespace eventbus::registry {

struct SharedName::Node {
  explicit Node(absl::string_view t) : text(t) {}
  // Holders. Dropped to zero only under the shard's lock (see Unref), so a lookup, which takes a
  // reference under the same lock, never finds a node on its way out.
  std::atomic<int64_t> refs{1};
  const std::string text;
};

namespace {

// The texts live; split by hash so that Subscribes on many gRPC threads rarely share a lock.
constexpr size_t kShards = 16;

struct Shard {
  eventbus::Mutex mu;
  // Keys view the node's own text, which lives as long as the entry.
  absl::flat_hash_map<absl::string_view, SharedName::Node*> nodes ABSL_GUARDED_BY(mu);
};

std::array<Shard, kShards>& Shards() {
  // Never destroyed: SharedNames in static objects may outlive any ordering of destructors.
  static auto* shards = new std::array<Shard, kShards>();
  return *shards;
}

Shard& ShardFor(absl::string_view text) {
  return Shards()[absl::Hash<absl::string_view>{}(text) % kShards];
}

const std::string& EmptyString() {
  static const auto* empty = new std::string();
  return *empty;
}

}  // namespace

SharedName::SharedName(absl::string_view text) {
  if (text.empty()) return;
  Shard& shard = ShardFor(text);
  eventbus::MutexLock lock(&shard.mu);
  auto it = shard.nodes.find(text);
  if (it != shard.nodes.end()) {
    node_ = it->second;
    node_->refs.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  node_ = new Node(text);
  shard.nodes.emplace(absl::string_view(node_->text), node_);
}

const std::string& SharedName::str() const {
  return node_ == nullptr ? EmptyString() : node_->text;
}

void SharedName::Ref() const {
  if (node_ != nullptr) node_->refs.fetch_add(1, std::memory_order_relaxed);
}

void SharedName::Unref() {
  if (node_ == nullptr) return;
  Node* node = std::exchange(node_, nullptr);
  // Not the last holder: drop the reference without the lock. A holder that sees 1 may be the
  // last, and a lookup may be about to take a reference: that is decided under the lock.
  int64_t refs = node->refs.load(std::memory_order_relaxed);
  while (refs > 1) {
    if (node->refs.compare_exchange_weak(refs, refs - 1, std::memory_order_acq_rel,
                                         std::memory_order_relaxed)) {
      return;
    }
  }
  Shard& shard = ShardFor(node->text);
  {
    eventbus::MutexLock lock(&shard.mu);
    if (node->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    shard.nodes.erase(absl::string_view(node->text));
  }
  delete node;
}

size_t SharedName::LiveCountForTest() {
  size_t count = 0;
  for (Shard& shard : Shards()) {
    eventbus::MutexLock lock(&shard.mu);
    count += shard.nodes.size();
  }
  return count;
}

const std::string& OptionalText::value() const {
  if (!has_value()) throw std::bad_optional_access();
  return *text_;
}

}  // namespace eventbus::registry
