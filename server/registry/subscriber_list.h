// SubscriberList: an immutable sequence of subscriptions that Raise holds while it fans out, and
// that the registry changes by path copying. It is a persistent B+tree: a new version shares every
// node with the old one except the few on the path it changes, so inserting or erasing one entry
// copies O(log n) nodes of at most kMaxEntries pointers each, whatever the list holds, and a
// version already handed out never changes. Iteration walks the leaves' arrays, nearly as fast as
// a vector's.
#ifndef EVENTBUS_SERVER_REGISTRY_SUBSCRIBER_LIST_H_
#define EVENTBUS_SERVER_REGISTRY_SUBSCRIBER_LIST_H_

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <vector>

namespace eventbus::registry {

struct Subscription;
using SubscriptionPtr = std::shared_ptr<const Subscription>;

namespace list_internal {

// Entries per node (leaf pointers or children). A path copy costs about height * kMaxEntries
// pointer copies; 64 keeps that a few hundred at a million entries.
inline constexpr size_t kMaxEntries = 64;
// A node left with fewer entries after an erase is merged with (or refilled from) a neighbour.
inline constexpr size_t kMinEntries = kMaxEntries / 4;
// Far above what kMinEntries allows for 2^64 entries (non-root nodes hold at least 2 children).
inline constexpr int kMaxHeight = 16;

// A node, allocated with its entries behind it in one block (exactly as many as it holds: it is
// never changed after it is built). A leaf (height 0) holds `count` SubscriptionPtr; an inner node
// `count` children, each with the number of entries under it and its first entry.
struct Node {
  mutable std::atomic<uint32_t> refs{1};
  uint32_t count = 0;
  uint32_t height = 0;
  // Entries in the leaves under this node.
  size_t size = 0;
};

// Counts a reference to a Node; the last one destroys it.
class NodeRef {
 public:
  NodeRef() = default;
  // Adopts the reference `node` was created with.
  static NodeRef Adopt(const Node* node) {
    NodeRef ref;
    ref.node_ = node;
    return ref;
  }
  NodeRef(const NodeRef& other) : node_(other.node_) {
    if (node_ != nullptr) node_->refs.fetch_add(1, std::memory_order_relaxed);
  }
  NodeRef(NodeRef&& other) noexcept : node_(other.node_) { other.node_ = nullptr; }
  NodeRef& operator=(NodeRef other) noexcept {
    std::swap(node_, other.node_);
    return *this;
  }
  ~NodeRef() {
    if (node_ != nullptr && node_->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      Destroy(node_);
    }
  }
  const Node* get() const { return node_; }
  const Node* operator->() const { return node_; }
  explicit operator bool() const { return node_ != nullptr; }

 private:
  static void Destroy(const Node* node);
  const Node* node_ = nullptr;
};

// The entries of a leaf, and the children of an inner node (with their sizes and first entries).
inline const SubscriptionPtr* LeafItems(const Node* node) {
  return reinterpret_cast<const SubscriptionPtr*>(node + 1);
}
inline const NodeRef* Children(const Node* node) {
  return reinterpret_cast<const NodeRef*>(node + 1);
}
inline const size_t* ChildSizes(const Node* node) {
  return reinterpret_cast<const size_t*>(Children(node) + node->count);
}
inline const Subscription* const* ChildFirsts(const Node* node) {
  return reinterpret_cast<const Subscription* const*>(ChildSizes(node) + node->count);
}

// For PartitionPoint and Seek, in a list sorted so that `before` holds for a prefix of it: the
// child of inner node `node` that holds the partition point (the last child whose first entry is
// still `before`: the point is in it or at its end; child 0 when there is none).
template <typename Before>
uint32_t ChildHolding(const Node* node, Before& before) {
  const Subscription* const* firsts = ChildFirsts(node);
  const Subscription* const* past =
      std::partition_point(firsts + 1, firsts + node->count,
                           [&before](const Subscription* first) { return before(*first); });
  return static_cast<uint32_t>(past - firsts) - 1;
}
// The position in leaf `node` of its first entry for which `before` is false (count when none).
template <typename Before>
uint32_t LeafPartitionPoint(const Node* node, Before& before) {
  const SubscriptionPtr* items = LeafItems(node);
  const SubscriptionPtr* point = std::partition_point(
      items, items + node->count, [&before](const SubscriptionPtr& item) { return before(*item); });
  return static_cast<uint32_t>(point - items);
}

// Pointer copies made by this thread's list and registry writes: what a write costs, counted
// rather than timed (tests, the benchmark).
inline thread_local uint64_t copied_entries = 0;

}  // namespace list_internal

class SubscriberList {
 public:
  using value_type = SubscriptionPtr;
  using reference = const SubscriptionPtr&;
  using const_reference = const SubscriptionPtr&;
  using size_type = size_t;
  using difference_type = std::ptrdiff_t;

  class const_iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = SubscriptionPtr;
    using difference_type = std::ptrdiff_t;
    using pointer = const SubscriptionPtr*;
    using reference = const SubscriptionPtr&;

    const_iterator() = default;
    reference operator*() const { return *item_; }
    pointer operator->() const { return item_; }
    const_iterator& operator++() {
      if (++item_ == leaf_end_) NextLeaf();
      return *this;
    }
    const_iterator operator++(int) {
      const_iterator old = *this;
      ++*this;
      return old;
    }
    friend bool operator==(const const_iterator& a, const const_iterator& b) {
      return a.item_ == b.item_;
    }
    friend bool operator!=(const const_iterator& a, const const_iterator& b) {
      return a.item_ != b.item_;
    }

   private:
    friend class SubscriberList;
    // Moves to the first entry of the next leaf (or to the end).
    void NextLeaf();
    // Descends from path_[level] (at child index_[level]) to the leftmost leaf below.
    void DescendLeftmost(int level);

    // The current entry and the end of its leaf; both null at the end.
    const SubscriptionPtr* item_ = nullptr;
    const SubscriptionPtr* leaf_end_ = nullptr;
    // path_[h] is the node of height h on the way down from the root, index_[h] the child taken
    // (h >= 1); path_[0] is the leaf.
    int height_ = 0;
    const list_internal::Node* path_[list_internal::kMaxHeight] = {};
    uint32_t index_[list_internal::kMaxHeight] = {};
  };
  using iterator = const_iterator;

  SubscriberList() = default;
  // The subscriptions in the order given. Builds full nodes bottom-up: O(n).
  explicit SubscriberList(const std::vector<SubscriptionPtr>& subs);

  size_t size() const { return root_ ? root_->size : 0; }
  bool empty() const { return !root_; }
  const_iterator begin() const;
  const_iterator end() const { return const_iterator(); }
  // The first entry; the list must not be empty.
  const SubscriptionPtr& front() const { return *begin(); }
  // The entry at `pos` (< size()): O(log n).
  const SubscriptionPtr& at(size_t pos) const;

  // The position of the first entry for which `before(const Subscription&)` is false, in a list
  // sorted so that `before` is true for a prefix of it (a lower or upper bound): O(log n).
  template <typename Before>
  size_t PartitionPoint(Before before) const;
  // An iterator to that entry (end() when there is none).
  template <typename Before>
  const_iterator Seek(Before before) const;

  // Copies of this list with `sub` inserted before position `pos` (<= size()), or without the
  // entry at `pos` (< size()). Each copies only the nodes on the way to `pos` (and a neighbour
  // when a node splits or merges); this list is unchanged.
  SubscriberList Inserted(size_t pos, SubscriptionPtr sub) const;
  SubscriberList Erased(size_t pos) const;
  // A copy with `sub` in place of the entry at `pos` (< size()).
  SubscriberList Replaced(size_t pos, SubscriptionPtr sub) const;

  // The list's tree height (0: one leaf or empty), for tests.
  int height() const { return root_ ? static_cast<int>(root_->height) : 0; }

 private:
  explicit SubscriberList(list_internal::NodeRef root) : root_(std::move(root)) {}

  list_internal::NodeRef root_;
};

inline void SubscriberList::const_iterator::DescendLeftmost(int level) {
  const list_internal::Node* node = list_internal::Children(path_[level])[index_[level]].get();
  for (int h = level - 1; h > 0; --h) {
    path_[h] = node;
    index_[h] = 0;
    node = list_internal::Children(node)[0].get();
  }
  path_[0] = node;
  item_ = list_internal::LeafItems(node);
  leaf_end_ = item_ + node->count;
}

inline void SubscriberList::const_iterator::NextLeaf() {
  for (int h = 1; h <= height_; ++h) {
    if (index_[h] + 1 < path_[h]->count) {
      ++index_[h];
      DescendLeftmost(h);
      return;
    }
  }
  item_ = leaf_end_ = nullptr;
}

template <typename Before>
size_t SubscriberList::PartitionPoint(Before before) const {
  using list_internal::Node;
  if (!root_) return 0;
  size_t pos = 0;
  const Node* node = root_.get();
  while (node->height > 0) {
    const uint32_t child = list_internal::ChildHolding(node, before);
    const size_t* sizes = list_internal::ChildSizes(node);
    for (uint32_t i = 0; i < child; ++i) pos += sizes[i];
    node = list_internal::Children(node)[child].get();
  }
  return pos + list_internal::LeafPartitionPoint(node, before);
}

template <typename Before>
SubscriberList::const_iterator SubscriberList::Seek(Before before) const {
  using list_internal::Node;
  const_iterator it;
  if (!root_) return it;
  const Node* node = root_.get();
  it.height_ = static_cast<int>(node->height);
  while (node->height > 0) {
    const uint32_t child = list_internal::ChildHolding(node, before);
    it.path_[node->height] = node;
    it.index_[node->height] = child;
    node = list_internal::Children(node)[child].get();
  }
  it.path_[0] = node;
  const SubscriptionPtr* items = list_internal::LeafItems(node);
  it.item_ = items + list_internal::LeafPartitionPoint(node, before);
  it.leaf_end_ = items + node->count;
  if (it.item_ == it.leaf_end_) it.NextLeaf();
  return it;
}

}  // namespace eventbus::registry

#endif  // EVENTBUS_SERVER_REGISTRY_SUBSCRIBER_LIST_H_
