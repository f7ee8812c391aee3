// A real JSON-RPC 2.0 server on loopback for tests: it listens on 127.0.0.1 (or ::1), accepts any
// number of connections, records every byte and every top-level JSON message it reads, and
// answers them as told (result, error, silence, no reading at all, close, garbage, delays,
// out-of-order, replies split into single-byte writes). It stands in for the subscribers EventBus
// delivers to. Self-contained: it uses none of server/, so it cannot share a bug with the code
// it tests.
//
//   auto peer = JsonRpcPeer::Start().value();
//   ... subscribe peer->socket() and raise an event ...
//   ASSERT_TRUE(peer->WaitForMessages(1, absl::Seconds(5)));
//   EXPECT_EQ(peer->Messages()[0], R"({"jsonrpc":"2.0","method":"E","params":{}})");
#ifndef EVENTBUS_TESTS_TESTING_JSONRPC_PEER_H_
#define EVENTBUS_TESTS_TESTING_JSONRPC_PEER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/base/mutex.h"

namespace eventbus::testing {

// What the peer does with the messages it reads. A "request" is a message with an "id" member
// (any JSON value but null); the id is echoed back verbatim. Notifications are only recorded.
enum class PeerMode {
  // {"jsonrpc":"2.0","id":N,"result":<result_json>} per request.
  kReplyResult,
  // {"jsonrpc":"2.0","id":N,"error":{"code":C,"message":"M"}} per request.
  kReplyError,
  // Read and record; never answer.
  kNeverReply,
  // Accept but never read, so the sender's socket buffers fill up (see receive_buffer_bytes).
  kNoRead,
  // Read until one complete message arrived, then close that connection without answering.
  // Every message in that same read is still recorded.
  kCloseAfterRead,
  // Answer each request with `garbage` (non-JSON bytes).
  kGarbage,
  // Answer each message (requests and notifications) with what `responder` returns.
  kCustom,
};

// The changeable part of the peer's behaviour. Copyable.
struct PeerBehavior {
  PeerMode mode = PeerMode::kReplyResult;
  // kReplyResult: the raw JSON of "result".
  std::string result_json = "\"ok\"";
  // kReplyError: code and message (the message is JSON-escaped by the peer).
  int64_t error_code = -32000;
  std::string error_message = "peer error";
  // kGarbage: the bytes sent in place of a reply.
  std::string garbage = std::string("\x01\x02garbage");
  // kCustom: called on the peer thread with one received message and the raw text of its id (""
  // for a notification); returns the bytes to send back, or nullopt for none.
  std::function<std::optional<std::string>(absl::string_view message, absl::string_view id)>
      responder;

  // Every reply is sent this long after its request was read (timers, not sleeps).
  absl::Duration reply_delay = absl::ZeroDuration();
  // Out of order: > 1 holds the replies of a connection until that many are pending, then sends
  // them newest first. Replies held when the behaviour changes stay held until the batch fills.
  int reverse_batch = 0;
  // Each reply is written in pieces of this many bytes, one write(2) each (1 = byte by byte).
  // 0 = one write per reply.
  size_t chunk_bytes = 0;
  // When chunk_bytes is 0: > 0 writes the first split_at bytes, then the rest, as two writes.
  size_t split_at = 0;
  // Delay between the pieces of one reply, so the receiver almost surely reads them separately.
  absl::Duration chunk_pause = absl::ZeroDuration();
  // Bytes written after every reply, e.g. "\n" or "\r\n".
  std::string separator;
};

// Owner: the test. Thread-safe: every method may be called from any thread while the peer's own
// thread serves connections. Waits use deadlines, never sleeps.
class JsonRpcPeer {
 public:
  struct Options {
    PeerBehavior behavior;
    // Listen on ::1 instead of 127.0.0.1.
    bool ipv6 = false;
    // 0 = a free port chosen by the kernel; otherwise this port (e.g. to come back on the port a
    // previous peer used). SO_REUSEADDR is set.
    uint16_t port = 0;
    // SO_RCVBUF of accepted connections (0 = kernel default). A small value makes kNoRead fill
    // the sender's buffers after a few KiB.
    int receive_buffer_bytes = 0;

    // Called on the peer thread for every message read (as Messages() records it), with the
    // serial number of the connection it came on: 1 for the first connection accepted since
    // Start, counting across Restart. For tests that keep their own per-connection record over a
    // long run; they may call ClearRecorded() now and then to bound the peer's memory.
    std::function<void(int connection, absl::string_view message)> on_message;
  };

  // Binds, listens and starts the peer thread. Returns UNAVAILABLE when the port cannot be bound
  // (e.g. in use), INTERNAL for other socket failures.
  static absl::StatusOr<std::unique_ptr<JsonRpcPeer>> Start(Options options);
  static absl::StatusOr<std::unique_ptr<JsonRpcPeer>> Start() { return Start(Options()); }

  // Stops the peer (closes the listener and every connection).
  ~JsonRpcPeer();
  JsonRpcPeer(const JsonRpcPeer&) = delete;
  JsonRpcPeer& operator=(const JsonRpcPeer&) = delete;

  // The listening port; unchanged by Stop() and Restart().
  uint16_t port() const { return port_; }
  // "127.0.0.1" or "::1".
  std::string host() const;
  // The subscriber socket naming this peer: "tcp:127.0.0.1:PORT[/METHOD]" ("tcp:[::1]:PORT..."
  // for ipv6).
  std::string socket(absl::string_view method = "") const;

  // Changes the behaviour; applies to everything read from now on.
  void SetBehavior(PeerBehavior behavior);
  // Changes only the mode.
  void SetMode(PeerMode mode);
  PeerBehavior behavior() const;

  // Every byte read, all connections concatenated in the order the reads happened.
  std::string Received() const;
  // Every top-level JSON object or array read, as text, in arrival order. Bytes outside a message
  // other than whitespace are skipped (they still appear in Received()).
  std::vector<std::string> Messages() const;
  size_t message_count() const;
  size_t bytes_received() const;
  // Forgets Received() and Messages() (counters of connections are kept).
  void ClearRecorded();

  // Each returns true as soon as the condition holds, false when `timeout` passes first.
  bool WaitForMessages(size_t n, absl::Duration timeout);          // message_count() >= n
  bool WaitForBytes(size_t n, absl::Duration timeout);             // bytes_received() >= n
  bool WaitForConnectionsAccepted(int n, absl::Duration timeout);  // connections_accepted() >= n
  bool WaitForOpenConnections(int n, absl::Duration timeout);      // open_connections() == n

  // Connections accepted since Start (across Restart), and currently open.
  int connections_accepted() const;
  int open_connections() const;

  // Queues `bytes` for every open connection (unsolicited data, a late reply, an unknown id...).
  // Returns once the peer thread has queued them; they are written like replies.
  void SendToAll(absl::string_view bytes);
  // Closes every open connection but keeps listening. Returns once they are closed.
  void DropConnections();

  // Closes the listener and every connection and joins the thread. Idempotent. Recorded data and
  // counters are kept.
  void Stop();
  // Stop()s if running, then listens again on the same port. UNAVAILABLE if the port was taken.
  absl::Status Restart();

 private:
  struct Conn;
  explicit JsonRpcPeer(Options options);
  absl::Status Listen();
  void Run();
  // Runs `command` on the peer thread and waits for it (no-op when stopped).
  void RunOnPeerThread(std::function<void()> command);
  void Wake();

  // Peer thread only.
  void AcceptAll();
  void ReadFrom(Conn& conn);
  void HandleMessage(Conn& conn, const std::string& message, const PeerBehavior& behavior);
  void QueueReply(Conn& conn, std::string reply, const PeerBehavior& behavior);
  void Flush(Conn& conn);
  void CloseConn(Conn& conn);

  const Options options_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;
  // Serialises Stop/Restart against each other.
  eventbus::Mutex lifecycle_mu_;
  // Peer thread only while running.
  std::vector<std::unique_ptr<Conn>> conns_;

  mutable eventbus::Mutex mu_;
  PeerBehavior behavior_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::function<void()>> commands_ ABSL_GUARDED_BY(mu_);
  uint64_t commands_queued_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t commands_done_ ABSL_GUARDED_BY(mu_) = 0;
  std::string received_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> messages_ ABSL_GUARDED_BY(mu_);
  int accepted_ ABSL_GUARDED_BY(mu_) = 0;
  int open_ ABSL_GUARDED_BY(mu_) = 0;
};

// A loopback port that black-holes connection attempts: SYNs get no answer, so connect() neither
// succeeds nor fails until the connector gives up. It listens with backlog 0 and fills its accept
// queue with connections it never accepts; the kernel then drops further SYNs. Start() checks that
// a probe connect really hangs on this kernel. Owner: the test; not thread-safe.
class BlackholeListener {
 public:
  // INTERNAL when the port cannot be made to black-hole.
  static absl::StatusOr<std::unique_ptr<BlackholeListener>> Start();
  ~BlackholeListener();
  BlackholeListener(const BlackholeListener&) = delete;
  BlackholeListener& operator=(const BlackholeListener&) = delete;

  uint16_t port() const { return port_; }
  // "tcp:127.0.0.1:PORT".
  std::string socket() const;

 private:
  BlackholeListener() = default;
  int listen_fd_ = -1;
  std::vector<int> fillers_;
  uint16_t port_ = 0;
};

}  // namespace eventbus::testing

#endif  // EVENTBUS_TESTS_TESTING_JSONRPC_PEER_H_
