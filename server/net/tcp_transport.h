// Plain TCP under a target connection (tcp: sockets): Write() is one sendmsg() of the caller's
// iovecs, so the queued {prefix, shared body} pairs reach the kernel without a copy.
#ifndef EVENTBUS_SERVER_NET_TCP_TRANSPORT_H_
#define EVENTBUS_SERVER_NET_TCP_TRANSPORT_H_

#include "server/net/transport.h"

namespace eventbus::net {

// Loop thread only. Does not own `fd`.
class TcpTransport final : public Transport {
 public:
  explicit TcpTransport(int fd) : fd_(fd) {}

  IoStatus Handshake() override { return IoStatus::kOk; }
  IoStatus Write(const iovec* iov, int iovcnt, size_t* written) override;
  IoStatus Read(char* buf, size_t size, size_t* read) override;

 private:
  const int fd_;
};

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_TCP_TRANSPORT_H_
