#include "tests/bench/sink.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>

namespace eventbus::bench {
namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "sink: %s: %s\n", what, std::strerror(errno));
    std::abort();
  }
}

// Per-connection framing state: depth of braces, whether inside a string, escape pending.
struct Framer {
  int depth = 0;
  bool in_string = false;
  bool escape = false;
  std::string current;  // the object being read (only kept when replying)
};

// Extracts the integer after "id": in a request; -1 when there is none.
long long FindId(const std::string& msg) {
  size_t at = msg.find("\"id\":");
  if (at == std::string::npos) return -1;
  return std::strtoll(msg.c_str() + at + 5, nullptr, 10);
}

}  // namespace

Sink::Sink(bool reply) : reply_(reply) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  Check(listen_fd_ >= 0, "socket");
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  Check(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0, "bind");
  Check(::listen(listen_fd_, 512) == 0, "listen");
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  Check(epoll_fd_ >= 0 && stop_fd_ >= 0, "epoll/eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  ev.data.fd = stop_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, stop_fd_, &ev);
  thread_ = std::thread([this] { Loop(); });
}

Sink::~Sink() {
  uint64_t one = 1;
  ssize_t unused = ::write(stop_fd_, &one, sizeof(one));
  (void)unused;
  thread_.join();
  ::close(listen_fd_);
  ::close(epoll_fd_);
  ::close(stop_fd_);
}

void Sink::Loop() {
  std::unordered_map<int, Framer> conns;
  char buf[64 * 1024];
  epoll_event events[64];
  for (;;) {
    int n = ::epoll_wait(epoll_fd_, events, 64, -1);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == stop_fd_) {
        for (auto& [cfd, unused] : conns) ::close(cfd);
        return;
      }
      if (fd == listen_fd_) {
        for (;;) {
          int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          int one = 1;
          ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.fd = c;
          ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c, &ev);
          conns[c];
        }
        continue;
      }
      Framer& f = conns[fd];
      std::string replies;
      for (;;) {
        ssize_t got = ::read(fd, buf, sizeof(buf));
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
          ::close(fd);
          conns.erase(fd);
          break;
        }
        if (got < 0) break;
        uint64_t count = 0;
        for (ssize_t k = 0; k < got; ++k) {
          char ch = buf[k];
          if (reply_ && f.depth > 0) f.current.push_back(ch);
          if (f.in_string) {
            if (f.escape) {
              f.escape = false;
            } else if (ch == '\\') {
              f.escape = true;
            } else if (ch == '"') {
              f.in_string = false;
            }
            continue;
          }
          if (ch == '"') {
            f.in_string = true;
          } else if (ch == '{' || ch == '[') {
            if (f.depth++ == 0 && reply_) f.current.assign(1, ch);
          } else if (ch == '}' || ch == ']') {
            if (--f.depth == 0) {
              ++count;
              if (reply_) {
                long long id = FindId(f.current);
                if (id >= 0) {
                  replies +=
                      "{\"jsonrpc\":\"2.0\",\"id\":" + std::to_string(id) + ",\"result\":true}";
                }
                f.current.clear();
              }
            }
          }
        }
        messages_.fetch_add(count, std::memory_order_relaxed);
      }
      if (!replies.empty() && conns.count(fd)) {
        // Replies are small and the peer reads them; a short write here would only mean the
        // benchmark's server is stuck, which the benchmark's own timeout reports.
        size_t off = 0;
        while (off < replies.size()) {
          ssize_t w = ::send(fd, replies.data() + off, replies.size() - off, MSG_NOSIGNAL);
          if (w <= 0) break;
          off += static_cast<size_t>(w);
        }
      }
    }
  }
}

}  // namespace eventbus::bench
