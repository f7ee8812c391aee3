// Accepts TCP connections for the gRPC API in a thread of its own and hands each accepted socket
// to a callback (server/service passes it to gRPC's external-connection acceptor). Owning the
// accept loop keeps the listener alive when descriptors run out (gRPC 1.51's own listener stops
// for good at the first `accept4: Too many open files`), and lets it refuse connections beyond a
// cap, or when descriptors run short, by closing them at once.
#ifndef EVENTBUS_SERVER_NET_LISTENER_H_
#define EVENTBUS_SERVER_NET_LISTENER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/base/fd.h"

namespace eventbus::net {

struct ListenerOptions {
  // Connections handed out and still open beyond which a new one is closed at once (0 = no cap).
  size_t max_connections = 0;
  // A new connection is closed at once when fewer than this many descriptors are left under the
  // soft RLIMIT_NOFILE (0 = no such check).
  size_t fd_headroom = 0;
  // listen(2) backlog (the kernel caps it at net.core.somaxconn).
  int backlog = 4096;
  // How long to stop accepting when not even the reserved descriptor can be had back.
  absl::Duration exhausted_backoff = absl::Milliseconds(100);
};

// Counters since Start(). open_connections is as of the last check, which runs when the cap is
// reached (so it may still count connections closed since).
struct ListenerStats {
  uint64_t accepted = 0;        // handed to the callback
  uint64_t refused_at_cap = 0;  // closed: max_connections open
  uint64_t refused_no_fds = 0;  // closed: descriptors short or exhausted (EMFILE/ENFILE)
  size_t open_connections = 0;  // handed out and still open (counted only with a cap)
};

// Owns the listening sockets of one address ("HOST:PORT", "[V6]:PORT"; an empty host, "0.0.0.0"
// or "[::]" listens on every interface) and the accept thread.
//
// Thread contract: Bind/Start/Stop from the owning thread; stats() from any thread; the handler
// runs on the accept thread and must not block.
//
// Connections handed out are counted as open until the descriptor is closed by whoever took it:
// the consumer (gRPC) gives no close notification, so each is remembered by descriptor number and
// socket inode (from /proc/self/fd), and a descriptor that is closed, or now names another socket,
// has left.
class Listener {
 public:
  // Takes ownership of `fd` (a non-blocking, close-on-exec TCP socket); `listen_fd` is the
  // listening socket it came from.
  using Handler = absl::AnyInvocable<void(int listen_fd, int fd)>;

  // Binds and listens (not yet accepting). INVALID_ARGUMENT for a malformed address, UNAVAILABLE
  // ("cannot bind") when no socket of the address can be bound.
  static absl::StatusOr<std::unique_ptr<Listener>> Bind(absl::string_view address,
                                                        ListenerOptions options);

  // Stop().
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // The bound port (the chosen one when the address said 0).
  int port() const { return port_; }

  // Starts the accept thread. Call once.
  void Start(Handler handler);
  // Stops accepting: closes the listening sockets (new connections are refused by the kernel) and
  // joins the accept thread. Idempotent; connections already handed out are not touched.
  void Stop();

  ListenerStats stats() const;

 private:
  struct Handed {
    int fd;
    uint64_t inode;
  };

  Listener(std::vector<base::UniqueFd> sockets, int port, ListenerOptions options);
  void Run();
  // Accepts what `listen_fd` has queued; false when the loop must back off (no descriptor).
  bool AcceptAll(int listen_fd);
  // Whether a just-accepted `fd` may be handed out; logs and counts a refusal.
  bool Admit(int fd);
  // Forgets handed-out connections that have since been closed.
  void Sweep();
  // The inode of the socket `fd` names in this process, 0 when it names none.
  static uint64_t SocketInode(int fd);
  // Descriptors this process has open (its /proc/self/fd entries); SIZE_MAX when none can be
  // opened to count them.
  static size_t CountOpenFds();
  // Warns about refused connections, at most once per 10 s, with how many since the last line.
  void WarnRefused(const char* reason);

  std::vector<base::UniqueFd> sockets_;
  const int port_;
  const ListenerOptions options_;
  base::UniqueFd wake_;   // eventfd: Stop() writes it
  base::UniqueFd spare_;  // /dev/null, given up to accept-and-close when descriptors run out
  Handler handler_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;  // owner thread only

  // Accept thread only.
  std::vector<Handed> handed_;
  uint64_t soft_limit_ = 0;
  uint64_t counted_fds_ = 0;
  absl::Time counted_at_ = absl::InfinitePast();
  uint64_t admitted_since_count_ = 0;
  absl::Time last_warning_ = absl::InfinitePast();
  uint64_t refused_since_warning_ = 0;

  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> refused_at_cap_{0};
  std::atomic<uint64_t> refused_no_fds_{0};
  std::atomic<size_t> open_connections_{0};
};

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_LISTENER_H_
