#include "tests/testing/ports.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace eventbus::testing {
namespace {

// Binds a TCP socket to 127.0.0.1:0 and returns it, with the chosen port in *port.
int BindLoopbackPortZero(uint16_t* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    std::fprintf(stderr, "ports: socket: %s\n", std::strerror(errno));
    std::abort();
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::fprintf(stderr, "ports: bind 127.0.0.1:0: %s\n", std::strerror(errno));
    std::abort();
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

}  // namespace

uint16_t PickUnusedPort() {
  uint16_t port = 0;
  ::close(BindLoopbackPortZero(&port));
  return port;
}

uint16_t ClosedPort() {
  // Bound but not listening: connect() gets ECONNREFUSED. The socket is deliberately never closed.
  static const uint16_t port = [] {
    uint16_t p = 0;
    BindLoopbackPortZero(&p);
    return p;
  }();
  return port;
}

}  // namespace eventbus::testing
