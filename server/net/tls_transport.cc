#include "server/net/tls_transport.h"

#include <errno.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/tls/pem.h"

namespace eventbus::net {
namespace {

// Plaintext taken per Write(): up to four full TLS records (16 KiB each).
constexpr size_t kStageBytes = 64 << 10;

// The reasons on this thread's OpenSSL error queue, oldest first, and clears it. OpenSSL keeps one
// queue per thread, so every loop drains what its own calls left.
std::string TakeOpensslErrors() {
  std::vector<std::string> reasons;
  while (unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    std::string text;
    if (reason != nullptr) {
      text = reason;
    } else {
      char buf[256];
      ERR_error_string_n(e, buf, sizeof(buf));
      text = buf;
    }
    if (std::find(reasons.begin(), reasons.end(), text) == reasons.end()) {
      reasons.push_back(std::move(text));
    }
  }
  if (reasons.empty()) return "unknown OpenSSL error";
  return absl::StrJoin(reasons, ": ");
}

// A socket BIO that sends with MSG_NOSIGNAL: OpenSSL's own socket BIO uses write(), which raises
// SIGPIPE when the target has gone (the server ignores SIGPIPE, but nothing else should have to).
// It also keeps the errno of the last failure, since OpenSSL may clobber errno after it.
struct SocketBio {
  int fd = -1;
  int last_errno = 0;
};

int BioWrite(BIO* bio, const char* data, int len) {
  BIO_clear_retry_flags(bio);
  auto* sock = static_cast<SocketBio*>(BIO_get_data(bio));
  sock->last_errno = 0;  // 0 after this call: an end of stream, not an error
  for (;;) {
    ssize_t n = ::send(sock->fd, data, static_cast<size_t>(len), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return static_cast<int>(n);
    if (errno == EINTR) continue;
    sock->last_errno = errno;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(bio);
    return -1;
  }
}

int BioRead(BIO* bio, char* data, int len) {
  BIO_clear_retry_flags(bio);
  auto* sock = static_cast<SocketBio*>(BIO_get_data(bio));
  sock->last_errno = 0;  // 0 after this call: an end of stream, not an error
  for (;;) {
    ssize_t n = ::recv(sock->fd, data, static_cast<size_t>(len), 0);
    if (n >= 0) return static_cast<int>(n);
    if (errno == EINTR) continue;
    sock->last_errno = errno;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(bio);
    return -1;
  }
}

long BioCtrl(BIO*, int cmd, long, void*) {  // NOLINT(runtime/int): OpenSSL's signature
  // Nothing is buffered in this BIO: a flush always succeeds; every other control is unsupported.
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

int BioDestroy(BIO* bio) {
  delete static_cast<SocketBio*>(BIO_get_data(bio));
  BIO_set_data(bio, nullptr);
  return 1;
}

const BIO_METHOD* SocketBioMethod() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "eventbus socket");
    BIO_meth_set_write(m, BioWrite);
    BIO_meth_set_read(m, BioRead);
    BIO_meth_set_ctrl(m, BioCtrl);
    BIO_meth_set_destroy(m, BioDestroy);
    return m;
  }();
  return method;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// TlsClientContext

absl::StatusOr<std::unique_ptr<TlsClientContext>> TlsClientContext::Create(
    const TargetTlsOptions& options) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) {
    return absl::InternalError(absl::StrCat("TLS for targets: ", TakeOpensslErrors()));
  }
  std::unique_ptr<TlsClientContext> owner(new TlsClientContext(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  // Renegotiation would let a target make a write wait for a read mid-stream; refuse it.
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  // SSL_write may send part of what it was given (record by record) and be retried from another
  // address holding the same bytes.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (options.ca_file.empty()) {
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("TLS for targets: cannot use the system CA store: ", TakeOpensslErrors()));
    }
  } else {
    // Read and checked first, so that a wrong file reads like every other TLS flag's error.
    if (absl::StatusOr<std::string> ca =
            tls::ReadCertificates({"--target_ca_file", options.ca_file});
        !ca.ok()) {
      return ca.status();
    }
    if (SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--target_ca_file \"", options.ca_file,
                       "\": cannot load CA certificates: ", TakeOpensslErrors()));
    }
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError(
        options.cert_file.empty()
            ? absl::StrCat("--target_key \"", options.key_file, "\" needs --target_cert as well")
            : absl::StrCat("--target_cert \"", options.cert_file, "\" needs --target_key as well"));
  }
  if (!options.cert_file.empty()) {
    if (absl::StatusOr<tls::KeyPair> pair = tls::ReadKeyPair({"--target_cert", options.cert_file},
                                                             {"--target_key", options.key_file});
        !pair.ok()) {
      return pair.status();
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, options.cert_file.c_str()) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--target_cert \"", options.cert_file,
                       "\": cannot load the certificate: ", TakeOpensslErrors()));
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--target_key \"", options.key_file,
                       "\": cannot load the private key: ", TakeOpensslErrors()));
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--target_key \"", options.key_file, "\" does not match target_cert \"",
                       options.cert_file, "\": ", TakeOpensslErrors()));
    }
  }
  return owner;
}

TlsClientContext::~TlsClientContext() { SSL_CTX_free(ctx_); }

std::unique_ptr<Transport> TlsClientContext::NewTransport(int fd,
                                                          const uri::TcpTarget& target) const {
  ERR_clear_error();
  SSL* ssl = SSL_new(ctx_);
  BIO* bio = ssl != nullptr ? BIO_new(SocketBioMethod()) : nullptr;
  if (bio == nullptr) {
    // Out of memory: the handshake reports it.
    if (ssl != nullptr) SSL_free(ssl);
    ssl = nullptr;
  } else {
    auto* sock = new SocketBio;
    sock->fd = fd;
    BIO_set_data(bio, sock);
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl, bio, bio);  // one reference, owned by `ssl`
    SSL_set_connect_state(ssl);
    // A trailing dot (a fully qualified name) is not part of the name in the certificate or SNI.
    std::string host = target.host;
    if (absl::EndsWith(host, ".")) host.pop_back();
    if (target.IsIpLiteral()) {
      // No SNI for addresses (RFC 6066); the certificate must carry the address as an IP SAN.
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl, host.c_str());
      SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      SSL_set1_host(ssl, host.c_str());
    }
  }
  // With a null `ssl` (out of memory) the handshake fails with OpenSSL's reason.
  return std::make_unique<TlsTransport>(ssl);
}

// ---------------------------------------------------------------------------------------------
// TlsTransport

TlsTransport::TlsTransport(SSL* ssl) : ssl_(ssl) {}

TlsTransport::~TlsTransport() {
  if (ssl_ == nullptr) return;
  // A close_notify when the session is up, once and without waiting: the socket is closed next.
  if (SSL_is_init_finished(ssl_)) {
    ERR_clear_error();
    SSL_shutdown(ssl_);
    ERR_clear_error();
  }
  SSL_free(ssl_);
}

IoStatus TlsTransport::Failed(int rc, bool handshake) {
  const int err = SSL_get_error(ssl_, rc);
  switch (err) {
    case SSL_ERROR_WANT_READ:
      return IoStatus::kWantRead;
    case SSL_ERROR_WANT_WRITE:
      return IoStatus::kWantWrite;
    case SSL_ERROR_ZERO_RETURN:
      ERR_clear_error();
      error_ = "closed by the peer (close_notify)";
      return IoStatus::kClosed;
    default:
      break;
  }
  if (handshake) {
    const long verify = SSL_get_verify_result(ssl_);  // NOLINT(runtime/int)
    if (verify != X509_V_OK) {
      ERR_clear_error();
      error_ = absl::StrCat("certificate verify failed: ", X509_verify_cert_error_string(verify));
      return IoStatus::kError;
    }
  }
  const unsigned long first = ERR_peek_error();  // NOLINT(runtime/int)
  if (err == SSL_ERROR_SYSCALL && first == 0) {
    auto* sock = static_cast<SocketBio*>(BIO_get_data(SSL_get_rbio(ssl_)));
    if (sock->last_errno == 0) {
      error_ = handshake ? "connection closed by the peer during the handshake"
                         : "connection closed by the peer";
      return handshake ? IoStatus::kError : IoStatus::kClosed;
    }
    error_ = strerror(sock->last_errno);
    return IoStatus::kError;
  }
  if (ERR_GET_LIB(first) == ERR_LIB_SSL &&
      ERR_GET_REASON(first) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
    // The peer closed without close_notify: for JSON-RPC framing this is an ordinary close.
    ERR_clear_error();
    error_ = handshake ? "connection closed by the peer during the handshake"
                       : "connection closed by the peer";
    return handshake ? IoStatus::kError : IoStatus::kClosed;
  }
  error_ = TakeOpensslErrors();
  return IoStatus::kError;
}

IoStatus TlsTransport::Handshake() {
  if (ssl_ == nullptr) {
    error_ = absl::StrCat("cannot create the TLS session: ", TakeOpensslErrors());
    return IoStatus::kError;
  }
  ERR_clear_error();
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) return IoStatus::kOk;
  return Failed(rc, /*handshake=*/true);
}

IoStatus TlsTransport::FlushBuffered() {
  while (staged_offset_ < staged_.size()) {
    ERR_clear_error();
    // The same bytes (from the same offset) as the call that asked to be retried.
    size_t left = std::min<size_t>(staged_.size() - staged_offset_, INT_MAX);
    int rc = SSL_write(ssl_, staged_.data() + staged_offset_, static_cast<int>(left));
    if (rc > 0) {
      staged_offset_ += static_cast<size_t>(rc);
      continue;
    }
    IoStatus status = Failed(rc, /*handshake=*/false);
    // A close seen while writing is a broken stream.
    return status == IoStatus::kClosed ? IoStatus::kError : status;
  }
  staged_.clear();
  staged_offset_ = 0;
  return IoStatus::kOk;
}

IoStatus TlsTransport::Write(const iovec* iov, int iovcnt, size_t* written) {
  *written = 0;
  if (HasBufferedOutput()) {
    IoStatus status = FlushBuffered();
    if (status != IoStatus::kOk) return status;
  }
  staged_.clear();
  staged_offset_ = 0;
  for (int i = 0; i < iovcnt && staged_.size() < kStageBytes; ++i) {
    size_t take = std::min(iov[i].iov_len, kStageBytes - staged_.size());
    staged_.append(static_cast<const char*>(iov[i].iov_base), take);
  }
  const size_t taken = staged_.size();
  if (taken == 0) return IoStatus::kOk;
  IoStatus status = FlushBuffered();
  if (status == IoStatus::kError) return status;
  // Sent, or staged until the socket takes them (kWantRead/kWantWrite): taken either way.
  *written = taken;
  return IoStatus::kOk;
}

IoStatus TlsTransport::Read(char* buf, size_t size, size_t* read) {
  *read = 0;
  if (deferred_ != IoStatus::kOk) {
    IoStatus status = deferred_;
    deferred_ = IoStatus::kOk;
    return status;
  }
  while (*read < size) {
    ERR_clear_error();
    size_t want = std::min<size_t>(size - *read, INT_MAX);
    int rc = SSL_read(ssl_, buf + *read, static_cast<int>(want));
    if (rc > 0) {
      *read += static_cast<size_t>(rc);
      continue;
    }
    IoStatus status = Failed(rc, /*handshake=*/false);
    if (*read == 0) return status;
    // Bytes first; the end of the stream (or the error) on the next call.
    if (status == IoStatus::kClosed || status == IoStatus::kError) deferred_ = status;
    return IoStatus::kOk;
  }
  return IoStatus::kOk;
}

bool TlsTransport::HasBufferedInput() const {
  return deferred_ != IoStatus::kOk || (ssl_ != nullptr && SSL_pending(ssl_) > 0);
}

}  // namespace eventbus::net
