#include "tests/testing/tls_front.h"

#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "tests/testing/ports.h"

namespace eventbus::testing {
namespace {

std::string OpensslError() {
  char buf[256];
  unsigned long e = ERR_get_error();  // NOLINT(runtime/int)
  if (e == 0) return "unknown error";
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

bool SendAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool SslWriteAll(SSL* ssl, const char* data, size_t size) {
  while (size > 0) {
    int n = SSL_write(ssl, data, static_cast<int>(size));
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TlsFront>> TlsFront::Start(Options options) {
  std::unique_ptr<TlsFront> front(new TlsFront(std::move(options)));
  const Options& o = front->options_;
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return absl::InternalError("TlsFront: SSL_CTX_new: " + OpensslError());
  front->ctx_ = ctx;
  if (SSL_CTX_use_certificate_chain_file(ctx, o.cert.cert_path.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, o.cert.key_path.c_str(), SSL_FILETYPE_PEM) != 1) {
    return absl::InternalError(
        absl::StrCat("TlsFront: certificate ", o.cert.cert_path, ": ", OpensslError()));
  }
  if (!o.client_ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, o.client_ca_file.c_str(), nullptr) != 1) {
      return absl::InternalError(
          absl::StrCat("TlsFront: client CA ", o.client_ca_file, ": ", OpensslError()));
    }
    SSL_CTX_set_client_CA_list(ctx, SSL_load_client_CA_file(o.client_ca_file.c_str()));
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  if (absl::Status s = front->Listen(); !s.ok()) return s;
  return front;
}

TlsFront::~TlsFront() {
  Stop();
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

std::string TlsFront::socket(absl::string_view host, absl::string_view method) const {
  std::string out = absl::StrCat("tls:", host, ":", port_);
  if (!method.empty()) absl::StrAppend(&out, "/", method);
  return out;
}

int TlsFront::handshakes() const {
  MutexLock lock(&mu_);
  return static_cast<int>(server_names_.size());
}

std::vector<std::string> TlsFront::server_names() const {
  MutexLock lock(&mu_);
  return server_names_;
}

std::vector<std::string> TlsFront::client_names() const {
  MutexLock lock(&mu_);
  return client_names_;
}

absl::Status TlsFront::Listen() {
  uint16_t bound = 0;
  int fd = ListenTcp(port_ != 0 ? port_ : options_.port, &bound);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("TlsFront: listen: ", strerror(-fd)));
  }
  port_ = bound;
  listen_fd_ = fd;
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
  {
    MutexLock lock(&mu_);
    stopping_ = false;
  }
  accept_thread_ = std::thread([this, fd, wake = wake_fd_] { AcceptLoop(fd, wake); });
  return absl::OkStatus();
}

void TlsFront::AcceptLoop(int listen_fd, int wake_fd) {
  for (;;) {
    pollfd fds[2] = {{listen_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    if (options_.receive_buffer_bytes > 0) {
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &options_.receive_buffer_bytes,
                   sizeof(options_.receive_buffer_bytes));
    }
    accepted_.fetch_add(1);
    MutexLock lock(&mu_);
    if (stopping_) {
      ::close(fd);
      return;
    }
    open_fds_.push_back(fd);
    conn_threads_.emplace_back([this, fd] { Serve(fd); });
  }
}

void TlsFront::Serve(int fd) {
  // OpenSSL writes with write(2): a client gone away must cost this thread an EPIPE, not the test
  // binary its life. SIGPIPE is thread-directed, so blocking it here is enough.
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  switch (options_.mode) {
    case TlsFrontMode::kForward:
      Forward(fd);
      break;
    case TlsFrontMode::kCloseMidHandshake: {
      char buf[512];
      (void)::recv(fd, buf, sizeof(buf), 0);  // part of the ClientHello
      break;
    }
    case TlsFrontMode::kPlaintext: {
      char buf[4096];
      (void)::recv(fd, buf, sizeof(buf), 0);
      static constexpr char kReply[] = R"({"jsonrpc":"2.0","id":1,"result":"plain"})";
      SendAll(fd, kReply, sizeof(kReply) - 1);
      while (::recv(fd, buf, sizeof(buf), 0) > 0) {
      }
      break;
    }
  }
  // The fd is closed by Stop() (after the join) so its number is not reused under it meanwhile.
  ::shutdown(fd, SHUT_RDWR);
}

void TlsFront::Forward(int fd) {
  SSL* ssl = SSL_new(ctx_);
  SSL_set_fd(ssl, fd);
  if (SSL_accept(ssl) != 1) {
    ERR_clear_error();
    SSL_free(ssl);
    return;
  }
  std::string sni;
  if (const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) sni = name;
  std::string client;
  if (X509* cert = SSL_get1_peer_certificate(ssl)) {
    char cn[256] = {0};
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
    client = cn;
    X509_free(cert);
  }
  {
    MutexLock lock(&mu_);
    server_names_.push_back(sni);
    client_names_.push_back(client);
  }
  int up = ConnectTcp(options_.upstream_port);
  if (up >= 0) {
    {
      MutexLock lock(&mu_);
      open_fds_.push_back(up);
    }
    char buf[16384];
    for (;;) {
      if (SSL_pending(ssl) == 0) {
        pollfd fds[2] = {{fd, POLLIN, 0}, {up, POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
          if (errno == EINTR) continue;
          break;
        }
        if (fds[1].revents != 0) {
          // Each read from the peer goes out as its own TLS record(s), so a reply the peer
          // writes in pieces arrives in pieces.
          ssize_t n = ::recv(up, buf, sizeof(buf), 0);
          if (n <= 0 || !SslWriteAll(ssl, buf, static_cast<size_t>(n))) break;
        }
        if (fds[0].revents == 0) continue;
      }
      int n = SSL_read(ssl, buf, sizeof(buf));
      if (n <= 0) {
        int err = SSL_get_error(ssl, n);
        if (err == SSL_ERROR_WANT_READ) continue;  // e.g. a record split across reads
        break;
      }
      if (!SendAll(up, buf, static_cast<size_t>(n))) break;
    }
    ::shutdown(up, SHUT_RDWR);
  }
  ERR_clear_error();
  SSL_free(ssl);
}

void TlsFront::Stop() {
  if (listen_fd_ < 0) return;
  uint64_t one = 1;
  (void)::write(wake_fd_, &one, sizeof(one));
  if (accept_thread_.joinable()) accept_thread_.join();
  ::close(listen_fd_);
  ::close(wake_fd_);
  listen_fd_ = -1;
  wake_fd_ = -1;
  std::vector<std::thread> threads;
  std::vector<int> fds;
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    threads = std::move(conn_threads_);
    conn_threads_.clear();
    fds = std::move(open_fds_);
    open_fds_.clear();
  }
  for (std::thread& t : threads) t.join();
  for (int fd : fds) ::close(fd);
}

absl::Status TlsFront::Restart() {
  Stop();
  return Listen();
}

}  // namespace eventbus::testing
