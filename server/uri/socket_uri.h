// Parses and normalises subscriber sockets (SPEC §1):
//   tcp:HOST:PORT[/METHOD]
//   tls:HOST:PORT[/METHOD]             (the same JSON-RPC bytes, inside TLS)
//   virtual:POLICY SOCKET SOCKET ...   (POLICY = PARALLEL | FAILOVER | ROUND-ROBIN)
// Pure: no sockets, no DNS. The registry stores the parsed form; delivery reads its targets.
#ifndef EVENTBUS_SERVER_URI_SOCKET_URI_H_
#define EVENTBUS_SERVER_URI_SOCKET_URI_H_

#include <cstdint>
#include <string>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace eventbus::uri {

// One JSON-RPC server reached over TCP (tcp:), or over TLS on TCP (tls:).
struct TcpTarget {
  // DNS name (lower-cased), IPv4 literal, or IPv6 literal without brackets.
  std::string host;
  // Everything after the first '/', verbatim; empty means "no method" (the event name is used).
  std::string method;
  // After the strings, with `tls`, so that the struct takes 72 bytes rather than 80 (a million
  // subscriptions each hold one).
  uint16_t port = 0;
  // tls: the connection runs TLS (verified against the target CA, host name checked).
  bool tls = false;

  // Names the one connection shared by every subscription to it: "host:port" (or "[v6]:port")
  // for tcp:, "tls:host:port" for tls:, so that tcp: and tls: to one port never share it.
  std::string Key() const;
  // Key(), appended to `out` (no allocation once `out` has the room).
  void AppendKey(std::string* out) const;
  // "host:port", or "[v6]:port", whatever the scheme.
  std::string HostPort() const;
  // The normalised socket: "tcp:" or "tls:", HostPort(), ("/" + method when set).
  std::string ToString() const;
  bool IsIpv6Literal() const;
  // True when `host` is an IPv4 or IPv6 literal rather than a DNS name.
  bool IsIpLiteral() const;

  friend bool operator==(const TcpTarget& a, const TcpTarget& b) {
    return a.host == b.host && a.port == b.port && a.method == b.method && a.tls == b.tls;
  }
};

enum class VirtualPolicy { kParallel, kFailover, kRoundRobin };

// "PARALLEL", "FAILOVER", "ROUND-ROBIN".
absl::string_view VirtualPolicyName(VirtualPolicy policy);

// The targets of a socket. Room for one inside the SocketUri: a tcp: or tls: subscription (nearly
// all of them) needs no heap block of its own for it, and its target sits beside the rest of the
// subscription. The elements stay put as long as the SocketUri is neither changed nor moved (the
// registry's subscriptions are immutable and held by pointer).
using TcpTargets = absl::InlinedVector<TcpTarget, 1>;

// A parsed subscriber socket: either one TCP (or TLS) target or a virtual group of them.
struct SocketUri {
  bool is_virtual = false;
  // Meaningful only when is_virtual.
  VirtualPolicy policy = VirtualPolicy::kParallel;
  // One element for tcp: and tls:, the members in order for virtual:.
  TcpTargets targets;

  // The normalised text: "tcp:h:p[/m]", "tls:h:p[/m]" or "virtual:POLICY m1 m2" (single spaces).
  std::string ToString() const;
};

// Parses `text`. Returns INVALID_ARGUMENT naming the socket and the fault, e.g.
// `socket "tcp:h:70000": port out of range (1-65535)`. Scheme and policy are case-sensitive;
// host names are lower-cased; ports must be decimal 1-65535; an IPv6 host must be bracketed; an
// IPv4 host must be a dotted quad (inet_aton forms such as "127.1" or "0x7f.1" are refused); a
// virtual group may not list the same member twice (after normalisation).
absl::StatusOr<SocketUri> ParseSocket(absl::string_view text);

// Parses a single "tcp:..." or "tls:..." socket (a virtual member, or a plain subscription).
absl::StatusOr<TcpTarget> ParseTcpSocket(absl::string_view text);

}  // namespace eventbus::uri

#endif  // EVENTBUS_SERVER_URI_SOCKET_URI_H_
