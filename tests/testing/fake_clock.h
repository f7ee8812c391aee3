// A manually driven base::Clock for tests of anything that schedules or compares instants
// (expiry, timeouts). Starts at a fixed instant and moves only when told to.
#ifndef EVENTBUS_TESTS_TESTING_FAKE_CLOCK_H_
#define EVENTBUS_TESTS_TESTING_FAKE_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "server/base/clock.h"
#include "server/base/mutex.h"

namespace eventbus::testing {

// Thread-safe.
class FakeClock : public base::Clock {
 public:
  // 2023-11-14T22:13:20Z: a fixed, readable instant.
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1700000000)) : now_(start) {}

  absl::Time Now() const override {
    eventbus::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    eventbus::MutexLock lock(&mu_);
    now_ += d;
  }
  void Set(absl::Time t) {
    eventbus::MutexLock lock(&mu_);
    now_ = t;
  }

 private:
  mutable eventbus::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace eventbus::testing

#endif  // EVENTBUS_TESTS_TESTING_FAKE_CLOCK_H_
