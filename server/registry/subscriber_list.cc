#include "server/registry/subscriber_list.h"

#include <cassert>
#include <new>
#include <utility>

#include "server/registry/subscription.h"

namespace eventbus::registry {
namespace list_internal {
namespace {

// One child of an inner node about to be built: the child, its size and its first entry (read
// from the old parent's arrays, so copying a node does not touch each child's memory).
struct Slot {
  const NodeRef* child;
  size_t size;
  const Subscription* first;
};

Slot SlotOf(const NodeRef& child) {
  const Node* node = child.get();
  return {&child, node->size, node->height == 0 ? LeafItems(node)[0].get() : ChildFirsts(node)[0]};
}

Slot SlotAt(const Node* parent, uint32_t i) {
  return {&Children(parent)[i], ChildSizes(parent)[i], ChildFirsts(parent)[i]};
}

Node* Allocate(size_t entry_bytes, uint32_t count, uint32_t height) {
  void* memory = ::operator new(sizeof(Node) + entry_bytes);
  Node* node = new (memory) Node;
  node->count = count;
  node->height = height;
  return node;
}

// A leaf holding copies of *items[0..count).
NodeRef MakeLeaf(const SubscriptionPtr* const* items, uint32_t count) {
  assert(count > 0 && count <= kMaxEntries);
  Node* node = Allocate(count * sizeof(SubscriptionPtr), count, 0);
  auto* out = reinterpret_cast<SubscriptionPtr*>(node + 1);
  for (uint32_t i = 0; i < count; ++i) new (out + i) SubscriptionPtr(*items[i]);
  node->size = count;
  copied_entries += count;
  return NodeRef::Adopt(node);
}

// An inner node of `height` over slots[0..count).
NodeRef MakeInner(const Slot* slots, uint32_t count, uint32_t height) {
  assert(count > 0 && count <= kMaxEntries);
  Node* node =
      Allocate(count * (sizeof(NodeRef) + sizeof(size_t) + sizeof(Subscription*)), count, height);
  auto* children = reinterpret_cast<NodeRef*>(node + 1);
  auto* sizes = reinterpret_cast<size_t*>(children + count);
  auto* firsts = reinterpret_cast<const Subscription**>(sizes + count);
  size_t size = 0;
  for (uint32_t i = 0; i < count; ++i) {
    new (children + i) NodeRef(*slots[i].child);
    sizes[i] = slots[i].size;
    firsts[i] = slots[i].first;
    size += slots[i].size;
  }
  node->size = size;
  copied_entries += count;
  return NodeRef::Adopt(node);
}

// Builds one node from entries[0..count), or two halves when they do not fit in one. Returns how
// many it built into out[].
int MakeLeaves(const SubscriptionPtr* const* items, uint32_t count, NodeRef out[2]) {
  if (count <= kMaxEntries) {
    out[0] = MakeLeaf(items, count);
    return 1;
  }
  uint32_t half = count / 2;
  out[0] = MakeLeaf(items, half);
  out[1] = MakeLeaf(items + half, count - half);
  return 2;
}

int MakeInners(const Slot* slots, uint32_t count, uint32_t height, NodeRef out[2]) {
  if (count <= kMaxEntries) {
    out[0] = MakeInner(slots, count, height);
    return 1;
  }
  uint32_t half = count / 2;
  out[0] = MakeInner(slots, half, height);
  out[1] = MakeInner(slots + half, count - half, height);
  return 2;
}

// The child of `node` holding position `*pos`, with `*pos` made relative to it. `for_insert`: a
// position at the end of a child goes into that child (a position == node->size, into the last).
uint32_t ChildFor(const Node* node, size_t* pos, bool for_insert) {
  const size_t* sizes = ChildSizes(node);
  uint32_t i = 0;
  for (; i + 1 < node->count; ++i) {
    if (*pos < sizes[i] || (for_insert && *pos == sizes[i])) break;
    *pos -= sizes[i];
  }
  return i;
}

// Inserts `sub` at `pos` under `node`; the replacement (one node, or two after a split) goes to
// out[]. Returns how many.
int Insert(const Node* node, size_t pos, const SubscriptionPtr& sub, NodeRef out[2]) {
  if (node->height == 0) {
    const SubscriptionPtr* items = LeafItems(node);
    const SubscriptionPtr* gathered[kMaxEntries + 1];
    uint32_t n = 0;
    for (uint32_t i = 0; i < pos; ++i) gathered[n++] = &items[i];
    gathered[n++] = &sub;
    for (uint32_t i = static_cast<uint32_t>(pos); i < node->count; ++i) gathered[n++] = &items[i];
    return MakeLeaves(gathered, n, out);
  }
  uint32_t c = ChildFor(node, &pos, /*for_insert=*/true);
  NodeRef changed[2];
  int k = Insert(Children(node)[c].get(), pos, sub, changed);
  Slot slots[kMaxEntries + 1];
  uint32_t n = 0;
  for (uint32_t i = 0; i < c; ++i) slots[n++] = SlotAt(node, i);
  for (int i = 0; i < k; ++i) slots[n++] = SlotOf(changed[i]);
  for (uint32_t i = c + 1; i < node->count; ++i) slots[n++] = SlotAt(node, i);
  return MakeInners(slots, n, node->height, out);
}

// Redistributes the entries of two neighbours `a` and `b` (in that order, same height) into one
// node, or two of about equal size. Returns how many it built into out[].
int Rebalance(const Node* a, const Node* b, NodeRef out[2]) {
  if (a->height == 0) {
    const SubscriptionPtr* gathered[2 * kMaxEntries];
    uint32_t n = 0;
    for (uint32_t i = 0; i < a->count; ++i) gathered[n++] = &LeafItems(a)[i];
    for (uint32_t i = 0; i < b->count; ++i) gathered[n++] = &LeafItems(b)[i];
    return MakeLeaves(gathered, n, out);
  }
  Slot slots[2 * kMaxEntries];
  uint32_t n = 0;
  for (uint32_t i = 0; i < a->count; ++i) slots[n++] = SlotAt(a, i);
  for (uint32_t i = 0; i < b->count; ++i) slots[n++] = SlotAt(b, i);
  return MakeInners(slots, n, a->height, out);
}

// `node` without the entry at `pos`; null when nothing is left. The result may hold fewer than
// kMinEntries: the caller (the parent) merges it with a neighbour.
NodeRef Erase(const Node* node, size_t pos) {
  if (node->height == 0) {
    if (node->count == 1) return NodeRef();
    const SubscriptionPtr* items = LeafItems(node);
    const SubscriptionPtr* gathered[kMaxEntries];
    uint32_t n = 0;
    for (uint32_t i = 0; i < node->count; ++i) {
      if (i != pos) gathered[n++] = &items[i];
    }
    return MakeLeaf(gathered, n);
  }
  uint32_t c = ChildFor(node, &pos, /*for_insert=*/false);
  NodeRef changed = Erase(Children(node)[c].get(), pos);
  NodeRef merged[2];
  int k = 0;
  // The children [first, last] that `merged` (or `changed`) replaces.
  uint32_t first = c, last = c;
  if (changed && changed->count < kMinEntries && node->count > 1) {
    if (c + 1 < node->count) {
      k = Rebalance(changed.get(), Children(node)[c + 1].get(), merged);
      last = c + 1;
    } else {
      k = Rebalance(Children(node)[c - 1].get(), changed.get(), merged);
      first = c - 1;
    }
  } else if (changed) {
    merged[0] = std::move(changed);
    k = 1;
  }
  Slot slots[kMaxEntries];
  uint32_t n = 0;
  for (uint32_t i = 0; i < first; ++i) slots[n++] = SlotAt(node, i);
  for (int i = 0; i < k; ++i) slots[n++] = SlotOf(merged[i]);
  for (uint32_t i = last + 1; i < node->count; ++i) slots[n++] = SlotAt(node, i);
  if (n == 0) return NodeRef();
  return MakeInner(slots, n, node->height);
}

// `node` with `sub` in place of the entry at `pos`.
NodeRef Replace(const Node* node, size_t pos, const SubscriptionPtr& sub) {
  if (node->height == 0) {
    const SubscriptionPtr* items = LeafItems(node);
    const SubscriptionPtr* gathered[kMaxEntries];
    for (uint32_t i = 0; i < node->count; ++i) gathered[i] = i == pos ? &sub : &items[i];
    return MakeLeaf(gathered, node->count);
  }
  uint32_t c = ChildFor(node, &pos, /*for_insert=*/false);
  NodeRef changed = Replace(Children(node)[c].get(), pos, sub);
  Slot slots[kMaxEntries];
  for (uint32_t i = 0; i < node->count; ++i) slots[i] = i == c ? SlotOf(changed) : SlotAt(node, i);
  return MakeInner(slots, node->count, node->height);
}

}  // namespace

void NodeRef::Destroy(const Node* node) {
  Node* mutable_node = const_cast<Node*>(node);
  if (node->height == 0) {
    auto* items = reinterpret_cast<SubscriptionPtr*>(mutable_node + 1);
    for (uint32_t i = 0; i < node->count; ++i) items[i].~SubscriptionPtr();
  } else {
    auto* children = reinterpret_cast<NodeRef*>(mutable_node + 1);
    for (uint32_t i = 0; i < node->count; ++i) children[i].~NodeRef();
  }
  mutable_node->~Node();
  ::operator delete(mutable_node);
}

}  // namespace list_internal

using list_internal::Children;
using list_internal::kMaxEntries;
using list_internal::LeafItems;
using list_internal::Node;
using list_internal::NodeRef;

SubscriberList::SubscriberList(const std::vector<SubscriptionPtr>& subs) {
  if (subs.empty()) return;
  // Leaves as full as kMaxEntries allows, the entries spread evenly over them; then each level
  // above the same way over the one below.
  std::vector<NodeRef> level;
  {
    size_t count = (subs.size() + kMaxEntries - 1) / kMaxEntries;
    level.reserve(count);
    std::vector<const SubscriptionPtr*> items(kMaxEntries);
    for (size_t j = 0; j < count; ++j) {
      size_t begin = subs.size() * j / count, end = subs.size() * (j + 1) / count;
      for (size_t i = begin; i < end; ++i) items[i - begin] = &subs[i];
      level.push_back(list_internal::MakeLeaf(items.data(), static_cast<uint32_t>(end - begin)));
    }
  }
  uint32_t height = 0;
  while (level.size() > 1) {
    ++height;
    size_t count = (level.size() + kMaxEntries - 1) / kMaxEntries;
    std::vector<NodeRef> above;
    above.reserve(count);
    std::vector<list_internal::Slot> slots(kMaxEntries);
    for (size_t j = 0; j < count; ++j) {
      size_t begin = level.size() * j / count, end = level.size() * (j + 1) / count;
      for (size_t i = begin; i < end; ++i) slots[i - begin] = list_internal::SlotOf(level[i]);
      above.push_back(
          list_internal::MakeInner(slots.data(), static_cast<uint32_t>(end - begin), height));
    }
    level = std::move(above);
  }
  root_ = std::move(level[0]);
}

SubscriberList::const_iterator SubscriberList::begin() const {
  const_iterator it;
  if (!root_) return it;
  it.height_ = static_cast<int>(root_->height);
  it.path_[it.height_] = root_.get();
  if (it.height_ == 0) {
    it.item_ = LeafItems(root_.get());
    it.leaf_end_ = it.item_ + root_->count;
  } else {
    it.index_[it.height_] = 0;
    it.DescendLeftmost(it.height_);
  }
  return it;
}

const SubscriptionPtr& SubscriberList::at(size_t pos) const {
  assert(pos < size());
  const Node* node = root_.get();
  while (node->height > 0) {
    uint32_t c = list_internal::ChildFor(node, &pos, /*for_insert=*/false);
    node = Children(node)[c].get();
  }
  return LeafItems(node)[pos];
}

SubscriberList SubscriberList::Inserted(size_t pos, SubscriptionPtr sub) const {
  assert(pos <= size());
  if (!root_) {
    const SubscriptionPtr* item = &sub;
    return SubscriberList(list_internal::MakeLeaf(&item, 1));
  }
  NodeRef out[2];
  if (list_internal::Insert(root_.get(), pos, sub, out) == 1) return SubscriberList(out[0]);
  // The root split: a new root above the halves.
  list_internal::Slot slots[2] = {list_internal::SlotOf(out[0]), list_internal::SlotOf(out[1])};
  return SubscriberList(list_internal::MakeInner(slots, 2, root_->height + 1));
}

SubscriberList SubscriberList::Replaced(size_t pos, SubscriptionPtr sub) const {
  assert(pos < size());
  return SubscriberList(list_internal::Replace(root_.get(), pos, sub));
}

SubscriberList SubscriberList::Erased(size_t pos) const {
  assert(pos < size());
  NodeRef root = list_internal::Erase(root_.get(), pos);
  // A root left with one child hands the tree to it.
  while (root && root->height > 0 && root->count == 1) root = Children(root.get())[0];
  return SubscriberList(std::move(root));
}

}  // namespace eventbus::registry
