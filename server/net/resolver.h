// Host name resolution for the writer pool's connections (SPEC §1: DNS is resolved on every
// (re)connect and every A/AAAA record is tried). getaddrinfo() blocks, so it never runs on a loop
// thread: IP literals are converted inline, names go to a small resolver thread pool whose results
// come back to the requesting loop through EventLoop::Post. Internal to server/net.
#ifndef EVENTBUS_SERVER_NET_RESOLVER_H_
#define EVENTBUS_SERVER_NET_RESOLVER_H_

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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

// A pool of resolver threads shared by all loops of a WriterPool. Thread-safe.
class Resolver {
 public:
  explicit Resolver(int num_threads);
  // Close().
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Resolves `host` on a resolver thread and runs `done` on `loop` (through Post). `loop` must
  // outlive Close(). After Close(), `done` is dropped without running.
  void Resolve(std::string host, uint16_t port, EventLoop* loop,
               absl::AnyInvocable<void(ResolveResult)> done);

  // Stops posting results. The threads are detached: one blocked in getaddrinfo finishes on its
  // own and then exits, so Close() never waits for DNS. Idempotent.
  void Close();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_RESOLVER_H_
