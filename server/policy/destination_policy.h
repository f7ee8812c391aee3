// The destination policy (SPEC §10): which IP addresses and ports EventBus may connect to on a
// subscriber's behalf, so that nobody who can Subscribe can point it at the network it runs in
// (a cloud metadata address, EventBus's own ports, a database). Entries come from
// --allow_targets / --deny_targets plus built-in defaults; net/ asks at Subscribe time and again
// for every address it is about to connect to. The bottom layer: pure matching over addresses,
// with base and abseil only (and getifaddrs for this host's own addresses).
#ifndef EVENTBUS_SERVER_POLICY_DESTINATION_POLICY_H_
#define EVENTBUS_SERVER_POLICY_DESTINATION_POLICY_H_

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/base/mutex.h"

namespace eventbus::policy {

// An IPv4 or IPv6 address. An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is always held as the
// IPv4 address it maps, so that no spelling of an IPv4 destination escapes the IPv4 entries.
class IpAddress {
 public:
  // 0.0.0.0.
  IpAddress() = default;
  static IpAddress V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d);
  static IpAddress V6(const std::array<uint8_t, 16>& bytes);

  // Parses a dotted quad (strictly four decimal parts) or an IPv6 literal without brackets or
  // zone. nullopt for anything else.
  static std::optional<IpAddress> Parse(absl::string_view text);
  // The address (and port, when `port` is set) of an AF_INET or AF_INET6 sockaddr; nullopt for
  // other families or a short length.
  static std::optional<IpAddress> FromSockaddr(const sockaddr* addr, socklen_t length,
                                               uint16_t* port = nullptr);

  bool is_v4() const { return v4_; }
  // IPv4: the 4 bytes in bytes()[0..3]; IPv6: all 16.
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  int bits() const { return v4_ ? 32 : 128; }
  // "169.254.169.254", "fd00:ec2::254".
  std::string ToString() const;
  // ToString() with the port: "169.254.169.254:80", "[fd00:ec2::254]:80".
  std::string WithPort(uint16_t port) const;

  friend bool operator==(const IpAddress& a, const IpAddress& b) {
    return a.v4_ == b.v4_ && a.bytes_ == b.bytes_;
  }

 private:
  bool v4_ = true;
  std::array<uint8_t, 16> bytes_{};
};

// Ports lo..hi inclusive.
struct PortRange {
  uint16_t lo = 1;
  uint16_t hi = 65535;
  bool Contains(uint16_t port) const { return port >= lo && port <= hi; }
  bool all() const { return lo <= 1 && hi == 65535; }
};

// One allow or deny entry: an address range of one family (or every address, "*") and a port
// range.
struct TargetRule {
  bool any_address = false;
  IpAddress network;
  int prefix_length = 0;
  PortRange ports;
  // Where the entry comes from, for messages: "--deny_targets", "default", ...
  std::string source;

  // True when `address` lies in the range (same family) and `port` in the ports. An IPv6 range
  // never matches an IPv4 address (IPv4-mapped ones included, see IpAddress).
  bool Matches(const IpAddress& address, uint16_t port) const;
  // The entry as it is written: "169.254.0.0/16", "10.0.0.0/8:8000-8999", "fd00::/8",
  // "[fd00::/8]:443", "*:25".
  std::string ToString() const;
};

// Parses one entry (see README, Destination policy):
//   CIDR[:PORT|:LO-HI]            IPv4: 10.0.0.0/8, 10.1.2.3 (= /32), 10.0.0.0/8:443
//   [CIDR]:PORT|:LO-HI, or CIDR   IPv6: [fd00::/8]:443, [::1]:8080, fd00::/8, ::1 (= /128)
//   *[:PORT|:LO-HI]               every address of both families
// INVALID_ARGUMENT saying what is wrong (without naming the entry; ParsePolicyFlags does): a bad
// address, a prefix length out of range, host bits set beyond the prefix, a port outside 1-65535,
// a range whose low end is above its high end. `source` is copied into the rule.
absl::StatusOr<TargetRule> ParseTargetRule(absl::string_view entry, absl::string_view source);

// What --allow_targets and --deny_targets configure.
struct PolicyConfig {
  // Empty: every destination no deny entry matches is allowed. Otherwise only those an allow
  // entry matches.
  std::vector<TargetRule> allow;
  // The operator's entries. They add to the defaults; they never replace them.
  std::vector<TargetRule> deny;
  // The built-in deny entries (DefaultDenyRules and the own ports). Off only when --deny_targets
  // says "none" or "nodefaults", so adding an entry cannot drop them by accident.
  bool default_deny = true;
};

// Parses the two flags: comma-separated entries (spaces around them ignored; "" = no entries).
// --deny_targets may also hold "nodefaults" (drop the built-in entries, keep the listed ones) or
// be exactly "none" (deny nothing at all). INVALID_ARGUMENT naming the flag, the entry and the
// problem: `--deny_targets: entry "10.0.0.1/8": host bits set beyond /8 (the network is
// 10.0.0.0/8)`.
absl::StatusOr<PolicyConfig> ParsePolicyFlags(absl::string_view allow_targets,
                                              absl::string_view deny_targets);

// The built-in deny entries that do not depend on this host: 169.254.0.0/16 (IPv4 link-local,
// the cloud metadata address 169.254.169.254 among them), fe80::/10 (IPv6 link-local) and
// fd00:ec2::254/128 (the IPv6 metadata address). Source "default".
std::vector<TargetRule> DefaultDenyRules();

// This host's interface addresses (getifaddrs), loopback included; empty when it fails.
std::vector<IpAddress> HostAddresses();

// One of EventBus's own listening ports, with what listens there ("gRPC --listen").
struct OwnPort {
  uint16_t port = 0;
  std::string what;
};

// The verdict on one destination.
struct Decision {
  bool allowed = true;
  // When denied, why: the entry and its source ("169.254.0.0/16, default") or "not in
  // --allow_targets", with the form that matched when it is not the address itself ("..., as
  // 127.0.0.1" for 0.0.0.0).
  std::string reason;
};

// "destination 169.254.169.254:80 is denied by the destination policy (169.254.0.0/16,
// default)": the text of a denial of `destination` ("host:port" or "address:port").
std::string DenialText(absl::string_view destination, const Decision& decision);

// The policy in force. Thread-safe: Check may run on any thread while SetOwnPorts replaces the
// own-port entries (a snapshot of all entries is swapped under a lock; matching runs outside it).
//
// Before matching, an address is normalised into every form it can reach: itself (IPv4-mapped
// IPv6 is already IPv4), the loopback address for 0.0.0.0/8 and :: (connecting there reaches
// this host), and the IPv4 address embedded in a NAT64 (64:ff9b::/96) or IPv4-compatible
// (::a.b.c.d) address. A destination is denied when any deny entry matches any form, or, with an
// allow list, when some form matches no allow entry.
class DestinationPolicy {
 public:
  // `host_addresses`: this host's own addresses (HostAddresses()), where the own ports are denied
  // too.
  DestinationPolicy(PolicyConfig config, std::vector<IpAddress> host_addresses);
  DestinationPolicy(const DestinationPolicy&) = delete;
  DestinationPolicy& operator=(const DestinationPolicy&) = delete;

  // Denies `ports` on loopback (127.0.0.0/8, ::1), the unspecified addresses and every host
  // address; replaces the own ports set before. Part of the defaults: ignored when they are off.
  void SetOwnPorts(const std::vector<OwnPort>& ports);

  Decision Check(const IpAddress& address, uint16_t port) const;

  // Every entry in force, for the start-up log: "deny=[169.254.0.0/16 (default), ...]
  // allow=[everything else]".
  std::string Describe() const;

 private:
  struct Rules {
    std::vector<TargetRule> deny;
    std::vector<TargetRule> allow;
  };
  std::shared_ptr<const Rules> Snapshot() const;

  const PolicyConfig config_;
  const std::vector<IpAddress> host_addresses_;
  mutable eventbus::Mutex mu_;
  std::shared_ptr<const Rules> rules_ ABSL_GUARDED_BY(mu_);
};

}  // namespace eventbus::policy

#endif  // EVENTBUS_SERVER_POLICY_DESTINATION_POLICY_H_
