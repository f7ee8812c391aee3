// One persistent connection to one target (SPEC §3, §4), and the per-loop context its loop shares
// among its connections. A Connection resolves and connects lazily (with backoff), then runs the
// JSON-RPC session over a Transport (net/transport.h: plain TCP, or TLS for tls: targets): it
// writes its queue in coalesced writes (one sendmsg for tcp:), pipelines sync requests and matches
// their replies by id, enforces per-message deadlines and the bounded queue. Internal to
// server/net; WriterPool is the only user. The LoopContext also enforces the pool-wide cap on
// target connections and the per-loop bound on buffered reply bytes.
#ifndef EVENTBUS_SERVER_NET_CONNECTION_H_
#define EVENTBUS_SERVER_NET_CONNECTION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/time/time.h"
#include "server/base/fd.h"
#include "server/base/ring_queue.h"
#include "server/jsonrpc/reply_framer.h"
#include "server/jsonrpc/reply_parser.h"
#include "server/net/admission.h"
#include "server/net/deadline_queue.h"
#include "server/net/event_loop.h"
#include "server/net/outcome.h"
#include "server/net/resolver.h"
#include "server/net/tls_transport.h"
#include "server/net/transport.h"
#include "server/net/writer_pool.h"

namespace eventbus::net {

// The counters of one connection: written by its loop thread, read by any thread (Stats()).
struct TargetCounters {
  explicit TargetCounters(std::string k) : key(std::move(k)) {}
  TargetStats Snapshot() const;

  const std::string key;
  std::atomic<int> state{static_cast<int>(ConnState::kIdle)};
  std::atomic<uint32_t> queued_messages{0};
  std::atomic<uint32_t> outstanding_requests{0};
  std::atomic<uint32_t> deadline_entries{0};
  std::atomic<uint64_t> delivered{0};
  std::atomic<uint64_t> failed{0};
  std::atomic<uint64_t> expired{0};
  std::atomic<uint64_t> reconnects{0};
  std::atomic<uint64_t> unmatched_replies{0};
  std::atomic<uint64_t> reply_buffer_bytes{0};
  // absl::ToUnixNanos of the last failed connect or resolve attempt; 0 = never.
  std::atomic<int64_t> last_connect_failure_ns{0};
};

// key -> counters of the live connection to that target. Thread-safe.
class StatsRegistry {
 public:
  // Creates the counters of a new connection to `key` (replacing any previous entry).
  std::shared_ptr<TargetCounters> Register(const std::string& key);
  // Forgets `counters`, unless a newer connection to the same key registered since.
  void Unregister(const std::shared_ptr<TargetCounters>& counters);
  std::optional<TargetStats> Get(const std::string& key) const;
  std::vector<TargetStats> All() const;

 private:
  // std::mutex: see the note on post_mu in event_loop.cc (TSan visibility).
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<TargetCounters>> map_;  // guarded by mu_
};

class Connection;

// One loop's part of a Fanout (net/writer_pool.h): the targets that hash to this loop. Made by
// Submit, then loop thread only; alive until each of its messages has its outcome.
struct FanoutShare {
  explicit FanoutShare(std::shared_ptr<const Fanout> f) : fanout(std::move(f)) {}
  std::shared_ptr<const Fanout> fanout;
  // Indexes into fanout->targets.
  std::vector<uint32_t> entries;
  // Messages without their outcome yet, plus one while the share is being enqueued and one while
  // it waits on its loop's write_reports.
  size_t left = 0;
  // Notifications written but not yet told to the receiver (LoopContext::ReportWrites).
  size_t unreported_writes = 0;
};

// One message on its way to one target: queued, then (sync) awaiting its reply. Its outcome goes
// to `done` (Submit of Requests) or to its fan-out's receiver (`share`, `slot`).
struct Message {
  uint64_t seq = 0;
  uint32_t id = 0;  // 0: notification
  bool expect_reply = false;
  bool fail_fast = false;  // Request::fail_fast: fails with the first failed connect attempt
  bool dead = false;       // completed while queued (deadline); skipped by the writer
  bool expired = false;    // reached its deadline before being completely written
  bool cancelled = false;  // cancelled while half-written: completed once written
  uint64_t cancel_id = 0;  // Request::cancel's id; 0 = not cancellable
  uint8_t prefix_len = 0;
  char prefix[24];
  // The body: a Request's (owned here) or a fan-out's (kept alive by `share`). Null: empty.
  std::shared_ptr<const std::string> owned_body;
  const std::string* body = nullptr;
  size_t size = 0;  // prefix + body
  absl::Time enqueued_at;
  absl::Time deadline;
  absl::Time connect_deadline = absl::InfiniteFuture();
  OutcomeCallback done;
  FanoutShare* share = nullptr;
  uint32_t slot = 0;
};

// What the connections of one loop share: options, the resolver, the pool's TLS client context,
// the reply parser (one per loop thread, so simdjson's buffers are allocated once) and the
// connection map, and the plan of its next flush that admission predicts from (net/admission.h).
// Created before the loop thread starts; afterwards loop thread only (and main thread once the loop
// has stopped).
struct LoopContext {
  LoopContext(EventLoop* loop, const PoolOptions* options, Resolver* resolver,
              const TlsClientContext* tls, StatsRegistry* stats, std::atomic<int64_t>* pending,
              std::atomic<size_t>* connection_count);
  ~LoopContext();

  // One Submit() batch for this loop, posted at `posted_at` (clock time): enqueues every request
  // and puts each touched connection on the flush list. An async notification that the flush plan
  // says would be written after its deadline is refused instead (kOverloaded), before any
  // connection is made for it.
  struct Item {
    std::string key;
    Request request;
  };
  void EnqueueBatch(std::vector<Item>& items, absl::Time posted_at);
  // The same for this loop's share of a Fanout.
  void EnqueueFanout(std::unique_ptr<FanoutShare> share, absl::Time posted_at);
  // Gives `message` its outcome: to its `done` or its fan-out's receiver. Every message gets
  // exactly one, through here (pending counts it until then).
  void Finish(Message& message, Outcome outcome);
  // Flushes every connection on the flush list, once. Runs at the end of the loop iteration, so
  // all the batches (Raises) drained in one iteration share one sendmsg per connection (after
  // redis' handleClientsWithPendingWrites): under load that is many messages per syscall.
  void FlushPending();

  // The connection with this key and uid, or null (it may have been destroyed meanwhile).
  Connection* Find(const std::string& key, uint64_t uid);
  // Removes the connection from the map and destroys it at the end of the loop iteration.
  void DestroyLater(const std::string& key);
  // Completes everything queued or outstanding on every connection with kConnectionLost and
  // drops the connections. Only once the loop has stopped.
  void FailAllAndClear(absl::string_view detail);
  // Abandons the requests tagged `cancel_id` on the connections to `keys`.
  void Cancel(uint64_t cancel_id, const std::vector<std::string>& keys);
  // Closes and forgets every connection with nothing queued or outstanding. Returns how many.
  size_t ReapIdle();
  // Adds `delta` to the loop's buffered reply bytes; when they exceed the bound, closes the
  // connection that holds the most (at the end of the iteration, never under its own callback).
  void AddReplyBufferBytes(int64_t delta);

  EventLoop* const loop;
  const PoolOptions* const options;
  // The admission clock (PoolOptions::clock, or the real one).
  const base::Clock* const clock;
  Resolver* const resolver;
  // Makes the transports of tls: connections; owned by the pool.
  const TlsClientContext* const tls;
  StatsRegistry* const stats;
  // Pool-wide count of messages submitted but not yet completed (for Drain).
  std::atomic<int64_t>* const pending;
  // Pool-wide count of target connections (Connection objects), against
  // options->max_target_connections.
  std::atomic<size_t>* const connection_count;
  // Asks the other loops to reap their idle connections (set by the pool; may be null).
  absl::AnyInvocable<void()> reap_elsewhere;
  // Set while a ReapIdle() for this loop is posted (thread-safe).
  std::atomic<bool> reap_posted{false};
  // Until when (clock time, in ns since the epoch) the loop is known to be busy flushing what it
  // has planned; 0 when it is not. Written by the loop, read by Submit (thread-safe), which
  // refuses at once, without posting, a notification due before then: a refusal the loop would
  // make anyway, at no cost to the loop that is behind.
  std::atomic<int64_t> busy_until_ns{0};

  // Connections with messages enqueued since the last FlushPending, by key and uid (a connection
  // may be destroyed before the flush).
  std::vector<std::pair<std::string, uint64_t>> flush_list;
  bool flush_scheduled = false;
  // When the connections on flush_list are expected to be flushed, what is promised, and what the
  // loop's work costs.
  FlushPlan plan;

  jsonrpc::ReplyParser parser;
  absl::BitGen rng;
  std::vector<char> read_buffer;
  std::string frame;   // scratch for ReplyFramer::Next
  std::string prefix;  // scratch for jsonrpc::AppendMessagePrefix
  std::string key;     // scratch for TcpTarget::AppendKey
  // Connections by the address of a target that was looked up before (Lookup): a fan-out's targets
  // live in subscriptions, so the same addresses come back Raise after Raise, and a hit costs no
  // key to build and hash. A hit is checked against the connection's own target (an address may be
  // reused by another subscription); cleared whenever a connection goes, and when it grows past
  // four times the connections.
  absl::flat_hash_map<const uri::TcpTarget*, Connection*> by_target;
  static constexpr size_t kMinTargetCache = 4096;
  // Fan-out shares with notifications written this iteration, told at its end (ReportWrites): one
  // call per share and iteration rather than per message.
  std::vector<FanoutShare*> write_reports;
  absl::flat_hash_map<std::string, std::unique_ptr<Connection>> connections;
  uint64_t next_uid = 1;
  // Bytes of unfinished replies held by this loop's connections.
  size_t reply_buffer_bytes = 0;
  bool shed_scheduled = false;

 private:
  // The clock time a batch of `n` messages starts being enqueued (after flushing what is planned,
  // when the batch would push it past its deadlines), and the bookkeeping once it is.
  absl::Time BeginBatch(size_t n);
  void EndBatch(absl::Time start, size_t n);
  // Admission, then the connection to `target` (whose key is `target_key`; null: looked up by
  // Lookup), made when needed, and the flush plan: one message of a batch taken at `now`
  // (admission's clock) and posted at `posted_at`.
  void EnqueueOne(const uri::TcpTarget& target, const std::string* target_key, Message&& message,
                  const CancelToken* cancel, absl::Time now, absl::Time posted_at);
  // The connection to `target`, or null: through by_target when the same target (a subscription's,
  // in a Raise's snapshot) was seen before, otherwise by its key (left in `key` on a miss).
  Connection* Lookup(const uri::TcpTarget& target);
  // Creates the connection to `key`, or completes `message` with kConnectFailed when the
  // connection cap is reached and no idle connection could be reaped. Null then.
  Connection* CreateConnection(const uri::TcpTarget& target, const std::string& key,
                               Message& message);
  // The kOverloaded outcome of a message due at `deadline`, which would be written `offset`
  // after a flush starting at `now`, its batch having waited `waited` for the loop.
  Outcome OverloadedOutcome(absl::Time deadline, absl::Time now, absl::Duration offset,
                            absl::Duration waited) const;
  // Completes `message` with `outcome` without queueing it (counted on `conn` when there is one).
  void Refuse(const std::string& key, Message& message, Connection* conn, Outcome outcome);
  // One message of `share` has its outcome (or its enqueueing is over): the last deletes it.
  void ReleaseShare(FanoutShare* share);
  // Tells each share's receiver how many of its notifications this iteration wrote.
  void ReportWrites();
  void Forget(absl::flat_hash_map<std::string, std::unique_ptr<Connection>>::iterator it);
  void ShedReplyBuffers();
};

// Owned by its LoopContext (unique_ptr in `connections`); loop thread only.
class Connection final : public IoHandler {
 public:
  Connection(LoopContext* ctx, const uri::TcpTarget& target, std::string key, uint64_t uid);
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Queues `message` (tagged with `cancel`, may be null; its enqueued_at set) without writing.
  // Completes it at once with kQueueFull when the queue is full, or with the last connect/resolve
  // error when backing off past its deadline.
  void Enqueue(Message&& message, const CancelToken* cancel);
  // Completes `message` with `outcome` at once, without queueing it (admission's refusal).
  void Refuse(Message message, Outcome outcome);
  // What a Flush() did, for the loop's cost estimates.
  enum class FlushWork { kNothing, kConnect, kWrite };
  // Writes what is queued, connecting first when needed.
  FlushWork Flush();
  // Not connected nor connecting: a flush would have to open the connection first.
  bool needs_connect() const { return state_ == ConnState::kIdle; }
  // Completes everything queued or outstanding with kConnectionLost and `detail`.
  void FailAll(absl::string_view detail);
  // Abandons the requests tagged `cancel_id` (see Request::cancel).
  void Cancel(uint64_t cancel_id);
  // Nothing queued or outstanding, and not on the flush list.
  bool IsIdle() const;
  // Closes the socket and stops the timers before the LoopContext forgets this connection.
  void Retire();
  // Bytes of the unfinished reply held (as published to the loop's total).
  size_t reply_buffer_bytes() const { return reported_reply_bytes_; }
  // Closes the connection (outstanding requests: kConnectionLost with `detail`); queued messages
  // wait for the reconnect.
  void Drop(absl::string_view detail) { LoseConnection(detail); }

  void OnIo(uint32_t events) override;

  uint64_t uid() const { return uid_; }
  const std::string& key() const { return key_; }
  // True when this is the connection for `target` (same scheme, host and port).
  bool Serves(const uri::TcpTarget& target) const;
  // Set while the connection is on the loop's flush list.
  bool in_batch = false;
  // While in_batch: how long after the flush starts the plan expects it flushed.
  absl::Duration flush_offset;

 private:
  // Publishes the state and tells the pool's observer (`detail`: why, when it is a failure).
  void SetState(ConnState state, absl::string_view detail = {});
  void PublishCounts();
  // The size of deadlines_, for TargetStats: after each flush, compaction and deadline timer, and
  // when the connection goes idle (not per message: nothing but tests reads it).
  void PublishDeadlineEntries();
  uint32_t AllocateId();
  void Complete(Message& message, Outcome outcome);
  void Complete(Message& message, DeliveryCode code, std::string detail);

  // Connecting.
  void StartConnect();
  void OnResolved(ResolveResult result);
  void TryNextAddress();
  void OnConnectEvent();
  void OnConnectTimeout();
  // The socket is connected: puts the transport on it and starts its handshake (TLS).
  void OnSocketConnected();
  void ContinueHandshake();
  // A failed TLS handshake counts as a failed attempt on this address, with kTlsFailed.
  void HandshakeFailed(absl::string_view why);
  // The transport is ready: the session starts writing.
  void OnConnected();
  void ConnectFailed();
  void OnRetryTimer();
  void CloseSocket();
  Outcome NotConnectedOutcome() const;
  // The outcome of a message whose connect_deadline passed before the connection was made.
  Outcome ConnectShareOutcome(const Message& message) const;

  // Registers the socket for `events` (or changes them).
  void SetInterest(uint32_t events);

  // Connected.
  void SetWantWrite(bool want);
  void WriteSome();
  // The transport could not take more (`status`): waits for the readiness it asked for, or
  // loses the connection on kError.
  void WriteBlocked(IoStatus status);
  void Consume(size_t bytes);
  bool ReadSome();
  bool ProcessFrames();
  // Publishes the framer's buffered bytes to the counters and the loop's total, and frees the
  // framer's buffer once it has no partial reply after holding a large one.
  void UpdateReplyBuffer();
  // Closes the connection when a partial reply is buffered but no request is outstanding: such a
  // reply can only be unmatched, and its bytes must not be held until the idle timeout.
  bool DropStrandedReply();
  void ResetFramer();
  void BreakStream(absl::string_view why);
  void LoseConnection(absl::string_view detail);

  // Queue bookkeeping.
  void PopDeadFront();
  // Completes a queued message; `expired`: it reached its own deadline unwritten (counted apart
  // from failures).
  void KillQueued(Message& message, Outcome outcome, bool expired = false);
  // Fails the queued messages whose deadline is before `limit`, and the fail-fast ones.
  void FailQueuedAfterConnectFailure(absl::Time limit);
  bool IsLive(const DeadlineEntry& entry) const;
  void IndexCancellable(const Message& message);
  void UnindexCancellable(const Message& message);
  void ArmDeadlineTimer();
  void OnDeadlineTimer();
  void MaybeIdle();
  void OnIdleTimer();

  LoopContext* const ctx_;
  const uri::TcpTarget target_;
  const std::string key_;
  const uint64_t uid_;
  std::shared_ptr<TargetCounters> counters_;

  ConnState state_ = ConnState::kIdle;
  base::UniqueFd fd_;
  // Over fd_ once the socket is connected; reset before fd_ is closed.
  std::unique_ptr<Transport> transport_;
  // The socket is connected and the TLS handshake runs (state_ is still kConnecting).
  bool handshaking_ = false;
  bool registered_ = false;
  bool want_write_ = false;
  // TLS: a write waits for the socket to become readable, a read for it to become writable.
  bool write_waits_for_read_ = false;
  bool read_waits_for_write_ = false;
  bool ever_connected_ = false;

  std::vector<SocketAddress> addresses_;
  size_t next_address_ = 0;
  std::string connecting_to_;
  DeliveryCode last_error_code_ = DeliveryCode::kConnectFailed;
  std::string last_error_;
  int consecutive_failures_ = 0;
  absl::Time retry_at_ = absl::InfinitePast();

  EventLoop::TimerId connect_timer_ = 0;
  EventLoop::TimerId retry_timer_ = 0;
  // Armed at deadline_timer_at_, not later than the earliest deadline held (possibly earlier: it
  // is not cancelled when that entry goes). 0: not armed.
  EventLoop::TimerId deadline_timer_ = 0;
  absl::Time deadline_timer_at_ = absl::InfiniteFuture();
  EventLoop::TimerId idle_timer_ = 0;
  // Reads on once more when TLS still held decrypted bytes at the end of ReadSome's rounds.
  EventLoop::TimerId resume_read_timer_ = 0;
  absl::Time idle_since_;

  // Unwritten messages; queue_[i].seq == front_seq_ + i. The head may be partially written
  // (write_offset_ bytes); dead messages stay in place until they reach the head.
  base::RingQueue<Message> queue_;
  uint64_t front_seq_ = 0;
  uint64_t next_seq_ = 0;
  size_t write_offset_ = 0;
  size_t live_queued_ = 0;
  size_t queued_bytes_ = 0;
  // Written requests awaiting their reply, by id.
  absl::flat_hash_map<uint32_t, Message> outstanding_;
  // Ids of queued and outstanding requests.
  absl::flat_hash_set<uint32_t> ids_in_use_;
  uint32_t next_id_ = 1;
  // The deadlines of the queued and outstanding messages (one entry each, two with a connect
  // share), earliest first; entries of completed messages are skipped when they come due and
  // dropped once they dominate (net/deadline_queue.h).
  DeadlineQueue deadlines_;
  // Cancellable messages by Request::cancel id: their seq (and id, once outstanding).
  absl::flat_hash_map<uint64_t, std::vector<std::pair<uint64_t, uint32_t>>> cancellable_;

  jsonrpc::ReplyFramer framer_;
  // Bytes appended to the framer since it was last recreated (its buffer keeps its capacity).
  size_t framer_appended_ = 0;
  size_t reported_reply_bytes_ = 0;
};

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_CONNECTION_H_
