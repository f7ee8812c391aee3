#include "server/net/connection.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/base/log.h"
#include "server/jsonrpc/encoder.h"
#include "server/net/destination_check.h"
#include "server/net/tcp_transport.h"

namespace eventbus::net {
namespace {

constexpr size_t kReadBufferBytes = 64 << 10;
// Reads per readiness event before yielding to other connections (epoll is level-triggered).
constexpr int kMaxReadsPerWakeup = 4;
// Two iovecs (prefix, body) per message.
constexpr int kMaxIov = IOV_MAX;
constexpr uint32_t kMaxRequestId = 0x7fffffff;  // ids are positive and below 2^31

// A framer whose buffer grew beyond this is recreated once it holds no partial reply, so one large
// reply does not pin its capacity for the connection's lifetime.
constexpr size_t kFramerShrinkBytes = 64 << 10;

std::string Errno(int err) { return strerror(err); }

Outcome Abandoned() {
  Outcome outcome;
  outcome.code = DeliveryCode::kTimeout;
  outcome.detail = "abandoned: cancelled by its submitter";
  return outcome;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Stats

TargetStats TargetCounters::Snapshot() const {
  TargetStats s;
  s.key = key;
  s.state = static_cast<ConnState>(state.load(std::memory_order_relaxed));
  s.queued_messages = queued_messages.load(std::memory_order_relaxed);
  s.outstanding_requests = outstanding_requests.load(std::memory_order_relaxed);
  s.deadline_entries = deadline_entries.load(std::memory_order_relaxed);
  s.delivered = delivered.load(std::memory_order_relaxed);
  s.failed = failed.load(std::memory_order_relaxed);
  s.expired = expired.load(std::memory_order_relaxed);
  s.reconnects = reconnects.load(std::memory_order_relaxed);
  s.unmatched_replies = unmatched_replies.load(std::memory_order_relaxed);
  s.reply_buffer_bytes = reply_buffer_bytes.load(std::memory_order_relaxed);
  int64_t failed_ns = last_connect_failure_ns.load(std::memory_order_relaxed);
  if (failed_ns != 0) s.last_connect_failure = absl::FromUnixNanos(failed_ns);
  return s;
}

std::shared_ptr<TargetCounters> StatsRegistry::Register(const std::string& key) {
  auto counters = std::make_shared<TargetCounters>(key);
  std::lock_guard<std::mutex> lock(mu_);
  map_[key] = counters;
  return counters;
}

void StatsRegistry::Unregister(const std::shared_ptr<TargetCounters>& counters) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(counters->key);
  if (it != map_.end() && it->second == counters) map_.erase(it);
}

std::optional<TargetStats> StatsRegistry::Get(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(key);
  if (it == map_.end()) return std::nullopt;
  return it->second->Snapshot();
}

std::vector<TargetStats> StatsRegistry::All() const {
  std::vector<TargetStats> out;
  std::lock_guard<std::mutex> lock(mu_);
  out.reserve(map_.size());
  for (const auto& [key, counters] : map_) out.push_back(counters->Snapshot());
  std::sort(out.begin(), out.end(),
            [](const TargetStats& a, const TargetStats& b) { return a.key < b.key; });
  return out;
}

// ---------------------------------------------------------------------------------------------
// LoopContext

LoopContext::LoopContext(EventLoop* loop, const PoolOptions* options, Resolver* resolver,
                         const TlsClientContext* tls, StatsRegistry* stats,
                         std::atomic<int64_t>* pending, std::atomic<size_t>* connection_count)
    : loop(loop),
      options(options),
      clock(options->clock != nullptr ? options->clock : base::RealClock::Get()),
      resolver(resolver),
      tls(tls),
      stats(stats),
      pending(pending),
      connection_count(connection_count),
      plan(options->initial_flush_costs),
      read_buffer(kReadBufferBytes) {}

LoopContext::~LoopContext() = default;

absl::Time LoopContext::BeginBatch(size_t n) {
  // Coalescing this batch's messages with those planned already would start the flush too late
  // for some of those: flush them first.
  if (plan.ShouldFlushBefore(clock->Now(), n)) FlushPending();
  return clock->Now();
}

void LoopContext::EndBatch(absl::Time start, size_t n) {
  const absl::Time end = clock->Now();
  if (n > 0) plan.LearnEnqueue((end - start) / static_cast<int64_t>(n));
  if (!flush_list.empty()) {
    busy_until_ns.store(absl::ToUnixNanos(end + plan.work()), std::memory_order_relaxed);
  }
  if (!flush_scheduled && !flush_list.empty()) {
    flush_scheduled = true;
    loop->RunAtEndOfIteration([this] { FlushPending(); });
  }
}

void LoopContext::EnqueueBatch(std::vector<Item>& items, absl::Time posted_at) {
  const absl::Time start = BeginBatch(items.size());
  // One reading of the real clock for the batch (admission's clock may be a test's).
  const absl::Time enqueued_at = absl::Now();
  // Admission's `now` for the i-th message: the batch's start plus what enqueueing those ahead of
  // it costs (one clock reading per batch, not per message).
  const absl::Duration step = plan.costs().enqueue;
  absl::Time now = start;
  for (Item& item : items) {
    Request& request = item.request;
    Message m;
    m.expect_reply = request.expect_reply;
    m.fail_fast = request.fail_fast;
    m.owned_body = std::move(request.body);
    m.body = m.owned_body.get();
    m.deadline = request.deadline;
    m.connect_deadline = std::min(request.connect_deadline, request.deadline);
    m.done = std::move(request.done);
    m.enqueued_at = enqueued_at;
    EnqueueOne(request.target, &item.key, std::move(m), request.cancel.get(), now, posted_at);
    now += step;
  }
  EndBatch(start, items.size());
}

void LoopContext::EnqueueFanout(std::unique_ptr<FanoutShare> owned, absl::Time posted_at) {
  FanoutShare* share = owned.release();
  const Fanout& fanout = *share->fanout;
  // Held until the loop below is done, so a refusal inside it cannot delete the share.
  share->left = share->entries.size() + 1;
  const absl::Time start = BeginBatch(share->entries.size());
  const absl::Time enqueued_at = absl::Now();
  const absl::Duration step = plan.costs().enqueue;
  absl::Time now = start;
  for (uint32_t index : share->entries) {
    const Fanout::Target& t = fanout.targets[index];
    Message m;
    m.expect_reply = fanout.expect_reply;
    m.body = fanout.bodies[t.body].get();
    m.deadline = fanout.deadline;
    m.connect_deadline = fanout.deadline;
    m.share = share;
    m.slot = t.slot;
    m.enqueued_at = enqueued_at;
    EnqueueOne(*t.target, nullptr, std::move(m), fanout.cancel.get(), now, posted_at);
    now += step;
  }
  EndBatch(start, share->entries.size());
  ReleaseShare(share);
}

Connection* LoopContext::Lookup(const uri::TcpTarget& target) {
  auto hit = by_target.find(&target);
  if (hit != by_target.end() && hit->second->Serves(target)) return hit->second;
  key.clear();
  target.AppendKey(&key);
  auto it = connections.find(key);
  if (it == connections.end()) return nullptr;
  // Bounded: many subscriptions to few targets would otherwise grow it without end.
  if (by_target.size() >= std::max<size_t>(kMinTargetCache, 4 * connections.size())) {
    by_target.clear();
  }
  by_target[&target] = it->second.get();
  return it->second.get();
}

void LoopContext::EnqueueOne(const uri::TcpTarget& target, const std::string* target_key,
                             Message&& message, const CancelToken* cancel, absl::Time now,
                             absl::Time posted_at) {
  Connection* conn;
  if (target_key != nullptr) {
    auto it = connections.find(*target_key);
    conn = it != connections.end() ? it->second.get() : nullptr;
  } else {
    conn = Lookup(target);
    // A miss left the key in the scratch string.
    target_key = conn != nullptr ? &conn->key() : &key;
  }
  const std::string& conn_key = *target_key;
  // --- Admission (issue 11, part 6; net/admission.h) ---
  // `now` (when the batch was taken) includes how long it waited behind the loop's other work
  // (Post to run); the plan adds the flushes of the connections ahead of this one.
  const bool connect = conn == nullptr || conn->needs_connect();
  const bool on_list = conn != nullptr && conn->in_batch;
  const absl::Duration offset = on_list ? conn->flush_offset : plan.Offset(connect);
  const bool notification = !message.expect_reply;
  // Only notifications: a sync request's answer tells its caller what happened anyway.
  if (notification && now + offset > message.deadline) {
    Refuse(conn_key, message, conn,
           OverloadedOutcome(message.deadline, now, offset, now - posted_at));
    return;
  }
  // --- end of admission ---
  if (conn == nullptr) conn = CreateConnection(target, conn_key, message);
  if (conn == nullptr) return;
  const absl::Time deadline = message.deadline;
  conn->Enqueue(std::move(message), cancel);
  if (!conn->in_batch) {
    conn->in_batch = true;
    conn->flush_offset = plan.Add(connect);
    flush_list.emplace_back(conn_key, conn->uid());
  }
  if (notification) plan.Promise(deadline, conn->flush_offset);
}

void LoopContext::Finish(Message& message, Outcome outcome) {
  if (message.share != nullptr) {
    FanoutShare* share = std::exchange(message.share, nullptr);
    FanoutReceiver& receiver = *share->fanout->receiver;
    if (outcome.code == DeliveryCode::kOk && !message.expect_reply) {
      if (share->unreported_writes++ == 0) {
        ++share->left;  // held until reported
        if (write_reports.empty()) loop->RunAtEndOfIteration([this] { ReportWrites(); });
        write_reports.push_back(share);
      }
    } else {
      receiver.OnOutcome(message.slot, std::move(outcome));
    }
    ReleaseShare(share);
    return;
  }
  OutcomeCallback done = std::move(message.done);
  message.done = nullptr;
  if (done) done(std::move(outcome));
  // After the callback, so that Drain() returning means every callback has run.
  pending->fetch_sub(1, std::memory_order_acq_rel);
}

void LoopContext::ReportWrites() {
  std::vector<FanoutShare*> shares;
  shares.swap(write_reports);
  for (FanoutShare* share : shares) {
    share->fanout->receiver->OnWritten(std::exchange(share->unreported_writes, 0));
    ReleaseShare(share);
  }
}

void LoopContext::ReleaseShare(FanoutShare* share) {
  if (--share->left > 0) return;
  // The share's messages leave `pending` together, once each has had its outcome and the share
  // (with its hold on the fan-out and its receiver) is gone.
  const auto messages = static_cast<int64_t>(share->entries.size());
  delete share;
  pending->fetch_sub(messages, std::memory_order_acq_rel);
}

void LoopContext::FlushPending() {
  flush_scheduled = false;
  std::vector<std::pair<std::string, uint64_t>> list;
  list.swap(flush_list);
  // The plan's costs learn from what each connection's flush took (one clock read per connection).
  absl::Time start = clock->Now();
  for (const auto& [key, uid] : list) {
    Connection* conn = Find(key, uid);
    if (conn == nullptr) continue;
    conn->in_batch = false;
    const Connection::FlushWork work = conn->Flush();
    const absl::Time end = clock->Now();
    if (work == Connection::FlushWork::kConnect) plan.LearnConnect(end - start);
    if (work == Connection::FlushWork::kWrite) plan.LearnWrite(end - start);
    start = end;
  }
  plan.Clear();
  busy_until_ns.store(0, std::memory_order_relaxed);
}

Outcome LoopContext::OverloadedOutcome(absl::Time deadline, absl::Time now, absl::Duration offset,
                                       absl::Duration waited) const {
  Outcome outcome;
  outcome.code = DeliveryCode::kOverloaded;
  waited = std::max(waited, absl::ZeroDuration());
  // Short: an overloaded server may list thousands of these in one answer.
  if (now >= deadline) {
    outcome.detail = absl::StrCat("not queued: its deadline passed while it waited ",
                                  absl::FormatDuration(waited), " for the writer loop");
  } else {
    outcome.detail = absl::StrCat(
        "not queued: the writer loop would write it in ", absl::FormatDuration(offset), ", with ",
        absl::FormatDuration(deadline - now), " left (", plan.DescribeAhead(), ")");
  }
  return outcome;
}

void LoopContext::Refuse(const std::string& key, Message& message, Connection* conn,
                         Outcome outcome) {
  if (conn != nullptr) {
    conn->Refuse(std::move(message), std::move(outcome));
    return;
  }
  if (options->observer != nullptr) {
    options->observer->OnComplete(key, outcome, /*expired=*/false, absl::ZeroDuration());
  }
  Finish(message, std::move(outcome));
}

Connection* LoopContext::CreateConnection(const uri::TcpTarget& target, const std::string& key,
                                          Message& message) {
  const size_t limit = options->max_target_connections;
  // Claim a slot first: the count is shared by every loop.
  bool room = connection_count->fetch_add(1, std::memory_order_acq_rel) < limit;
  if (!room) {
    connection_count->fetch_sub(1, std::memory_order_acq_rel);
    // Idle connections only save a reconnect later; a delivery now is worth more.
    if (ReapIdle() > 0) {
      room = connection_count->fetch_add(1, std::memory_order_acq_rel) < limit;
      if (!room) connection_count->fetch_sub(1, std::memory_order_acq_rel);
    }
  }
  if (!room) {
    // The other loops may hold idle connections: have them reaped for the next delivery.
    if (reap_elsewhere) reap_elsewhere();
    EB_LOG(kWarning, "too many target connections", "target=", key, " limit=", limit);
    Outcome outcome;
    outcome.code = DeliveryCode::kConnectFailed;
    outcome.detail =
        absl::StrCat("connect to ", key, ": too many target connections (limit ", limit, ")");
    Finish(message, std::move(outcome));
    return nullptr;
  }
  auto conn = std::make_unique<Connection>(this, target, key, next_uid++);
  return connections.emplace(key, std::move(conn)).first->second.get();
}

size_t LoopContext::ReapIdle() {
  std::vector<std::string> idle;
  for (const auto& [key, conn] : connections) {
    if (conn->IsIdle()) idle.push_back(key);
  }
  for (const std::string& key : idle) {
    EB_LOG(kDebug, "closing idle connection to make room", "target=", key);
    connections.find(key)->second->Retire();
    DestroyLater(key);
  }
  return idle.size();
}

void LoopContext::Cancel(uint64_t cancel_id, const std::vector<std::string>& keys) {
  for (const std::string& key : keys) {
    auto it = connections.find(key);
    if (it != connections.end()) it->second->Cancel(cancel_id);
  }
}

void LoopContext::AddReplyBufferBytes(int64_t delta) {
  reply_buffer_bytes = static_cast<size_t>(static_cast<int64_t>(reply_buffer_bytes) + delta);
  if (reply_buffer_bytes > options->max_reply_buffer_bytes_per_loop && !shed_scheduled) {
    shed_scheduled = true;
    loop->RunAtEndOfIteration([this] { ShedReplyBuffers(); });
  }
}

void LoopContext::ShedReplyBuffers() {
  shed_scheduled = false;
  const size_t limit = options->max_reply_buffer_bytes_per_loop;
  while (reply_buffer_bytes > limit) {
    Connection* largest = nullptr;
    for (const auto& [key, conn] : connections) {
      if (largest == nullptr || conn->reply_buffer_bytes() > largest->reply_buffer_bytes()) {
        largest = conn.get();
      }
    }
    if (largest == nullptr || largest->reply_buffer_bytes() == 0) break;
    EB_LOG(kWarning, "closing the connection with the largest unfinished reply",
           "buffered=", largest->reply_buffer_bytes(), " loop_total=", reply_buffer_bytes,
           " limit=", limit);
    largest->Drop(absl::StrCat("connection closed: ", largest->reply_buffer_bytes(),
                               " bytes of an unfinished reply, the most of the ",
                               reply_buffer_bytes, " buffered on its loop (limit ", limit, ")"));
  }
}

Connection* LoopContext::Find(const std::string& key, uint64_t uid) {
  auto it = connections.find(key);
  if (it == connections.end() || it->second->uid() != uid) return nullptr;
  return it->second.get();
}

void LoopContext::DestroyLater(const std::string& key) {
  auto it = connections.find(key);
  if (it == connections.end()) return;
  std::unique_ptr<Connection> doomed = std::move(it->second);
  connections.erase(it);
  // Rare (idle, reaped): the cache may name the connection, so it starts over.
  by_target.clear();
  connection_count->fetch_sub(1, std::memory_order_acq_rel);
  loop->RunAtEndOfIteration([doomed = std::move(doomed)]() {});
}

void LoopContext::FailAllAndClear(absl::string_view detail) {
  // Writes of the loop's last iteration, if it stopped before telling them.
  ReportWrites();
  for (auto& [key, conn] : connections) conn->FailAll(detail);
  connection_count->fetch_sub(connections.size(), std::memory_order_acq_rel);
  by_target.clear();
  connections.clear();
}

// ---------------------------------------------------------------------------------------------
// Connection: bookkeeping

Connection::Connection(LoopContext* ctx, const uri::TcpTarget& target, std::string key,
                       uint64_t uid)
    : ctx_(ctx),
      target_(target),
      key_(std::move(key)),
      uid_(uid),
      counters_(ctx->stats->Register(key_)),
      idle_since_(absl::Now()),
      framer_(ctx->options->max_reply_bytes) {}

Connection::~Connection() {
  if (reported_reply_bytes_ > 0) ctx_->reply_buffer_bytes -= reported_reply_bytes_;
  CloseSocket();
  EventLoop* loop = ctx_->loop;
  for (EventLoop::TimerId id : {connect_timer_, retry_timer_, deadline_timer_, idle_timer_}) {
    if (id != 0) loop->Cancel(id);
  }
  ctx_->stats->Unregister(counters_);
}

bool Connection::Serves(const uri::TcpTarget& target) const {
  return target.port == target_.port && target.tls == target_.tls && target.host == target_.host;
}

void Connection::SetState(ConnState state, absl::string_view detail) {
  const ConnState from = state_;
  state_ = state;
  counters_->state.store(static_cast<int>(state), std::memory_order_relaxed);
  if (from != state && ctx_->options->observer != nullptr) {
    ctx_->options->observer->OnStateChange(key_, from, state, detail);
  }
}

void Connection::PublishCounts() {
  counters_->queued_messages.store(static_cast<uint32_t>(live_queued_), std::memory_order_relaxed);
  counters_->outstanding_requests.store(static_cast<uint32_t>(outstanding_.size()),
                                        std::memory_order_relaxed);
}

void Connection::PublishDeadlineEntries() {
  counters_->deadline_entries.store(static_cast<uint32_t>(deadlines_.size()),
                                    std::memory_order_relaxed);
}

uint32_t Connection::AllocateId() {
  for (;;) {
    uint32_t id = next_id_;
    next_id_ = next_id_ == kMaxRequestId ? 1 : next_id_ + 1;
    if (ids_in_use_.insert(id).second) return id;
  }
}

void Connection::Complete(Message& message, Outcome outcome) {
  if (message.cancel_id != 0) UnindexCancellable(message);
  // An RPC_ERROR reply is a failed delivery, though the target answered (issue 8).
  if (outcome.code == DeliveryCode::kOk) {
    counters_->delivered.fetch_add(1, std::memory_order_relaxed);
  } else if (message.expired) {
    counters_->expired.fetch_add(1, std::memory_order_relaxed);
  } else {
    counters_->failed.fetch_add(1, std::memory_order_relaxed);
  }
  if (ctx_->options->observer != nullptr) {
    ctx_->options->observer->OnComplete(key_, outcome, message.expired,
                                        absl::Now() - message.enqueued_at);
  }
  // Callers take the message off the queue or the outstanding map first, so the published counts
  // already exclude it when its owner hears of the outcome.
  PublishCounts();
  ctx_->Finish(message, std::move(outcome));
}

void Connection::Complete(Message& message, DeliveryCode code, std::string detail) {
  Outcome outcome;
  outcome.code = code;
  outcome.detail = std::move(detail);
  Complete(message, std::move(outcome));
}

void Connection::Enqueue(Message&& m, const CancelToken* cancel) {
  const PoolOptions& options = *ctx_->options;
  // Checked here as well as by Cancel(): a request may reach its loop after the cancellation.
  if (cancel != nullptr && cancel->cancelled()) {
    Complete(m, Abandoned());
    return;
  }
  size_t body_size = m.body ? m.body->size() : 0;
  if (m.expect_reply) m.id = AllocateId();
  std::string& prefix = ctx_->prefix;
  prefix.clear();
  jsonrpc::AppendMessagePrefix(&prefix, m.id);
  m.prefix_len = static_cast<uint8_t>(std::min(prefix.size(), sizeof(m.prefix)));
  memcpy(m.prefix, prefix.data(), m.prefix_len);
  m.size = m.prefix_len + body_size;

  if (live_queued_ + outstanding_.size() + 1 > options.max_queue_messages ||
      queued_bytes_ + m.size > options.max_queue_bytes) {
    if (m.id != 0) ids_in_use_.erase(m.id);
    Complete(m, DeliveryCode::kQueueFull,
             absl::StrCat("queue for ", key_, " is full: ", live_queued_ + outstanding_.size(),
                          " messages, ", queued_bytes_, " bytes"));
    return;
  }
  if (state_ == ConnState::kBackoff && m.connect_deadline < retry_at_) {
    // The next connect attempt comes after this message's deadline (or its connect share).
    if (m.id != 0) ids_in_use_.erase(m.id);
    Complete(m, NotConnectedOutcome());
    return;
  }

  if (queue_.empty()) front_seq_ = next_seq_;
  m.seq = next_seq_++;
  // O(1) for a deadline not earlier than the connection's latest (the common case).
  deadlines_.Push(DeadlineEntry{m.deadline, m.seq, m.id});
  const absl::Time earliest = std::min(m.deadline, m.connect_deadline);
  if (m.connect_deadline < m.deadline) {
    deadlines_.Push(DeadlineEntry{m.connect_deadline, m.seq, m.id, /*connect_only=*/true});
  }
  if (cancel != nullptr) {
    m.cancel_id = cancel->id();
    IndexCancellable(m);
  }
  queued_bytes_ += m.size;
  ++live_queued_;
  queue_.push_back(std::move(m));
  // The timer is armed no later than every entry held before this one: only an earlier deadline
  // (or no timer) needs it re-armed, and only dead entries make compaction needed.
  if (deadlines_.TooLarge(live_queued_ + outstanding_.size()) || deadline_timer_ == 0 ||
      earliest < deadline_timer_at_) {
    ArmDeadlineTimer();
  }
  PublishCounts();
}

void Connection::Refuse(Message message, Outcome outcome) {
  message.enqueued_at = absl::Now();
  Complete(message, std::move(outcome));
}

Connection::FlushWork Connection::Flush() {
  FlushWork work = FlushWork::kNothing;
  switch (state_) {
    case ConnState::kIdle:
      if (live_queued_ > 0) {
        StartConnect();
        work = FlushWork::kConnect;
      }
      break;
    case ConnState::kBackoff:
      if (live_queued_ > 0 && retry_timer_ == 0) {
        if (absl::Now() >= retry_at_) {
          StartConnect();
        } else {
          retry_timer_ = ctx_->loop->RunAt(retry_at_, [this] { OnRetryTimer(); });
        }
      }
      break;
    case ConnState::kConnected:
      // With EPOLLOUT armed the kernel buffer is full (or this wakeup's budget is spent): the
      // writable event continues the work.
      if (!want_write_) {
        if (live_queued_ > 0) work = FlushWork::kWrite;
        WriteSome();
      }
      break;
    case ConnState::kResolving:
    case ConnState::kConnecting:
      break;
  }
  MaybeIdle();
  PublishCounts();
  PublishDeadlineEntries();
  return work;
}

void Connection::FailAll(absl::string_view detail) {
  CloseSocket();
  base::RingQueue<Message> queue = std::move(queue_);
  auto outstanding = std::move(outstanding_);
  outstanding_.clear();
  live_queued_ = 0;
  queued_bytes_ = 0;
  write_offset_ = 0;
  ids_in_use_.clear();
  deadlines_.clear();
  cancellable_.clear();
  SetState(ConnState::kIdle, detail);
  queue.ForEach([&](Message& m) {
    if (!m.dead) Complete(m, DeliveryCode::kConnectionLost, std::string(detail));
  });
  for (auto& [id, m] : outstanding) Complete(m, DeliveryCode::kConnectionLost, std::string(detail));
}

void Connection::Cancel(uint64_t cancel_id) {
  auto it = cancellable_.find(cancel_id);
  if (it == cancellable_.end()) return;
  std::vector<std::pair<uint64_t, uint32_t>> entries = std::move(it->second);
  cancellable_.erase(it);
  for (const auto& [seq, id] : entries) {
    if (seq >= front_seq_ && seq - front_seq_ < queue_.size()) {
      Message& m = queue_[seq - front_seq_];
      if (m.dead) continue;
      m.cancel_id = 0;  // unindexed above
      if (seq == front_seq_ && write_offset_ > 0) {
        // Half-written: the rest must still go out or the stream is corrupt; Consume() completes
        // it once written instead of awaiting its reply.
        m.cancelled = true;
        continue;
      }
      KillQueued(m, Abandoned());
    } else if (id != 0) {
      auto out = outstanding_.find(id);
      if (out == outstanding_.end() || out->second.seq != seq) continue;
      // Forgotten: its reply, should it come, is unmatched.
      Message m = std::move(out->second);
      outstanding_.erase(out);
      ids_in_use_.erase(m.id);
      m.cancel_id = 0;
      Complete(m, Abandoned());
    }
  }
  PopDeadFront();
  if (state_ == ConnState::kConnected) DropStrandedReply();
  MaybeIdle();
  PublishCounts();
}

bool Connection::IsIdle() const { return live_queued_ == 0 && outstanding_.empty() && !in_batch; }

void Connection::Retire() {
  CloseSocket();
  if (retry_timer_ != 0) {
    ctx_->loop->Cancel(retry_timer_);
    retry_timer_ = 0;
  }
  if (idle_timer_ != 0) {
    ctx_->loop->Cancel(idle_timer_);
    idle_timer_ = 0;
  }
  ctx_->stats->Unregister(counters_);
}

void Connection::OnIo(uint32_t events) {
  if (state_ == ConnState::kConnecting) {
    if (handshaking_) {
      ContinueHandshake();
    } else {
      OnConnectEvent();
    }
  } else if (state_ == ConnState::kConnected) {
    bool alive = true;
    const bool readable = (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0;
    const bool writable = (events & EPOLLOUT) != 0;
    if (readable || (writable && read_waits_for_write_)) {
      alive = ReadSome();
      if (alive) alive = !DropStrandedReply();
      UpdateReplyBuffer();
    }
    if (alive && (writable || (readable && write_waits_for_read_)) &&
        state_ == ConnState::kConnected) {
      WriteSome();
    }
  }
  MaybeIdle();
  PublishCounts();
}

// ---------------------------------------------------------------------------------------------
// Connecting

void Connection::StartConnect() {
  SetState(ConnState::kResolving);
  addresses_.clear();
  next_address_ = 0;
  if (std::optional<SocketAddress> literal = ParseIpLiteral(target_.host, target_.port)) {
    addresses_.push_back(std::move(*literal));
    TryNextAddress();
    return;
  }
  // getaddrinfo blocks: the resolver threads run it and post the result back to this loop.
  LoopContext* ctx = ctx_;
  ctx_->resolver->Resolve(target_.host, target_.port, ctx_->loop,
                          [ctx, key = key_, uid = uid_](ResolveResult result) {
                            if (Connection* conn = ctx->Find(key, uid)) {
                              conn->OnResolved(std::move(result));
                              conn->MaybeIdle();
                              conn->PublishCounts();
                            }
                          });
}

void Connection::OnResolved(ResolveResult result) {
  if (state_ != ConnState::kResolving) return;
  if (!result.ok()) {
    last_error_code_ = DeliveryCode::kResolveFailed;
    last_error_ = std::string(result.status().message());
    ConnectFailed();
    return;
  }
  addresses_ = *std::move(result);
  next_address_ = 0;
  TryNextAddress();
}

void Connection::TryNextAddress() {
  // --- Destination policy (SPEC §10, issue 9) ---
  // A fresh address list (a literal, or what the name resolved to just now) is filtered before
  // its first attempt, so that a DNS answer that changed since Subscribe cannot get around the
  // policy. With nothing left, the attempt fails with kDestinationDenied like a failed connect:
  // backoff, the failure log, and the queued messages' outcomes.
  if (next_address_ == 0) {
    if (std::optional<std::string> denied = FilterDeniedAddresses(
            ctx_->options->destination_policy, ctx_->options->observer, key_, &addresses_)) {
      last_error_code_ = DeliveryCode::kDestinationDenied;
      last_error_ = *std::move(denied);
      ConnectFailed();
      return;
    }
  }
  // --- end of destination policy ---
  while (next_address_ < addresses_.size()) {
    const SocketAddress& addr = addresses_[next_address_++];
    connecting_to_ = addr.text;
    base::UniqueFd fd(
        ::socket(addr.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
    if (!fd.valid()) {
      last_error_code_ = DeliveryCode::kConnectFailed;
      last_error_ = absl::StrCat("connect to ", addr.text, ": socket: ", Errno(errno));
      continue;
    }
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr.storage), addr.length);
    if (rc != 0 && errno != EINPROGRESS) {
      last_error_code_ = DeliveryCode::kConnectFailed;
      last_error_ = absl::StrCat("connect to ", addr.text, ": ", Errno(errno));
      continue;
    }
    fd_ = std::move(fd);
    if (rc == 0) {
      SetInterest(EPOLLIN);
      OnSocketConnected();
      return;
    }
    SetState(ConnState::kConnecting);
    // Over loopback the kernel runs the whole handshake inside connect(), which still says
    // EINPROGRESS: the socket is usually connected already. Finding out costs one poll(); it saves
    // the EPOLLOUT registration, its event and the timer, and the first write goes out now rather
    // than after every other connect this loop starts in the same flush (a cold burst to 10k
    // targets started ~5k connects per loop before writing anything).
    pollfd ready{fd_.get(), POLLOUT, 0};
    if (::poll(&ready, 1, 0) == 1) {
      OnConnectEvent();
      return;
    }
    // A non-blocking connect reports completion as writability; SO_ERROR says how it ended.
    ctx_->loop->Add(fd_.get(), EPOLLOUT, this);
    registered_ = true;
    connect_timer_ =
        ctx_->loop->RunAfter(ctx_->options->connect_timeout, [this] { OnConnectTimeout(); });
    return;
  }
  ConnectFailed();
}

void Connection::OnConnectEvent() {
  int err = 0;
  socklen_t len = sizeof(err);
  if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0) {
    OnSocketConnected();
    return;
  }
  last_error_code_ = DeliveryCode::kConnectFailed;
  last_error_ = absl::StrCat("connect to ", connecting_to_, ": ", Errno(err));
  CloseSocket();
  TryNextAddress();
}

void Connection::OnConnectTimeout() {
  connect_timer_ = 0;
  if (state_ != ConnState::kConnecting) return;
  if (handshaking_) {
    last_error_code_ = DeliveryCode::kTlsFailed;
    last_error_ = absl::StrCat("tls handshake with ", connecting_to_, ": timed out after ",
                               absl::FormatDuration(ctx_->options->connect_timeout));
  } else {
    last_error_code_ = DeliveryCode::kConnectFailed;
    last_error_ = absl::StrCat("connect to ", connecting_to_, ": timed out");
  }
  CloseSocket();
  TryNextAddress();
  MaybeIdle();
  PublishCounts();
}

void Connection::OnSocketConnected() {
  if (connect_timer_ != 0) {
    ctx_->loop->Cancel(connect_timer_);
    connect_timer_ = 0;
  }
  if (!target_.tls) {
    transport_ = std::make_unique<TcpTransport>(fd_.get());
    OnConnected();
    return;
  }
  transport_ = ctx_->tls->NewTransport(fd_.get(), target_);
  handshaking_ = true;
  // The handshake gets a connect timeout of its own: a peer that accepts but never answers (or
  // does not speak TLS and waits for a request) must not hold the messages until their deadline.
  connect_timer_ =
      ctx_->loop->RunAfter(ctx_->options->connect_timeout, [this] { OnConnectTimeout(); });
  ContinueHandshake();
}

void Connection::ContinueHandshake() {
  switch (transport_->Handshake()) {
    case IoStatus::kOk:
      handshaking_ = false;
      if (connect_timer_ != 0) {
        ctx_->loop->Cancel(connect_timer_);
        connect_timer_ = 0;
      }
      OnConnected();
      return;
    case IoStatus::kWantRead:
      SetInterest(EPOLLIN);
      return;
    case IoStatus::kWantWrite:
      SetInterest(EPOLLOUT);
      return;
    case IoStatus::kClosed:
    case IoStatus::kError:
      HandshakeFailed(transport_->error());
      return;
  }
}

void Connection::HandshakeFailed(absl::string_view why) {
  last_error_code_ = DeliveryCode::kTlsFailed;
  last_error_ = absl::StrCat("tls handshake with ", connecting_to_, ": ", why);
  EB_LOG(kDebug, "tls handshake failed", "target=", key_, " error=", base::LogValue(last_error_));
  CloseSocket();
  // Like a refused connect: the next address, then backoff.
  TryNextAddress();
}

void Connection::SetInterest(uint32_t events) {
  if (registered_) {
    ctx_->loop->Modify(fd_.get(), events, this);
  } else {
    ctx_->loop->Add(fd_.get(), events, this);
    registered_ = true;
  }
  want_write_ = (events & EPOLLOUT) != 0;
}

void Connection::OnConnected() {
  SetState(ConnState::kConnected);
  if (ever_connected_) counters_->reconnects.fetch_add(1, std::memory_order_relaxed);
  ever_connected_ = true;
  consecutive_failures_ = 0;
  last_error_.clear();
  ResetFramer();
  write_waits_for_read_ = false;
  read_waits_for_write_ = false;
  // EPOLLIN stays armed even on notification-only connections, to notice a peer close.
  SetInterest(EPOLLIN);
  EB_LOG(kDebug, "connected", "target=", key_, " address=", connecting_to_);
  WriteSome();
}

void Connection::ConnectFailed() {
  CloseSocket();
  ++consecutive_failures_;
  const PoolOptions& options = *ctx_->options;
  absl::Duration backoff = options.min_backoff;
  for (int i = 1; i < consecutive_failures_ && backoff < options.max_backoff; ++i) backoff *= 2;
  backoff = std::min(backoff, options.max_backoff);
  backoff *= absl::Uniform(ctx_->rng, 0.8, 1.2);
  const absl::Time now = absl::Now();
  retry_at_ = now + backoff;
  counters_->last_connect_failure_ns.store(absl::ToUnixNanos(now), std::memory_order_relaxed);
  SetState(ConnState::kBackoff, last_error_);
  EB_LOG(kDebug, "connect failed", "target=", key_, " error=", base::LogValue(last_error_),
         " retry_in=", absl::FormatDuration(backoff));
  // Whatever would still be waiting when the next attempt starts fails now, and so does whatever
  // asked not to wait for retries at all.
  FailQueuedAfterConnectFailure(retry_at_);
  if (live_queued_ > 0) {
    retry_timer_ = ctx_->loop->RunAt(retry_at_, [this] { OnRetryTimer(); });
  }
}

void Connection::OnRetryTimer() {
  retry_timer_ = 0;
  if (state_ == ConnState::kBackoff && live_queued_ > 0) StartConnect();
  MaybeIdle();
  PublishCounts();
}

void Connection::CloseSocket() {
  if (connect_timer_ != 0) {
    ctx_->loop->Cancel(connect_timer_);
    connect_timer_ = 0;
  }
  if (resume_read_timer_ != 0) {
    ctx_->loop->Cancel(resume_read_timer_);
    resume_read_timer_ = 0;
  }
  // Before the fd: a TLS transport may still write its close_notify on it.
  transport_.reset();
  handshaking_ = false;
  write_waits_for_read_ = false;
  read_waits_for_write_ = false;
  if (!fd_.valid()) return;
  // Deregister before close: the fd number may be reused at once by the next socket.
  if (registered_) ctx_->loop->Remove(fd_.get());
  registered_ = false;
  want_write_ = false;
  fd_.Reset();
}

Outcome Connection::ConnectShareOutcome(const Message& message) const {
  if (state_ == ConnState::kBackoff && !last_error_.empty()) return NotConnectedOutcome();
  const std::string share = absl::FormatDuration(message.connect_deadline - message.enqueued_at);
  Outcome outcome;
  if (state_ == ConnState::kResolving) {
    outcome.code = DeliveryCode::kResolveFailed;
    outcome.detail = absl::StrCat("resolve \"", target_.host, "\": no answer within ", share,
                                  " (this member's share of the budget)");
  } else if (handshaking_) {
    outcome.code = DeliveryCode::kTlsFailed;
    outcome.detail = absl::StrCat("tls handshake with ", connecting_to_, ": not finished within ",
                                  share, " (this member's share of the budget)");
  } else {
    outcome.code = DeliveryCode::kConnectFailed;
    outcome.detail =
        absl::StrCat("connect to ", connecting_to_.empty() ? key_ : connecting_to_,
                     ": not connected within ", share, " (this member's share of the budget)");
  }
  return outcome;
}

Outcome Connection::NotConnectedOutcome() const {
  Outcome outcome;
  if (!last_error_.empty()) {
    outcome.code = last_error_code_;
    outcome.detail = last_error_;
  } else if (state_ == ConnState::kResolving) {
    outcome.code = DeliveryCode::kResolveFailed;
    outcome.detail = absl::StrCat("resolve \"", target_.host, "\": timed out");
  } else if (state_ == ConnState::kConnecting && handshaking_) {
    outcome.code = DeliveryCode::kTlsFailed;
    outcome.detail = absl::StrCat("tls handshake with ", connecting_to_, ": timed out");
  } else if (state_ == ConnState::kConnecting) {
    outcome.code = DeliveryCode::kConnectFailed;
    outcome.detail = absl::StrCat("connect to ", connecting_to_, ": timed out");
  } else {
    outcome.code = DeliveryCode::kConnectFailed;
    outcome.detail = absl::StrCat("connect to ", key_, ": not connected");
  }
  return outcome;
}

// ---------------------------------------------------------------------------------------------
// Writing

void Connection::SetWantWrite(bool want) {
  if (want == want_write_ || !registered_) return;
  want_write_ = want;
  ctx_->loop->Modify(fd_.get(), want ? (EPOLLIN | EPOLLOUT) : EPOLLIN, this);
}

void Connection::WriteSome() {
  size_t budget = ctx_->options->max_write_bytes_per_wakeup;
  write_waits_for_read_ = false;
  // What a TLS transport took earlier goes first; it is already out of the queue.
  if (transport_->HasBufferedOutput()) {
    IoStatus status = transport_->FlushBuffered();
    if (status != IoStatus::kOk) {
      WriteBlocked(status);
      return;
    }
  }
  iovec iov[kMaxIov];
  while (live_queued_ > 0 && budget > 0) {
    PopDeadFront();
    int n_iov = 0;
    size_t total = 0;
    auto add = [&](const char* data, size_t len) {
      len = std::min(len, budget - total);
      if (len == 0) return;
      iov[n_iov].iov_base = const_cast<char*>(data);
      iov[n_iov].iov_len = len;
      ++n_iov;
      total += len;
    };
    for (size_t i = 0; i < queue_.size() && n_iov + 2 <= kMaxIov && total < budget; ++i) {
      const Message& m = queue_[i];
      if (m.dead) continue;
      size_t skip = i == 0 ? write_offset_ : 0;
      if (skip < m.prefix_len) {
        add(m.prefix + skip, m.prefix_len - skip);
        skip = 0;
      } else {
        skip -= m.prefix_len;
      }
      if (m.body && skip < m.body->size()) add(m.body->data() + skip, m.body->size() - skip);
    }
    if (n_iov == 0) break;
    // tcp: one sendmsg of these iovecs, no copy; tls: copied into TLS records.
    size_t n = 0;
    IoStatus status = transport_->Write(iov, n_iov, &n);
    if (status != IoStatus::kOk) {
      WriteBlocked(status);
      return;
    }
    budget -= std::min(budget, n);
    Consume(n);
  }
  // Budget spent with more to write: EPOLLOUT fires again on the next iteration, after the other
  // connections had their turn (as redis' writeToClient with NET_MAX_WRITES_PER_EVENT).
  SetWantWrite(live_queued_ > 0 || transport_->HasBufferedOutput());
}

void Connection::WriteBlocked(IoStatus status) {
  switch (status) {
    case IoStatus::kWantWrite:
      SetWantWrite(true);
      return;
    case IoStatus::kWantRead:
      // TLS: EPOLLIN (always armed) continues the write.
      write_waits_for_read_ = true;
      SetWantWrite(read_waits_for_write_);
      return;
    default:
      LoseConnection(absl::StrCat("write to ", connecting_to_, ": ", transport_->error()));
      return;
  }
}

void Connection::Consume(size_t bytes) {
  // Notifications written by this write: the observer hears of them together, at the end.
  size_t written = 0;
  while (bytes > 0) {
    PopDeadFront();
    Message& head = queue_.front();
    size_t left = head.size - write_offset_;
    if (bytes < left) {
      write_offset_ += bytes;
      break;
    }
    bytes -= left;
    write_offset_ = 0;
    Message m = std::move(head);
    queue_.pop_front();
    ++front_seq_;
    --live_queued_;
    queued_bytes_ -= m.size;
    if (m.expect_reply && m.cancelled) {
      // Cancelled while half-written: now completely written, its reply is not awaited.
      ids_in_use_.erase(m.id);
      Complete(m, Abandoned());
    } else if (m.expect_reply) {
      uint32_t id = m.id;
      outstanding_.emplace(id, std::move(m));
    } else {
      // Complete(m, kOk), but for the observer.
      if (m.cancel_id != 0) UnindexCancellable(m);
      counters_->delivered.fetch_add(1, std::memory_order_relaxed);
      PublishCounts();
      ctx_->Finish(m, Outcome{});
      ++written;
    }
  }
  PopDeadFront();
  if (written > 0 && ctx_->options->observer != nullptr) {
    ctx_->options->observer->OnWritten(key_, written);
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

bool Connection::ReadSome() {
  std::vector<char>& buf = ctx_->read_buffer;
  if (read_waits_for_write_) {
    read_waits_for_write_ = false;
    SetWantWrite(live_queued_ > 0 || transport_->HasBufferedOutput());
  }
  for (int round = 0; round < kMaxReadsPerWakeup; ++round) {
    size_t n = 0;
    switch (transport_->Read(buf.data(), buf.size(), &n)) {
      case IoStatus::kOk:
        break;
      case IoStatus::kWantRead:
        return true;
      case IoStatus::kWantWrite:
        // TLS: the read needs to send first; EPOLLOUT continues it.
        read_waits_for_write_ = true;
        SetWantWrite(true);
        return true;
      case IoStatus::kClosed:
        LoseConnection(absl::StrCat("connection to ", connecting_to_, " closed by peer"));
        return false;
      case IoStatus::kError:
        LoseConnection(absl::StrCat("read from ", connecting_to_, ": ", transport_->error()));
        return false;
    }
    framer_.Append(absl::string_view(buf.data(), n));
    framer_appended_ += n;
    if (!ProcessFrames()) return false;
    // A short read drained the socket (and whatever TLS had decrypted).
    if (n < buf.size() && !transport_->HasBufferedInput()) return true;
  }
  if (transport_->HasBufferedInput() && resume_read_timer_ == 0) {
    // TLS holds decrypted bytes the socket will not signal again (it may be empty by now): read
    // them on the next iteration, after the other connections had their turn.
    resume_read_timer_ = ctx_->loop->RunAfter(absl::ZeroDuration(), [this] {
      resume_read_timer_ = 0;
      if (state_ == ConnState::kConnected) OnIo(EPOLLIN);
    });
  }
  return true;
}

bool Connection::ProcessFrames() {
  std::string& frame = ctx_->frame;
  while (framer_.Next(&frame)) {
    jsonrpc::Reply reply = ctx_->parser.Parse(frame);
    if (reply.kind == jsonrpc::Reply::Kind::kInvalid) {
      BreakStream(reply.detail);
      return false;
    }
    auto it = reply.kind == jsonrpc::Reply::Kind::kNoId || reply.id <= 0 || reply.id > kMaxRequestId
                  ? outstanding_.end()
                  : outstanding_.find(static_cast<uint32_t>(reply.id));
    if (it == outstanding_.end()) {
      // A late reply (after its timeout) or one without an id: counted, the stream stays usable.
      counters_->unmatched_replies.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    Message m = std::move(it->second);
    outstanding_.erase(it);
    ids_in_use_.erase(m.id);
    Outcome outcome;
    switch (reply.kind) {
      case jsonrpc::Reply::Kind::kResult:
        outcome.code = DeliveryCode::kOk;
        outcome.result = std::move(reply.result);
        break;
      case jsonrpc::Reply::Kind::kError:
        outcome.code = DeliveryCode::kRpcError;
        outcome.error_code = reply.error_code;
        outcome.error_message = std::move(reply.error_message);
        outcome.error_data = std::move(reply.error_data);
        break;
      default:
        outcome.code = DeliveryCode::kBadReply;
        outcome.detail = absl::StrCat("bad reply from ", connecting_to_, ": ", reply.detail);
        break;
    }
    Complete(m, std::move(outcome));
  }
  if (!framer_.status().ok()) {
    BreakStream(framer_.status().message());
    return false;
  }
  return true;
}

void Connection::ResetFramer() {
  // Assignment, not Reset(): Reset() keeps the buffer's capacity.
  framer_ = jsonrpc::ReplyFramer(ctx_->options->max_reply_bytes);
  framer_appended_ = 0;
  UpdateReplyBuffer();
}

void Connection::UpdateReplyBuffer() {
  size_t buffered = framer_.buffered();
  if (buffered == 0 && framer_appended_ > kFramerShrinkBytes) {
    framer_ = jsonrpc::ReplyFramer(ctx_->options->max_reply_bytes);
    framer_appended_ = 0;
  }
  if (buffered == reported_reply_bytes_) return;
  const int64_t delta =
      static_cast<int64_t>(buffered) - static_cast<int64_t>(reported_reply_bytes_);
  reported_reply_bytes_ = buffered;
  counters_->reply_buffer_bytes.store(buffered, std::memory_order_relaxed);
  ctx_->AddReplyBufferBytes(delta);
}

bool Connection::DropStrandedReply() {
  if (!outstanding_.empty() || framer_.buffered() == 0) return false;
  const size_t buffered = framer_.buffered();
  EB_LOG(kWarning, "closing connection: partial reply with no request outstanding", "target=", key_,
         " buffered=", buffered);
  LoseConnection(absl::StrCat("connection to ", connecting_to_, " closed: ", buffered,
                              " bytes of a reply arrived with no request outstanding"));
  return true;
}

void Connection::BreakStream(absl::string_view why) {
  // The request whose reply was being read gets BAD_REPLY; replies come in any order, so the
  // oldest outstanding one is the best guess. The others lose their connection.
  auto oldest = outstanding_.end();
  for (auto it = outstanding_.begin(); it != outstanding_.end(); ++it) {
    if (oldest == outstanding_.end() || it->second.seq < oldest->second.seq) oldest = it;
  }
  if (oldest != outstanding_.end()) {
    Message m = std::move(oldest->second);
    outstanding_.erase(oldest);
    ids_in_use_.erase(m.id);
    Complete(m, DeliveryCode::kBadReply,
             absl::StrCat("bad reply from ", connecting_to_, ": ", why));
  }
  EB_LOG(kWarning, "closing connection after a bad reply", "target=", key_,
         " error=", base::LogValue(why));
  LoseConnection(
      absl::StrCat("connection to ", connecting_to_, " closed after a bad reply: ", why));
}

void Connection::LoseConnection(absl::string_view detail) {
  CloseSocket();
  SetState(ConnState::kIdle, detail);
  ResetFramer();
  auto outstanding = std::move(outstanding_);
  outstanding_.clear();
  for (auto& [id, m] : outstanding) {
    ids_in_use_.erase(id);
    Complete(m, DeliveryCode::kConnectionLost, std::string(detail));
  }
  if (write_offset_ > 0) {
    // Half-written: the rest can never be sent on a new connection.
    Message m = std::move(queue_.front());
    queue_.pop_front();
    ++front_seq_;
    write_offset_ = 0;
    if (!m.dead) {
      --live_queued_;
      queued_bytes_ -= m.size;
      if (m.id != 0) ids_in_use_.erase(m.id);
      Complete(m, DeliveryCode::kConnectionLost, std::string(detail));
    }
    PopDeadFront();
  }
  // Unwritten messages wait for the new connection; the first attempt is immediate
  // (consecutive_failures_ is 0 after a successful connect), repeated failures back off.
  if (live_queued_ > 0) StartConnect();
}

// ---------------------------------------------------------------------------------------------
// Queue, deadlines, idle

void Connection::PopDeadFront() {
  while (!queue_.empty() && queue_.front().dead && write_offset_ == 0) {
    queue_.pop_front();
    ++front_seq_;
  }
}

void Connection::KillQueued(Message& message, Outcome outcome, bool expired) {
  message.dead = true;
  message.expired = expired;
  --live_queued_;
  queued_bytes_ -= message.size;
  if (message.id != 0) ids_in_use_.erase(message.id);
  message.owned_body.reset();
  message.body = nullptr;
  Complete(message, std::move(outcome));
}

void Connection::FailQueuedAfterConnectFailure(absl::Time limit) {
  queue_.ForEach([&](Message& m) {
    if (!m.dead && (m.fail_fast || m.connect_deadline < limit)) {
      KillQueued(m, NotConnectedOutcome());
    }
  });
  PopDeadFront();
}

void Connection::IndexCancellable(const Message& message) {
  cancellable_[message.cancel_id].emplace_back(message.seq, message.id);
}

void Connection::UnindexCancellable(const Message& message) {
  auto it = cancellable_.find(message.cancel_id);
  if (it == cancellable_.end()) return;
  auto& entries = it->second;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].first == message.seq) {
      entries[i] = entries.back();
      entries.pop_back();
      break;
    }
  }
  if (entries.empty()) cancellable_.erase(it);
}

bool Connection::IsLive(const DeadlineEntry& entry) const {
  if (entry.seq >= front_seq_ && entry.seq - front_seq_ < queue_.size()) {
    return !queue_[entry.seq - front_seq_].dead;
  }
  if (entry.id == 0) return false;
  auto it = outstanding_.find(entry.id);
  return it != outstanding_.end() && it->second.seq == entry.seq;
}

void Connection::ArmDeadlineTimer() {
  // Entries of completed messages are dropped lazily, once they dominate.
  const size_t live = live_queued_ + outstanding_.size();
  if (deadlines_.TooLarge(live)) {
    deadlines_.Compact(live, [this](const DeadlineEntry& e) { return IsLive(e); });
    PublishDeadlineEntries();
  }
  if (deadlines_.empty()) return;
  const absl::Time earliest = deadlines_.Earliest();
  if (deadline_timer_ != 0) {
    if (deadline_timer_at_ <= earliest) return;
    ctx_->loop->Cancel(deadline_timer_);
  }
  deadline_timer_at_ = earliest;
  deadline_timer_ = ctx_->loop->RunAt(earliest, [this] { OnDeadlineTimer(); });
}

void Connection::OnDeadlineTimer() {
  deadline_timer_ = 0;
  deadline_timer_at_ = absl::InfiniteFuture();
  // Left armed when the connection went idle (MaybeIdle): nothing can be due, and this is no
  // activity to restart the idle timeout with.
  if (deadlines_.empty()) return;
  std::vector<DeadlineEntry> expired;
  deadlines_.PopDue(absl::Now(), &expired);
  bool half_written_expired = false;
  for (const DeadlineEntry& e : expired) {
    if (!IsLive(e)) continue;
    if (e.connect_only) {
      // Only a message still waiting for the connection fails; once connected (or written), the
      // member is reachable and the message keeps the rest of its deadline.
      if (state_ != ConnState::kConnected && e.seq >= front_seq_ &&
          e.seq - front_seq_ < queue_.size()) {
        Message& m = queue_[e.seq - front_seq_];
        KillQueued(m, ConnectShareOutcome(m));
      }
      continue;
    }
    if (e.seq >= front_seq_ && e.seq - front_seq_ < queue_.size()) {
      Message& m = queue_[e.seq - front_seq_];
      absl::Duration budget = m.deadline - m.enqueued_at;
      if (e.seq == front_seq_ && write_offset_ > 0) {
        // Half-written: the stream would be corrupt if the rest were dropped, so the connection
        // is re-established (below) once every expired message is accounted for.
        half_written_expired = true;
        Outcome outcome;
        outcome.code = DeliveryCode::kTimeout;
        outcome.detail = absl::StrCat("not completely written to ", key_, " within ",
                                      absl::FormatDuration(budget), "; reconnecting");
        KillQueued(m, std::move(outcome), /*expired=*/true);
      } else if (state_ == ConnState::kConnected) {
        Outcome outcome;
        outcome.code = DeliveryCode::kTimeout;
        outcome.detail =
            absl::StrCat("not written to ", key_, " within ", absl::FormatDuration(budget));
        KillQueued(m, std::move(outcome), /*expired=*/true);
      } else {
        KillQueued(m, NotConnectedOutcome(), /*expired=*/true);
      }
    } else {
      auto it = outstanding_.find(e.id);
      Message m = std::move(it->second);
      outstanding_.erase(it);
      ids_in_use_.erase(m.id);
      Complete(m, DeliveryCode::kTimeout,
               absl::StrCat("no reply from ", key_, " within ",
                            absl::FormatDuration(m.deadline - m.enqueued_at)));
    }
  }
  PopDeadFront();
  if (half_written_expired) {
    LoseConnection(absl::StrCat("connection to ", connecting_to_,
                                " closed: a message timed out half-written"));
  } else if (state_ == ConnState::kConnected) {
    DropStrandedReply();
  }
  ArmDeadlineTimer();
  MaybeIdle();
  PublishCounts();
  PublishDeadlineEntries();
}

void Connection::MaybeIdle() {
  if (live_queued_ > 0 || !outstanding_.empty()) return;
  // Nothing left to time out. The deadline timer stays armed: a busy connection goes idle after
  // most flushes, and cancelling the timer here cost a timer (a hash map insert and erase and a
  // push on the loop's timer heap) per flush. It fires at most once per deadline with nothing due
  // and is then armed again for whatever is queued by then, usually not earlier than its time.
  deadlines_.clear();
  PublishDeadlineEntries();
  idle_since_ = absl::Now();
  if (idle_timer_ == 0) {
    idle_timer_ =
        ctx_->loop->RunAt(idle_since_ + ctx_->options->idle_timeout, [this] { OnIdleTimer(); });
  }
}

void Connection::OnIdleTimer() {
  idle_timer_ = 0;
  // Busy since: the next MaybeIdle() arms the timer again.
  if (live_queued_ > 0 || !outstanding_.empty()) return;
  absl::Time due = idle_since_ + ctx_->options->idle_timeout;
  if (absl::Now() < due) {
    idle_timer_ = ctx_->loop->RunAt(due, [this] { OnIdleTimer(); });
    return;
  }
  EB_LOG(kDebug, "closing idle connection", "target=", key_);
  Retire();
  ctx_->DestroyLater(key_);  // `this` stays valid until the end of the iteration
}

}  // namespace eventbus::net
