// The writer pool (SPEC §4): N event loops, each on its own thread, each owning for their whole
// life the connections to the targets that hash to it. One persistent TCP connection per target
// host:port (one more, running TLS, for tls: targets), shared by every subscription to it;
// requests are pipelined on it. Submit() is the one
// way in: it groups a batch by owning loop and posts one closure per loop; a Fanout (one event to
// many targets) costs one allocation per loop rather than any per target. Cancel() is the way
// back out for requests their submitter abandoned.
#ifndef EVENTBUS_SERVER_NET_WRITER_POOL_H_
#define EVENTBUS_SERVER_NET_WRITER_POOL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/base/clock.h"
#include "server/net/admission.h"
#include "server/net/outcome.h"
#include "server/net/pool_observer.h"
#include "server/net/resolver.h"
#include "server/policy/destination_policy.h"
#include "server/uri/socket_uri.h"

namespace eventbus::net {

// TLS to tls: targets (SPEC §10): one client context per pool, built by WriterPool::Create.
struct TargetTlsOptions {
  // PEM file of the CA certificates that verify targets; empty: the system store.
  std::string ca_file;
  // PEM client certificate (chain) and its private key, presented to targets that ask for one
  // (mTLS). Both or neither.
  std::string cert_file;
  std::string key_file;
};

struct PoolOptions {
  // Event-loop threads; 0 = number of cores.
  int num_loops = 0;
  // Per-target queue bound: messages not yet completely written (plus, in sync mode, requests
  // awaiting a reply count against max_queue_messages too).
  size_t max_queue_messages = 10000;
  size_t max_queue_bytes = 16 << 20;
  // Non-blocking connect gives up after this long (CONNECT_FAILED); for tls: targets the TLS
  // handshake that follows gets as long again (TLS_FAILED).
  absl::Duration connect_timeout = absl::Seconds(2);
  // A DNS lookup gives up after this long (RESOLVE_FAILED "resolve \"h\": timed out after N ms").
  absl::Duration resolve_timeout = absl::Seconds(2);
  // Reconnect backoff: starts at min, doubles per failure up to max, with +-20% jitter.
  absl::Duration min_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(5);
  // A reply larger than this closes the connection (SPEC §3).
  size_t max_reply_bytes = 1 << 20;
  // A connection with nothing queued or outstanding for this long is closed and forgotten.
  absl::Duration idle_timeout = absl::Minutes(5);
  // At most this many bytes are written per wakeup per connection (fairness across targets).
  size_t max_write_bytes_per_wakeup = 1 << 20;
  // Most target connections open (or being opened) at once, over all loops; each holds one fd.
  // 0 = the target share of the soft RLIMIT_NOFILE (net/fd_budget.h) when the pool is created.
  // At the limit, idle connections are closed to make room; when none is idle, a delivery to a
  // new target fails at once with kConnectFailed ("too many target connections (limit N)").
  size_t max_target_connections = 0;
  // Bytes of unfinished replies that one loop's connections may buffer together. Beyond it the
  // connection holding the most is closed (its outstanding requests: kConnectionLost). Each
  // connection also drops a partial reply as soon as it has no request outstanding (a reply that
  // can only be unmatched).
  size_t max_reply_buffer_bytes_per_loop = 32 << 20;
  // Told of every completed message and connection state change (net/pool_observer.h); not
  // owned, must outlive the pool. Null: nobody is told.
  PoolObserver* observer = nullptr;
  // The destination policy (SPEC §10), asked for every address before it is connected to (denied
  // addresses are skipped; none left: kDestinationDenied) and by CheckDestination. Not owned,
  // must outlive the pool. Null: every destination is allowed.
  const policy::DestinationPolicy* destination_policy = nullptr;
  // The resolver's blocking lookup (ResolverOptions::lookup). Null: getaddrinfo. A test seam.
  std::function<ResolveResult(const std::string& host)> resolve_lookup;
  // Trust store and client certificate for tls: targets.
  TargetTlsOptions tls;
  // Admission of async notifications (net/admission.h): each loop refuses one up front
  // (kOverloaded) when it predicts it would write it after its deadline. These are the flush costs
  // it assumes until it has measured its own (on the first cold burst, say).
  FlushCosts initial_flush_costs;
  // The clock of admission: when a batch reaches its loop, what the loop's flushes take, and the
  // comparison with Request::deadline. Not owned, must outlive the pool. Null: the real clock. A
  // test seam (connection timers and backoff keep the real clock).
  const base::Clock* clock = nullptr;
};

// Lets a submitter abandon the requests it tagged with it (WriterPool::Cancel), e.g. a sync Raise
// whose caller went away. Thread-safe.
class CancelToken {
 public:
  CancelToken();
  // Unique in the process.
  uint64_t id() const { return id_; }
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

 private:
  friend class WriterPool;
  const uint64_t id_;
  std::atomic<bool> cancelled_{false};
};

// One message for one target.
struct Request {
  // Scheme (tcp:/tls:), host and port name the connection; the method is not used here.
  uri::TcpTarget target;
  // The shared body from jsonrpc::EncodeBody; the connection writes the "{" or "{\"id\":N,"
  // prefix itself.
  std::shared_ptr<const std::string> body;
  // True: a JSON-RPC request (sync mode), completed by its reply. False: a notification,
  // completed (kOk) once completely written.
  bool expect_reply = false;
  // Sync: the whole budget for connect + write + reply. Async: the latest time to be written; a
  // notification the owning loop predicts it cannot write by then is refused at once with
  // kOverloaded (net/admission.h), before it is queued.
  absl::Time deadline;
  // Fail with kConnectFailed/kResolveFailed as soon as one connect (or resolve) attempt fails,
  // instead of staying queued for the retries until the deadline. Virtual-group members use it so
  // the next member gets the rest of the budget. (A target in backoff still waits for its next
  // scheduled attempt when that comes before the deadline.)
  bool fail_fast = false;
  // Fail with kConnectFailed (kResolveFailed while resolving) when the connection is not
  // established by then. A virtual-group member gets its share of the group's budget this way, so
  // the group can move on; the shared connection's own attempt continues for its other requests.
  // InfiniteFuture: up to `deadline`.
  absl::Time connect_deadline = absl::InfiniteFuture();
  // Set: Cancel(cancel, ...) abandons this request wherever it is (queued, or written and awaiting
  // its reply, which is then forgotten: a late reply counts as unmatched). It completes with
  // kTimeout, detail "abandoned: cancelled by its submitter".
  std::shared_ptr<CancelToken> cancel;
  // Exactly once, on the owning loop thread; after Shutdown(), on the thread that called it (or
  // inline in a Submit that comes later), since the loops are gone by then. kQueueFull and
  // kOverloaded run inside Submit's loop batch, before `all_enqueued`; a notification due before
  // its loop is done with the flush it is busy with gets kOverloaded inline in Submit instead,
  // on the calling thread.
  OutcomeCallback done;
};

// Receives the outcomes of one Fanout's deliveries (below), by slot: one receiver for the whole
// fan-out instead of a closure per target. Called on the loop threads that own the targets (and
// on the submitting thread for a delivery refused before it is posted; after Shutdown(), as for
// Request::done): thread-safe, cheap, never blocking, never calling back into the pool inline
// except through Submit.
class FanoutReceiver {
 public:
  virtual ~FanoutReceiver() = default;
  // The delivery of `slot` ended with `outcome`: every outcome except a notification completely
  // written (expect_reply false, kOk), which OnWritten counts instead.
  virtual void OnOutcome(uint32_t slot, Outcome outcome) = 0;
  // `count` notifications of the fan-out were completely written: told once per loop iteration
  // with what that iteration wrote, not per message.
  virtual void OnWritten(size_t count) = 0;
};

// One event's deliveries to many targets, submitted as one: what they share (bodies, mode,
// deadline, cancel token, receiver) is held once, and each target is an entry of a few words.
// The pool keeps the Fanout (and with it the receiver) alive until every delivery has its outcome.
struct Fanout {
  struct Target {
    // Not owned: whoever owns the receiver keeps it alive (a subscription of the Raise's snapshot).
    const uri::TcpTarget* target = nullptr;
    // Names the delivery to the receiver.
    uint32_t slot = 0;
    // Index into `bodies`.
    uint32_t body = 0;
  };
  // Shared by the targets that use them (jsonrpc::EncodeBody's output, one per distinct method).
  std::vector<std::shared_ptr<const std::string>> bodies;
  std::vector<Target> targets;
  // As in Request, for every target.
  bool expect_reply = false;
  absl::Time deadline;
  std::shared_ptr<CancelToken> cancel;
  std::shared_ptr<FanoutReceiver> receiver;
};

// A snapshot of one target's connection, readable from any thread.
struct TargetStats {
  std::string key;
  ConnState state = ConnState::kIdle;
  uint32_t queued_messages = 0;
  uint32_t outstanding_requests = 0;
  uint64_t delivered = 0;  // notifications written + result (OK) replies received
  uint64_t failed = 0;     // every other outcome (RPC_ERROR, QUEUE_FULL, OVERLOADED...), except:
  uint64_t expired = 0;    // messages whose deadline came before they were completely written
  uint64_t reconnects = 0;
  uint64_t unmatched_replies = 0;   // unknown id or no id: counted and ignored
  uint64_t reply_buffer_bytes = 0;  // bytes of an unfinished reply held for this target
  // Entries in the connection's deadline bookkeeping, including those of messages completed since
  // (dropped lazily): bounded by about four times the queued and outstanding messages. As of the
  // connection's last flush, compaction, deadline timer or going idle.
  uint32_t deadline_entries = 0;
  // When the last connect (or resolve) attempt failed; InfinitePast when none did.
  absl::Time last_connect_failure = absl::InfinitePast();
};

// Thread-safe.
class WriterPool {
 public:
  // Builds the TLS client context and starts the loop threads. INVALID_ARGUMENT when a TLS file
  // cannot be used (the message names the option, the file and the problem).
  static absl::StatusOr<std::unique_ptr<WriterPool>> Create(const PoolOptions& options);
  // Shutdown() if not done yet.
  ~WriterPool();

  // Hands each request to the loop that owns its target: one Post per loop touched. After every
  // request has been enqueued (or rejected with kQueueFull or kOverloaded through its own `done`),
  // `all_enqueued` runs once, on one of the loop threads (inline when no request was posted).
  // Never blocks on the network.
  void Submit(std::vector<Request> requests, absl::AnyInvocable<void()> all_enqueued = nullptr);
  // The same for a Fanout: each target's outcome goes to fanout.receiver, by slot. `all_enqueued`
  // runs once every target's delivery is enqueued or refused (kQueueFull, kOverloaded...).
  void Submit(Fanout fanout, absl::AnyInvocable<void()> all_enqueued = nullptr);

  // Abandons every request tagged with `token` on the connections to `keys` ("host:port" or
  // "tls:host:port", as TcpTarget::Key()): one Post per loop. Requests submitted with
  // `token` later fail at once. Their `done` runs (kTimeout, "abandoned ...") on the owning loops.
  // Never blocks.
  void Cancel(const std::shared_ptr<CancelToken>& token, const std::vector<std::string>& keys);

  // Checks `target` against PoolOptions::destination_policy as Subscribe does (SPEC §10): an IP
  // literal at once, a name once resolved on the pool's resolver (every address it resolves to
  // must be allowed). Runs `done` exactly once, inline or on a loop thread (or, if the pool shuts
  // down meanwhile, on the thread that shuts it down): OK, or PERMISSION_DENIED
  // "destination 169.254.169.254:80 is denied by the destination policy (169.254.0.0/16,
  // default)", or UNAVAILABLE while shutting down. A name that does not resolve (or not within
  // resolve_timeout) is OK: whatever it resolves to later is checked when it is connected to.
  // Never blocks.
  void CheckDestination(const uri::TcpTarget& target, absl::AnyInvocable<void(absl::Status)> done);

  // Waits (blocking; main thread only) until every queue is empty and nothing is outstanding, or
  // `deadline`. Returns true when drained. Used for graceful shutdown.
  bool Drain(absl::Time deadline);

  // Stops the loops; whatever is still queued or outstanding completes with kConnectionLost
  // ("shutting down"). Idempotent.
  void Shutdown();

  // The connection state and counters of target `key` (TcpTarget::Key()), if it has a connection.
  std::optional<TargetStats> Stats(const std::string& key) const;
  // All targets.
  std::vector<TargetStats> AllStats() const;

  int num_loops() const;
  // The effective PoolOptions::max_target_connections (0 resolved at Create).
  size_t max_target_connections() const;

 private:
  WriterPool() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_WRITER_POOL_H_
