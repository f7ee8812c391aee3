#include "server/net/tcp_transport.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

namespace eventbus::net {

IoStatus TcpTransport::Write(const iovec* iov, int iovcnt, size_t* written) {
  *written = 0;
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = static_cast<size_t>(iovcnt);
  for (;;) {
    // MSG_NOSIGNAL: a peer that went away is EPIPE here, never SIGPIPE.
    ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      *written = static_cast<size_t>(n);
      return IoStatus::kOk;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return IoStatus::kWantWrite;
    error_ = strerror(errno);
    return IoStatus::kError;
  }
}

IoStatus TcpTransport::Read(char* buf, size_t size, size_t* read) {
  *read = 0;
  for (;;) {
    ssize_t n = ::recv(fd_, buf, size, 0);
    if (n > 0) {
      *read = static_cast<size_t>(n);
      return IoStatus::kOk;
    }
    if (n == 0) return IoStatus::kClosed;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return IoStatus::kWantRead;
    error_ = strerror(errno);
    return IoStatus::kError;
  }
}

}  // namespace eventbus::net
