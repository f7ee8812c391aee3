#include "server/policy/destination_policy.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace eventbus::policy {
namespace {

constexpr absl::string_view kNone = "none";
constexpr absl::string_view kNoDefaults = "nodefaults";

// The IPv4-mapped prefix ::ffff:0:0/96.
bool IsV4Mapped(const std::array<uint8_t, 16>& b) {
  for (int i = 0; i < 10; ++i) {
    if (b[i] != 0) return false;
  }
  return b[10] == 0xff && b[11] == 0xff;
}

IpAddress FromV4Bytes(const uint8_t* p) { return IpAddress::V4(p[0], p[1], p[2], p[3]); }

// Decimal digits only (no sign, no spaces), within [0, max].
std::optional<uint32_t> ParseDecimal(absl::string_view text, uint32_t max) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  uint32_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value > max) return std::nullopt;
  return value;
}

absl::StatusOr<PortRange> ParsePorts(absl::string_view text) {
  PortRange range;
  std::vector<absl::string_view> ends = absl::StrSplit(text, absl::MaxSplits('-', 1));
  std::optional<uint32_t> lo = ParseDecimal(ends[0], 65535);
  std::optional<uint32_t> hi = ends.size() == 2 ? ParseDecimal(ends[1], 65535) : lo;
  if (!lo.has_value() || !hi.has_value() || *lo == 0 || *hi == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("port \"", text, "\" is not a port (1-65535) or a range LO-HI"));
  }
  if (*lo > *hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("port range ", *lo, "-", *hi, ": the low end is above the high end"));
  }
  range.lo = static_cast<uint16_t>(*lo);
  range.hi = static_cast<uint16_t>(*hi);
  return range;
}

// Clears every bit of `address` beyond the first `prefix` bits.
IpAddress Masked(const IpAddress& address, int prefix) {
  std::array<uint8_t, 16> b = address.bytes();
  const int bytes = address.is_v4() ? 4 : 16;
  for (int i = 0; i < bytes; ++i) {
    const int keep = std::min(8, std::max(0, prefix - 8 * i));
    b[i] &= static_cast<uint8_t>(keep == 0 ? 0 : 0xff << (8 - keep));
  }
  return address.is_v4() ? FromV4Bytes(b.data()) : IpAddress::V6(b);
}

// Parses "ADDRESS" or "ADDRESS/LEN" of the family `v6` says into `rule`.
absl::Status ParseCidr(absl::string_view text, bool v6, TargetRule* rule) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, absl::MaxSplits('/', 1));
  std::optional<IpAddress> address = IpAddress::Parse(parts[0]);
  // IPv6 text that spells an IPv4-mapped address parses as IPv4: tell them apart by the text.
  const bool written_v6 = parts[0].find(':') != absl::string_view::npos;
  if (!address.has_value() || written_v6 != v6) {
    return absl::InvalidArgumentError(absl::StrCat("\"", parts[0], "\" is not an ",
                                                   v6 ? "IPv6" : "IPv4", " address",
                                                   v6 ? "" : " (a dotted quad)"));
  }
  int max = v6 ? 128 : 32;
  int prefix = max;
  if (parts.size() == 2) {
    std::optional<uint32_t> length = ParseDecimal(parts[1], static_cast<uint32_t>(max));
    if (!length.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("prefix length \"/", parts[1], "\" is not 0-", max));
    }
    prefix = static_cast<int>(*length);
  }
  // ::ffff:a.b.c.d/N was turned into IPv4 by Parse: the prefix follows (N >= 96), since a mapped
  // destination is matched as the IPv4 address it maps.
  if (v6 && address->is_v4()) {
    if (prefix < 96) {
      return absl::InvalidArgumentError(absl::StrCat(
          "IPv4-mapped range \"", text,
          "\" shorter than /96 (write the IPv4 range, or an IPv6 range outside ::ffff:0:0/96)"));
    }
    prefix -= 96;
  }
  IpAddress network = Masked(*address, prefix);
  if (!(network == *address)) {
    return absl::InvalidArgumentError(absl::StrCat("host bits set beyond /", prefix,
                                                   " (the network is ", network.ToString(), "/",
                                                   prefix, ")"));
  }
  rule->network = network;
  rule->prefix_length = prefix;
  return absl::OkStatus();
}

// The rules of the own ports: each port on loopback, the unspecified addresses and every host
// address.
void AddOwnPortRules(const std::vector<OwnPort>& ports, const std::vector<IpAddress>& host,
                     std::vector<TargetRule>* out) {
  for (const OwnPort& own : ports) {
    if (own.port == 0) continue;
    const std::string source = absl::StrCat("default: EventBus's own ", own.what, " port");
    auto add = [&](const IpAddress& network, int prefix) {
      for (const TargetRule& r : *out) {
        if (!r.any_address && r.network == network && r.prefix_length == prefix &&
            r.ports.lo == own.port && r.ports.hi == own.port) {
          return;
        }
      }
      TargetRule rule;
      rule.network = network;
      rule.prefix_length = prefix;
      rule.ports = PortRange{own.port, own.port};
      rule.source = source;
      out->push_back(std::move(rule));
    };
    add(IpAddress::V4(127, 0, 0, 0), 8);
    std::array<uint8_t, 16> loopback6{};
    loopback6[15] = 1;
    add(IpAddress::V6(loopback6), 128);
    add(IpAddress::V4(0, 0, 0, 0), 8);
    add(IpAddress::V6({}), 128);
    for (const IpAddress& a : host) {
      // A host address inside loopback (127.0.0.1, ::1) is covered already.
      bool covered = false;
      for (const TargetRule& r : *out) covered = covered || r.Matches(a, own.port);
      if (!covered) add(a, a.bits());
    }
  }
}

// Every form `address` can reach (see DestinationPolicy): itself first, then what it stands for.
void AddForms(const IpAddress& address, std::vector<IpAddress>* forms) {
  for (const IpAddress& f : *forms) {
    if (f == address) return;
  }
  forms->push_back(address);
  const std::array<uint8_t, 16>& b = address.bytes();
  if (address.is_v4()) {
    // 0.0.0.0/8 is "this host on this network": Linux connects 0.0.0.0 to the local host.
    if (b[0] == 0) AddForms(IpAddress::V4(127, 0, 0, 1), forms);
    return;
  }
  bool zero96 = true;  // the first 96 bits are zero
  for (int i = 0; i < 12; ++i) zero96 = zero96 && b[i] == 0;
  if (zero96) {
    const bool unspecified = b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] == 0;
    const bool loopback = b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] == 1;
    std::array<uint8_t, 16> one{};
    one[15] = 1;
    if (unspecified) {
      AddForms(IpAddress::V6(one), forms);  // :: reaches this host like ::1
    } else if (!loopback) {
      AddForms(FromV4Bytes(&b[12]), forms);  // IPv4-compatible ::a.b.c.d (deprecated)
    }
    return;
  }
  // NAT64 well-known prefix (RFC 6052): a NAT64 gateway forwards it to the embedded IPv4 address.
  static constexpr uint8_t kNat64[12] = {0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  if (std::memcmp(b.data(), kNat64, sizeof(kNat64)) == 0) AddForms(FromV4Bytes(&b[12]), forms);
}

std::string RuleReason(const TargetRule& rule, const IpAddress& form, const IpAddress& address) {
  std::string reason = absl::StrCat(rule.ToString(), ", ", rule.source);
  if (!(form == address)) absl::StrAppend(&reason, ", as ", form.ToString());
  return reason;
}

// Parses the entries of flag `flag` into `config` (see ParsePolicyFlags).
absl::Status ParseList(absl::string_view flag, absl::string_view text, bool deny,
                       PolicyConfig* config) {
  if (absl::StripAsciiWhitespace(text).empty()) return absl::OkStatus();
  std::vector<absl::string_view> entries = absl::StrSplit(text, ',');
  for (absl::string_view raw : entries) {
    absl::string_view entry = absl::StripAsciiWhitespace(raw);
    auto error = [&](absl::string_view problem) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": entry \"", entry, "\": ", problem));
    };
    if (entry.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, ": empty entry in \"", text, "\" (entries are separated by single commas)"));
    }
    if (entry == kNone || entry == kNoDefaults) {
      if (!deny) {
        return error(
            "only --deny_targets takes this word (an empty --allow_targets allows every "
            "destination that is not denied)");
      }
      if (entry == kNone && entries.size() > 1) {
        return error(
            "\"none\" denies nothing at all and stands alone; to drop the defaults but keep "
            "your entries, write \"nodefaults\" among them");
      }
      config->default_deny = false;
      continue;
    }
    absl::StatusOr<TargetRule> rule = ParseTargetRule(entry, flag);
    if (!rule.ok()) return error(rule.status().message());
    (deny ? config->deny : config->allow).push_back(*std::move(rule));
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// IpAddress

IpAddress IpAddress::V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  IpAddress out;
  out.v4_ = true;
  out.bytes_[0] = a;
  out.bytes_[1] = b;
  out.bytes_[2] = c;
  out.bytes_[3] = d;
  return out;
}

IpAddress IpAddress::V6(const std::array<uint8_t, 16>& bytes) {
  if (IsV4Mapped(bytes)) return FromV4Bytes(&bytes[12]);
  IpAddress out;
  out.v4_ = false;
  out.bytes_ = bytes;
  return out;
}

std::optional<IpAddress> IpAddress::Parse(absl::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  const std::string s(text);
  // inet_pton takes only the strict forms: a dotted quad of four decimal parts without leading
  // zeros for IPv4 (no inet_aton forms such as 127.1 or 0x7f.1), and no zone for IPv6.
  in_addr v4{};
  if (::inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    return FromV4Bytes(reinterpret_cast<const uint8_t*>(&v4.s_addr));
  }
  in6_addr v6{};
  if (::inet_pton(AF_INET6, s.c_str(), &v6) == 1) {
    std::array<uint8_t, 16> bytes;
    std::memcpy(bytes.data(), v6.s6_addr, 16);
    return V6(bytes);
  }
  return std::nullopt;
}

std::optional<IpAddress> IpAddress::FromSockaddr(const sockaddr* addr, socklen_t length,
                                                 uint16_t* port) {
  if (addr == nullptr) return std::nullopt;
  if (addr->sa_family == AF_INET && length >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    sockaddr_in in;
    std::memcpy(&in, addr, sizeof(in));
    if (port != nullptr) *port = ntohs(in.sin_port);
    return FromV4Bytes(reinterpret_cast<const uint8_t*>(&in.sin_addr.s_addr));
  }
  if (addr->sa_family == AF_INET6 && length >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    sockaddr_in6 in6;
    std::memcpy(&in6, addr, sizeof(in6));
    if (port != nullptr) *port = ntohs(in6.sin6_port);
    std::array<uint8_t, 16> bytes;
    std::memcpy(bytes.data(), in6.sin6_addr.s6_addr, 16);
    return V6(bytes);
  }
  return std::nullopt;
}

std::string IpAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (v4_) {
    ::inet_ntop(AF_INET, bytes_.data(), buf, sizeof(buf));
  } else {
    ::inet_ntop(AF_INET6, bytes_.data(), buf, sizeof(buf));
  }
  return buf;
}

std::string IpAddress::WithPort(uint16_t port) const {
  return v4_ ? absl::StrCat(ToString(), ":", port) : absl::StrCat("[", ToString(), "]:", port);
}

// ---------------------------------------------------------------------------------------------
// TargetRule

bool TargetRule::Matches(const IpAddress& address, uint16_t port) const {
  if (!ports.Contains(port)) return false;
  if (any_address) return true;
  if (address.is_v4() != network.is_v4()) return false;
  return Masked(address, prefix_length) == network;
}

std::string TargetRule::ToString() const {
  std::string ports_text =
      ports.lo == ports.hi ? absl::StrCat(ports.lo) : absl::StrCat(ports.lo, "-", ports.hi);
  if (any_address) return ports.all() ? "*" : absl::StrCat("*:", ports_text);
  std::string cidr = absl::StrCat(network.ToString(), "/", prefix_length);
  if (ports.all()) return cidr;
  return network.is_v4() ? absl::StrCat(cidr, ":", ports_text)
                         : absl::StrCat("[", cidr, "]:", ports_text);
}

absl::StatusOr<TargetRule> ParseTargetRule(absl::string_view entry, absl::string_view source) {
  TargetRule rule;
  rule.source = std::string(source);
  absl::string_view address = entry;
  absl::string_view ports;
  bool has_ports = false;
  bool v6 = false;
  if (absl::ConsumePrefix(&address, "[")) {
    size_t close = address.find(']');
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError("missing \"]\" after the bracketed IPv6 range");
    }
    absl::string_view rest = address.substr(close + 1);
    address = address.substr(0, close);
    if (address.find(':') == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "\"", address, "\" in brackets is not an IPv6 range (brackets are for IPv6 only)"));
    }
    if (!rest.empty()) {
      if (!absl::ConsumePrefix(&rest, ":")) {
        return absl::InvalidArgumentError(
            absl::StrCat("expected \":PORT\" after \"]\", not \"", rest, "\""));
      }
      ports = rest;
      has_ports = true;
    }
    v6 = true;
  } else if (size_t colons = std::count(entry.begin(), entry.end(), ':'); colons > 1) {
    // Unbracketed IPv6: the colons belong to the address, so it carries no port.
    size_t slash = entry.find('/');
    if (slash != absl::string_view::npos && entry.find(':', slash) != absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("an IPv6 range with ports is written in brackets: [",
                       entry.substr(0, entry.rfind(':')), "]", entry.substr(entry.rfind(':'))));
    }
    v6 = true;
  } else if (colons == 1) {
    size_t colon = entry.find(':');
    address = entry.substr(0, colon);
    ports = entry.substr(colon + 1);
    has_ports = true;
  }
  if (has_ports) {
    absl::StatusOr<PortRange> range = ParsePorts(ports);
    if (!range.ok()) return range.status();
    rule.ports = *range;
  }
  if (address == "*") {
    rule.any_address = true;
    return rule;
  }
  if (address.empty()) return absl::InvalidArgumentError("missing address (write * for any)");
  if (absl::Status cidr = ParseCidr(address, v6, &rule); !cidr.ok()) return cidr;
  return rule;
}

absl::StatusOr<PolicyConfig> ParsePolicyFlags(absl::string_view allow_targets,
                                              absl::string_view deny_targets) {
  PolicyConfig config;
  if (absl::Status s = ParseList("--allow_targets", allow_targets, /*deny=*/false, &config);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ParseList("--deny_targets", deny_targets, /*deny=*/true, &config); !s.ok()) {
    return s;
  }
  return config;
}

std::vector<TargetRule> DefaultDenyRules() {
  std::vector<TargetRule> rules;
  for (absl::string_view entry : {"169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"}) {
    absl::StatusOr<TargetRule> rule = ParseTargetRule(entry, "default");
    if (rule.ok()) rules.push_back(*std::move(rule));
  }
  return rules;
}

std::vector<IpAddress> HostAddresses() {
  std::vector<IpAddress> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    const socklen_t length =
        i->ifa_addr->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    std::optional<IpAddress> address = IpAddress::FromSockaddr(i->ifa_addr, length);
    if (!address.has_value()) continue;
    bool seen = false;
    for (const IpAddress& a : out) seen = seen || a == *address;
    if (!seen) out.push_back(*address);
  }
  ::freeifaddrs(list);
  return out;
}

std::string DenialText(absl::string_view destination, const Decision& decision) {
  return absl::StrCat("destination ", destination, " is denied by the destination policy (",
                      decision.reason, ")");
}

// ---------------------------------------------------------------------------------------------
// DestinationPolicy

DestinationPolicy::DestinationPolicy(PolicyConfig config, std::vector<IpAddress> host_addresses)
    : config_(std::move(config)), host_addresses_(std::move(host_addresses)) {
  SetOwnPorts({});
}

void DestinationPolicy::SetOwnPorts(const std::vector<OwnPort>& ports) {
  auto rules = std::make_shared<Rules>();
  if (config_.default_deny) {
    rules->deny = DefaultDenyRules();
    AddOwnPortRules(ports, host_addresses_, &rules->deny);
  }
  rules->deny.insert(rules->deny.end(), config_.deny.begin(), config_.deny.end());
  rules->allow = config_.allow;
  eventbus::MutexLock lock(&mu_);
  rules_ = std::move(rules);
}

std::shared_ptr<const DestinationPolicy::Rules> DestinationPolicy::Snapshot() const {
  eventbus::MutexLock lock(&mu_);
  return rules_;
}

Decision DestinationPolicy::Check(const IpAddress& address, uint16_t port) const {
  std::shared_ptr<const Rules> rules = Snapshot();
  std::vector<IpAddress> forms;
  AddForms(address, &forms);
  Decision decision;
  for (const IpAddress& form : forms) {
    for (const TargetRule& rule : rules->deny) {
      if (rule.Matches(form, port)) {
        decision.allowed = false;
        decision.reason = RuleReason(rule, form, address);
        return decision;
      }
    }
  }
  if (rules->allow.empty()) return decision;
  for (const IpAddress& form : forms) {
    bool allowed = false;
    for (const TargetRule& rule : rules->allow) allowed = allowed || rule.Matches(form, port);
    if (!allowed) {
      decision.allowed = false;
      decision.reason = "not in --allow_targets";
      if (!(form == address)) absl::StrAppend(&decision.reason, ", as ", form.ToString());
      return decision;
    }
  }
  return decision;
}

std::string DestinationPolicy::Describe() const {
  std::shared_ptr<const Rules> rules = Snapshot();
  std::vector<std::string> deny, allow;
  for (const TargetRule& r : rules->deny)
    deny.push_back(absl::StrCat(r.ToString(), " (", r.source, ")"));
  for (const TargetRule& r : rules->allow) allow.push_back(r.ToString());
  return absl::StrCat("deny=[", absl::StrJoin(deny, ", "), "] allow=[",
                      allow.empty() ? "everything else" : absl::StrJoin(allow, ", "), "]");
}

}  // namespace eventbus::policy
