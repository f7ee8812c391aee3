#include "tests/testing/delay_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace eventbus::testing {

// One proxied connection. The two fds are closed only by ~Link, after every thread has been
// joined; threads end each other by shutdown(), which wakes a blocked read or write.
struct DelayProxy::Link {
  int client_fd = -1;
  int upstream_fd = -1;
  std::thread up, down_read, down_write;

  // Server bytes waiting for their release time; `eof` once the server's side ended.
  struct Chunk {
    absl::Time due;
    std::string bytes;
  };
  eventbus::Mutex mu;
  std::deque<Chunk> queue ABSL_GUARDED_BY(mu);
  bool eof ABSL_GUARDED_BY(mu) = false;
  eventbus::CondVar changed;

  ~Link() {
    if (up.joinable()) up.join();
    if (down_read.joinable()) down_read.join();
    if (down_write.joinable()) down_write.join();
    ::close(client_fd);
    ::close(upstream_fd);
  }

  // Ends every pump of this link: blocked reads return 0, writes fail, held bytes are dropped.
  void Break() {
    ::shutdown(client_fd, SHUT_RDWR);
    ::shutdown(upstream_fd, SHUT_RDWR);
    eventbus::MutexLock lock(&mu);
    eof = true;
    queue.clear();
    changed.SignalAll();
  }
};

namespace {

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  return addr;
}

// Writes all of `data`; false when the peer is gone.
bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

ssize_t ReadSome(int fd, char* buffer, size_t size) {
  for (;;) {
    ssize_t n = ::recv(fd, buffer, size, 0);
    if (n < 0 && errno == EINTR) continue;
    return n;
  }
}

void NoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

absl::StatusOr<std::unique_ptr<DelayProxy>> DelayProxy::Start(uint16_t upstream_port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("delay proxy: socket: ", strerror(errno)));
  sockaddr_in addr = Loopback(0);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 64) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int error = errno;
    ::close(fd);
    return absl::UnavailableError(
        absl::StrCat("delay proxy: listen on 127.0.0.1:0: ", strerror(error)));
  }
  int wake = ::eventfd(0, EFD_CLOEXEC);
  if (wake < 0) {
    int error = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("delay proxy: eventfd: ", strerror(error)));
  }
  return std::unique_ptr<DelayProxy>(new DelayProxy(fd, wake, ntohs(addr.sin_port), upstream_port));
}

DelayProxy::DelayProxy(int listen_fd, int wake_fd, uint16_t port, uint16_t upstream_port)
    : listen_fd_(listen_fd), wake_fd_(wake_fd), port_(port), upstream_port_(upstream_port) {
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

DelayProxy::~DelayProxy() {
  stopping_.store(true);
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
  accept_thread_.join();
  std::vector<std::unique_ptr<Link>> links;
  {
    eventbus::MutexLock lock(&mu_);
    links.swap(links_);
  }
  for (auto& link : links) link->Break();
  links.clear();  // joins each link's threads, then closes its fds
  ::close(listen_fd_);
  ::close(wake_fd_);
}

std::string DelayProxy::endpoint() const { return absl::StrCat("127.0.0.1:", port_); }

void DelayProxy::DelayRepliesAfter(absl::Duration delay, int64_t client_bytes) {
  // The threshold first, so a reader that sees the new delay also sees its threshold.
  delay_after_bytes_.store(client_bytes == 0 ? -1 : bytes_to_server_.load() + client_bytes);
  delay_us_.store(absl::ToInt64Microseconds(delay));
}

void DelayProxy::SetBlackHole(bool on) { black_hole_.store(on); }

void DelayProxy::AcceptLoop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (stopping_.load()) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    StartLink(client);
  }
}

void DelayProxy::StartLink(int client_fd) {
  int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr = Loopback(upstream_port_);
  if (upstream < 0 || ::connect(upstream, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    // The server is down: the client sees its connection closed, as it would a refused one.
    if (upstream >= 0) ::close(upstream);
    ::close(client_fd);
    return;
  }
  NoDelay(client_fd);
  NoDelay(upstream);
  connections_.fetch_add(1);
  auto link = std::make_unique<Link>();
  link->client_fd = client_fd;
  link->upstream_fd = upstream;
  Link* raw = link.get();
  raw->up = std::thread([this, raw] { PumpUp(raw); });
  raw->down_read = std::thread([this, raw] { PumpDownRead(raw); });
  raw->down_write = std::thread([this, raw] { PumpDownWrite(raw); });
  eventbus::MutexLock lock(&mu_);
  links_.push_back(std::move(link));
}

void DelayProxy::PumpUp(Link* link) {
  char buffer[64 * 1024];
  for (;;) {
    ssize_t n = ReadSome(link->client_fd, buffer, sizeof(buffer));
    if (n <= 0) break;
    // Counted before it is forwarded: a reply to it is read only after this.
    bytes_to_server_.fetch_add(n);
    if (black_hole_.load()) continue;
    if (!WriteAll(link->upstream_fd, buffer, static_cast<size_t>(n))) break;
  }
  // The client is done (or gone): the server connection goes too, and every pump ends.
  link->Break();
}

void DelayProxy::PumpDownRead(Link* link) {
  char buffer[64 * 1024];
  for (;;) {
    ssize_t n = ReadSome(link->upstream_fd, buffer, sizeof(buffer));
    if (n <= 0) break;
    if (black_hole_.load()) continue;
    const int64_t delay_us = delay_us_.load();
    absl::Time due = absl::Now();
    if (bytes_to_server_.load() > delay_after_bytes_.load()) due += absl::Microseconds(delay_us);
    eventbus::MutexLock lock(&link->mu);
    if (link->eof) break;  // broken meanwhile
    // Keep the byte order: never release before what was read earlier.
    if (!link->queue.empty()) due = std::max(due, link->queue.back().due);
    link->queue.push_back({due, std::string(buffer, static_cast<size_t>(n))});
    link->changed.SignalAll();
  }
  eventbus::MutexLock lock(&link->mu);
  link->eof = true;
  link->changed.SignalAll();
}

void DelayProxy::PumpDownWrite(Link* link) {
  for (;;) {
    std::string bytes;
    bool ended = false;
    {
      eventbus::MutexLock lock(&link->mu);
      for (;;) {
        if (!link->queue.empty()) {
          absl::Time due = link->queue.front().due;
          if (absl::Now() >= due) break;
          link->changed.WaitWithDeadline(&link->mu, due);
          continue;
        }
        // The server's side ended and everything read was released (or the link broke).
        if (link->eof) {
          ended = true;
          break;
        }
        link->changed.Wait(&link->mu);
      }
      if (!ended) {
        bytes = std::move(link->queue.front().bytes);
        link->queue.pop_front();
      }
    }
    if (ended || !WriteAll(link->client_fd, bytes.data(), bytes.size())) {
      link->Break();
      return;
    }
  }
}

}  // namespace eventbus::testing
