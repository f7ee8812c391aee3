#include "tests/net/loopback_peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"

namespace eventbus::net {
namespace {

// Splits complete top-level JSON values off the front of `pending`.
std::vector<std::string> SplitMessages(std::string* pending) {
  std::vector<std::string> out;
  size_t start = 0;
  size_t i = 0;
  int depth = 0;
  bool in_string = false;
  bool escape = false;
  const std::string& s = *pending;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (depth == 0 && !in_string) {
      if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
        start = i + 1;
        continue;
      }
      start = i;
    }
    if (in_string) {
      if (escape) {
        escape = false;
      } else if (c == '\\') {
        escape = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (--depth == 0) {
        out.push_back(s.substr(start, i + 1 - start));
        start = i + 1;
      }
    }
  }
  if (depth == 0 && !in_string) {
    pending->clear();
  } else {
    pending->erase(0, start);
  }
  return out;
}

}  // namespace

std::unique_ptr<LoopbackPeer> LoopbackPeer::Start(Options options, Handler handler) {
  const int family = options.ipv6 ? AF_INET6 : AF_INET;
  int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ADD_FAILURE() << "socket: " << strerror(errno);
    return nullptr;
  }
  int one = 1;
  // A restarted peer binds the port again while the old connections sit in TIME_WAIT.
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (options.receive_buffer > 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &options.receive_buffer,
                 sizeof(options.receive_buffer));
  }
  sockaddr_storage storage{};
  socklen_t len;
  if (options.ipv6) {
    auto* addr = reinterpret_cast<sockaddr_in6*>(&storage);
    addr->sin6_family = AF_INET6;
    addr->sin6_addr = in6addr_loopback;
    addr->sin6_port = htons(options.port);
    len = sizeof(sockaddr_in6);
  } else {
    auto* addr = reinterpret_cast<sockaddr_in*>(&storage);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr->sin_port = htons(options.port);
    len = sizeof(sockaddr_in);
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&storage), len) != 0 || ::listen(fd, 64) != 0) {
    ADD_FAILURE() << "bind/listen loopback port " << options.port << ": " << strerror(errno);
    ::close(fd);
    return nullptr;
  }
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &len);
  uint16_t port = options.ipv6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port)
                               : ntohs(reinterpret_cast<sockaddr_in*>(&storage)->sin_port);
  auto peer = std::unique_ptr<LoopbackPeer>(
      new LoopbackPeer(fd, port, options.reading, std::move(handler)));
  peer->acceptor_ = std::thread([p = peer.get()] { p->AcceptLoop(); });
  return peer;
}

LoopbackPeer::LoopbackPeer(int listen_fd, uint16_t port, bool reading, Handler handler)
    : listen_fd_(listen_fd), port_(port), handler_(std::move(handler)), reading_(reading) {}

LoopbackPeer::~LoopbackPeer() { Stop(); }

void LoopbackPeer::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    cv_.notify_all();
  }
  // shutdown() wakes the blocked accept()/recv() calls.
  ::shutdown(listen_fd_, SHUT_RDWR);
  acceptor_.join();
  ::close(listen_fd_);
  std::vector<Conn*> conns;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : conns_) {
      ::shutdown(c->fd, SHUT_RDWR);
      conns.push_back(c.get());
    }
  }
  for (Conn* c : conns) {
    c->reader.join();
    ::close(c->fd);
  }
}

void LoopbackPeer::AcceptLoop() {
  for (;;) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      if (fd >= 0) ::close(fd);
      return;
    }
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;
    }
    auto conn = std::make_unique<Conn>();
    conn->fd = fd;
    int index = static_cast<int>(conns_.size());
    conn->reader = std::thread([this, index] { ReadLoop(index); });
    conns_.push_back(std::move(conn));
    cv_.notify_all();
  }
}

void LoopbackPeer::ReadLoop(int index) {
  Conn* conn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    conn = conns_[index].get();
  }
  char buf[16384];
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return reading_ || stopping_; });
      if (stopping_) return;
    }
    ssize_t n = ::recv(conn->fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    std::vector<std::string> messages;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cv_.notify_all();
      if (n <= 0) {
        conn->closed = true;
        return;
      }
      conn->received.append(buf, static_cast<size_t>(n));
      conn->pending.append(buf, static_cast<size_t>(n));
      messages = SplitMessages(&conn->pending);
      messages_.insert(messages_.end(), messages.begin(), messages.end());
    }
    if (!handler_) continue;
    for (const std::string& m : messages) {
      std::string reply = handler_(index, m);
      if (!reply.empty()) Send(index, reply);
    }
  }
}

void LoopbackPeer::SetReading(bool reading) {
  std::lock_guard<std::mutex> lock(mu_);
  reading_ = reading;
  cv_.notify_all();
}

void LoopbackPeer::Send(int conn, const std::string& bytes) {
  Conn* c;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn >= static_cast<int>(conns_.size())) return;
    c = conns_[conn].get();
  }
  std::lock_guard<std::mutex> lock(c->write_mu);
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::send(c->fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
}

void LoopbackPeer::CloseConnection(int conn) {
  std::lock_guard<std::mutex> lock(mu_);
  if (conn < static_cast<int>(conns_.size())) ::shutdown(conns_[conn]->fd, SHUT_RDWR);
}

int LoopbackPeer::connections() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(conns_.size());
}

std::string LoopbackPeer::Received(int conn) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (conn >= static_cast<int>(conns_.size())) return "";
  return conns_[conn]->received;
}

std::vector<std::string> LoopbackPeer::Messages() const {
  std::lock_guard<std::mutex> lock(mu_);
  return messages_;
}

size_t LoopbackPeer::message_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return messages_.size();
}

bool LoopbackPeer::WaitForMessages(size_t count, absl::Duration timeout) const {
  return WaitUntil([&] { return messages_.size() >= count; }, timeout);
}

bool LoopbackPeer::WaitForBytes(int conn, size_t count, absl::Duration timeout) const {
  return WaitUntil(
      [&] {
        return conn < static_cast<int>(conns_.size()) && conns_[conn]->received.size() >= count;
      },
      timeout);
}

bool LoopbackPeer::WaitForConnections(int count, absl::Duration timeout) const {
  return WaitUntil([&] { return static_cast<int>(conns_.size()) >= count; }, timeout);
}

bool LoopbackPeer::WaitForClosed(int conn, absl::Duration timeout) const {
  return WaitUntil([&] { return conn < static_cast<int>(conns_.size()) && conns_[conn]->closed; },
                   timeout);
}

int64_t LoopbackPeer::IdOf(const std::string& message) {
  constexpr absl::string_view kPrefix = "{\"id\":";
  absl::string_view s = message;
  if (!absl::StartsWith(s, kPrefix)) return 0;
  s.remove_prefix(kPrefix.size());
  size_t end = s.find(',');
  int64_t id = 0;
  if (end == absl::string_view::npos || !absl::SimpleAtoi(s.substr(0, end), &id)) return 0;
  return id;
}

}  // namespace eventbus::net
