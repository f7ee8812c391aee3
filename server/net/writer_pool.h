// The writer pool (SPEC §4): N event loops, each on its own thread, each owning for their whole
// life the connections to the targets that hash to it. One persistent TCP connection per target
// host:port, shared by every subscription to it; requests are pipelined on it. Submit() is the one
// way in: it groups a batch by owning loop and posts one closure per loop.
#ifndef EVENTBUS_SERVER_NET_WRITER_POOL_H_
#define EVENTBUS_SERVER_NET_WRITER_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/net/outcome.h"
#include "server/uri/socket_uri.h"

namespace eventbus::net {

struct PoolOptions {
  // Event-loop threads; 0 = number of cores.
  int num_loops = 0;
  // Per-target queue bound: messages not yet completely written (plus, in sync mode, requests
  // awaiting a reply count against max_queue_messages too).
  size_t max_queue_messages = 10000;
  size_t max_queue_bytes = 16 << 20;
  // Non-blocking connect gives up after this long (CONNECT_FAILED).
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
};

// One message for one target.
struct Request {
  // Host and port name the connection; the method is not used here.
  uri::TcpTarget target;
  // The shared body from jsonrpc::EncodeBody; the connection writes the "{" or "{\"id\":N,"
  // prefix itself.
  std::shared_ptr<const std::string> body;
  // True: a JSON-RPC request (sync mode), completed by its reply. False: a notification,
  // completed (kOk) once completely written.
  bool expect_reply = false;
  // Sync: the whole budget for connect + write + reply. Async: the latest time to be written.
  absl::Time deadline;
  // Fail with kConnectFailed/kResolveFailed as soon as one connect (or resolve) attempt fails,
  // instead of staying queued for the retries until the deadline. Virtual-group members use it so
  // the next member gets the rest of the budget. (A target in backoff still waits for its next
  // scheduled attempt when that comes before the deadline.)
  bool fail_fast = false;
  // Exactly once, on the owning loop thread; after Shutdown(), on the thread that called it (or
  // inline in a Submit that comes later), since the loops are gone by then. kQueueFull runs inside
  // Submit's loop batch, before `all_enqueued`.
  OutcomeCallback done;
};

enum class ConnState { kIdle, kResolving, kConnecting, kConnected, kBackoff };
absl::string_view ConnStateName(ConnState state);

// A snapshot of one target's connection, readable from any thread.
struct TargetStats {
  std::string key;
  ConnState state = ConnState::kIdle;
  uint32_t queued_messages = 0;
  uint32_t outstanding_requests = 0;
  uint64_t delivered = 0;  // notifications written + replies received
  uint64_t failed = 0;     // every outcome other than kOk/kRpcError
  uint64_t reconnects = 0;
  uint64_t unmatched_replies = 0;  // unknown id or no id: counted and ignored
  // When the last connect (or resolve) attempt failed; InfinitePast when none did.
  absl::Time last_connect_failure = absl::InfinitePast();
};

// Thread-safe.
class WriterPool {
 public:
  // Starts the loop threads.
  static absl::StatusOr<std::unique_ptr<WriterPool>> Create(const PoolOptions& options);
  // Shutdown() if not done yet.
  ~WriterPool();

  // Hands each request to the loop that owns its target: one Post per loop touched. After every
  // request has been enqueued (or rejected with kQueueFull through its own `done`),
  // `all_enqueued` runs once, on one of the loop threads. Never blocks on the network.
  void Submit(std::vector<Request> requests, absl::AnyInvocable<void()> all_enqueued = nullptr);

  // Waits (blocking; main thread only) until every queue is empty and nothing is outstanding, or
  // `deadline`. Returns true when drained. Used for graceful shutdown.
  bool Drain(absl::Time deadline);

  // Stops the loops; whatever is still queued or outstanding completes with kConnectionLost
  // ("shutting down"). Idempotent.
  void Shutdown();

  // The connection state and counters of target `key` ("host:port"), if it has a connection.
  std::optional<TargetStats> Stats(const std::string& key) const;
  // All targets.
  std::vector<TargetStats> AllStats() const;

  int num_loops() const;

 private:
  WriterPool() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_WRITER_POOL_H_
