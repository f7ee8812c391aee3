// Host name resolution for the writer pool's connections (SPEC §1: DNS is resolved on every
// (re)connect and every A/AAAA record is tried). getaddrinfo() blocks, so it never runs on a loop
// thread: IP literals are converted inline by the caller (ParseIpLiteral), names go to a resolver
// thread pool whose results come back to the requesting loop through EventLoop::Post.
//
// One slow DNS server must not stall everyone else: every request has its own deadline, enforced
// by a timer on the requesting loop (RESOLVE_FAILED `resolve "h": timed out after N ms`); requests
// for one name share one in-flight lookup, so a name holds at most one thread however many targets
// and reconnects ask for it; and the pool grows on demand (up to a cap) so that other names get
// their own thread instead of queueing behind the slow ones. Internal to server/net.
#ifndef EVENTBUS_SERVER_NET_RESOLVER_H_
#define EVENTBUS_SERVER_NET_RESOLVER_H_

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/net/event_loop.h"

namespace eventbus::net {

// One address to connect() to.
struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  // "127.0.0.1:9" or "[::1]:9", for error messages.
  std::string text;
};

// Converts an IPv4 or (unbracketed) IPv6 literal; nullopt when `host` is not a literal.
std::optional<SocketAddress> ParseIpLiteral(absl::string_view host, uint16_t port);

using ResolveResult = absl::StatusOr<std::vector<SocketAddress>>;

// Resolves `host` with getaddrinfo (blocking): every TCP address in the order returned.
// NOT_FOUND `resolve "host": Name or service not known` when it does not resolve.
ResolveResult ResolveBlocking(const std::string& host, uint16_t port);

struct ResolverOptions {
  // A request not answered within this long fails with DEADLINE_EXCEEDED
  // `resolve "host": timed out after N ms`. The lookup itself cannot be interrupted
  // (getaddrinfo): it goes on, and requests for the same name made meanwhile join it.
  absl::Duration timeout = absl::Seconds(2);
  // Most resolver threads (each one runs one lookup of one distinct name). Threads are started on
  // demand and end after `idle_thread_exit` without work. When every thread is busy, lookups of
  // further names wait for one, still bounded by their requests' deadlines.
  int max_threads = 32;
  absl::Duration idle_thread_exit = absl::Seconds(30);
  // The blocking lookup run on a resolver thread, once per in-flight name. Its addresses' ports
  // are replaced by each requester's port. Null: ResolveBlocking. A test seam.
  std::function<ResolveResult(const std::string& host)> lookup;
};

// A pool of resolver threads shared by all loops of a WriterPool. Thread-safe.
class Resolver {
 public:
  explicit Resolver(ResolverOptions options = {});
  // Close().
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Resolves `host` (a name, not an IP literal) and runs `done` exactly once on `loop`: with the
  // addresses (port `port`), with the lookup's error (NOT_FOUND), or with DEADLINE_EXCEEDED when
  // `timeout` passes first, whichever comes first. May be called from any thread; the timeout is
  // a timer on `loop`. `loop` must outlive Close(). After Close(), `done` is dropped without
  // running.
  void Resolve(std::string host, uint16_t port, EventLoop* loop,
               absl::AnyInvocable<void(ResolveResult)> done);

  // Stops posting results and firing timeouts; drops every pending `done`. The threads are
  // detached: one blocked in getaddrinfo finishes on its own and then exits, so Close() never
  // waits for DNS. Idempotent.
  void Close();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_RESOLVER_H_
