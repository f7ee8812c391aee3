// TLS over TCP under a target connection (tls: sockets, SPEC §10), with OpenSSL. TlsClientContext
// is the pool's one SSL_CTX (trust store, TLS 1.2 minimum, optional client certificate), built
// when the pool starts; each connection gets a TlsTransport from it that verifies the target's
// certificate against the host name (or IP literal) of its socket and sends SNI for names. The
// handshake and every read and write are non-blocking, driven by the loop's readiness events.
#ifndef EVENTBUS_SERVER_NET_TLS_TRANSPORT_H_
#define EVENTBUS_SERVER_NET_TLS_TRANSPORT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/net/transport.h"
#include "server/net/writer_pool.h"
#include "server/uri/socket_uri.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace eventbus::net {

// Thread-safe after Create (OpenSSL's SSL_CTX may be shared by the loops).
class TlsClientContext {
 public:
  // Builds the SSL_CTX. INVALID_ARGUMENT naming the option, the file and the problem, e.g.
  // `target_ca_file "/etc/x.pem": cannot load CA certificates: no certificate or crl found`.
  static absl::StatusOr<std::unique_ptr<TlsClientContext>> Create(const TargetTlsOptions& options);
  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;

  // A client transport over connected socket `fd` (not owned) to `target`: SNI = its host name
  // (none for IP literals), certificate checked against that name or address. Loop thread.
  std::unique_ptr<Transport> NewTransport(int fd, const uri::TcpTarget& target) const;

 private:
  explicit TlsClientContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* const ctx_;
};

// One TLS client stream. Loop thread only. Write() copies what it takes into a staging buffer of
// its own (OpenSSL must be called again with the same bytes after SSL_ERROR_WANT_WRITE, which the
// connection's queue cannot promise), so from the session's view those bytes are written.
class TlsTransport final : public Transport {
 public:
  // Takes `ssl` (already bound to the socket and the target's name).
  explicit TlsTransport(SSL* ssl);
  ~TlsTransport() override;

  IoStatus Handshake() override;
  IoStatus Write(const iovec* iov, int iovcnt, size_t* written) override;
  bool HasBufferedOutput() const override { return staged_offset_ < staged_.size(); }
  IoStatus FlushBuffered() override;
  IoStatus Read(char* buf, size_t size, size_t* read) override;
  bool HasBufferedInput() const override;

 private:
  // Maps a failed SSL_* call (`rc`) to a status, setting error_ for kError/kClosed.
  IoStatus Failed(int rc, bool handshake);

  SSL* const ssl_;
  std::string staged_;
  size_t staged_offset_ = 0;
  // Set when a Read() returned bytes but had already met the end of the stream or an error:
  // the next Read() reports it.
  IoStatus deferred_ = IoStatus::kOk;
};

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_TLS_TRANSPORT_H_
