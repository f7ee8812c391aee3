// A FIFO queue in one growable ring buffer: push_back, pop_front, front and indexing in O(1), with
// no allocation per element. The writer pool's per-target queues use it: std::deque allocates a
// 512-byte node per two of their messages (libstdc++'s node size), so a fan-out paid a malloc and
// a free per two messages. The ring doubles when full and halves once a quarter full (down to
// kMinCapacity), so a connection that once held a burst does not keep its memory.
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

  RingQueue() = default;
  RingQueue(RingQueue&& other) noexcept { *this = std::move(other); }
  RingQueue& operator=(RingQueue&& other) noexcept {
    if (this != &other) {
      clear();
      slots_ = std::move(other.slots_);
      capacity_ = std::exchange(other.capacity_, 0);
      head_ = std::exchange(other.head_, 0);
      size_ = std::exchange(other.size_, 0);
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
  }

  void pop_front() {
    Slot(0)->~T();
    head_ = (head_ + 1) & (capacity_ - 1);
    --size_;
    if (capacity_ > kMinCapacity && size_ <= capacity_ / 4) Resize(capacity_ / 2);
  }

  void clear() {
    while (size_ > 0) {
      Slot(0)->~T();
      head_ = (head_ + 1) & (capacity_ - 1);
      --size_;
    }
    head_ = 0;
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
};

}  // namespace eventbus::base

#endif  // EVENTBUS_SERVER_BASE_RING_QUEUE_H_
