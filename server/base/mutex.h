// The project's locking primitives: a mutex with absl::Mutex's Await, a condition variable and a
// one-shot notification, all built on std::mutex and std::condition_variable.
//
// Why not absl::Mutex: Debian's abseil is built without ThreadSanitizer annotations, so TSan sees
// none of the happens-before an absl::Mutex or absl::Notification gives and would either report
// false races or (suppressed) check nothing of what they guard. The std:: primitives are
// intercepted by TSan. The classes carry clang's thread-safety attributes, so ABSL_GUARDED_BY and
// friends are checked by -Wthread-safety.
//
// Thread contract: every member function of every class here is thread-safe.
#ifndef EVENTBUS_SERVER_BASE_MUTEX_H_
#define EVENTBUS_SERVER_BASE_MUTEX_H_

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <type_traits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace eventbus {

namespace mutex_internal {

// Timeouts this long are waited for without a deadline (no overflow in std::chrono).
inline bool IsForever(absl::Duration timeout) { return timeout >= absl::Hours(24 * 365 * 100); }
inline std::chrono::nanoseconds ToChrono(absl::Duration timeout) {
  return std::chrono::nanoseconds(
      absl::ToInt64Nanoseconds(std::max(timeout, absl::ZeroDuration())));
}

// Waits on `cv` with `lock` held until `ready()` holds or `timeout` passes; returns ready().
template <typename Ready>
// Not analysed: `ready` usually reads fields guarded by the Mutex whose std::mutex `lock` holds,
// which the analysis cannot relate; Mutex::AwaitWithTimeout requires the lock of its callers.
ABSL_NO_THREAD_SAFETY_ANALYSIS bool WaitFor(std::condition_variable& cv,
                                            std::unique_lock<std::mutex>& lock,
                                            absl::Duration timeout, Ready& ready) {
  if (IsForever(timeout)) {
    while (!ready()) cv.wait(lock);
    return true;
  }
  const auto deadline = std::chrono::steady_clock::now() + ToChrono(timeout);
  while (!ready()) {
    if (cv.wait_until(lock, deadline) == std::cv_status::timeout) return ready();
  }
  return true;
}

}  // namespace mutex_internal

class CondVar;

// An exclusive, non-recursive mutex. Await() mirrors absl::Mutex::Await: the condition is
// re-evaluated whenever the mutex is released while someone awaits, so code need not signal.
class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    // Wakes awaiters while still holding the lock: an awaiter that then returns may destroy this
    // mutex, which must not happen while Unlock() still touches it.
    if (awaiters_ > 0) awaited_.notify_all();
    mu_.unlock();
  }
  // Documents (and tells the analysis) that the caller holds the lock; not checked at run time.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

  // Blocks, with the lock held, until `cond` holds: `cond` is a callable returning bool (run with
  // the lock held) or a pointer to a bool guarded by this mutex.
  template <typename Cond>
  void Await(Cond cond) ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    AwaitWithTimeout(std::move(cond), absl::InfiniteDuration());
  }
  // As Await, but gives up after `timeout`. Returns whether `cond` holds.
  template <typename Cond>
  bool AwaitWithTimeout(Cond cond, absl::Duration timeout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    if constexpr (std::is_convertible_v<Cond, const bool*>) {
      const bool* flag = cond;
      return AwaitWithTimeout([flag] { return *flag; }, timeout);
    } else {
      std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
      ++awaiters_;
      const bool ready = mutex_internal::WaitFor(awaited_, lock, timeout, cond);
      --awaiters_;
      lock.release();
      return ready;
    }
  }
  template <typename Cond>
  bool AwaitWithDeadline(Cond cond, absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    return AwaitWithTimeout(std::move(cond), deadline - absl::Now());
  }

 private:
  friend class CondVar;
  std::mutex mu_;
  std::condition_variable awaited_;  // notified on Unlock() while awaiters_ > 0
  int awaiters_ = 0;                 // guarded by mu_
};

// Holds `mu` for its lifetime.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }

 private:
  Mutex* const mu_;
};

// A condition variable for Mutex, as eventbus::CondVar.
class CondVar {
 public:
  // Releases `mu`, waits for a signal (or a spurious wake-up), reacquires `mu`.
  void Wait(Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }
  // As Wait, but for at most `timeout`. Returns true if the timeout passed.
  bool WaitWithTimeout(Mutex* mu, absl::Duration timeout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    bool timed_out = false;
    if (mutex_internal::IsForever(timeout)) {
      cv_.wait(lock);
    } else {
      timed_out = cv_.wait_for(lock, mutex_internal::ToChrono(timeout)) == std::cv_status::timeout;
    }
    lock.release();
    return timed_out;
  }
  // As Wait, but until at most `deadline`. Returns true if the deadline passed.
  bool WaitWithDeadline(Mutex* mu, absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return WaitWithTimeout(mu, deadline - absl::Now());
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

// A one-shot event, as absl::Notification.
class Notification {
 public:
  Notification() = default;
  Notification(const Notification&) = delete;
  Notification& operator=(const Notification&) = delete;

  void Notify() {
    MutexLock lock(&mu_);
    notified_ = true;
  }
  bool HasBeenNotified() const {
    MutexLock lock(&mu_);
    return notified_;
  }
  void WaitForNotification() const {
    MutexLock lock(&mu_);
    mu_.Await(&notified_);
  }
  // Returns true once notified, false when `timeout` passes first.
  bool WaitForNotificationWithTimeout(absl::Duration timeout) const {
    MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(&notified_, timeout);
  }
  bool WaitForNotificationWithDeadline(absl::Time deadline) const {
    return WaitForNotificationWithTimeout(deadline - absl::Now());
  }

 private:
  mutable Mutex mu_;
  bool notified_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace eventbus

#endif  // EVENTBUS_SERVER_BASE_MUTEX_H_
