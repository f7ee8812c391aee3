// A TCP proxy on loopback for fault tests: it forwards bytes both ways between its clients and one
// upstream server (a real etcd, say), and can hold back what the server sends for a configurable
// time (a reply that arrives after the caller's deadline, though the request was served) or drop
// everything in both directions (a black-holed network). Not a stub: the server is real and sees
// every byte the client sent, in order.
#ifndef EVENTBUS_TESTS_TESTING_DELAY_PROXY_H_
#define EVENTBUS_TESTS_TESTING_DELAY_PROXY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/base/mutex.h"

namespace eventbus::testing {

// Owned by one test. Thread-safe: the setters may be called from any thread while traffic flows.
// Each accepted connection gets its own upstream connection and three threads (client->server,
// server->release queue, queue->client); the destructor closes every socket and joins them all.
class DelayProxy {
 public:
  // Listens on 127.0.0.1 (port 0) and forwards each connection to 127.0.0.1:upstream_port.
  // UNAVAILABLE when the listening socket cannot be set up.
  static absl::StatusOr<std::unique_ptr<DelayProxy>> Start(uint16_t upstream_port);

  ~DelayProxy();
  DelayProxy(const DelayProxy&) = delete;
  DelayProxy& operator=(const DelayProxy&) = delete;

  uint16_t port() const { return port_; }
  // "127.0.0.1:PORT", for clients.
  std::string endpoint() const;

  // Bytes the server sends from now on reach the client `delay` after the proxy read them (in
  // order: a later, shorter delay never overtakes earlier bytes). Zero forwards at once.
  void SetReplyDelay(absl::Duration delay) { DelayRepliesAfter(delay, 0); }
  // The same, but only for what the server sends once clients have sent more than `client_bytes`
  // further bytes: the reply to a large request is late while the small exchanges before it are
  // not (the proxy counts a client's bytes before forwarding them, so the server cannot answer
  // a request before it is counted).
  void DelayRepliesAfter(absl::Duration delay, int64_t client_bytes);
  // While on, bytes read in either direction are discarded (connections stay open, as on a
  // network that silently loses packets).
  void SetBlackHole(bool on);

  // Connections accepted and forwarded so far.
  int connections() const { return connections_.load(); }
  // Bytes received from clients (and forwarded to the server unless black-holed) so far.
  int64_t bytes_to_server() const { return bytes_to_server_.load(); }

 private:
  struct Link;

  DelayProxy(int listen_fd, int wake_fd, uint16_t port, uint16_t upstream_port);
  void AcceptLoop();
  void StartLink(int client_fd);
  void PumpUp(Link* link);
  void PumpDownRead(Link* link);
  void PumpDownWrite(Link* link);

  const int listen_fd_;
  const int wake_fd_;  // eventfd: wakes the accept loop to stop
  const uint16_t port_;
  const uint16_t upstream_port_;
  std::atomic<int64_t> delay_us_{0};
  // The delay applies once bytes_to_server_ exceeds this.
  std::atomic<int64_t> delay_after_bytes_{-1};
  std::atomic<bool> black_hole_{false};
  std::atomic<int> connections_{0};
  std::atomic<int64_t> bytes_to_server_{0};
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;

  eventbus::Mutex mu_;
  std::vector<std::unique_ptr<Link>> links_ ABSL_GUARDED_BY(mu_);
};

}  // namespace eventbus::testing

#endif  // EVENTBUS_TESTS_TESTING_DELAY_PROXY_H_
