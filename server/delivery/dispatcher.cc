#include "server/delivery/dispatcher.h"

#include <algorithm>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/base/log.h"

namespace eventbus::delivery {
namespace {

using net::DeliveryCode;
using net::Outcome;

// The bodies of one event, encoded once per distinct (method, event_param) and shared by every
// target that uses that combination. Raise-local. Keys are views of strings that outlive the cache
// (the subscriptions of the Raise's snapshot and the dispatcher's options). A hash map, not a
// list: a Raise to 10k subscriptions with distinct methods would otherwise compare 50M keys.
class BodyCache {
 public:
  BodyCache(const std::string& event, const jsonrpc::Params& params)
      : event_(event), params_(params) {}

  // The index in bodies() of the body for (method, event_param), encoded on first use.
  uint32_t Index(absl::string_view method, absl::string_view event_param) {
    const Key key(method, event_param);
    // Most Raises have one combination: skip the hash for a repeat of the last one, and build the
    // map only once a second combination appears.
    if (!bodies_.empty() && last_key_ == key) return last_;
    if (bodies_.empty()) return Add(key);
    if (index_.empty()) index_.emplace(first_key_, 0);
    auto it = index_.find(key);
    last_ = it != index_.end() ? it->second : Add(key);
    last_key_ = key;
    return last_;
  }
  std::shared_ptr<const std::string> Get(absl::string_view method, absl::string_view event_param) {
    return bodies_[Index(method, event_param)];
  }
  std::vector<std::shared_ptr<const std::string>>& bodies() { return bodies_; }

 private:
  using Key = std::pair<absl::string_view, absl::string_view>;

  uint32_t Add(const Key& key) {
    const auto index = static_cast<uint32_t>(bodies_.size());
    bodies_.push_back(std::make_shared<const std::string>(
        jsonrpc::EncodeBody(event_, params_, {key.first, key.second})));
    if (index == 0) {
      first_key_ = key;
    } else {
      index_.emplace(key, index);
    }
    last_key_ = key;
    last_ = index;
    return index;
  }

  const std::string& event_;
  const jsonrpc::Params& params_;
  absl::flat_hash_map<Key, uint32_t> index_;
  std::vector<std::shared_ptr<const std::string>> bodies_;
  Key first_key_;
  Key last_key_;
  uint32_t last_ = 0;
};

// An attempt succeeded: sync, a result reply; async, completely written.
bool Delivered(const Outcome& o) { return o.code == DeliveryCode::kOk; }

// A failure of the member itself (as opposed to an RPC error reply, which proves it alive, or
// OVERLOADED, which says the server's writer loop was behind, nothing about the member).
bool MemberFailed(const Outcome& o) {
  return o.code != DeliveryCode::kOk && o.code != DeliveryCode::kRpcError &&
         o.code != DeliveryCode::kQueued && o.code != DeliveryCode::kOverloaded;
}

// The report of a PARALLEL group from its members' attempts: OK when every member is (async: or
// still QUEUED), otherwise the first failure, its detail saying how many failed.
DeliveryReport ParallelReport(std::vector<Attempt> attempts, absl::Duration latency) {
  DeliveryReport r;
  r.latency = latency;
  r.attempts = std::move(attempts);
  size_t failed = 0;
  for (const Attempt& a : r.attempts) {
    if (a.outcome.code == DeliveryCode::kOk || a.outcome.code == DeliveryCode::kQueued) continue;
    if (failed++ == 0) r.outcome = a.outcome;
  }
  if (failed == 0) {
    r.outcome = r.attempts.front().outcome;
    r.outcome.result.clear();
  } else {
    r.outcome.detail = absl::StrCat(failed, " of ", r.attempts.size(),
                                    " members failed; first: ", r.outcome.detail);
  }
  return r;
}

}  // namespace

// The reports of one Raise, and the receiver of its plain targets' outcomes (net::Fanout).
// Callbacks arrive on loop threads; the mutex is per Raise, so it is uncontended but for the
// callbacks of this one event.
struct Dispatcher::RaiseState final : net::FanoutReceiver {
  std::mutex mu;  // guards reports, news, final, pending, answered, cancelled, keys
  // The Raise's snapshot: it keeps the subscriptions `subs` points to alive.
  std::shared_ptr<const registry::SubscriberList> snapshot;
  // The live subscriptions, one per slot: a report is named from its slot's subscription only when
  // it is made (a QUEUED one that is only counted never copies its id and socket).
  std::vector<const registry::SubscriptionPtr*> subs;
  // Sync, or async with queued_reports: one report per slot.
  std::vector<DeliveryReport> reports;
  // Async without queued_reports: only the slots with news before the answer, as they came.
  std::vector<std::pair<size_t, DeliveryReport>> news;
  std::vector<bool> final;
  size_t pending = 0;
  bool answered = false;
  bool cancelled = false;
  bool sync = false;
  bool queued_reports = true;
  absl::Time start;
  const base::Clock* clock = nullptr;
  Done done;
  // Sync only: tags every request of this Raise, and the targets ("host:port") they went to, so
  // Cancel() can find them.
  std::shared_ptr<net::CancelToken> token;
  std::vector<std::string> keys;
  // Told of each slot's final outcome, exactly once per slot (null: nobody).
  DeliveryObserver* observer = nullptr;
  DeliveryObserver::EventScope* scope = nullptr;

  bool dense() const { return sync || queued_reports; }
  const registry::Subscription& sub(size_t i) const { return **subs[i]; }

  // Tells the observer that a slot ended with `code` at `at`. Callers make sure each slot is told
  // once, before its report completes the Raise (so a caller that got the answer sees it counted).
  void Observe(DeliveryCode code, absl::Time at) {
    if (observer != nullptr) observer->OnOutcome(scope, code, at - start);
  }

  // A plain target's outcome (net::FanoutReceiver): exactly once per slot.
  void OnOutcome(uint32_t slot, Outcome o) override {
    const absl::Time at = clock->Now();
    Observe(o.code, at);
    // Async: a written notification is what QUEUED promised; only failures are news.
    if (!sync && Delivered(o)) return;
    DeliveryReport r;
    r.latency = at - start;
    r.outcome = std::move(o);
    Complete(slot, std::move(r));
  }
  // Async notifications written: what QUEUED promised, so only the observer hears of them.
  void OnWritten(size_t count) override {
    if (observer != nullptr) {
      observer->OnOutcomes(scope, DeliveryCode::kOk, clock->Now() - start, count);
    }
  }

  // Records that a request goes to `key`, unless the Raise was cancelled (false then).
  bool AddKey(std::string key) {
    std::lock_guard<std::mutex> lock(mu);
    if (cancelled) return false;
    if (token != nullptr) keys.push_back(std::move(key));
    return true;
  }
  bool Cancelled() {
    std::lock_guard<std::mutex> lock(mu);
    return cancelled;
  }

  // Records the final report of slot `i`. Sync: answers when it was the last one. Async: kept only
  // while the Raise has not been answered yet (an immediate failure); later outcomes are the
  // connection's business (counted in its stats).
  void Complete(size_t i, DeliveryReport report) {
    Done to_run;
    RaiseResult out;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (answered || final[i]) return;
      final[i] = true;
      // The callbacks only know the outcome; the slot names its subscription.
      report.subscription_id = sub(i).id;
      report.socket = sub(i).socket;
      if (!dense()) {
        news.emplace_back(i, std::move(report));
        return;
      }
      reports[i] = std::move(report);
      if (!sync || --pending > 0) return;
      answered = true;
      out.targets = reports.size();
      out.reports = std::move(reports);
      to_run = std::move(done);
    }
    to_run(std::move(out));
  }

  // Async: records an attempt of a group still in progress, so the answer can show it (only
  // when every slot is reported: otherwise a slot with no outcome yet is only counted).
  void NoteAttempts(size_t i, const std::vector<Attempt>& attempts) {
    std::lock_guard<std::mutex> lock(mu);
    if (answered || final[i] || !dense()) return;
    reports[i].attempts = attempts;
  }

  // Async: answers with QUEUED for every slot that has no immediate failure (reported, or only
  // counted when queued_reports is off).
  void AnswerQueued(absl::Time now) {
    RaiseResult out;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (answered) return;
      answered = true;
      out.targets = subs.size();
      if (!dense()) {
        out.queued = subs.size() - news.size();
        // In slot order, as the subscriptions are.
        std::sort(news.begin(), news.end(),
                  [](const auto& a, const auto& b) { return a.first < b.first; });
        out.reports.reserve(news.size());
        for (auto& [slot, report] : news) out.reports.push_back(std::move(report));
      } else {
        for (size_t i = 0; i < reports.size(); ++i) {
          if (final[i]) continue;
          ++out.queued;
          reports[i].subscription_id = sub(i).id;
          reports[i].socket = sub(i).socket;
          reports[i].outcome = Outcome{};
          reports[i].outcome.code = DeliveryCode::kQueued;
          reports[i].latency = now - start;
        }
        out.reports = std::move(reports);
      }
    }
    done(std::move(out));
  }
};

// The answers of one Batch. Its Fanouts' receivers (Run) record immediate failures by slot;
// the events raised on their own (with a virtual group among their subscribers) answer through
// Raise. The answers are built when the last of them has arrived: Finish holds one arrival back,
// so nothing the building thread writes is read before it is done.
struct Dispatcher::BatchState {
  struct Event {
    // Its slots: [first_slot, first_slot + targets) of `subs`.
    uint32_t first_slot = 0;
    uint32_t targets = 0;
    // A report for every slot, QUEUED included (RaiseOptions::queued_reports).
    bool dense = false;
    // Raised on its own: its answer comes through Raise, into `own`.
    bool own = false;
  };

  // Written by the building thread only, read by the answer.
  absl::Time start;
  std::vector<Event> events;
  // Each slot's subscription, pointing into `snapshots`, which keep them (and the targets the
  // Fanouts point to) alive.
  std::vector<const registry::SubscriptionPtr*> subs;
  std::vector<std::shared_ptr<const registry::SubscriberList>> snapshots;
  // The Fanout being built, and its receiver (null: none).
  net::Fanout run;
  std::shared_ptr<net::FanoutReceiver> run_receiver;
  DeliveryObserver::EventScope* run_scope = nullptr;

  const base::Clock* clock = nullptr;
  DeliveryObserver* observer = nullptr;

  std::mutex mu;  // guards the members below
  // Immediate failures (and any outcome before the answer that is not a written notification).
  std::vector<std::pair<uint32_t, DeliveryReport>> news;
  // Answers of the events raised on their own, by event index.
  std::vector<std::pair<size_t, RaiseResult>> own;
  // Arrivals until the answer: one per Fanout submitted and per event raised on its own, plus the
  // one Finish makes.
  size_t left = 1;
  bool answered = false;
  BatchDone done;

  void OnOutcome(DeliveryObserver::EventScope* scope, uint32_t slot, Outcome o) {
    const absl::Time at = clock->Now();
    if (observer != nullptr) observer->OnOutcome(scope, o.code, at - start);
    if (Delivered(o)) return;
    std::lock_guard<std::mutex> lock(mu);
    // After the answer, an outcome is the connection's business (counted in its stats).
    if (answered) return;
    DeliveryReport r;
    r.latency = at - start;
    r.outcome = std::move(o);
    news.emplace_back(slot, std::move(r));
  }

  void Expect() {
    std::lock_guard<std::mutex> lock(mu);
    ++left;
  }

  void Arrive() {
    BatchDone to_run;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (--left > 0) return;
      answered = true;
      to_run = std::move(done);
    }
    // Nothing writes news or own once answered.
    std::vector<RaiseResult> results = Answers(clock->Now());
    if (to_run) to_run(std::move(results));
  }

  // One RaiseResult per event, as Raise's async answer would be.
  std::vector<RaiseResult> Answers(absl::Time now) {
    std::vector<RaiseResult> results(events.size());
    for (auto& [index, result] : own) results[index] = std::move(result);
    std::sort(news.begin(), news.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    auto next = news.begin();
    auto named = [&](uint32_t slot, DeliveryReport report) {
      const registry::Subscription& sub = **subs[slot];
      report.subscription_id = sub.id;
      report.socket = sub.socket;
      return report;
    };
    for (size_t e = 0; e < events.size(); ++e) {
      const Event& event = events[e];
      if (event.own) continue;
      RaiseResult& out = results[e];
      out.targets = event.targets;
      const uint32_t end = event.first_slot + event.targets;
      if (!event.dense) {
        // Only the failures, in slot order; the others are counted.
        for (; next != news.end() && next->first < end; ++next) {
          out.reports.push_back(named(next->first, std::move(next->second)));
        }
        out.queued = event.targets - out.reports.size();
        continue;
      }
      out.reports.reserve(event.targets);
      for (uint32_t slot = event.first_slot; slot < end; ++slot) {
        if (next != news.end() && next->first == slot) {
          out.reports.push_back(named(slot, std::move(next->second)));
          ++next;
          continue;
        }
        DeliveryReport queued;
        queued.outcome.code = DeliveryCode::kQueued;
        queued.latency = now - start;
        out.reports.push_back(named(slot, std::move(queued)));
        ++out.queued;
      }
    }
    return results;
  }

  // The receiver of one of the batch's Fanouts; its events share one observer scope.
  struct Run final : net::FanoutReceiver {
    Run(std::shared_ptr<BatchState> batch, DeliveryObserver::EventScope* scope)
        : batch(std::move(batch)), scope(scope) {}
    void OnOutcome(uint32_t slot, Outcome outcome) override {
      batch->OnOutcome(scope, slot, std::move(outcome));
    }
    void OnWritten(size_t count) override {
      if (batch->observer != nullptr) {
        batch->observer->OnOutcomes(scope, DeliveryCode::kOk, batch->clock->Now() - batch->start,
                                    count);
      }
    }
    const std::shared_ptr<BatchState> batch;
    DeliveryObserver::EventScope* const scope;
  };
};

// One subscription to a FAILOVER or ROUND-ROBIN group: its members are tried one at a time, in
// `order`, until one delivers or the budget ends. Each attempt's callback starts the next, so
// the run is never touched by two threads at once.
struct Dispatcher::GroupRun {
  std::shared_ptr<RaiseState> raise;
  size_t slot = 0;
  registry::SubscriptionPtr sub;
  std::vector<std::shared_ptr<const std::string>> bodies;  // per member
  std::vector<size_t> order;                               // member indexes to try
  size_t next = 0;
  absl::Time deadline;
  std::vector<Attempt> attempts;
};

Dispatcher::Dispatcher(net::WriterPool* pool, const base::Clock* clock, DispatcherOptions options)
    : pool_(pool), clock_(clock), options_(std::move(options)) {}

Dispatcher::~Dispatcher() = default;

Dispatcher::RaiseHandle Dispatcher::Raise(
    const std::string& event, const jsonrpc::Params& params, const RaiseOptions& options,
    std::shared_ptr<const registry::SubscriberList> subscribers, Done done) {
  const absl::Time now = clock_->Now();
  // Pointers into the snapshot, which the Raise keeps: no reference count touched per target.
  std::vector<const registry::SubscriptionPtr*> live;
  live.reserve(subscribers->size());
  for (const registry::SubscriptionPtr& sub : *subscribers) {
    if (sub->LiveAt(now)) live.push_back(&sub);
  }
  DeliveryObserver::EventScope* scope = nullptr;
  if (options_.observer != nullptr) {
    scope = options_.observer->OnRaise(event, options.sync, live.size());
  }
  if (live.empty()) {
    done(RaiseResult{});
    return RaiseHandle();
  }

  auto state = std::make_shared<RaiseState>();
  state->sync = options.sync;
  state->queued_reports = options.queued_reports;
  state->observer = options_.observer;
  state->scope = scope;
  // Async answers once everything is queued: what was acknowledged is never abandoned.
  if (options.sync) state->token = std::make_shared<net::CancelToken>();
  RaiseHandle handle;
  if (options.sync) handle.state_ = state;
  state->start = now;
  state->clock = clock_;
  state->done = std::move(done);
  state->snapshot = std::move(subscribers);
  {
    std::lock_guard<std::mutex> lock(state->mu);
    if (state->dense()) state->reports.resize(live.size());
    state->final.assign(live.size(), false);
    state->pending = live.size();
    state->subs = std::move(live);
  }
  // Set once above, never changed again: read without the lock.
  const std::vector<const registry::SubscriptionPtr*>& subs = state->subs;

  const absl::Time deadline = now + options.timeout;
  BodyCache bodies(event, params);
  // Plain targets: one Fanout, whose outcomes come to `state` by slot.
  net::Fanout fanout;
  fanout.targets.reserve(subs.size());
  fanout.expect_reply = options.sync;
  fanout.deadline = deadline;
  fanout.cancel = state->token;
  // Members of PARALLEL groups.
  std::vector<net::Request> batch;
  std::vector<std::shared_ptr<GroupRun>> groups;

  for (size_t i = 0; i < subs.size(); ++i) {
    const registry::Subscription& sub = **subs[i];
    const std::string& event_param = sub.event_param ? *sub.event_param : options_.event_param;
    const uri::TcpTargets& members = sub.target.targets;

    if (!sub.target.is_virtual) {
      fanout.targets.push_back(net::Fanout::Target{&members[0], static_cast<uint32_t>(i),
                                                   bodies.Index(members[0].method, event_param)});
      if (state->token != nullptr) state->keys.push_back(members[0].Key());
      continue;
    }

    if (sub.target.policy == uri::VirtualPolicy::kParallel) {
      // Every member gets the event; the group is decided when all members are.
      struct Parallel {
        std::mutex mu;
        std::vector<Attempt> attempts;
        size_t left;
      };
      auto par = std::make_shared<Parallel>();
      par->attempts.resize(members.size());
      par->left = members.size();
      for (size_t m = 0; m < members.size(); ++m) {
        par->attempts[m].member = members[m].ToString();
        // Async: a member with no news by the answer is queued.
        par->attempts[m].outcome.code = DeliveryCode::kQueued;
        net::Request req;
        req.target = members[m];
        req.body = bodies.Get(members[m].method, event_param);
        req.expect_reply = options.sync;
        req.deadline = deadline;
        req.cancel = state->token;
        if (state->token != nullptr) state->keys.push_back(req.target.Key());
        req.done = [state, i, m, par, sync = options.sync, clock = clock_](Outcome o) {
          const absl::Time at = clock->Now();
          const bool delivered = Delivered(o);
          std::vector<Attempt> attempts;
          bool last;
          {
            std::lock_guard<std::mutex> lock(par->mu);
            // Counted in async mode too: the group's outcome is known once every member's is.
            last = --par->left == 0;
            // Async: a written member stays QUEUED in the answer; only failures are news.
            if (sync || !delivered) {
              par->attempts[m].outcome = std::move(o);
              par->attempts[m].latency = at - state->start;
            }
            if (!last && (sync || delivered)) return;
            attempts = par->attempts;
          }
          DeliveryReport r = ParallelReport(std::move(attempts), at - state->start);
          if (last) {
            // Async: members still shown QUEUED were written.
            state->Observe(
                r.outcome.code == DeliveryCode::kQueued ? DeliveryCode::kOk : r.outcome.code, at);
          }
          if (sync || !delivered) state->Complete(i, std::move(r));
        };
        batch.push_back(std::move(req));
      }
      continue;
    }

    auto run = std::make_shared<GroupRun>();
    run->raise = state;
    run->slot = i;
    run->sub = *subs[i];
    run->deadline = deadline;
    for (const uri::TcpTarget& member : members) {
      run->bodies.push_back(bodies.Get(member.method, event_param));
    }
    const size_t n = members.size();
    if (sub.target.policy == uri::VirtualPolicy::kFailover) {
      // Members in order; those that failed within failover_timeout go last, so they are tried
      // only when every other member failed too.
      for (size_t m = 0; m < n; ++m) run->order.push_back(m);
      DemoteFailedMembers(members, now, &run->order);
    } else {
      // ROUND-ROBIN: rotate the starting member; in sync mode a failed member hands over. A
      // member known to be down is passed over (it would only wait for its reconnect).
      uint64_t start;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (rr_next_.size() >= rr_prune_at_) {
          absl::erase_if(rr_next_, [](const auto& entry) { return entry.second.sub.expired(); });
          rr_prune_at_ = std::max(kMinPruneAt, 2 * rr_next_.size());
        }
        Rotation& rotation = rr_next_[sub.id];
        rotation.sub = *subs[i];
        start = rotation.next++;
      }
      for (size_t k = 0; k < n; ++k) run->order.push_back((start + k) % n);
      DemoteFailedMembers(members, now, &run->order);
    }
    groups.push_back(std::move(run));
  }

  // Async answers once everything is enqueued; sync answers from the last outcome.
  absl::AnyInvocable<void()> all_enqueued;
  if (!options.sync) {
    all_enqueued = [state, clock = clock_] { state->AnswerQueued(clock->Now()); };
  }
  fanout.bodies = std::move(bodies.bodies());
  fanout.receiver = state;
  if (batch.empty() && groups.empty()) {
    pool_->Submit(std::move(fanout), std::move(all_enqueued));
    return handle;
  }
  // PARALLEL members go in a batch of their own, and groups submit their own first attempts; the
  // async answer must wait for all of those, so their completions are counted together.
  struct Join {
    std::atomic<size_t> left;
    absl::AnyInvocable<void()> then;
  };
  auto join = std::make_shared<Join>();
  join->left = groups.size() + 2;
  join->then = std::move(all_enqueued);
  auto arrive = [join] {
    if (join->left.fetch_sub(1, std::memory_order_acq_rel) == 1 && join->then) join->then();
  };
  pool_->Submit(std::move(fanout), arrive);
  pool_->Submit(std::move(batch), arrive);
  for (auto& run : groups) NextGroupAttempt(std::move(run), arrive);
  return handle;
}

Dispatcher::Batch Dispatcher::NewBatch() {
  auto state = std::make_shared<BatchState>();
  state->start = clock_->Now();
  state->clock = clock_;
  state->observer = options_.observer;
  return Batch(this, std::move(state));
}

Dispatcher::Batch::Batch(Dispatcher* dispatcher, std::shared_ptr<BatchState> state)
    : dispatcher_(dispatcher), state_(std::move(state)) {}
Dispatcher::Batch::Batch(Batch&&) noexcept = default;
Dispatcher::Batch& Dispatcher::Batch::operator=(Batch&&) noexcept = default;
Dispatcher::Batch::~Batch() {
  if (state_ != nullptr) Finish(nullptr);
}

size_t Dispatcher::Batch::size() const { return state_->events.size(); }
bool Dispatcher::Batch::full() const {
  return state_->subs.size() >= dispatcher_->options_.max_batch_targets;
}

void Dispatcher::Batch::Add(const std::string& event, const jsonrpc::Params& params,
                            const RaiseOptions& options,
                            std::shared_ptr<const registry::SubscriberList> subscribers) {
  BatchState& s = *state_;
  const size_t index = s.events.size();
  BatchState::Event& e = s.events.emplace_back();
  e.first_slot = static_cast<uint32_t>(s.subs.size());
  e.dense = options.queued_reports;
  bool plain = true;
  for (const registry::SubscriptionPtr& sub : *subscribers) {
    if (!sub->LiveAt(s.start)) continue;
    if (sub->target.is_virtual) {
      plain = false;
      break;
    }
    s.subs.push_back(&sub);
  }
  if (!plain) {
    // Groups take their own way (Raise), after what was added before has been submitted.
    s.subs.resize(e.first_slot);
    e.own = true;
    SubmitRun();
    s.Expect();
    dispatcher_->Raise(event, params, options, std::move(subscribers),
                       [state = state_, index](RaiseResult result) {
                         {
                           std::lock_guard<std::mutex> lock(state->mu);
                           state->own.emplace_back(index, std::move(result));
                         }
                         state->Arrive();
                       });
    return;
  }
  e.targets = static_cast<uint32_t>(s.subs.size() - e.first_slot);
  DeliveryObserver::EventScope* scope = nullptr;
  if (s.observer != nullptr) scope = s.observer->OnRaise(event, /*sync=*/false, e.targets);
  if (e.targets == 0) return;

  const absl::Time deadline = s.start + options.timeout;
  if (s.run_receiver != nullptr &&
      (scope != s.run_scope || deadline != s.run.deadline ||
       s.run.targets.size() >= dispatcher_->options_.max_batch_targets)) {
    SubmitRun();
  }
  if (s.run_receiver == nullptr) {
    s.run_receiver = std::make_shared<BatchState::Run>(state_, scope);
    s.run_scope = scope;
    s.run.deadline = deadline;
  }
  BodyCache bodies(event, params);
  const auto base = static_cast<uint32_t>(s.run.bodies.size());
  for (size_t slot = e.first_slot; slot < s.subs.size(); ++slot) {
    const registry::Subscription& sub = **s.subs[slot];
    const std::string& event_param =
        sub.event_param ? *sub.event_param : dispatcher_->options_.event_param;
    const uri::TcpTarget& target = sub.target.targets[0];
    s.run.targets.push_back(net::Fanout::Target{&target, static_cast<uint32_t>(slot),
                                                base + bodies.Index(target.method, event_param)});
  }
  for (auto& body : bodies.bodies()) s.run.bodies.push_back(std::move(body));
  s.snapshots.push_back(std::move(subscribers));
}

void Dispatcher::Batch::SubmitRun() {
  BatchState& s = *state_;
  if (s.run_receiver == nullptr) return;
  s.run.receiver = std::move(s.run_receiver);
  s.run_receiver = nullptr;
  s.Expect();
  dispatcher_->pool_->Submit(std::exchange(s.run, net::Fanout{}),
                             [state = state_] { state->Arrive(); });
}

void Dispatcher::Batch::Finish(BatchDone done) {
  SubmitRun();
  std::shared_ptr<BatchState> state = std::move(state_);
  {
    std::lock_guard<std::mutex> lock(state->mu);
    state->done = std::move(done);
  }
  state->Arrive();
}

void Dispatcher::Cancel(const RaiseHandle& handle) {
  std::shared_ptr<RaiseState> state = handle.state_.lock();
  if (state == nullptr) return;
  std::vector<std::string> keys;
  {
    std::lock_guard<std::mutex> lock(state->mu);
    if (state->answered || state->cancelled || state->token == nullptr) return;
    state->cancelled = true;
    keys = state->keys;
  }
  pool_->Cancel(state->token, keys);
}

size_t Dispatcher::RotationsForTesting() {
  std::lock_guard<std::mutex> lock(mu_);
  return rr_next_.size();
}

void Dispatcher::DemoteFailedMembers(const uri::TcpTargets& members, absl::Time now,
                                     std::vector<size_t>* order) {
  std::vector<size_t> fresh, failed;
  for (size_t m : *order) {
    bool down;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = failed_at_.find(members[m].ToString());
      down = it != failed_at_.end() && now - it->second < options_.failover_timeout;
    }
    // The member's connection (shared with every subscription to that target) may have failed
    // for someone else's delivery: that counts too, until it connects again.
    if (!down) {
      std::optional<net::TargetStats> stats = pool_->Stats(members[m].Key());
      down = stats && stats->state != net::ConnState::kConnected &&
             now - stats->last_connect_failure < options_.failover_timeout;
    }
    (down ? failed : fresh).push_back(m);
  }
  *order = std::move(fresh);
  order->insert(order->end(), failed.begin(), failed.end());
}

void Dispatcher::NextGroupAttempt(std::shared_ptr<GroupRun> run,
                                  absl::AnyInvocable<void()> enqueued) {
  RaiseState& state = *run->raise;
  const absl::Time now = clock_->Now();
  const bool out_of_members = run->next >= run->order.size();
  const uri::TcpTarget* member =
      out_of_members ? nullptr : &run->sub->target.targets[run->order[run->next]];
  // Registering the target fails once the Raise is cancelled: no further member is tried.
  if (out_of_members || now >= run->deadline || !state.AddKey(member->Key())) {
    DeliveryReport r;
    r.latency = now - state.start;
    r.attempts = run->attempts;
    if (!out_of_members && now < run->deadline) {
      r.outcome.code = DeliveryCode::kTimeout;
      r.outcome.detail = "abandoned: the Raise was cancelled";
    } else if (run->attempts.empty()) {
      r.outcome.code = DeliveryCode::kTimeout;
      r.outcome.detail = "no time left for any member";
    } else {
      r.outcome = run->attempts.back().outcome;
      r.outcome.detail =
          absl::StrCat("all ", run->attempts.size(), " attempts failed; last: ", r.outcome.detail);
    }
    state.Observe(r.outcome.code, now);
    state.Complete(run->slot, std::move(r));
    if (enqueued) enqueued();
    return;
  }

  const size_t members_left = run->order.size() - run->next;
  const size_t m = run->order[run->next++];
  net::Request req;
  req.target = *member;
  req.body = run->bodies[m];
  req.expect_reply = state.sync;
  req.deadline = run->deadline;
  req.fail_fast = true;
  req.cancel = state.token;
  if (members_left > 1) {
    // This member's share of what is left; the last member gets all of it.
    const absl::Duration share =
        std::max((run->deadline - now) / static_cast<int64_t>(members_left), kMinConnectShare);
    req.connect_deadline = std::min(now + share, run->deadline);
  }
  req.done = [this, run, member_text = member->ToString(), started = now](Outcome o) mutable {
    RaiseState& state = *run->raise;
    const absl::Time at = clock_->Now();
    const bool cancelled = state.Cancelled();
    if (cancelled) {
      // An abandoned attempt says nothing about the member.
    } else if (MemberFailed(o)) {
      std::lock_guard<std::mutex> lock(mu_);
      failed_at_[member_text] = at;
      if (failed_at_.size() >= failed_prune_at_) {
        absl::erase_if(failed_at_, [&](const auto& entry) {
          return at - entry.second >= options_.failover_timeout;
        });
        failed_prune_at_ = std::max(kMinPruneAt, 2 * failed_at_.size());
      }
    } else {
      std::lock_guard<std::mutex> lock(mu_);
      failed_at_.erase(member_text);
    }
    run->attempts.push_back({member_text, o, at - started});
    if (Delivered(o) || cancelled) state.Observe(o.code, at);
    if (Delivered(o)) {
      DeliveryReport r;
      r.latency = at - state.start;
      r.outcome = std::move(o);
      r.attempts = run->attempts;
      if (!state.sync) {
        // Async: the answer (QUEUED) has usually gone already; keep the attempts if not.
        state.NoteAttempts(run->slot, run->attempts);
        return;
      }
      state.Complete(run->slot, std::move(r));
      return;
    }
    if (cancelled) {
      DeliveryReport r;
      r.latency = at - state.start;
      r.outcome = std::move(o);
      r.attempts = run->attempts;
      state.Complete(run->slot, std::move(r));
      return;
    }
    state.NoteAttempts(run->slot, run->attempts);
    // Hand the event to the next member. Submit posts to the member's loop: this callback stays
    // short and never waits.
    NextGroupAttempt(std::move(run), nullptr);
  };
  std::vector<net::Request> one;
  one.push_back(std::move(req));
  pool_->Submit(std::move(one), std::move(enqueued));
}

}  // namespace eventbus::delivery
