// Synchronisation helpers for the tests of server/net, built on std:: primitives because
// ThreadSanitizer sees those (Debian's abseil is not TSan-instrumented, so absl::Mutex and
// absl::Notification would hide every happens-before from it).
#ifndef EVENTBUS_TESTS_NET_TEST_SYNC_H_
#define EVENTBUS_TESTS_NET_TEST_SYNC_H_

#include <condition_variable>
#include <mutex>

#include "absl/time/time.h"

namespace eventbus::net {

// A one-shot event, like absl::Notification. Thread-safe.
class TestEvent {
 public:
  void Notify() {
    std::lock_guard<std::mutex> lock(mu_);
    notified_ = true;
    cv_.notify_all();
  }
  // Returns true once notified, false when `timeout` passes first.
  bool WaitFor(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] { return notified_; });
  }
  bool HasBeenNotified() {
    std::lock_guard<std::mutex> lock(mu_);
    return notified_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool notified_ = false;
};

}  // namespace eventbus::net

#endif  // EVENTBUS_TESTS_NET_TEST_SYNC_H_
