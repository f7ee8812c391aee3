// The deadlines of one connection's messages (net/connection.h), earliest first, kept so that the
// common case costs O(1) and touches only memory that is already warm. Messages on one connection
// mostly arrive with non-decreasing deadlines (one Raise's timeout applies to all its targets, and
// Raises reach the loop in time order), so entries go to a FIFO that is sorted by construction;
// only an entry earlier than the FIFO's last one (a later Raise with a shorter timeout, a connect
// share) goes to a min-heap. The earliest deadline is the earlier of the FIFO's front and the
// heap's top. Entries of completed messages are not removed when their message completes: they
// are skipped when they come due, and dropped in bulk once they outnumber the live messages
// (MaybeCompact). Internal to server/net; loop thread only.
#ifndef EVENTBUS_SERVER_NET_DEADLINE_QUEUE_H_
#define EVENTBUS_SERVER_NET_DEADLINE_QUEUE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "absl/time/time.h"

namespace eventbus::net {

// One message's deadline: the message is found again by its seq (queued) or id (outstanding).
struct DeadlineEntry {
  absl::Time when;
  uint64_t seq = 0;
  uint32_t id = 0;
  // Request::connect_deadline: fails the message only while it waits for a connection.
  bool connect_only = false;
};

class DeadlineQueue {
 public:
  // Below this many entries the queue is never compacted: dropping dead entries from a small,
  // cache-resident queue costs more than keeping them until they come due.
  static constexpr size_t kMinCompactSize = 64;
  // A vector that grew beyond this many entries (a burst) gives its memory back once it is
  // emptied or compacted to a quarter of it.
  static constexpr size_t kKeepCapacity = 1024;

  bool empty() const { return fifo_head_ == fifo_.size() && heap_.empty(); }
  // Entries held, live or not.
  size_t size() const { return fifo_.size() - fifo_head_ + heap_.size(); }
  // Entries that arrived out of order (in the heap).
  size_t out_of_order() const { return heap_.size(); }
  // Entries the queue has memory for.
  size_t capacity() const { return fifo_.capacity() + heap_.capacity(); }

  // O(1) when `entry` is not earlier than the latest entry in the FIFO; O(log n) in the heap.
  // Inlined into the enqueue for the common case: in order, with room in the FIFO's vector.
  ABSL_ATTRIBUTE_ALWAYS_INLINE void Push(const DeadlineEntry& entry) {
    if (ABSL_PREDICT_TRUE(fifo_.size() < fifo_.capacity() &&
                          (fifo_head_ == fifo_.size() || entry.when >= fifo_.back().when))) {
      fifo_.push_back(entry);
      return;
    }
    PushSlow(entry);
  }

  // The earliest deadline held; InfiniteFuture when empty.
  absl::Time Earliest() const {
    absl::Time earliest = absl::InfiniteFuture();
    if (fifo_head_ < fifo_.size()) earliest = fifo_[fifo_head_].when;
    if (!heap_.empty() && heap_.front().when < earliest) earliest = heap_.front().when;
    return earliest;
  }

  // Removes every entry due at or before `now` and appends it to `out`, earliest first.
  void PopDue(absl::Time now, std::vector<DeadlineEntry>* out) {
    for (;;) {
      const bool fifo_due = fifo_head_ < fifo_.size() && fifo_[fifo_head_].when <= now;
      const bool heap_due = !heap_.empty() && heap_.front().when <= now;
      if (fifo_due && (!heap_due || fifo_[fifo_head_].when <= heap_.front().when)) {
        out->push_back(fifo_[fifo_head_]);
        PopFifoFront();
      } else if (heap_due) {
        out->push_back(PopHeapTop());
      } else {
        return;
      }
    }
  }

  // Whether the queue holds more than kMinCompactSize entries and four times `live` (the
  // connection's live messages, each of which has one or two entries): then Compact().
  bool TooLarge(size_t live) const {
    const size_t n = size();
    return n > kMinCompactSize && n > 4 * live;
  }

  // Drops the entries for which `is_live(entry)` is false, once TooLarge(live). Messages complete
  // mostly in the order they were queued, so the dead entries are usually the FIFO's front: those
  // (and the heap's dead top) go first, looking at nothing else; only when that is not enough is
  // every entry looked at. Amortised O(1) per Push: a full pass leaves at most 2 * `live`
  // entries, and the next one needs as many pushes again.
  template <typename IsLive>
  void Compact(size_t live, IsLive is_live) {
    while (fifo_head_ < fifo_.size() && !is_live(fifo_[fifo_head_])) PopFifoFront();
    while (!heap_.empty() && !is_live(heap_.front())) PopHeapTop();
    if (!TooLarge(live)) return;
    // Order is kept: the FIFO stays sorted.
    auto kept = std::remove_if(fifo_.begin() + static_cast<ptrdiff_t>(fifo_head_), fifo_.end(),
                               [&](const DeadlineEntry& e) { return !is_live(e); });
    fifo_.erase(kept, fifo_.end());
    fifo_.erase(fifo_.begin(), fifo_.begin() + static_cast<ptrdiff_t>(fifo_head_));
    fifo_head_ = 0;
    heap_.erase(std::remove_if(heap_.begin(), heap_.end(),
                               [&](const DeadlineEntry& e) { return !is_live(e); }),
                heap_.end());
    std::make_heap(heap_.begin(), heap_.end(), Later());
    ReleaseSpare(&fifo_);
    ReleaseSpare(&heap_);
  }

  void clear() {
    fifo_.clear();
    fifo_head_ = 0;
    heap_.clear();
    ReleaseSpare(&fifo_);
    ReleaseSpare(&heap_);
  }

 private:
  // std::push_heap builds a max-heap; "later" puts the earliest deadline on top.
  struct Later {
    bool operator()(const DeadlineEntry& a, const DeadlineEntry& b) const {
      return a.when > b.when;
    }
  };

  ABSL_ATTRIBUTE_NOINLINE void PushSlow(const DeadlineEntry& entry) {
    if (fifo_head_ < fifo_.size() && entry.when < fifo_.back().when) {
      heap_.push_back(entry);
      std::push_heap(heap_.begin(), heap_.end(), Later());
      return;
    }
    // The FIFO's vector is full. The popped prefix [0, fifo_head_) is reused before it grows,
    // when it is at least half of it (so the move is amortised O(1) per entry).
    if (fifo_head_ > 0 && 2 * fifo_head_ >= fifo_.size()) {
      fifo_.erase(fifo_.begin(), fifo_.begin() + static_cast<ptrdiff_t>(fifo_head_));
      fifo_head_ = 0;
    }
    fifo_.push_back(entry);
  }

  void PopFifoFront() {
    if (++fifo_head_ == fifo_.size()) {
      // Empty: start again at the vector's beginning, whose memory was just used.
      fifo_.clear();
      fifo_head_ = 0;
    }
  }

  DeadlineEntry PopHeapTop() {
    std::pop_heap(heap_.begin(), heap_.end(), Later());
    DeadlineEntry top = heap_.back();
    heap_.pop_back();
    return top;
  }

  static void ReleaseSpare(std::vector<DeadlineEntry>* v) {
    if (v->capacity() > kKeepCapacity && v->capacity() > 4 * v->size()) {
      std::vector<DeadlineEntry>(v->begin(), v->end()).swap(*v);
    }
  }

  // Sorted by `when`; the live part is [fifo_head_, fifo_.size()).
  std::vector<DeadlineEntry> fifo_;
  size_t fifo_head_ = 0;
  // Min-heap (by `when`) of the entries that came earlier than the FIFO's back.
  std::vector<DeadlineEntry> heap_;
};

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_DEADLINE_QUEUE_H_
