// A real loopback TCP server standing in for a subscriber in the writer pool tests: it accepts
// connections on 127.0.0.1, records every byte received per connection, splits the stream into
// JSON messages and answers them through a handler. It can pause reading (a non-reading peer),
// close a connection, and be restarted on the same port.
// Why not tests/testing/jsonrpc_peer.h (the JSON-RPC peer the higher layers use): the net tests
// address single connections (send on, close, read bytes of connection N), and this peer locks
// with std::mutex so ThreadSanitizer runs of server/net need no suppressions.
#ifndef EVENTBUS_TESTS_NET_LOOPBACK_PEER_H_
#define EVENTBUS_TESTS_NET_LOOPBACK_PEER_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"

namespace eventbus::net {

// Thread-safe. One acceptor thread plus one reader thread per connection.
class LoopbackPeer {
 public:
  struct Options {
    // 0: pick a free port.
    uint16_t port = 0;
    // False: accept but do not read until SetReading(true).
    bool reading = true;
    // SO_RCVBUF of the listening socket (inherited by accepted ones); 0 = default.
    int receive_buffer = 0;
    // Listen on [::1] instead of 127.0.0.1.
    bool ipv6 = false;
  };
  // Called on a reader thread for each complete JSON message received on connection `conn`;
  // returns bytes to send back on it (may be empty). May call CloseConnection(conn).
  using Handler = std::function<std::string(int conn, const std::string& message)>;

  // Listens on 127.0.0.1 (or ::1); aborts the test (ADD_FAILURE + nullptr) if it cannot.
  static std::unique_ptr<LoopbackPeer> Start(Options options, Handler handler = nullptr);
  ~LoopbackPeer();

  uint16_t port() const { return port_; }

  // Stops accepting and reading, closes every connection and joins the threads. Idempotent.
  void Stop();
  void SetReading(bool reading);
  void Send(int conn, const std::string& bytes);
  // Shuts the connection down; its reader thread closes it.
  void CloseConnection(int conn);

  int connections() const;
  // The bytes received on connection `conn` so far.
  std::string Received(int conn) const;
  // Every complete message received, over all connections, in arrival order per connection.
  std::vector<std::string> Messages() const;
  size_t message_count() const;

  bool WaitForMessages(size_t count, absl::Duration timeout) const;
  bool WaitForBytes(int conn, size_t count, absl::Duration timeout) const;
  bool WaitForConnections(int count, absl::Duration timeout) const;
  // True once the peer side of connection `conn` saw end-of-stream.
  bool WaitForClosed(int conn, absl::Duration timeout) const;

  // The numeric value of a message's leading "id" member, or 0 when it has none.
  static int64_t IdOf(const std::string& message);

 private:
  struct Conn {
    int fd = -1;
    std::string received;
    std::string pending;  // bytes not yet split into a complete message
    bool closed = false;
    std::thread reader;
    std::mutex write_mu;
  };

  LoopbackPeer(int listen_fd, uint16_t port, bool reading, Handler handler);
  void AcceptLoop();
  void ReadLoop(int index);

  const int listen_fd_;
  const uint16_t port_;
  const Handler handler_;
  std::thread acceptor_;

  // Waits on a predicate over the state below, up to `timeout`.
  template <typename Pred>
  bool WaitUntil(Pred pred, absl::Duration timeout) const {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), pred);
  }

  // std:: primitives so that ThreadSanitizer sees them (see test_sync.h). cv_ is signalled on
  // every change of the state it guards.
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool stopping_ = false;                     // guarded by mu_
  bool reading_;                              // guarded by mu_
  std::vector<std::unique_ptr<Conn>> conns_;  // guarded by mu_
  std::vector<std::string> messages_;         // guarded by mu_
};

}  // namespace eventbus::net

#endif  // EVENTBUS_TESTS_NET_LOOPBACK_PEER_H_
