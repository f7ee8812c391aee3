// Capped exponential backoff with jitter, for retry loops (the server's store loader at start-up).
// Pure arithmetic: the caller owns the clock and the waiting.
#ifndef EVENTBUS_SERVER_BASE_BACKOFF_H_
#define EVENTBUS_SERVER_BASE_BACKOFF_H_

#include <algorithm>
#include <cstdint>
#include <random>

#include "absl/time/time.h"

namespace eventbus::base {

// Thread-compatible.
class Backoff {
 public:
  struct Options {
    absl::Duration initial = absl::Milliseconds(100);
    absl::Duration max = absl::Seconds(5);
    double multiplier = 2.0;
    // Each delay is scaled by a uniform factor in [1 - jitter, 1 + jitter], so replicas started
    // together do not retry in lockstep. 0 gives the exact schedule.
    double jitter = 0.2;
  };

  explicit Backoff(Options options, uint64_t seed = std::random_device{}())
      : options_(options), next_(options.initial), random_(seed) {}

  // Returns the delay before the next attempt: initial, initial * multiplier, ... capped at max,
  // each jittered (so at most max * (1 + jitter)).
  absl::Duration Next() {
    absl::Duration base = next_;
    next_ = std::min(next_ * options_.multiplier, options_.max);
    if (options_.jitter <= 0) return base;
    std::uniform_real_distribution<double> factor(1.0 - options_.jitter, 1.0 + options_.jitter);
    return base * factor(random_);
  }
  // Starts the schedule again from `initial`.
  void Reset() { next_ = options_.initial; }

 private:
  Options options_;
  absl::Duration next_;
  std::mt19937_64 random_;
};

}  // namespace eventbus::base

#endif  // EVENTBUS_SERVER_BASE_BACKOFF_H_
