// What the dispatcher tells a watcher (metrics) about each Raise and each of its deliveries: one
// call when a Raise starts fanning out, one call per delivery when its final outcome is known,
// including async outcomes that come after Raise answered (written, expired, connection lost).
// So for every Raise: deliveries = the outcomes told so far + those still in flight.
#ifndef EVENTBUS_SERVER_DELIVERY_DELIVERY_OBSERVER_H_
#define EVENTBUS_SERVER_DELIVERY_DELIVERY_OBSERVER_H_

#include <cstddef>
#include <string>

#include "absl/time/time.h"
#include "server/net/outcome.h"

namespace eventbus::delivery {

// Implementations must be thread-safe (loop threads and gRPC threads call at once), cheap, and
// must never block or call back into the dispatcher.
class DeliveryObserver {
 public:
  // What the observer keeps for one event in one mode (e.g. its counters), looked up once per
  // Raise so that each outcome costs no lookup. Owned by the observer, which keeps it alive as
  // long as itself; opaque to the dispatcher.
  class EventScope {
   protected:
    ~EventScope() = default;
  };

  virtual ~DeliveryObserver() = default;
  // A Raise of `event` in sync or async mode goes to `deliveries` live subscriptions (0 when
  // nobody is subscribed). Returns the scope to pass to OnOutcome for each of them.
  virtual EventScope* OnRaise(const std::string& event, bool sync, size_t deliveries) = 0;
  // One delivery of a Raise announced with `scope` ended with `code` (never kQueued): sync, its
  // reported status; async, kOk once written, otherwise the failure (immediate, like QUEUE_FULL,
  // or after the answer, like an expiry). `latency`: since the Raise started. For a virtual
  // group, the group's outcome: kOk when it delivered, otherwise its deciding failure.
  virtual void OnOutcome(EventScope* scope, net::DeliveryCode code, absl::Duration latency) = 0;
  // `count` deliveries of the same Raise ended with `code` at once (async notifications written in
  // one loop iteration). Default: that many OnOutcome.
  virtual void OnOutcomes(EventScope* scope, net::DeliveryCode code, absl::Duration latency,
                          size_t count) {
    for (size_t i = 0; i < count; ++i) OnOutcome(scope, code, latency);
  }
};

}  // namespace eventbus::delivery

#endif  // EVENTBUS_SERVER_DELIVERY_DELIVERY_OBSERVER_H_
