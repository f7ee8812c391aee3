// StoreLoader brings the subscription store up at start-up: an attempt (SubscriptionManager::Start,
// which reads every subscription into the registry) and, while attempts fail, the next one after a
// capped exponential backoff with jitter. EventBusServer drives it (server.h describes when), and
// EventBusServiceImpl asks Ready() before every call, so nothing is served from an empty registry.
#ifndef EVENTBUS_SERVER_SERVICE_STORE_LOADER_H_
#define EVENTBUS_SERVER_SERVICE_STORE_LOADER_H_

#include <atomic>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/base/backoff.h"
#include "server/base/clock.h"
#include "server/base/mutex.h"

namespace eventbus::service {

// States:
//
//   kLoading --attempt succeeds--------------> kLoaded   (final)
//   kLoading --attempt fails, retry on-------> kLoading (next attempt due after the backoff)
//   kLoading --attempt fails, retry off------> kFailed   (final; the caller reports last_error())
//
// Thread-safe. Step() runs the attempts and is called by one thread at a time (the server's store
// thread, or a test with a fake clock); the accessors may be called from any thread meanwhile.
class StoreLoader {
 public:
  enum class State { kLoading, kLoaded, kFailed };

  struct Options {
    // 100 ms, doubling, up to 5 s, +-20%.
    base::Backoff::Options backoff;
    // Off: the first failure is final (kFailed), for stores whose failures a retry cannot fix.
    bool retry = true;
    // While attempts keep failing, the first failure is logged (warning), then every
    // log_every-th, and any failure whose message differs from the previous one.
    int log_every = 10;
  };

  // Loads by calling `load` (blocking; OK once the store is loaded). `store_name` names the store
  // in messages (the --store url). `clock` must outlive the loader.
  StoreLoader(std::string store_name, absl::AnyInvocable<absl::Status()> load,
              const base::Clock* clock, Options options);

  // Runs the attempt due at clock->Now(), if one is; returns when the next one is due:
  // InfiniteFuture once loaded or failed. Blocks for as long as the attempt takes.
  absl::Time Step();

  State state() const;
  // True once loaded (one atomic load: the service asks on every call).
  bool loaded() const { return loaded_.load(std::memory_order_acquire); }
  // OK once loaded; before, UNAVAILABLE `store "URL": not loaded yet: <last error>`.
  absl::Status Ready() const;
  // The last attempt's error (OK before the first attempt and once loaded).
  absl::Status last_error() const;
  // Attempts made so far.
  int attempts() const;

  // Whether the `failures`-th failure in a row (1-based) is logged; see Options::log_every.
  static bool ShouldLogFailure(int failures, bool message_changed, int log_every);

 private:
  const std::string name_;
  absl::AnyInvocable<absl::Status()> load_;  // called by Step() only, without mu_
  const base::Clock* const clock_;
  const Options options_;
  std::atomic<bool> loaded_{false};

  mutable eventbus::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kLoading;
  int attempts_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  absl::Time first_attempt_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time next_attempt_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  base::Backoff backoff_ ABSL_GUARDED_BY(mu_);
};

}  // namespace eventbus::service

#endif  // EVENTBUS_SERVER_SERVICE_STORE_LOADER_H_
