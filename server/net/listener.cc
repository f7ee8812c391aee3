#include "server/net/listener.h"

#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "server/base/log.h"

namespace eventbus::net {
namespace {

// At most this many accepts per listening socket per wakeup, so one socket cannot starve another.
constexpr int kAcceptBatch = 64;
constexpr absl::Duration kWarningInterval = absl::Seconds(10);

absl::Status Malformed(absl::string_view address, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("listen \"", address, "\": ", problem));
}

// Splits "HOST:PORT" or "[V6]:PORT".
absl::Status SplitHostPort(absl::string_view address, std::string* host, uint16_t* port) {
  absl::string_view port_text;
  if (absl::StartsWith(address, "unix:")) {
    return Malformed(address, "unix sockets are not supported; use HOST:PORT");
  }
  if (!address.empty() && address.front() == '[') {
    size_t close = address.find(']');
    if (close == absl::string_view::npos) return Malformed(address, "missing ']'");
    *host = std::string(address.substr(1, close - 1));
    if (close + 1 >= address.size() || address[close + 1] != ':') {
      return Malformed(address, "missing :PORT");
    }
    port_text = address.substr(close + 2);
  } else {
    size_t colon = address.rfind(':');
    if (colon == absl::string_view::npos) return Malformed(address, "missing :PORT");
    *host = std::string(address.substr(0, colon));
    if (host->find(':') != std::string::npos) {
      return Malformed(address, "an IPv6 host needs brackets ([::1]:PORT)");
    }
    port_text = address.substr(colon + 1);
  }
  uint32_t value = 0;
  if (port_text.empty() || !absl::ascii_isdigit(port_text.front()) ||
      !absl::SimpleAtoi(port_text, &value) || value > 65535) {
    return Malformed(address, absl::StrCat("port \"", port_text, "\" is not in 0..65535"));
  }
  *port = static_cast<uint16_t>(value);
  return absl::OkStatus();
}

int BoundPort(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
}

void SetPort(sockaddr* addr, int port) {
  if (addr->sa_family == AF_INET) {
    reinterpret_cast<sockaddr_in*>(addr)->sin_port = htons(static_cast<uint16_t>(port));
  } else {
    reinterpret_cast<sockaddr_in6*>(addr)->sin6_port = htons(static_cast<uint16_t>(port));
  }
}

// One listening socket on `ai`; an errno on failure.
int ListenOn(const addrinfo& ai, bool v6_only, int backlog, base::UniqueFd* out) {
  base::UniqueFd fd(
      ::socket(ai.ai_family, ai.ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai.ai_protocol));
  if (!fd.valid()) return errno;
  int one = 1;
  // Rebinding the port while old connections sit in TIME_WAIT (a restart) must work. No
  // SO_REUSEPORT: a second server must not silently share the port.
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (ai.ai_family == AF_INET6) {
    int v6 = v6_only ? 1 : 0;
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof(v6));
  }
  if (::bind(fd.get(), ai.ai_addr, ai.ai_addrlen) != 0) return errno;
  if (::listen(fd.get(), backlog) != 0) return errno;
  *out = std::move(fd);
  return 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Listener>> Listener::Bind(absl::string_view address,
                                                         ListenerOptions options) {
  std::string host;
  uint16_t port = 0;
  if (absl::Status split = SplitHostPort(address, &host, &port); !split.ok()) return split;

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* results = nullptr;
  std::string service = std::to_string(port);
  int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &results);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("listen \"", address, "\": cannot bind: ", ::gai_strerror(rc)));
  }
  bool has_v4 = false;
  for (addrinfo* ai = results; ai != nullptr; ai = ai->ai_next) has_v4 |= ai->ai_family == AF_INET;

  std::vector<base::UniqueFd> sockets;
  int bound_port = port;
  std::string errors;
  for (addrinfo* ai = results; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    // Every socket of the address shares one port, the one the first chose if it said 0.
    SetPort(ai->ai_addr, bound_port);
    base::UniqueFd fd;
    // A v6 socket takes v4 too ("[::]" alone), unless a v4 socket of its own comes with it.
    int error = ListenOn(*ai, /*v6_only=*/has_v4, options.backlog, &fd);
    if (error != 0) {
      absl::StrAppend(&errors, errors.empty() ? "" : "; ",
                      ai->ai_family == AF_INET ? "IPv4: " : "IPv6: ", std::strerror(error));
      continue;
    }
    if (bound_port == 0) bound_port = BoundPort(fd.get());
    sockets.push_back(std::move(fd));
  }
  ::freeaddrinfo(results);
  if (sockets.empty()) {
    return absl::UnavailableError(absl::StrCat("listen \"", address, "\": cannot bind: ", errors));
  }
  if (!errors.empty()) {
    EB_LOG(kWarning, "listening on part of the address", "listen=", base::LogValue(address),
           " error=", base::LogValue(errors));
  }
  return std::unique_ptr<Listener>(new Listener(std::move(sockets), bound_port, options));
}

Listener::Listener(std::vector<base::UniqueFd> sockets, int port, ListenerOptions options)
    : sockets_(std::move(sockets)), port_(port), options_(options) {}

Listener::~Listener() { Stop(); }

void Listener::Start(Handler handler) {
  handler_ = std::move(handler);
  wake_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  spare_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  rlimit limit{};
  soft_limit_ = ::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY
                    ? limit.rlim_cur
                    : std::numeric_limits<uint64_t>::max();
  thread_ = std::thread([this] { Run(); });
}

void Listener::Stop() {
  if (stopped_) return;
  stopped_ = true;
  stopping_.store(true, std::memory_order_release);
  if (thread_.joinable()) {
    uint64_t one = 1;
    // An eventfd write of 1 cannot fail short of overflow.
    (void)!::write(wake_.get(), &one, sizeof(one));
    thread_.join();
  }
  sockets_.clear();
}

ListenerStats Listener::stats() const {
  ListenerStats stats;
  stats.accepted = accepted_.load(std::memory_order_relaxed);
  stats.refused_at_cap = refused_at_cap_.load(std::memory_order_relaxed);
  stats.refused_no_fds = refused_no_fds_.load(std::memory_order_relaxed);
  stats.open_connections = open_connections_.load(std::memory_order_relaxed);
  return stats;
}

void Listener::Run() {
  std::vector<pollfd> polled;
  polled.push_back({wake_.get(), POLLIN, 0});
  for (const base::UniqueFd& fd : sockets_) polled.push_back({fd.get(), POLLIN, 0});
  bool backing_off = false;
  while (!stopping_.load(std::memory_order_acquire)) {
    if (backing_off) {
      // Not even one descriptor to accept-and-close with: wait (still woken by Stop) rather than
      // spin on a listening socket that stays readable, then try to get the spare back.
      ::poll(polled.data(), 1,
             static_cast<int>(absl::ToInt64Milliseconds(options_.exhausted_backoff)));
      if (!spare_.valid()) spare_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      backing_off = false;
      continue;
    }
    if (::poll(polled.data(), polled.size(), -1) < 0) continue;  // EINTR
    for (size_t i = 1; i < polled.size(); ++i) {
      if (polled[i].revents == 0) continue;
      if (!AcceptAll(polled[i].fd)) backing_off = true;
    }
  }
}

bool Listener::AcceptAll(int listen_fd) {
  for (int i = 0; i < kAcceptBatch; ++i) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      if (!Admit(fd)) {
        // A plain close: a gRPC client fails the call at once with UNAVAILABLE. (An HTTP/2
        // GOAWAY first reads as "connected, then went away" to gRPC 1.51 clients, which queue
        // the call and reconnect until its deadline instead.)
        ::close(fd);
        continue;
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      accepted_.fetch_add(1, std::memory_order_relaxed);
      handler_(listen_fd, fd);
      continue;
    }
    switch (errno) {
      case EINTR:
        --i;
        continue;
      case EAGAIN:
        return true;
      case EMFILE:
      case ENFILE: {
        // Out of descriptors. The connection stays queued and the socket stays readable, so
        // give up the spare, take the connection and close it (the client sees the close at
        // once instead of a hang), and take the spare back. Without a spare, back off.
        if (!spare_.valid()) return false;
        spare_.Reset();
        int taken = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (taken >= 0) {
          // Counted before the close: whoever sees the close may read the count at once.
          refused_no_fds_.fetch_add(1, std::memory_order_relaxed);
          ::close(taken);
          WarnRefused("out of file descriptors");
        }
        spare_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (!spare_.valid() || taken < 0) return false;
        continue;
      }
      case ENOBUFS:
      case ENOMEM:
        WarnRefused("out of memory");
        return false;
      default:
        // ECONNABORTED, EPROTO, EPERM (firewall) and the network errors that accept(2) passes on
        // from the new socket: that connection is gone, the listener is fine.
        if (errno == ECONNABORTED || errno == EPROTO || errno == EPERM || errno == ENETDOWN ||
            errno == ENOPROTOOPT || errno == EHOSTDOWN || errno == ENONET ||
            errno == EHOSTUNREACH || errno == EOPNOTSUPP || errno == ENETUNREACH) {
          continue;
        }
        EB_LOG(kError, "accept failed; retrying", "error=", base::LogValue(std::strerror(errno)));
        return false;
    }
  }
  return true;
}

bool Listener::Admit(int fd) {
  if (options_.fd_headroom > 0) {
    const uint64_t threshold =
        soft_limit_ > options_.fd_headroom ? soft_limit_ - options_.fd_headroom : 0;
    // Descriptors are handed out lowest first, so `fd` alone proves fd + 1 are open. Counting
    // /proc/self/fd costs a directory read, so the count is reused for 50 ms unless the
    // connections admitted since bring it near the threshold.
    absl::Time now = absl::Now();
    if (now - counted_at_ >= absl::Milliseconds(50) ||
        counted_fds_ + admitted_since_count_ + options_.fd_headroom >= threshold) {
      counted_fds_ = CountOpenFds();
      counted_at_ = now;
      admitted_since_count_ = 0;
    }
    uint64_t open =
        std::max<uint64_t>(static_cast<uint64_t>(fd) + 1, counted_fds_ + admitted_since_count_);
    if (open >= threshold) {
      refused_no_fds_.fetch_add(1, std::memory_order_relaxed);
      WarnRefused("file descriptors short");
      return false;
    }
  }
  if (options_.max_connections > 0) {
    if (handed_.size() >= options_.max_connections) Sweep();
    if (handed_.size() >= options_.max_connections) {
      refused_at_cap_.fetch_add(1, std::memory_order_relaxed);
      WarnRefused("at max_client_connections");
      return false;
    }
    uint64_t inode = SocketInode(fd);
    if (inode != 0) handed_.push_back({fd, inode});
    open_connections_.store(handed_.size(), std::memory_order_relaxed);
  }
  ++admitted_since_count_;
  return true;
}

void Listener::Sweep() {
  size_t kept = 0;
  for (const Handed& handed : handed_) {
    // Closed, or the number now names another socket or file: that connection has left. Socket
    // inodes are not reused while the socket exists, so a live one is never mistaken.
    if (SocketInode(handed.fd) != handed.inode) continue;
    handed_[kept++] = handed;
  }
  handed_.resize(kept);
  open_connections_.store(kept, std::memory_order_relaxed);
}

uint64_t Listener::SocketInode(int fd) {
  // readlink of /proc/self/fd/N ("socket:[INODE]") rather than fstat(N): the descriptor belongs
  // to gRPC once handed out, and a path lookup is no operation on it (ThreadSanitizer would
  // report an fstat racing with gRPC's close on another thread).
  char link[64];
  std::string path = absl::StrCat("/proc/self/fd/", fd);
  ssize_t n = ::readlink(path.c_str(), link, sizeof(link) - 1);
  if (n <= 0) return 0;
  absl::string_view text(link, static_cast<size_t>(n));
  uint64_t inode = 0;
  if (!absl::ConsumePrefix(&text, "socket:[") || !absl::ConsumeSuffix(&text, "]") ||
      !absl::SimpleAtoi(text, &inode)) {
    return 0;
  }
  return inode;
}

size_t Listener::CountOpenFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return std::numeric_limits<size_t>::max();
  size_t count = 0;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count > 0 ? count - 1 : 0;  // less the directory's own descriptor
}

void Listener::WarnRefused(const char* reason) {
  ++refused_since_warning_;
  absl::Time now = absl::Now();
  if (now - last_warning_ < kWarningInterval) return;
  EB_LOG(kWarning, "client connection refused", "reason=", base::LogValue(reason),
         " refused=", refused_since_warning_, " max_connections=", options_.max_connections,
         " fd_soft_limit=", soft_limit_);
  last_warning_ = now;
  refused_since_warning_ = 0;
}

}  // namespace eventbus::net
