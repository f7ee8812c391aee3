// What the writer pool tells the layers that watch it (metrics, failure logs) about each target:
// every completed message and every connection state change. The pool calls these on the loop
// thread that owns the target, so implementations must be thread-safe (several loops call at
// once), cheap, and must never block or call back into the pool.
#ifndef EVENTBUS_SERVER_NET_POOL_OBSERVER_H_
#define EVENTBUS_SERVER_NET_POOL_OBSERVER_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/net/outcome.h"

namespace eventbus::net {

enum class ConnState { kIdle, kResolving, kConnecting, kConnected, kBackoff };
absl::string_view ConnStateName(ConnState state);

// Where the destination policy refused a destination (SPEC §10): a Subscribe's target, or an
// address about to be connected to.
enum class DenialStage { kSubscribe, kConnect };
// "subscribe", "connect".
absl::string_view DenialStageName(DenialStage stage);

class PoolObserver {
 public:
  virtual ~PoolObserver() = default;
  // A message to `target_key` ("host:port") completed with `outcome` (never kQueued), `latency`
  // after it was submitted. `expired`: its deadline came before it was completely written.
  virtual void OnComplete(const std::string& target_key, const Outcome& outcome, bool expired,
                          absl::Duration latency) = 0;
  // `count` notifications to `target_key` were completely written (each one an OnComplete with
  // kOk, told at once after one write: the fan-out's hot path). Default: that many OnComplete.
  virtual void OnWritten(const std::string& target_key, size_t count) {
    for (size_t i = 0; i < count; ++i)
      OnComplete(target_key, Outcome{}, false, absl::ZeroDuration());
  }
  // The connection to `target_key` went from `from` to `to`. Entering kBackoff, `detail` says
  // why the connect (or resolve) failed; entering kIdle after kConnected, why it was closed.
  virtual void OnStateChange(const std::string& target_key, ConnState from, ConnState to,
                             absl::string_view detail) = 0;
  // The destination policy refused `target_key` at `stage`: at kSubscribe the target of a
  // Subscribe (called on the thread that checked it), at kConnect one address it resolved to
  // (skipped; when none is left the connect fails with kDestinationDenied and OnStateChange
  // follows). `detail` names the address and the entry. Default: nothing.
  virtual void OnDestinationDenied(const std::string& target_key, DenialStage stage,
                                   absl::string_view detail) {}
};

// Tells each of several observers, in the order added. Add() only before the pool is created;
// after that the list is read-only (so it needs no lock).
class PoolObserverList final : public PoolObserver {
 public:
  void Add(PoolObserver* observer) { observers_.push_back(observer); }

  void OnComplete(const std::string& target_key, const Outcome& outcome, bool expired,
                  absl::Duration latency) override {
    for (PoolObserver* o : observers_) o->OnComplete(target_key, outcome, expired, latency);
  }
  void OnWritten(const std::string& target_key, size_t count) override {
    for (PoolObserver* o : observers_) o->OnWritten(target_key, count);
  }
  void OnStateChange(const std::string& target_key, ConnState from, ConnState to,
                     absl::string_view detail) override {
    for (PoolObserver* o : observers_) o->OnStateChange(target_key, from, to, detail);
  }
  void OnDestinationDenied(const std::string& target_key, DenialStage stage,
                           absl::string_view detail) override {
    for (PoolObserver* o : observers_) o->OnDestinationDenied(target_key, stage, detail);
  }

 private:
  std::vector<PoolObserver*> observers_;
};

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_POOL_OBSERVER_H_
