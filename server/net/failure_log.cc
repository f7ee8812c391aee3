#include "server/net/failure_log.h"

#include <utility>
#include <vector>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"

namespace eventbus::net {
namespace {

std::string Timestamp(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone());
}

// "1m30.25s": whole milliseconds, readable.
std::string Span(absl::Duration d) {
  return absl::FormatDuration(absl::Trunc(d, absl::Milliseconds(1)));
}

std::string StatusFields(DeliveryCode code, bool expired) {
  std::string status = base::LogValue(DeliveryCodeName(code));
  if (expired) absl::StrAppend(&status, " expired=true");
  return status;
}

}  // namespace

bool TargetFailureLog::LineBudget::Take(absl::Time now, absl::Duration interval, bool* rolled,
                                        uint64_t* suppressed) {
  eventbus::MutexLock lock(&mu_);
  *rolled = RollLocked(now, interval, suppressed);
  if (used_ < max_) {
    ++used_;
    return true;
  }
  ++suppressed_;
  return false;
}

bool TargetFailureLog::LineBudget::Roll(absl::Time now, absl::Duration interval,
                                        uint64_t* suppressed) {
  eventbus::MutexLock lock(&mu_);
  return RollLocked(now, interval, suppressed);
}

bool TargetFailureLog::LineBudget::RollLocked(absl::Time now, absl::Duration interval,
                                              uint64_t* suppressed) {
  *suppressed = 0;
  if (now - window_start_ < interval) return false;
  *suppressed = suppressed_;
  window_start_ = now;
  used_ = 0;
  suppressed_ = 0;
  return true;
}

TargetFailureLog::TargetFailureLog(const base::Clock* clock, FailureLogOptions options)
    : clock_(clock),
      options_(std::move(options)),
      failure_budget_(options_.max_lines_per_interval),
      connection_budget_(options_.max_connection_lines_per_interval) {}

TargetFailureLog::~TargetFailureLog() {
  {
    eventbus::MutexLock lock(&tick_mu_);
    stopping_ = true;
  }
  if (ticker_.joinable()) ticker_.join();
}

void TargetFailureLog::StartTicking(absl::Duration period) {
  ticker_ = std::thread([this, period] {
    eventbus::MutexLock lock(&tick_mu_);
    while (!tick_mu_.AwaitWithTimeout(&stopping_, period)) {
      // Tick takes other locks only (shards, budgets), never tick_mu_.
      Tick();
    }
  });
}

TargetFailureLog::Shard& TargetFailureLog::ShardFor(absl::string_view key) {
  return shards_[absl::Hash<absl::string_view>()(key) % kShards];
}

std::string TargetFailureLog::Detail(absl::string_view detail) const {
  if (detail.size() <= options_.max_detail_bytes) return std::string(detail);
  return absl::StrCat(detail.substr(0, options_.max_detail_bytes), "...");
}

std::string TargetFailureLog::SummaryFields(const std::string& key, const Target& t,
                                            absl::Time now) const {
  return absl::StrCat(
      "target=", base::LogValue(key), " failures=", t.in_window,
      " over=", Span(now - t.window_start), " total=", t.total, " since=", Timestamp(t.since),
      " last_status=", StatusFields(t.last_code, t.last_expired),
      " last_detail=", base::LogValue(t.last_detail), " connect_failures=", t.connect_failures,
      " reconnects=", t.reconnects, " closes=", t.closes);
}

void TargetFailureLog::OnComplete(const std::string& target_key, const Outcome& outcome,
                                  bool expired, absl::Duration /*latency*/) {
  // Refused because the server's own loop was behind: says nothing about the target (the
  // OVERLOADED count in the metrics says it about the server).
  if (outcome.code == DeliveryCode::kOverloaded) return;
  const bool failed = outcome.code != DeliveryCode::kOk || expired;
  // The OK path: nothing to do while no target is failing. A target's completions all come from
  // its one loop thread, so that thread always sees its own target's entry being counted here.
  if (!failed && tracked_.load(std::memory_order_relaxed) == 0) return;
  const absl::Time now = clock_->Now();
  PendingLine line;
  {
    Shard& shard = ShardFor(target_key);
    eventbus::MutexLock lock(&shard.mu);
    auto it = shard.targets.find(target_key);
    if (!failed) {
      if (it != shard.targets.end()) {
        const Target& t = it->second;
        line.msg = "target recovered";
        line.fields =
            absl::StrCat("target=", base::LogValue(target_key), " failed_for=", Span(now - t.since),
                         " failures=", t.total, " since=", Timestamp(t.since));
        shard.targets.erase(it);
        tracked_.fetch_sub(1, std::memory_order_relaxed);
      }
    } else if (it == shard.targets.end()) {
      if (tracked_.load(std::memory_order_relaxed) >= options_.max_targets) {
        untracked_failures_.fetch_add(1, std::memory_order_relaxed);
      } else {
        Target& t = shard.targets[target_key];
        tracked_.fetch_add(1, std::memory_order_relaxed);
        t.since = t.last_failure = t.window_start = now;
        t.total = 1;
        t.last_code = outcome.code;
        t.last_expired = expired;
        t.last_detail = Detail(outcome.detail);
        line.msg = "target failing";
        line.fields = absl::StrCat("target=", base::LogValue(target_key),
                                   " status=", StatusFields(outcome.code, expired),
                                   " detail=", base::LogValue(t.last_detail));
      }
    } else {
      Target& t = it->second;
      ++t.total;
      ++t.in_window;
      t.last_failure = now;
      t.last_code = outcome.code;
      t.last_expired = expired;
      t.last_detail = Detail(outcome.detail);
      if (now - t.window_start >= options_.interval) {
        line.msg = "target still failing";
        line.fields = SummaryFields(target_key, t, now);
        // The interval restarts whether or not the global cap lets this line through, so a
        // target asks for a line at most once per interval.
        t.window_start = now;
        t.in_window = t.connect_failures = t.reconnects = t.closes = 0;
      }
    }
  }
  if (line.msg != nullptr) Emit(now, std::move(line));
  MaybeSweep(now);
}

void TargetFailureLog::OnStateChange(const std::string& target_key, ConnState from, ConnState to,
                                     absl::string_view detail) {
  if (base::LogEnabled(base::LogLevel::kDebug)) {
    base::LogLine(base::LogLevel::kDebug, "target connection state",
                  absl::StrCat("target=", base::LogValue(target_key), " from=", ConnStateName(from),
                               " to=", ConnStateName(to), " detail=", base::LogValue(detail)));
  }
  const bool connected = to == ConnState::kConnected;
  const bool closed = from == ConnState::kConnected && to == ConnState::kIdle && !detail.empty();
  const bool connect_failed = to == ConnState::kBackoff;
  if (!connected && !closed && !connect_failed) return;
  bool failing = false;
  absl::Time now = clock_->Now();
  if (tracked_.load(std::memory_order_relaxed) > 0) {
    Shard& shard = ShardFor(target_key);
    eventbus::MutexLock lock(&shard.mu);
    auto it = shard.targets.find(target_key);
    if (it != shard.targets.end()) {
      // A failing target's churn goes into its summary instead of lines of its own.
      failing = true;
      Target& t = it->second;
      if (connected) ++t.reconnects;
      if (closed) ++t.closes;
      if (connect_failed) ++t.connect_failures;
    }
  }
  if (!failing && (connected || closed)) {
    PendingLine line;
    line.level = base::LogLevel::kInfo;
    line.connection = true;
    if (connected) {
      line.msg = "target connected";
      line.fields = absl::StrCat("target=", base::LogValue(target_key));
    } else {
      line.msg = "target connection closed";
      line.fields = absl::StrCat("target=", base::LogValue(target_key),
                                 " reason=", base::LogValue(Detail(detail)));
    }
    Emit(now, std::move(line));
  }
  if (tracked_.load(std::memory_order_relaxed) > 0) MaybeSweep(now);
}

void TargetFailureLog::Emit(absl::Time now, PendingLine line) {
  if (!base::LogEnabled(line.level)) return;
  LineBudget& budget = line.connection ? connection_budget_ : failure_budget_;
  bool rolled = false;
  uint64_t suppressed = 0;
  bool allowed = budget.Take(now, options_.interval, &rolled, &suppressed);
  if (rolled) ReportHeldBack(suppressed, line.connection);
  if (allowed) base::LogLine(line.level, line.msg, line.fields);
}

void TargetFailureLog::ReportHeldBack(uint64_t suppressed, bool connection) {
  if (connection) {
    if (suppressed == 0) return;
    EB_LOG(kInfo, "more target connection changes than logged", "suppressed=", suppressed,
           " limit=", options_.max_connection_lines_per_interval,
           " interval=", Span(options_.interval));
    return;
  }
  uint64_t untracked = untracked_failures_.exchange(0, std::memory_order_relaxed);
  if (suppressed == 0 && untracked == 0) return;
  EB_LOG(kWarning, "more targets failing than logged", "suppressed=", suppressed,
         " limit=", options_.max_lines_per_interval, " interval=", Span(options_.interval),
         " failing_targets=", tracked_.load(std::memory_order_relaxed),
         " untracked_failures=", untracked);
}

void TargetFailureLog::MaybeSweep(absl::Time now) {
  const int64_t now_ns = absl::ToUnixNanos(now);
  int64_t due = next_sweep_ns_.load(std::memory_order_relaxed);
  if (now_ns < due) return;
  const int64_t next = absl::ToUnixNanos(now + options_.interval);
  // One caller per interval sweeps; the others go on.
  if (!next_sweep_ns_.compare_exchange_strong(due, next, std::memory_order_relaxed)) return;
  Sweep(now);
}

void TargetFailureLog::Sweep(absl::Time now) {
  std::vector<PendingLine> lines;
  for (Shard& shard : shards_) {
    eventbus::MutexLock lock(&shard.mu);
    for (auto it = shard.targets.begin(); it != shard.targets.end();) {
      const Target& t = it->second;
      if (now - t.last_failure < options_.forget_after) {
        ++it;
        continue;
      }
      PendingLine line;
      line.level = base::LogLevel::kInfo;
      line.msg = "failing target quiet, no longer tracked";
      line.fields = absl::StrCat("target=", base::LogValue(it->first),
                                 " quiet_for=", Span(now - t.last_failure), " failures=", t.total,
                                 " since=", Timestamp(t.since),
                                 " last_status=", StatusFields(t.last_code, t.last_expired),
                                 " last_detail=", base::LogValue(t.last_detail));
      lines.push_back(std::move(line));
      shard.targets.erase(it++);
      tracked_.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  for (PendingLine& line : lines) Emit(now, std::move(line));
  // Report what a finished interval held back even when no further line is due.
  for (bool connection : {false, true}) {
    uint64_t suppressed = 0;
    if ((connection ? connection_budget_ : failure_budget_)
            .Roll(now, options_.interval, &suppressed)) {
      ReportHeldBack(suppressed, connection);
    }
  }
}

void TargetFailureLog::Tick() { MaybeSweep(clock_->Now()); }

}  // namespace eventbus::net
