// A FIFO queue in one growable ring buffer: push_back, pop_front, front and indexing in O(1), with
// no allocation per element. The writer pool's per-target queues use it: std::deque allocates a
// 512-byte node per two of their messages (libstdc++'s node size), so a fan-out paid a malloc and
// a free per two messages. The ring doubles when full. It gives memory back only when it empties:
// after kQuietDrains drains in a row whose fill never passed a quarter of its capacity, it halves
// (down to kMinCapacity). So a connection that once held a burst does not keep its memory, and
// one that fills to a few dozen messages and drains at every flush keeps its ring, instead of
// halving while it drains and doubling again while it fills (several moves per message).
#ifndef EVENTBUS_SERVER_BASE_RING_QUEUE_H_
#define EVENTBUS_SERVER_BASE_RING_QUEUE_H_

#include <cstddef>
#include <memory>
#include <utility>

namespace eventbus::base {

template <typename T>
class RingQueue {
 public:
  static constexpr size_t kMinCapacity = 4;
  static constexpr int kQuietDrains = 8;

  RingQueue() = default;
  RingQueue(RingQueue&& other) noexcept { *this = std::move(other); }
  RingQueue& operator=(RingQueue&& other) noexcept {
    if (this != &other) {
      clear();
      slots_ = std::move(other.slots_);
      capacity_ = std::exchange(other.capacity_, 0);
      head_ = std::exchange(other.head_, 0);
      size_ = std::exchange(other.size_, 0);
      peak_ = std::exchange(other.peak_, 0);
      quiet_ = std::exchange(other.quiet_, 0);
    }
    return *this;
  }
  RingQueue(const RingQueue&) = delete;
  RingQueue& operator=(const RingQueue&) = delete;
  ~RingQueue() { clear(); }

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }

  // The i-th element from the front (i < size()).
  T& operator[](size_t i) { return *Slot(i); }
  const T& operator[](size_t i) const { return *Slot(i); }
  T& front() { return *Slot(0); }
  const T& front() const { return *Slot(0); }

  void push_back(T&& value) {
    if (size_ == capacity_) Resize(capacity_ == 0 ? kMinCapacity : 2 * capacity_);
    new (Slot(size_)) T(std::move(value));
    ++size_;
    if (size_ > peak_) peak_ = size_;
  }

  void pop_front() {
    Slot(0)->~T();
    head_ = (head_ + 1) & (capacity_ - 1);
    --size_;
    if (size_ == 0) Drained();
  }

  void clear() {
    while (size_ > 0) {
      Slot(0)->~T();
      head_ = (head_ + 1) & (capacity_ - 1);
      --size_;
    }
    Drained();
  }

  // Front to back.
  template <typename F>
  void ForEach(F f) {
    for (size_t i = 0; i < size_; ++i) f(*Slot(i));
  }

 private:
  // Raw storage: elements are constructed in place, only in the occupied slots.
  struct alignas(T) Storage {
    unsigned char bytes[sizeof(T)];
  };

  T* Slot(size_t i) const { return reinterpret_cast<T*>(&slots_[(head_ + i) & (capacity_ - 1)]); }

  // The ring is empty: counts a quiet drain (its fill stayed within a quarter of the capacity),
  // and halves the ring after kQuietDrains of them in a row. Nothing to move.
  void Drained() {
    head_ = 0;
    if (capacity_ <= kMinCapacity || peak_ > capacity_ / 4) {
      quiet_ = 0;
    } else if (++quiet_ >= kQuietDrains) {
      Resize(capacity_ / 2);
      quiet_ = 0;
    }
    peak_ = 0;
  }

  // Moves the elements, in order, into a ring of `capacity` (a power of two, >= size_).
  void Resize(size_t capacity) {
    std::unique_ptr<Storage[]> slots(new Storage[capacity]);
    for (size_t i = 0; i < size_; ++i) {
      T* from = Slot(i);
      new (&slots[i]) T(std::move(*from));
      from->~T();
    }
    slots_ = std::move(slots);
    capacity_ = capacity;
    head_ = 0;
  }

  std::unique_ptr<Storage[]> slots_;
  size_t capacity_ = 0;  // 0 or a power of two
  size_t head_ = 0;
  size_t size_ = 0;
  size_t peak_ = 0;  // the most held since the ring was last empty
  int quiet_ = 0;    // quiet drains in a row
};

}  // namespace eventbus::base

#endif  // EVENTBUS_SERVER_BASE_RING_QUEUE_H_
