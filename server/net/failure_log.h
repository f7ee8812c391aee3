// The failure log: watches the writer pool (a PoolObserver) and tells an operator, without
// flooding, which target is failing, since when, how and how often. A target's first failure, a
// summary per interval while it keeps failing, and its recovery are warnings; a connection being
// established or closed is info; the reconnect churn (RESOLVING, CONNECTING, BACKOFF) is debug and
// counted in the summaries. Global caps per interval keep the total rate bounded however many
// targets fail.
#ifndef EVENTBUS_SERVER_NET_FAILURE_LOG_H_
#define EVENTBUS_SERVER_NET_FAILURE_LOG_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/base/clock.h"
#include "server/base/log.h"
#include "server/base/mutex.h"
#include "server/net/outcome.h"
#include "server/net/pool_observer.h"

namespace eventbus::net {

struct FailureLogOptions {
  // At most one summary line per failing target per interval; also the window of the caps below.
  absl::Duration interval = absl::Seconds(60);
  // Most failure lines (first failure, summary, recovery, no longer tracked) per interval over
  // all targets; beyond it they are counted and reported in one line at the next interval.
  size_t max_lines_per_interval = 100;
  // The same for connection lines ("target connected", "target connection closed").
  size_t max_connection_lines_per_interval = 100;
  // A failing target with no completion for this long is forgotten (logged once, as info).
  absl::Duration forget_after = absl::Minutes(10);
  // Most failing targets tracked at once; failures of more are only counted.
  size_t max_targets = 100000;
  // Longest detail kept per target (bytes); longer ones are cut.
  size_t max_detail_bytes = 256;
};

// Thread-safe: the pool's loop threads call it at once. A target has state here only while it is
// failing: a successful completion costs one atomic load while no target fails, and a lookup
// under one of 16 shard locks otherwise. Lines are formatted under the shard lock and written
// after it is released.
class TargetFailureLog final : public PoolObserver {
 public:
  // `clock` is not owned and must outlive this object.
  TargetFailureLog(const base::Clock* clock, FailureLogOptions options);
  // Stops the ticking thread, if any.
  ~TargetFailureLog() override;

  void OnComplete(const std::string& target_key, const Outcome& outcome, bool expired,
                  absl::Duration latency) override;
  // One success is as good as `count`: a failing target has recovered.
  void OnWritten(const std::string& target_key, size_t count) override {
    OnComplete(target_key, Outcome{}, false, absl::ZeroDuration());
  }
  void OnStateChange(const std::string& target_key, ConnState from, ConnState to,
                     absl::string_view detail) override;

  // Does the periodic work, at most once per interval (cheap otherwise): forgets targets quiet
  // for forget_after and reports the lines a finished interval held back. Completions and state
  // changes call it too, but without them nothing would report a burst that went quiet.
  void Tick();
  // Calls Tick() every `period` on a thread of its own until destruction (the server does this;
  // tests call Tick() themselves). At most once.
  void StartTicking(absl::Duration period);

  // Targets with failure state (tests, metrics).
  size_t failing_targets() const { return tracked_.load(std::memory_order_relaxed); }

 private:
  struct Target {
    absl::Time since;               // first failure
    absl::Time last_failure;        // latest failed completion
    absl::Time window_start;        // start of the current summary interval
    uint64_t total = 0;             // failures since `since`
    uint64_t in_window = 0;         // failures since window_start
    uint64_t connect_failures = 0;  // entries into BACKOFF since window_start
    uint64_t reconnects = 0;        // entries into CONNECTED since window_start
    uint64_t closes = 0;            // connections closed with a reason since window_start
    DeliveryCode last_code = DeliveryCode::kOk;
    bool last_expired = false;
    std::string last_detail;
  };
  struct Shard {
    mutable eventbus::Mutex mu;
    absl::flat_hash_map<std::string, Target> targets ABSL_GUARDED_BY(mu);
  };
  // A cap of lines per interval, shared by every target. Thread-safe.
  class LineBudget {
   public:
    explicit LineBudget(size_t max) : max_(max) {}
    // True when a line may be written at `now`. *rolled: this call started a new window, and
    // *suppressed holds how many lines the finished one held back.
    bool Take(absl::Time now, absl::Duration interval, bool* rolled, uint64_t* suppressed);
    // Starts a new window when the current one is over (returns true, with *suppressed as
    // above).
    bool Roll(absl::Time now, absl::Duration interval, uint64_t* suppressed);

   private:
    bool RollLocked(absl::Time now, absl::Duration interval, uint64_t* suppressed)
        ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
    const size_t max_;
    eventbus::Mutex mu_;
    absl::Time window_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
    size_t used_ ABSL_GUARDED_BY(mu_) = 0;
    uint64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
  };
  // One line to write once the shard lock is released.
  struct PendingLine {
    base::LogLevel level = base::LogLevel::kWarning;
    const char* msg = nullptr;
    std::string fields;
    bool connection = false;  // counted against the connection budget
  };

  static constexpr size_t kShards = 16;
  Shard& ShardFor(absl::string_view key);
  // Writes `line` if its budget allows; reports what a finished window held back.
  void Emit(absl::Time now, PendingLine line);
  // Logs how many lines a finished window held back (and, for failures, how many failures of
  // untracked targets there were), when there were any.
  void ReportHeldBack(uint64_t suppressed, bool connection);
  void MaybeSweep(absl::Time now);
  void Sweep(absl::Time now);
  std::string Detail(absl::string_view detail) const;
  std::string SummaryFields(const std::string& key, const Target& t, absl::Time now) const;

  const base::Clock* const clock_;
  const FailureLogOptions options_;
  std::array<Shard, kShards> shards_;
  std::atomic<size_t> tracked_{0};
  // Failures of targets not tracked because max_targets were, since the last report.
  std::atomic<uint64_t> untracked_failures_{0};
  // Unix nanoseconds of the next sweep.
  std::atomic<int64_t> next_sweep_ns_{0};
  LineBudget failure_budget_;
  LineBudget connection_budget_;

  eventbus::Mutex tick_mu_;
  bool stopping_ ABSL_GUARDED_BY(tick_mu_) = false;
  std::thread ticker_;
};

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_FAILURE_LOG_H_
