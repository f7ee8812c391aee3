#include "tests/testing/jsonrpc_peer.h"

#include <arpa/inet.h>
#include <fcntl.h>
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

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace eventbus::testing {
namespace {

constexpr size_t kReadBytes = 64 * 1024;
// Reads per connection per wakeup, so one busy sender cannot starve the others.
constexpr int kMaxReadsPerWakeup = 16;
// Upper bound for RunOnPeerThread; only reached if the peer thread is wedged.
constexpr absl::Duration kCommandTimeout = absl::Seconds(30);

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string ErrnoText(int err) { return std::strerror(err); }

std::string EscapeJsonString(absl::string_view value) {
  std::string out = "\"";
  for (char c : value) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
  return out;
}

// Returns the index just past the string that starts at text[i] == '"'.
size_t SkipString(absl::string_view text, size_t i) {
  ++i;
  while (i < text.size()) {
    char c = text[i++];
    if (c == '\\') {
      ++i;
    } else if (c == '"') {
      return i;
    }
  }
  return text.size();
}

// Returns the index just past the JSON value that starts at text[i].
size_t SkipValue(absl::string_view text, size_t i) {
  if (i >= text.size()) return i;
  if (text[i] == '"') return SkipString(text, i);
  if (text[i] == '{' || text[i] == '[') {
    int depth = 0;
    while (i < text.size()) {
      char c = text[i];
      if (c == '"') {
        i = SkipString(text, i);
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') --depth;
      ++i;
      if (depth == 0) return i;
    }
    return i;
  }
  while (i < text.size() && !IsJsonSpace(text[i]) && text[i] != ',' && text[i] != '}' &&
         text[i] != ']') {
    ++i;
  }
  return i;
}

// Returns the raw text of the top-level "id" member of a JSON object; nullopt when there is none
// (or it is null). Walks only the structure: enough for the well-formed requests EventBus sends.
std::optional<std::string> TopLevelId(absl::string_view text) {
  size_t i = 0;
  auto skip_space = [&] {
    while (i < text.size() && IsJsonSpace(text[i])) ++i;
  };
  skip_space();
  if (i >= text.size() || text[i] != '{') return std::nullopt;
  ++i;
  while (i < text.size()) {
    skip_space();
    if (i >= text.size() || text[i] != '"') return std::nullopt;
    const size_t key_start = i;
    i = SkipString(text, i);
    absl::string_view key = text.substr(key_start, i - key_start);
    skip_space();
    if (i >= text.size() || text[i] != ':') return std::nullopt;
    ++i;
    skip_space();
    const size_t value_start = i;
    i = SkipValue(text, i);
    if (key == "\"id\"") {
      absl::string_view value = text.substr(value_start, i - value_start);
      if (value.empty() || value == "null") return std::nullopt;
      return std::string(value);
    }
    skip_space();
    if (i >= text.size() || text[i] != ',') return std::nullopt;
    ++i;
  }
  return std::nullopt;
}

}  // namespace

struct JsonRpcPeer::Conn {
  struct Chunk {
    absl::Time due;
    std::string bytes;
    size_t written = 0;
  };

  explicit Conn(int fd) : fd(fd) {}

  // Appends complete top-level values found in `data` to *messages. Bytes outside a value other
  // than whitespace are skipped.
  void Scan(absl::string_view data, std::vector<std::string>* messages) {
    for (char c : data) {
      if (depth == 0) {
        if (c == '{' || c == '[') {
          partial.assign(1, c);
          depth = 1;
        }
        continue;
      }
      partial.push_back(c);
      if (in_string) {
        if (escape) {
          escape = false;
        } else if (c == '\\') {
          escape = true;
        } else if (c == '"') {
          in_string = false;
        }
      } else if (c == '"') {
        in_string = true;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if (c == '}' || c == ']') {
        if (--depth == 0) {
          messages->push_back(std::move(partial));
          partial.clear();
        }
      }
    }
  }

  int fd;
  // 1 for the first connection accepted since Start (see Options::on_message).
  int serial = 0;
  bool closing = false;
  // Framing state.
  std::string partial;
  int depth = 0;
  bool in_string = false;
  bool escape = false;
  // Replies held back for reverse_batch.
  std::vector<std::string> held;
  // Bytes to write, in order; each chunk is its own write(2).
  std::deque<Chunk> out;
  absl::Time last_due = absl::InfinitePast();
};

JsonRpcPeer::JsonRpcPeer(Options options) : options_(std::move(options)) {
  port_ = options_.port;
  behavior_ = options_.behavior;
}

absl::StatusOr<std::unique_ptr<JsonRpcPeer>> JsonRpcPeer::Start(Options options) {
  std::unique_ptr<JsonRpcPeer> peer(new JsonRpcPeer(std::move(options)));
  peer->wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (peer->wake_fd_ < 0) {
    return absl::InternalError(absl::StrCat("jsonrpc peer: eventfd: ", ErrnoText(errno)));
  }
  absl::Status status = peer->Restart();
  if (!status.ok()) return status;
  return peer;
}

JsonRpcPeer::~JsonRpcPeer() {
  Stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

std::string JsonRpcPeer::host() const { return options_.ipv6 ? "::1" : "127.0.0.1"; }

std::string JsonRpcPeer::socket(absl::string_view method) const {
  std::string out =
      options_.ipv6 ? absl::StrCat("tcp:[::1]:", port_) : absl::StrCat("tcp:127.0.0.1:", port_);
  if (!method.empty()) absl::StrAppend(&out, "/", method);
  return out;
}

absl::Status JsonRpcPeer::Listen() {
  const int family = options_.ipv6 ? AF_INET6 : AF_INET;
  const std::string where = absl::StrCat(options_.ipv6 ? "[::1]" : "127.0.0.1", ":", port_);
  int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("jsonrpc peer: socket: ", ErrnoText(errno)));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (options_.receive_buffer_bytes > 0) {
    // Set on the listener so accepted sockets inherit it before the handshake fixes the window.
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &options_.receive_buffer_bytes,
                 sizeof(options_.receive_buffer_bytes));
  }
  int rc;
  if (options_.ipv6) {
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    sockaddr_in6 addr{};
    addr.sin6_family = AF_INET6;
    addr.sin6_addr = in6addr_loopback;
    addr.sin6_port = htons(port_);
    rc = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  } else {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port_);
    rc = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  }
  if (rc != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("jsonrpc peer: bind ", where, ": ", ErrnoText(err)));
  }
  if (::listen(fd, 128) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(
        absl::StrCat("jsonrpc peer: listen ", where, ": ", ErrnoText(err)));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = options_.ipv6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                        : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  listen_fd_ = fd;
  return absl::OkStatus();
}

void JsonRpcPeer::Stop() {
  eventbus::MutexLock lifecycle(&lifecycle_mu_);
  {
    eventbus::MutexLock lock(&mu_);
    if (!running_) return;
    stop_ = true;
  }
  Wake();
  thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  eventbus::MutexLock lock(&mu_);
  running_ = false;
  commands_.clear();
  commands_done_ = commands_queued_;
}

absl::Status JsonRpcPeer::Restart() {
  Stop();
  eventbus::MutexLock lifecycle(&lifecycle_mu_);
  absl::Status status = Listen();
  if (!status.ok()) return status;
  {
    eventbus::MutexLock lock(&mu_);
    running_ = true;
    stop_ = false;
  }
  thread_ = std::thread(&JsonRpcPeer::Run, this);
  return absl::OkStatus();
}

void JsonRpcPeer::Wake() {
  uint64_t one = 1;
  // A full counter still wakes the poller, so a failed write is harmless.
  (void)!::write(wake_fd_, &one, sizeof(one));
}

void JsonRpcPeer::SetBehavior(PeerBehavior behavior) {
  {
    eventbus::MutexLock lock(&mu_);
    behavior_ = std::move(behavior);
  }
  Wake();  // the poll set depends on the mode (kNoRead)
}

void JsonRpcPeer::SetMode(PeerMode mode) {
  {
    eventbus::MutexLock lock(&mu_);
    behavior_.mode = mode;
  }
  Wake();
}

PeerBehavior JsonRpcPeer::behavior() const {
  eventbus::MutexLock lock(&mu_);
  return behavior_;
}

std::string JsonRpcPeer::Received() const {
  eventbus::MutexLock lock(&mu_);
  return received_;
}

std::vector<std::string> JsonRpcPeer::Messages() const {
  eventbus::MutexLock lock(&mu_);
  return messages_;
}

size_t JsonRpcPeer::message_count() const {
  eventbus::MutexLock lock(&mu_);
  return messages_.size();
}

size_t JsonRpcPeer::bytes_received() const {
  eventbus::MutexLock lock(&mu_);
  return received_.size();
}

void JsonRpcPeer::ClearRecorded() {
  eventbus::MutexLock lock(&mu_);
  received_.clear();
  messages_.clear();
}

int JsonRpcPeer::connections_accepted() const {
  eventbus::MutexLock lock(&mu_);
  return accepted_;
}

int JsonRpcPeer::open_connections() const {
  eventbus::MutexLock lock(&mu_);
  return open_;
}

bool JsonRpcPeer::WaitForMessages(size_t n, absl::Duration timeout) {
  auto done = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return messages_.size() >= n; };
  eventbus::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(done, timeout);
}

bool JsonRpcPeer::WaitForBytes(size_t n, absl::Duration timeout) {
  auto done = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return received_.size() >= n; };
  eventbus::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(done, timeout);
}

bool JsonRpcPeer::WaitForConnectionsAccepted(int n, absl::Duration timeout) {
  auto done = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return accepted_ >= n; };
  eventbus::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(done, timeout);
}

bool JsonRpcPeer::WaitForOpenConnections(int n, absl::Duration timeout) {
  auto done = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return open_ == n; };
  eventbus::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(done, timeout);
}

void JsonRpcPeer::RunOnPeerThread(std::function<void()> command) {
  uint64_t seq;
  {
    eventbus::MutexLock lock(&mu_);
    if (!running_) return;
    commands_.push_back(std::move(command));
    seq = ++commands_queued_;
  }
  Wake();
  auto done = [this, seq]()
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return commands_done_ >= seq || !running_; };
  eventbus::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(done, kCommandTimeout);
}

void JsonRpcPeer::SendToAll(absl::string_view bytes) {
  std::string copy(bytes);
  RunOnPeerThread([this, copy = std::move(copy)] {
    const absl::Time now = absl::Now();
    for (auto& conn : conns_) {
      if (conn->fd < 0) continue;
      conn->out.push_back(Conn::Chunk{std::max(now, conn->last_due), copy});
      conn->last_due = conn->out.back().due;
    }
  });
}

void JsonRpcPeer::DropConnections() {
  RunOnPeerThread([this] {
    for (auto& conn : conns_) {
      if (conn->fd >= 0) CloseConn(*conn);
    }
  });
}

void JsonRpcPeer::Run() {
  std::vector<pollfd> pfds;
  for (;;) {
    bool reading;
    std::vector<std::function<void()>> commands;
    {
      eventbus::MutexLock lock(&mu_);
      if (stop_) break;
      reading = behavior_.mode != PeerMode::kNoRead;
      commands.swap(commands_);
    }
    for (auto& command : commands) command();
    if (!commands.empty()) {
      eventbus::MutexLock lock(&mu_);
      commands_done_ += commands.size();
    }
    conns_.erase(std::remove_if(conns_.begin(), conns_.end(),
                                [](const std::unique_ptr<Conn>& c) { return c->fd < 0; }),
                 conns_.end());

    const absl::Time now = absl::Now();
    absl::Time next_due = absl::InfiniteFuture();
    pfds.clear();
    pfds.push_back(pollfd{wake_fd_, POLLIN, 0});
    pfds.push_back(pollfd{listen_fd_, POLLIN, 0});
    for (const auto& conn : conns_) {
      short events = reading ? POLLIN : 0;
      if (!conn->out.empty()) {
        if (conn->out.front().due <= now) {
          events |= POLLOUT;
        } else {
          next_due = std::min(next_due, conn->out.front().due);
        }
      }
      pfds.push_back(pollfd{conn->fd, events, 0});
    }
    int timeout_ms = -1;
    if (next_due != absl::InfiniteFuture()) {
      timeout_ms = static_cast<int>(std::max<int64_t>(
          0, absl::ToInt64Milliseconds(absl::Ceil(next_due - now, absl::Milliseconds(1)))));
    }
    const int ready = ::poll(pfds.data(), pfds.size(), timeout_ms);
    if (ready < 0 && errno != EINTR) break;

    if (pfds[0].revents & POLLIN) {
      uint64_t value;
      (void)!::read(wake_fd_, &value, sizeof(value));
    }
    if (pfds[1].revents & POLLIN) AcceptAll();
    if (reading) {
      // The mode may have changed to kNoRead while we were polling.
      eventbus::MutexLock lock(&mu_);
      reading = behavior_.mode != PeerMode::kNoRead;
    }
    // New connections were appended after the polled ones; only the polled ones are indexed.
    const size_t polled = pfds.size() - 2;
    for (size_t i = 0; i < polled; ++i) {
      Conn& conn = *conns_[i];
      const short revents = pfds[i + 2].revents;
      if (conn.fd < 0) continue;
      if (reading && (revents & (POLLIN | POLLHUP | POLLERR))) {
        ReadFrom(conn);
      } else if (!reading && (revents & (POLLHUP | POLLERR))) {
        conn.closing = true;
      }
      if (!conn.closing) Flush(conn);
      if (conn.closing && conn.fd >= 0) CloseConn(conn);
    }
  }
  for (auto& conn : conns_) {
    if (conn->fd >= 0) CloseConn(*conn);
  }
  conns_.clear();
}

void JsonRpcPeer::AcceptAll() {
  for (int i = 0; i < 64; ++i) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or a connection that died before we got to it
    int one = 1;
    // Small replies (and single-byte pieces) must leave at once, not wait for Nagle.
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conns_.push_back(std::make_unique<Conn>(fd));
    eventbus::MutexLock lock(&mu_);
    ++accepted_;
    ++open_;
    conns_.back()->serial = accepted_;
  }
}

void JsonRpcPeer::ReadFrom(Conn& conn) {
  std::string data;
  char buf[kReadBytes];
  for (int i = 0; i < kMaxReadsPerWakeup; ++i) {
    const ssize_t n = ::read(conn.fd, buf, sizeof(buf));
    if (n > 0) {
      data.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) conn.closing = true;
    break;
  }
  if (data.empty()) return;
  std::vector<std::string> messages;
  conn.Scan(data, &messages);
  // The behaviour is read after the bytes were: whatever a test sends after SetBehavior()
  // returned is handled with the new behaviour.
  PeerBehavior behavior;
  {
    eventbus::MutexLock lock(&mu_);
    received_ += data;
    messages_.insert(messages_.end(), messages.begin(), messages.end());
    behavior = behavior_;
  }
  if (options_.on_message) {
    for (const std::string& message : messages) options_.on_message(conn.serial, message);
  }
  for (const std::string& message : messages) HandleMessage(conn, message, behavior);
}

void JsonRpcPeer::HandleMessage(Conn& conn, const std::string& message,
                                const PeerBehavior& behavior) {
  const std::optional<std::string> id = TopLevelId(message);
  switch (behavior.mode) {
    case PeerMode::kReplyResult:
      if (id) {
        QueueReply(conn,
                   absl::StrCat(R"({"jsonrpc":"2.0","id":)", *id, R"(,"result":)",
                                behavior.result_json, "}"),
                   behavior);
      }
      break;
    case PeerMode::kReplyError:
      if (id) {
        QueueReply(conn,
                   absl::StrCat(R"({"jsonrpc":"2.0","id":)", *id, R"(,"error":{"code":)",
                                behavior.error_code, R"(,"message":)",
                                EscapeJsonString(behavior.error_message), "}}"),
                   behavior);
      }
      break;
    case PeerMode::kNeverReply:
    case PeerMode::kNoRead:
      break;
    case PeerMode::kCloseAfterRead:
      conn.closing = true;
      break;
    case PeerMode::kGarbage:
      if (id) QueueReply(conn, behavior.garbage, behavior);
      break;
    case PeerMode::kCustom:
      if (behavior.responder) {
        std::optional<std::string> reply = behavior.responder(message, id.value_or(""));
        if (reply) QueueReply(conn, std::move(*reply), behavior);
      }
      break;
  }
}

void JsonRpcPeer::QueueReply(Conn& conn, std::string reply, const PeerBehavior& behavior) {
  reply += behavior.separator;
  std::vector<std::string> replies;
  if (behavior.reverse_batch > 1) {
    conn.held.push_back(std::move(reply));
    if (conn.held.size() < static_cast<size_t>(behavior.reverse_batch)) return;
    replies.assign(conn.held.rbegin(), conn.held.rend());
    conn.held.clear();
  } else {
    replies.push_back(std::move(reply));
  }
  // Chunks never overtake each other: each is due no earlier than the one before.
  absl::Time due = std::max(absl::Now() + behavior.reply_delay, conn.last_due);
  for (const std::string& bytes : replies) {
    std::vector<absl::string_view> pieces;
    absl::string_view rest = bytes;
    if (behavior.chunk_bytes > 0) {
      while (!rest.empty()) {
        const size_t n = std::min(behavior.chunk_bytes, rest.size());
        pieces.push_back(rest.substr(0, n));
        rest.remove_prefix(n);
      }
    } else if (behavior.split_at > 0 && behavior.split_at < rest.size()) {
      pieces.push_back(rest.substr(0, behavior.split_at));
      pieces.push_back(rest.substr(behavior.split_at));
    } else {
      pieces.push_back(rest);
    }
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (i > 0 || !conn.out.empty()) due += behavior.chunk_pause;
      conn.out.push_back(Conn::Chunk{due, std::string(pieces[i])});
    }
  }
  conn.last_due = due;
}

void JsonRpcPeer::Flush(Conn& conn) {
  const absl::Time now = absl::Now();
  while (!conn.out.empty() && conn.out.front().due <= now) {
    Conn::Chunk& chunk = conn.out.front();
    const ssize_t n = ::send(conn.fd, chunk.bytes.data() + chunk.written,
                             chunk.bytes.size() - chunk.written, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) conn.closing = true;
      return;
    }
    chunk.written += static_cast<size_t>(n);
    if (chunk.written == chunk.bytes.size()) conn.out.pop_front();
  }
}

void JsonRpcPeer::CloseConn(Conn& conn) {
  ::close(conn.fd);
  conn.fd = -1;
  conn.out.clear();
  conn.held.clear();
  eventbus::MutexLock lock(&mu_);
  --open_;
}

// ---------------------------------------------------------------------------------------------
// BlackholeListener

absl::StatusOr<std::unique_ptr<BlackholeListener>> BlackholeListener::Start() {
  auto out = std::unique_ptr<BlackholeListener>(new BlackholeListener());
  out->listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (out->listen_fd_ < 0) {
    return absl::InternalError(absl::StrCat("blackhole: socket: ", ErrnoText(errno)));
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(out->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(out->listen_fd_, 0) != 0 ||
      ::getsockname(out->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return absl::InternalError(absl::StrCat("blackhole: bind/listen: ", ErrnoText(errno)));
  }
  out->port_ = ntohs(addr.sin_port);
  // Each non-blocking connect either completes (it took a place in the accept queue: keep it as
  // a filler) or hangs (the queue is full: the port black-holes). Linux admits backlog + 1.
  for (int i = 0; i < 8; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return absl::InternalError(absl::StrCat("blackhole: socket: ", ErrnoText(errno)));
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    if (rc != 0 && errno != EINPROGRESS) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat("blackhole: probe connect: ", ErrnoText(err)));
    }
    pollfd pfd{fd, POLLOUT, 0};
    if (rc == 0 || ::poll(&pfd, 1, 200) > 0) {
      out->fillers_.push_back(fd);
      continue;
    }
    ::close(fd);  // hung for 200 ms: SYNs are being dropped
    return out;
  }
  return absl::InternalError("blackhole: the accept queue never filled up");
}

BlackholeListener::~BlackholeListener() {
  for (int fd : fillers_) ::close(fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

std::string BlackholeListener::socket() const { return absl::StrCat("tcp:127.0.0.1:", port_); }

}  // namespace eventbus::testing
