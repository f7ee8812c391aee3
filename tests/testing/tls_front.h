// A TLS-terminating front for loopback test peers: it accepts TLS (OpenSSL, a certificate from
// TestPki) on 127.0.0.1 and forwards the plaintext both ways to a JsonRpcPeer (or any TCP server)
// on another port, so every behaviour of the peer is available behind TLS and the peer records
// exactly the bytes EventBus put inside the TLS records. It also records what each handshake
// carried (SNI, client certificate), and can misbehave instead: close in the middle of the
// handshake, or answer it in plaintext like a server that does not speak TLS. Self-contained: it
// uses none of server/.
//
//   auto peer = JsonRpcPeer::Start().value();
//   auto front = TlsFront::Start({.cert = pki->IssueLocalhostServer().value(),
//                                 .upstream_port = peer->port()}).value();
//   ... subscribe front->socket() ("tls:127.0.0.1:PORT") and raise ...
#ifndef EVENTBUS_TESTS_TESTING_TLS_FRONT_H_
#define EVENTBUS_TESTS_TESTING_TLS_FRONT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/base/mutex.h"
#include "tests/testing/test_pki.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace eventbus::testing {

enum class TlsFrontMode {
  // Completes the TLS handshake, then forwards plaintext to and from the upstream port.
  kForward,
  // Reads the ClientHello and closes the connection (a peer gone mid-handshake).
  kCloseMidHandshake,
  // Not TLS: answers the ClientHello with a plaintext JSON-RPC reply and keeps reading.
  kPlaintext,
};

// Owned by one test. Thread-safe: an accept thread plus one thread per connection; Stop() (and
// the destructor) shut every socket down and join them all.
class TlsFront {
 public:
  struct Options {
    // Server certificate and key.
    CertFiles cert;
    // Set: client certificates are required and verified against this CA file.
    std::string client_ca_file;
    uint16_t upstream_port = 0;
    // 0: a free port; otherwise this one (to come back on the port after Stop()).
    uint16_t port = 0;
    TlsFrontMode mode = TlsFrontMode::kForward;
    // SO_RCVBUF of accepted connections (0 = kernel default): with a peer that stops reading,
    // a small value makes the TLS client's writes block soon.
    int receive_buffer_bytes = 0;
  };

  // Loads the certificate and listens. INTERNAL/UNAVAILABLE naming what failed.
  static absl::StatusOr<std::unique_ptr<TlsFront>> Start(Options options);
  ~TlsFront();
  TlsFront(const TlsFront&) = delete;
  TlsFront& operator=(const TlsFront&) = delete;

  uint16_t port() const { return port_; }
  // "tls:HOST:PORT[/METHOD]".
  std::string socket(absl::string_view host = "127.0.0.1", absl::string_view method = "") const;

  // Handshakes completed so far, and what each carried, in order: the SNI host name ("" when
  // none) and the client certificate's common name ("" when none).
  int handshakes() const;
  std::vector<std::string> server_names() const;
  std::vector<std::string> client_names() const;
  // Connections accepted so far (whatever became of them).
  int accepted() const { return accepted_.load(); }

  // Closes the listener and every connection; joins the threads. Idempotent.
  void Stop();
  // Listens again on the same port.
  absl::Status Restart();

 private:
  explicit TlsFront(Options options) : options_(std::move(options)) {}
  absl::Status Listen();
  void AcceptLoop(int listen_fd, int wake_fd);
  void Serve(int fd);
  void Forward(int fd);

  const Options options_;
  SSL_CTX* ctx_ = nullptr;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  std::thread accept_thread_;
  std::atomic<int> accepted_{0};

  mutable eventbus::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<int> open_fds_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> conn_threads_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> server_names_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> client_names_ ABSL_GUARDED_BY(mu_);
};

}  // namespace eventbus::testing

#endif  // EVENTBUS_TESTS_TESTING_TLS_FRONT_H_
