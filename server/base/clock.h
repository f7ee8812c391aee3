// Time source for everything that schedules or compares instants (expiry, timeouts, latency).
// Production code uses RealClock; tests inject a fake (tests/testing/fake_clock.h).
#ifndef EVENTBUS_SERVER_BASE_CLOCK_H_
#define EVENTBUS_SERVER_BASE_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace eventbus::base {

// Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  // Returns the process-wide instance.
  static RealClock* Get() {
    static RealClock clock;
    return &clock;
  }
};

}  // namespace eventbus::base

#endif  // EVENTBUS_SERVER_BASE_CLOCK_H_
