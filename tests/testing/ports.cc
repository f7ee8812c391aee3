#include "tests/testing/ports.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "server/base/mutex.h"

namespace eventbus::testing {
namespace {

// Binds a TCP socket to 127.0.0.1:0 (with SO_REUSEADDR when `reuse_address`) and returns it, with
// the chosen port in *port.
int BindLoopbackPortZero(bool reuse_address, uint16_t* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    std::fprintf(stderr, "ports: socket: %s\n", std::strerror(errno));
    std::abort();
  }
  int one = 1;
  if (reuse_address && ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) {
    std::fprintf(stderr, "ports: SO_REUSEADDR: %s\n", std::strerror(errno));
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

eventbus::Mutex reserved_mu;
// Every port handed out, each still held by its reservation socket (never closed).
absl::flat_hash_set<uint16_t>* reserved ABSL_GUARDED_BY(reserved_mu) = nullptr;

}  // namespace

uint16_t PickUnusedPort() {
  // Closing the probe socket (as this once did) freed the port for the kernel to hand out again:
  // to the next bind(0) here or in a concurrently running test, or as the local port of an
  // outgoing connection, so two daemons could be told the same port. Keeping it bound, not
  // listening, with SO_REUSEADDR removes it from the kernel's automatic choices while leaving it
  // to whoever binds it by number with SO_REUSEADDR (Linux allows that while neither listens).
  eventbus::MutexLock lock(&reserved_mu);
  if (reserved == nullptr) reserved = new absl::flat_hash_set<uint16_t>();
  for (;;) {
    uint16_t port = 0;
    BindLoopbackPortZero(/*reuse_address=*/true, &port);  // the socket is deliberately kept
    // The kernel does not choose a port that is still bound; the set guards against any other
    // way of getting one twice (the socket stays bound so that port is not offered again).
    if (reserved->insert(port).second) return port;
  }
}

uint16_t ClosedPort() {
  // Bound but not listening: connect() gets ECONNREFUSED. The socket is deliberately never closed.
  static const uint16_t port = [] {
    uint16_t p = 0;
    BindLoopbackPortZero(/*reuse_address=*/false, &p);
    return p;
  }();
  return port;
}

int ConnectTcp(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

bool PortAccepts(uint16_t port) {
  const int fd = ConnectTcp(port);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

int ListenTcp(uint16_t port, uint16_t* bound) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 8) != 0) {
    const int error = errno;
    ::close(fd);
    return -error;
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (bound != nullptr) *bound = ntohs(addr.sin_port);
  return fd;
}

}  // namespace eventbus::testing
