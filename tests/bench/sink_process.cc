#include "tests/bench/sink_process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/str_cat.h"

namespace eventbus::bench {
namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "sink process: %s: %s\n", what, std::strerror(errno));
    std::abort();
  }
}

bool ReadAll(int fd, void* data, size_t size) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    ssize_t n = ::read(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

void WriteAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    Check(n > 0, "write to parent");
    p += n;
    size -= static_cast<size_t>(n);
  }
}

// Commands on the socketpair: one byte, then for 'O' an int32 count.
constexpr char kOpen = 'O', kCount = 'C', kClose = 'X';

// Framing state of one connection: brace depth outside strings, and the first bytes of the
// object being read. A request starts with `{"id":N,` (the server writes that prefix), so its id
// is read from there and answered with a result; a notification has no id and no answer.
struct Framer {
  int depth = 0;
  bool in_string = false;
  bool escape = false;
  std::string head;
};

// The id of a request that starts with `head`, or "" for a notification.
std::string RequestId(const std::string& head) {
  static constexpr char kPrefix[] = "{\"id\":";
  if (head.compare(0, sizeof(kPrefix) - 1, kPrefix) != 0) return "";
  size_t end = sizeof(kPrefix) - 1;
  while (end < head.size() && head[end] >= '0' && head[end] <= '9') ++end;
  return head.substr(sizeof(kPrefix) - 1, end - (sizeof(kPrefix) - 1));
}

[[noreturn]] void ChildMain(int control) {
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  Check(ep >= 0, "epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = control;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, control, &ev);
  std::unordered_set<int> listeners;
  std::unordered_map<int, Framer> conns;
  uint64_t messages = 0;
  static char buf[256 * 1024];
  epoll_event events[256];
  for (;;) {
    int n = ::epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == control) {
        char cmd;
        if (!ReadAll(control, &cmd, 1)) ::_exit(0);
        if (cmd == kCount) {
          WriteAll(control, &messages, sizeof(messages));
        } else if (cmd == kClose) {
          for (int l : listeners) ::close(l);
          for (auto& [c, unused] : conns) ::close(c);
          listeners.clear();
          conns.clear();
          WriteAll(control, &cmd, 1);
        } else if (cmd == kOpen) {
          int32_t count = 0;
          if (!ReadAll(control, &count, sizeof(count))) ::_exit(0);
          std::vector<uint16_t> ports;
          for (int32_t k = 0; k < count; ++k) {
            int l = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            Check(l >= 0, "socket");
            sockaddr_in addr{};
            addr.sin_family = AF_INET;
            addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            Check(::bind(l, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0, "bind");
            Check(::listen(l, 16) == 0, "listen");
            socklen_t len = sizeof(addr);
            ::getsockname(l, reinterpret_cast<sockaddr*>(&addr), &len);
            ports.push_back(ntohs(addr.sin_port));
            epoll_event lev{};
            lev.events = EPOLLIN;
            lev.data.fd = l;
            ::epoll_ctl(ep, EPOLL_CTL_ADD, l, &lev);
            listeners.insert(l);
          }
          WriteAll(control, ports.data(), ports.size() * sizeof(uint16_t));
        }
        continue;
      }
      if (listeners.count(fd)) {
        int c = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) continue;
        // One connection per port: the listener's descriptor goes back to the budget.
        ::close(fd);
        listeners.erase(fd);
        epoll_event cev{};
        cev.events = EPOLLIN;
        cev.data.fd = c;
        ::epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        conns[c];
        continue;
      }
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      Framer& f = it->second;
      for (;;) {
        ssize_t got = ::read(fd, buf, sizeof(buf));
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
          ::close(fd);
          conns.erase(it);
          break;
        }
        if (got < 0) break;
        std::string replies;
        for (ssize_t k = 0; k < got; ++k) {
          const char ch = buf[k];
          if (f.depth > 0 && f.head.size() < 32) f.head.push_back(ch);
          if (f.in_string) {
            if (f.escape) {
              f.escape = false;
            } else if (ch == '\\') {
              f.escape = true;
            } else if (ch == '"') {
              f.in_string = false;
            }
          } else if (ch == '"') {
            f.in_string = true;
          } else if (ch == '{' || ch == '[') {
            if (f.depth++ == 0) f.head.assign(1, ch);
          } else if ((ch == '}' || ch == ']') && --f.depth == 0) {
            ++messages;
            const std::string id = RequestId(f.head);
            if (!id.empty()) {
              absl::StrAppend(&replies, "{\"jsonrpc\":\"2.0\",\"result\":true,\"id\":", id, "}");
            }
          }
        }
        // Replies are small; the socket buffer takes them (a benchmark sink, not a robust peer).
        for (size_t off = 0; off < replies.size();) {
          ssize_t w = ::write(fd, replies.data() + off, replies.size() - off);
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) break;
          off += static_cast<size_t>(w);
        }
      }
    }
  }
}

}  // namespace

SinkProcess::SinkProcess() {
  int fds[2];
  Check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0, "socketpair");
  pid_ = ::fork();
  Check(pid_ >= 0, "fork");
  if (pid_ == 0) {
    ::close(fds[0]);
    ChildMain(fds[1]);
  }
  ::close(fds[1]);
  fd_ = fds[0];
}

SinkProcess::~SinkProcess() {
  ::close(fd_);
  int status;
  ::waitpid(pid_, &status, 0);
}

std::vector<uint16_t> SinkProcess::Open(int n) {
  char cmd = kOpen;
  int32_t count = n;
  WriteAll(fd_, &cmd, 1);
  WriteAll(fd_, &count, sizeof(count));
  std::vector<uint16_t> ports(n);
  Check(ReadAll(fd_, ports.data(), ports.size() * sizeof(uint16_t)), "read ports");
  return ports;
}

uint64_t SinkProcess::Messages() {
  char cmd = kCount;
  WriteAll(fd_, &cmd, 1);
  uint64_t messages = 0;
  Check(ReadAll(fd_, &messages, sizeof(messages)), "read count");
  return messages;
}

void SinkProcess::CloseAll() {
  char cmd = kClose;
  WriteAll(fd_, &cmd, 1);
  Check(ReadAll(fd_, &cmd, 1), "read close");
}

}  // namespace eventbus::bench
