// Fan-out of one Raise (SPEC §5, §7): where bytes meet meaning. Takes the event's subscriber
// snapshot, encodes the event once per distinct (method, event_param), applies virtual-group
// policies, submits one batch to the writer pool, and collects one report per subscription (async:
// QUEUED ones only counted, unless asked for).
// Completion runs on a loop thread: no thread ever waits for a reply.
#ifndef EVENTBUS_SERVER_DELIVERY_DISPATCHER_H_
#define EVENTBUS_SERVER_DELIVERY_DISPATCHER_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "server/base/clock.h"
#include "server/delivery/delivery_observer.h"
#include "server/jsonrpc/encoder.h"
#include "server/net/outcome.h"
#include "server/net/writer_pool.h"
#include "server/registry/subscription.h"

namespace eventbus::delivery {

// One try to deliver to one TCP target.
struct Attempt {
  std::string member;  // "tcp:HOST:PORT[/METHOD]" or "tls:..."
  net::Outcome outcome;
  absl::Duration latency;
};

// What happened to the event for one subscription.
struct DeliveryReport {
  std::string subscription_id;
  std::string socket;
  // The final outcome: for a virtual group, that of the attempt that decided it.
  net::Outcome outcome;
  absl::Duration latency;
  // Virtual groups: every attempt, in order; empty for a plain tcp: subscription.
  std::vector<Attempt> attempts;
};

struct RaiseOptions {
  bool sync = false;
  absl::Duration timeout = absl::Milliseconds(1000);
  // Async: a QUEUED report for every subscription with no news by the answer. False: those are
  // only counted (RaiseResult::queued), so a Raise to 10k targets does not build 10k reports.
  bool queued_reports = true;
};

// The answer of one Raise.
struct RaiseResult {
  // Live subscriptions the event was delivered to.
  size_t targets = 0;
  // Async: subscriptions answered QUEUED, whether their reports are in `reports` or not.
  size_t queued = 0;
  // One per delivered subscription, in `subscribers` order; async with queued_reports false,
  // only those that are not QUEUED.
  std::vector<DeliveryReport> reports;
};

struct DispatcherOptions {
  // Server-wide event_param key ("" = off); a subscription may override it.
  std::string event_param;
  // FAILOVER skips a member that failed for this long, unless all others failed too.
  absl::Duration failover_timeout = absl::Seconds(30);
  // Told of every Raise and of each delivery's final outcome (delivery_observer.h); not owned,
  // must outlive the dispatcher. Null: nobody is told.
  DeliveryObserver* observer = nullptr;
  // A Batch submits its Fanout once it holds this many deliveries, and says it is full() then: a
  // Fanout stays alive (16 bytes a delivery) until every delivery has its outcome, and a Batch
  // keeps its events' snapshots until its answer.
  size_t max_batch_targets = 65536;
};

// Thread-safe.
class Dispatcher {
 private:
  struct RaiseState;
  struct BatchState;

 public:
  using Done = absl::AnyInvocable<void(RaiseResult)>;
  using BatchDone = absl::AnyInvocable<void(std::vector<RaiseResult>)>;

  // Names one Raise in progress, for Cancel(). Copyable; holds nothing alive. Empty for a Raise
  // that cannot be cancelled (async, or nobody to deliver to).
  class RaiseHandle {
   private:
    friend class Dispatcher;
    std::weak_ptr<RaiseState> state_;
  };

  // `pool` and `clock` must outlive the dispatcher, and the pool must be shut down before it is
  // destroyed: outcomes of group attempts still in flight call back into it.
  Dispatcher(net::WriterPool* pool, const base::Clock* clock, DispatcherOptions options);
  ~Dispatcher();

  // Delivers `event` to every subscription in `subscribers` that is live now. `done` runs once,
  // with the answer (RaiseResult): async, as soon as every delivery is queued (QUEUED or an
  // immediate failure); sync, when every target has an outcome,
  // at most `options.timeout` later (plus timer precision). Runs `done` inline when there is
  // nobody to deliver to.
  // Returns a handle for Cancel().
  RaiseHandle Raise(const std::string& event, const jsonrpc::Params& params,
                    const RaiseOptions& options,
                    std::shared_ptr<const registry::SubscriberList> subscribers, Done done);

  // Abandons a sync Raise whose caller went away (cancelled, disconnected, past its deadline):
  // its deliveries still queued or awaiting a reply are dropped on their loops (one post per loop),
  // groups try no further member, and `done` runs soon with what is known (the abandoned
  // deliveries as TIMEOUT, "abandoned ..."). A no-op once the Raise has answered. Never blocks.
  void Cancel(const RaiseHandle& handle);

  // Async events raised together (a RaiseStream message): each is raised as Raise would, with
  // the same answer, but consecutive events of one name and timeout whose live subscribers are all
  // plain tcp:/tls: targets go to the pool as one Fanout, so a batch of events costs one post per
  // loop and one answer rather than one of each per event. Events reach each target in the order
  // they were added. Built by one thread; Finish must be called once every event is added.
  class Batch {
   public:
    Batch(Batch&&) noexcept;
    Batch& operator=(Batch&&) noexcept;
    // Finish(nullptr) if it was not called.
    ~Batch();

    // Raises `event` to the live subscriptions of `subscribers` (`options.sync` must be false).
    // `event` and `params` are used only during the call: the bodies are encoded here. Its
    // answer is the Add's index in Finish's results.
    void Add(const std::string& event, const jsonrpc::Params& params, const RaiseOptions& options,
             std::shared_ptr<const registry::SubscriberList> subscribers);
    size_t size() const;
    // Holds DispatcherOptions::max_batch_targets deliveries or more: finish it and start another,
    // so that what one batch keeps alive until its answer stays bounded.
    bool full() const;
    // No more events: `done` runs once with one RaiseResult per Add, in order, as soon as every
    // delivery of every event is queued (QUEUED or an immediate failure): inline when nothing
    // was posted, otherwise on a loop thread.
    void Finish(BatchDone done);

   private:
    friend class Dispatcher;
    Batch(Dispatcher* dispatcher, std::shared_ptr<BatchState> state);
    // Submits the Fanout being built, if any.
    void SubmitRun();

    Dispatcher* dispatcher_;
    std::shared_ptr<BatchState> state_;
  };
  // A batch whose events start now (liveness and latency are measured from here).
  Batch NewBatch();

  // How many ROUND-ROBIN rotations are remembered (tests check they do not pile up).
  size_t RotationsForTesting();

 private:
  struct GroupRun;
  // Moves the members of `order` that are known to be down to its end, keeping the relative
  // order: those whose attempt failed within failover_timeout, and those whose shared connection
  // failed to connect within it and has not connected since.
  void DemoteFailedMembers(const uri::TcpTargets& members, absl::Time now,
                           std::vector<size_t>* order);
  // Tries the group's next member, or completes its report when none is left, time is up or the
  // Raise was cancelled. A member that is not the last may spend only its share of the budget
  // left (an equal split among the members left, at least kMinConnectShare) waiting for its
  // connection, so a black-holed member cannot use up the group's budget.
  // `enqueued` (may be null) runs once the attempt is enqueued or the report completed.
  void NextGroupAttempt(std::shared_ptr<GroupRun> run, absl::AnyInvocable<void()> enqueued);

  net::WriterPool* pool_;
  const base::Clock* clock_;
  DispatcherOptions options_;

  // Guards the two maps below. std::mutex, not absl::Mutex: Debian's abseil has no TSan
  // annotations, and loop threads share this state.
  std::mutex mu_;
  // When each group member (by socket text) last failed an attempt. Entries older than
  // failover_timeout mean nothing and are pruned once the map doubles (amortised O(1)).
  absl::flat_hash_map<std::string, absl::Time> failed_at_;
  size_t failed_prune_at_ = kMinPruneAt;
  // ROUND-ROBIN: the next starting member per subscription id. An entry whose subscription
  // object is gone (unsubscribed, expired, or replaced by a refresh) is pruned once the map
  // doubles; a refreshed subscription then starts its rotation again.
  struct Rotation {
    std::weak_ptr<const registry::Subscription> sub;
    uint64_t next = 0;
  };
  absl::flat_hash_map<std::string, Rotation> rr_next_;
  size_t rr_prune_at_ = kMinPruneAt;
  static constexpr size_t kMinPruneAt = 1024;

  static constexpr absl::Duration kMinConnectShare = absl::Milliseconds(100);
};

}  // namespace eventbus::delivery

#endif  // EVENTBUS_SERVER_DELIVERY_DISPATCHER_H_
