#include "server/uri/socket_uri.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace eventbus::uri {
namespace {

constexpr size_t kMaxHostNameBytes = 253;
constexpr size_t kMaxLabelBytes = 63;

// Internal parse result: an empty fault means success. The public functions prefix the fault with
// `socket "<input>": ` (and virtual groups with the member and its position).
using Fault = std::string;

bool IsSpaceOrTab(char c) { return c == ' ' || c == '\t'; }

// Quotes one byte for an error message: printable bytes as is, others as \xNN.
std::string QuoteByte(char c) {
  return absl::StrCat("'", absl::CHexEscape(absl::string_view(&c, 1)), "'");
}

// Parses the decimal port. Leading zeros are accepted (as by OpenSIPS); signs, hex, spaces and
// anything else are not.
Fault ParsePort(absl::string_view text, uint16_t* port) {
  if (text.empty()) return "missing port";
  uint32_t value = 0;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      return absl::StrCat("invalid port \"", text, "\" (expected decimal 1-65535)");
    }
    // Saturate instead of overflowing; anything above 65535 is out of range anyway.
    if (value <= 65535) value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value == 0 || value > 65535) return "port out of range (1-65535)";
  *port = static_cast<uint16_t>(value);
  return {};
}

// Validates and canonicalises an IPv6 literal (without brackets). inet_ntop gives the RFC 5952
// form, so "[0:0::1]" and "[::1]" name the same target.
Fault NormaliseIpv6(absl::string_view text, std::string* host) {
  if (text.empty()) return "missing host";
  in6_addr addr;
  std::string copy(text);
  if (inet_pton(AF_INET6, copy.c_str(), &addr) != 1) {
    return absl::StrCat("invalid IPv6 address \"", text, "\"");
  }
  char buf[INET6_ADDRSTRLEN];
  if (inet_ntop(AF_INET6, &addr, buf, sizeof(buf)) == nullptr) {
    return absl::StrCat("invalid IPv6 address \"", text, "\"");
  }
  *host = buf;
  return {};
}

bool LooksLikeIpv6(absl::string_view text) {
  in6_addr addr;
  std::string copy(text);
  return inet_pton(AF_INET6, copy.c_str(), &addr) == 1;
}

// Refuses `text` when the resolver would read it as a numeric IPv4 address although it is not a
// dotted quad. getaddrinfo (glibc) tries inet_aton before DNS, and inet_aton reads "127.1",
// "0x7f.1", "0177.0.0.1" and "2130706433" all as 127.0.0.1: letting them through as names would
// let a socket name an address no literal check ever saw.
Fault RefuseInetAtonForm(absl::string_view text) {
  in_addr addr;
  std::string copy(text);
  if (inet_aton(copy.c_str(), &addr) != 1) return {};
  char quad[INET_ADDRSTRLEN];
  if (inet_ntop(AF_INET, &addr, quad, sizeof(quad)) == nullptr) {
    return absl::StrCat("invalid IPv4 address \"", text, "\"");
  }
  return absl::StrCat("invalid IPv4 address \"", text, "\" (a non-standard form of ", quad,
                      "; write the dotted quad)");
}

// Validates an unbracketed host: an IPv4 literal or a DNS name (lower-cased).
Fault NormaliseHost(absl::string_view text, std::string* host) {
  if (text.empty()) return "missing host";
  bool digits_and_dots = true;
  bool numeric_chars = true;  // what inet_aton can read: digits, hex digits, 'x', '.'
  for (char c : text) {
    const bool digit_or_dot = absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '.';
    if (!digit_or_dot) digits_and_dots = false;
    if (!digit_or_dot && !absl::ascii_isxdigit(static_cast<unsigned char>(c)) && c != 'x' &&
        c != 'X') {
      numeric_chars = false;
    }
  }
  if (digits_and_dots) {
    // Anything all-numeric must be a proper dotted quad; other numeric forms are named by
    // RefuseInetAtonForm.
    in_addr addr;
    std::string copy(text);
    if (inet_pton(AF_INET, copy.c_str(), &addr) == 1) {
      *host = std::move(copy);
      return {};
    }
    Fault fault = RefuseInetAtonForm(text);
    if (!fault.empty()) return fault;
    return absl::StrCat("invalid IPv4 address \"", text, "\"");
  }
  if (numeric_chars) {
    Fault fault = RefuseInetAtonForm(text);
    if (!fault.empty()) return fault;
  }
  for (char c : text) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') {
      return absl::StrCat("invalid character ", QuoteByte(c), " in host \"", text, "\"");
    }
  }
  // One trailing dot (a fully qualified name that skips resolver search domains) is kept.
  absl::string_view name = text;
  if (absl::EndsWith(name, ".")) name.remove_suffix(1);
  if (name.size() > kMaxHostNameBytes) {
    return absl::StrCat("host name longer than ", kMaxHostNameBytes, " bytes");
  }
  for (absl::string_view label : absl::StrSplit(name, '.')) {
    if (label.empty()) return absl::StrCat("empty label in host \"", text, "\"");
    if (label.size() > kMaxLabelBytes) {
      return absl::StrCat("label \"", label, "\" longer than ", kMaxLabelBytes, " bytes");
    }
  }
  *host = absl::AsciiStrToLower(text);
  return {};
}

// Parses what follows "tcp:" or "tls:": HOST:PORT[/METHOD].
Fault ParseTcpBody(absl::string_view body, TcpTarget* target) {
  absl::string_view host_port = body;
  size_t slash = body.find('/');
  if (slash != absl::string_view::npos) {
    host_port = body.substr(0, slash);
    target->method = std::string(body.substr(slash + 1));
  }
  if (host_port.empty()) return "missing host";
  for (char c : host_port) {
    if (IsSpaceOrTab(c)) {
      return absl::StrCat("unexpected whitespace in \"", host_port,
                          "\" (only virtual: sockets have several members)");
    }
  }

  absl::string_view port_text;
  if (host_port.front() == '[') {
    size_t close = host_port.find(']');
    if (close == absl::string_view::npos) return "missing ']' after IPv6 host";
    Fault fault = NormaliseIpv6(host_port.substr(1, close - 1), &target->host);
    if (!fault.empty()) return fault;
    absl::string_view rest = host_port.substr(close + 1);
    if (rest.empty()) return "missing port";
    if (rest.front() != ':') {
      return absl::StrCat("expected ':' after IPv6 host, got ", QuoteByte(rest.front()));
    }
    port_text = rest.substr(1);
  } else {
    size_t colon = host_port.rfind(':');
    if (colon == absl::string_view::npos) {
      if (LooksLikeIpv6(host_port)) {
        return "IPv6 host must be bracketed (e.g. tcp:[::1]:8080)";
      }
      Fault fault = NormaliseHost(host_port, &target->host);
      if (!fault.empty()) return fault;
      return "missing port";
    }
    absl::string_view host = host_port.substr(0, colon);
    if (host.find(':') != absl::string_view::npos) {
      if (LooksLikeIpv6(host) || LooksLikeIpv6(host_port)) {
        return "IPv6 host must be bracketed (e.g. tcp:[::1]:8080)";
      }
      return absl::StrCat("invalid character ':' in host \"", host, "\"");
    }
    Fault fault = NormaliseHost(host, &target->host);
    if (!fault.empty()) return fault;
    port_text = host_port.substr(colon + 1);
  }
  return ParsePort(port_text, &target->port);
}

enum class Scheme { kTcp, kTls, kVirtual };

// Splits off and checks the scheme; *rest receives what follows the ':'.
Fault ParseScheme(absl::string_view text, Scheme* scheme, absl::string_view* rest) {
  if (text.empty()) return "empty socket";
  size_t colon = text.find(':');
  if (colon == absl::string_view::npos) {
    return "missing scheme (expected tcp:HOST:PORT[/METHOD], tls:HOST:PORT[/METHOD] or "
           "virtual:POLICY SOCKET ...)";
  }
  absl::string_view name = text.substr(0, colon);
  *rest = text.substr(colon + 1);
  if (name == "tcp") {
    *scheme = Scheme::kTcp;
    return {};
  }
  if (name == "tls") {
    *scheme = Scheme::kTls;
    return {};
  }
  if (name == "virtual") {
    *scheme = Scheme::kVirtual;
    return {};
  }
  return absl::StrCat("unsupported scheme \"", name, "\" (expected tcp, tls or virtual)");
}

// Parses a socket that must be tcp: or tls:. `nested_virtual_fault` is the fault for a virtual:
// socket.
Fault ParseTcp(absl::string_view text, absl::string_view nested_virtual_fault, TcpTarget* target) {
  Scheme scheme;
  absl::string_view rest;
  Fault fault = ParseScheme(text, &scheme, &rest);
  if (!fault.empty()) return fault;
  if (scheme == Scheme::kVirtual) return std::string(nested_virtual_fault);
  target->tls = scheme == Scheme::kTls;
  return ParseTcpBody(rest, target);
}

Fault ParsePolicy(absl::string_view text, VirtualPolicy* policy) {
  if (text == "PARALLEL") {
    *policy = VirtualPolicy::kParallel;
  } else if (text == "FAILOVER") {
    *policy = VirtualPolicy::kFailover;
  } else if (text == "ROUND-ROBIN") {
    *policy = VirtualPolicy::kRoundRobin;
  } else {
    return absl::StrCat("unknown virtual policy \"", text,
                        "\" (expected PARALLEL, FAILOVER or ROUND-ROBIN)");
  }
  return {};
}

absl::Status SocketError(absl::string_view text, absl::string_view fault) {
  return absl::InvalidArgumentError(absl::StrCat("socket \"", text, "\": ", fault));
}

}  // namespace

std::string TcpTarget::HostPort() const {
  if (IsIpv6Literal()) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

std::string TcpTarget::Key() const {
  std::string key;
  AppendKey(&key);
  return key;
}

void TcpTarget::AppendKey(std::string* out) const {
  // Written out by hand: the writer pool builds one key per delivered message.
  // tcp: keeps the bare "host:port" it always had (metrics and ListSubscriptions labels).
  if (tls) out->append("tls:", 4);
  const bool v6 = IsIpv6Literal();
  if (v6) out->push_back('[');
  out->append(host);
  if (v6) out->push_back(']');
  out->push_back(':');
  char digits[5];
  int n = 0;
  uint16_t p = port;
  do {
    digits[n++] = static_cast<char>('0' + p % 10);
    p /= 10;
  } while (p != 0);
  while (n > 0) out->push_back(digits[--n]);
}

std::string TcpTarget::ToString() const {
  absl::string_view scheme = tls ? "tls:" : "tcp:";
  if (method.empty()) return absl::StrCat(scheme, HostPort());
  return absl::StrCat(scheme, HostPort(), "/", method);
}

bool TcpTarget::IsIpv6Literal() const { return host.find(':') != std::string::npos; }

bool TcpTarget::IsIpLiteral() const {
  if (IsIpv6Literal()) return true;
  in_addr addr;
  return inet_pton(AF_INET, host.c_str(), &addr) == 1;
}

absl::string_view VirtualPolicyName(VirtualPolicy policy) {
  switch (policy) {
    case VirtualPolicy::kParallel:
      return "PARALLEL";
    case VirtualPolicy::kFailover:
      return "FAILOVER";
    case VirtualPolicy::kRoundRobin:
      return "ROUND-ROBIN";
  }
  return "PARALLEL";
}

std::string SocketUri::ToString() const {
  if (!is_virtual) return targets.empty() ? std::string() : targets.front().ToString();
  std::string out = absl::StrCat("virtual:", VirtualPolicyName(policy));
  for (const TcpTarget& target : targets) absl::StrAppend(&out, " ", target.ToString());
  return out;
}

absl::StatusOr<TcpTarget> ParseTcpSocket(absl::string_view text) {
  TcpTarget target;
  Fault fault = ParseTcp(
      text, "a virtual socket is not allowed here (expected tcp:HOST:PORT or tls:HOST:PORT)",
      &target);
  if (!fault.empty()) return SocketError(text, fault);
  return target;
}

absl::StatusOr<SocketUri> ParseSocket(absl::string_view text) {
  Scheme scheme;
  absl::string_view rest;
  Fault fault = ParseScheme(text, &scheme, &rest);
  if (!fault.empty()) return SocketError(text, fault);

  SocketUri uri;
  if (scheme != Scheme::kVirtual) {
    TcpTarget target;
    target.tls = scheme == Scheme::kTls;
    fault = ParseTcpBody(rest, &target);
    if (!fault.empty()) return SocketError(text, fault);
    uri.targets.push_back(std::move(target));
    return uri;
  }

  uri.is_virtual = true;
  std::vector<absl::string_view> words =
      absl::StrSplit(rest, absl::ByAnyChar(" \t"), absl::SkipEmpty());
  if (words.empty()) return SocketError(text, "missing virtual policy");
  fault = ParsePolicy(words[0], &uri.policy);
  if (!fault.empty()) return SocketError(text, fault);
  if (words.size() == 1) return SocketError(text, "virtual socket has no members");
  absl::flat_hash_map<std::string, size_t> seen;  // normalised member -> its 1-based position
  for (size_t i = 1; i < words.size(); ++i) {
    TcpTarget target;
    fault = ParseTcp(words[i], "nested virtual sockets are not allowed", &target);
    if (!fault.empty()) {
      return SocketError(text, absl::StrCat("member ", i, " \"", words[i], "\": ", fault));
    }
    // A member listed twice would get every event twice (PARALLEL) or be tried twice (FAILOVER,
    // ROUND-ROBIN). Compared after normalisation: "tcp:H:1/" and "tcp:h:01" are one member.
    std::string normalised = target.ToString();
    auto [it, inserted] = seen.emplace(normalised, i);
    if (!inserted) {
      return SocketError(
          text, absl::StrCat("member ", i, " \"", words[i], "\": duplicate of member ", it->second,
                             " (", normalised, ")"));
    }
    uri.targets.push_back(std::move(target));
  }
  return uri;
}

}  // namespace eventbus::uri
