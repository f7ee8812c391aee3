#include "server/uri/socket_uri.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eventbus::uri {
namespace {

struct ValidTcpCase {
  std::string input;
  std::string host;
  uint16_t port;
  std::string method;
  std::string normalised;
};

class ValidTcpSocketTest : public ::testing::TestWithParam<ValidTcpCase> {};

TEST_P(ValidTcpSocketTest, ParsesAndNormalises) {
  const ValidTcpCase& c = GetParam();
  absl::StatusOr<SocketUri> uri = ParseSocket(c.input);
  ASSERT_TRUE(uri.ok()) << uri.status();
  EXPECT_FALSE(uri->is_virtual);
  ASSERT_EQ(uri->targets.size(), 1u);
  EXPECT_EQ(uri->targets[0].host, c.host);
  EXPECT_EQ(uri->targets[0].port, c.port);
  EXPECT_EQ(uri->targets[0].method, c.method);
  EXPECT_EQ(uri->targets[0].tls, c.normalised.rfind("tls:", 0) == 0);
  EXPECT_EQ(uri->ToString(), c.normalised);

  absl::StatusOr<TcpTarget> target = ParseTcpSocket(c.input);
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(*target, uri->targets[0]);
  EXPECT_EQ(target->ToString(), c.normalised);

  // Normalising twice is stable.
  absl::StatusOr<SocketUri> again = ParseSocket(uri->ToString());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ToString(), c.normalised);
  EXPECT_EQ(again->targets[0], uri->targets[0]);
}

INSTANTIATE_TEST_SUITE_P(
    SocketUri, ValidTcpSocketTest,
    ::testing::Values(
        ValidTcpCase{"tcp:127.0.0.1:8080", "127.0.0.1", 8080, "", "tcp:127.0.0.1:8080"},
        ValidTcpCase{"tcp:localhost:1", "localhost", 1, "", "tcp:localhost:1"},
        ValidTcpCase{"tcp:h:65535", "h", 65535, "", "tcp:h:65535"},
        ValidTcpCase{"tcp:Example.COM:80", "example.com", 80, "", "tcp:example.com:80"},
        ValidTcpCase{"tcp:my_host-1.svc.cluster.local:9000", "my_host-1.svc.cluster.local", 9000,
                     "", "tcp:my_host-1.svc.cluster.local:9000"},
        ValidTcpCase{"tcp:svc.cluster.local.:9000", "svc.cluster.local.", 9000, "",
                     "tcp:svc.cluster.local.:9000"},
        ValidTcpCase{"tcp:h:0080", "h", 80, "", "tcp:h:80"},
        ValidTcpCase{"tcp:h:1/handle_cmd", "h", 1, "handle_cmd", "tcp:h:1/handle_cmd"},
        ValidTcpCase{"tcp:h:1/a/b/c", "h", 1, "a/b/c", "tcp:h:1/a/b/c"},
        ValidTcpCase{"tcp:h:1/Method.With:Colon", "h", 1, "Method.With:Colon",
                     "tcp:h:1/Method.With:Colon"},
        ValidTcpCase{"tcp:h:1/", "h", 1, "", "tcp:h:1"},
        ValidTcpCase{"tcp:[::1]:8080", "::1", 8080, "", "tcp:[::1]:8080"},
        ValidTcpCase{"tcp:[::1]:8080/m", "::1", 8080, "m", "tcp:[::1]:8080/m"},
        ValidTcpCase{"tcp:[2001:DB8::A]:53", "2001:db8::a", 53, "", "tcp:[2001:db8::a]:53"},
        ValidTcpCase{"tcp:[0:0:0:0:0:0:0:1]:1", "::1", 1, "", "tcp:[::1]:1"},
        ValidTcpCase{"tcp:[::ffff:10.0.0.1]:5", "::ffff:10.0.0.1", 5, "",
                     "tcp:[::ffff:10.0.0.1]:5"},
        // Names made of hex digits that inet_aton cannot read stay names.
        ValidTcpCase{"tcp:DeadBeef:80", "deadbeef", 80, "", "tcp:deadbeef:80"},
        ValidTcpCase{"tcp:beef.cafe:80", "beef.cafe", 80, "", "tcp:beef.cafe:80"},
        ValidTcpCase{"tcp:1e1:80", "1e1", 80, "", "tcp:1e1:80"},
        ValidTcpCase{"tcp:0x:80", "0x", 80, "", "tcp:0x:80"},
        ValidTcpCase{"tcp:0.0.0.0:80", "0.0.0.0", 80, "", "tcp:0.0.0.0:80"},
        // tls: takes the same HOST:PORT[/METHOD] as tcp:, normalised the same way.
        ValidTcpCase{"tls:h:443", "h", 443, "", "tls:h:443"},
        ValidTcpCase{"tls:Example.COM:0443/handle_cmd", "example.com", 443, "handle_cmd",
                     "tls:example.com:443/handle_cmd"},
        ValidTcpCase{"tls:[0:0::1]:8443/", "::1", 8443, "", "tls:[::1]:8443"},
        ValidTcpCase{"tls:127.0.0.1:1", "127.0.0.1", 1, "", "tls:127.0.0.1:1"}));

TEST(SocketUriTest, KeyNamesHostAndPortOnly) {
  absl::StatusOr<TcpTarget> target = ParseTcpSocket("tcp:Host.Example:99/method");
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(target->Key(), "host.example:99");
  EXPECT_FALSE(target->IsIpv6Literal());
}

TEST(SocketUriTest, KeyBracketsIpv6Hosts) {
  absl::StatusOr<TcpTarget> target = ParseTcpSocket("tcp:[fe80::1]:99/m");
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(target->host, "fe80::1");
  EXPECT_EQ(target->Key(), "[fe80::1]:99");
  EXPECT_TRUE(target->IsIpv6Literal());
}

TEST(SocketUriTest, TlsKeyDiffersFromTcpKeyOfTheSameHostAndPort) {
  absl::StatusOr<TcpTarget> tcp = ParseTcpSocket("tcp:h:1/m");
  absl::StatusOr<TcpTarget> tls = ParseTcpSocket("tls:h:1/m");
  ASSERT_TRUE(tcp.ok() && tls.ok());
  EXPECT_EQ(tcp->Key(), "h:1");
  EXPECT_EQ(tls->Key(), "tls:h:1");
  EXPECT_EQ(tls->HostPort(), "h:1");
  EXPECT_FALSE(*tcp == *tls);
  absl::StatusOr<TcpTarget> v6 = ParseTcpSocket("tls:[::1]:2");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->Key(), "tls:[::1]:2");
}

TEST(SocketUriTest, TellsIpLiteralsFromNames) {
  for (absl::string_view literal : {"tls:127.0.0.1:1", "tls:[::1]:1", "tcp:0.0.0.0:1"}) {
    absl::StatusOr<TcpTarget> target = ParseTcpSocket(literal);
    ASSERT_TRUE(target.ok()) << literal;
    EXPECT_TRUE(target->IsIpLiteral()) << literal;
  }
  for (absl::string_view name : {"tls:localhost:1", "tls:1e1:1", "tcp:a.b.c:1"}) {
    absl::StatusOr<TcpTarget> target = ParseTcpSocket(name);
    ASSERT_TRUE(target.ok()) << name;
    EXPECT_FALSE(target->IsIpLiteral()) << name;
  }
}

TEST(SocketUriTest, HostNamesCompareCaseInsensitively) {
  absl::StatusOr<TcpTarget> a = ParseTcpSocket("tcp:HOST:1/M");
  absl::StatusOr<TcpTarget> b = ParseTcpSocket("tcp:host:1/M");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
}

TEST(SocketUriTest, MethodIsCaseSensitive) {
  absl::StatusOr<TcpTarget> a = ParseTcpSocket("tcp:h:1/M");
  absl::StatusOr<TcpTarget> b = ParseTcpSocket("tcp:h:1/m");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(*a == *b);
}

TEST(SocketUriTest, AcceptsHostNameOf253Bytes) {
  std::string label(63, 'a');
  std::string host = absl::StrCat(label, ".", label, ".", label, ".", std::string(61, 'b'));
  ASSERT_EQ(host.size(), 253u);
  absl::StatusOr<TcpTarget> target = ParseTcpSocket(absl::StrCat("tcp:", host, ":1"));
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(target->host, host);
}

struct ValidVirtualCase {
  std::string input;
  VirtualPolicy policy;
  std::vector<std::string> members;
  std::string normalised;
};

class ValidVirtualSocketTest : public ::testing::TestWithParam<ValidVirtualCase> {};

TEST_P(ValidVirtualSocketTest, ParsesAndNormalises) {
  const ValidVirtualCase& c = GetParam();
  absl::StatusOr<SocketUri> uri = ParseSocket(c.input);
  ASSERT_TRUE(uri.ok()) << uri.status();
  EXPECT_TRUE(uri->is_virtual);
  EXPECT_EQ(uri->policy, c.policy);
  std::vector<std::string> members;
  for (const TcpTarget& target : uri->targets) members.push_back(target.ToString());
  EXPECT_EQ(members, c.members);
  EXPECT_EQ(uri->ToString(), c.normalised);

  absl::StatusOr<SocketUri> again = ParseSocket(uri->ToString());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ToString(), c.normalised);
}

INSTANTIATE_TEST_SUITE_P(
    SocketUri, ValidVirtualSocketTest,
    ::testing::Values(ValidVirtualCase{"virtual:PARALLEL tcp:a:1",
                                       VirtualPolicy::kParallel,
                                       {"tcp:a:1"},
                                       "virtual:PARALLEL tcp:a:1"},
                      ValidVirtualCase{"virtual:FAILOVER tcp:A:1 tcp:[::1]:2/m",
                                       VirtualPolicy::kFailover,
                                       {"tcp:a:1", "tcp:[::1]:2/m"},
                                       "virtual:FAILOVER tcp:a:1 tcp:[::1]:2/m"},
                      ValidVirtualCase{"virtual:ROUND-ROBIN\ttcp:a:1 \t  tcp:b:2/x/y\t",
                                       VirtualPolicy::kRoundRobin,
                                       {"tcp:a:1", "tcp:b:2/x/y"},
                                       "virtual:ROUND-ROBIN tcp:a:1 tcp:b:2/x/y"},
                      // tcp: and tls: to one host:port are two members (two connections).
                      ValidVirtualCase{"virtual:FAILOVER tls:A:1 tcp:a:1",
                                       VirtualPolicy::kFailover,
                                       {"tls:a:1", "tcp:a:1"},
                                       "virtual:FAILOVER tls:a:1 tcp:a:1"},
                      // One target with two methods is two members, not a duplicate.
                      ValidVirtualCase{"virtual:PARALLEL tcp:a:1/x tcp:a:1/y tcp:a:1",
                                       VirtualPolicy::kParallel,
                                       {"tcp:a:1/x", "tcp:a:1/y", "tcp:a:1"},
                                       "virtual:PARALLEL tcp:a:1/x tcp:a:1/y tcp:a:1"}));

TEST(SocketUriTest, NamesPolicies) {
  EXPECT_EQ(VirtualPolicyName(VirtualPolicy::kParallel), "PARALLEL");
  EXPECT_EQ(VirtualPolicyName(VirtualPolicy::kFailover), "FAILOVER");
  EXPECT_EQ(VirtualPolicyName(VirtualPolicy::kRoundRobin), "ROUND-ROBIN");
}

struct ErrorCase {
  std::string input;
  std::string message;
};

class InvalidSocketTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(InvalidSocketTest, IsRejectedWithExactMessage) {
  const ErrorCase& c = GetParam();
  absl::StatusOr<SocketUri> uri = ParseSocket(c.input);
  ASSERT_FALSE(uri.ok()) << uri->ToString();
  EXPECT_EQ(uri.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(uri.status().message(), c.message);
}

const std::string kLongLabel(64, 'x');
const std::string kLongHost = absl::StrCat(std::string(63, 'a'), ".", std::string(63, 'a'), ".",
                                           std::string(63, 'a'), ".", std::string(62, 'b'));

INSTANTIATE_TEST_SUITE_P(
    SocketUri, InvalidSocketTest,
    ::testing::Values(
        ErrorCase{"", "socket \"\": empty socket"},
        ErrorCase{"localhost",
                  "socket \"localhost\": missing scheme (expected tcp:HOST:PORT[/METHOD], "
                  "tls:HOST:PORT[/METHOD] or virtual:POLICY SOCKET ...)"},
        ErrorCase{"udp:h:1",
                  "socket \"udp:h:1\": unsupported scheme \"udp\" (expected tcp, tls or "
                  "virtual)"},
        ErrorCase{"TCP:h:1",
                  "socket \"TCP:h:1\": unsupported scheme \"TCP\" (expected tcp, tls or "
                  "virtual)"},
        ErrorCase{"TLS:h:1",
                  "socket \"TLS:h:1\": unsupported scheme \"TLS\" (expected tcp, tls or "
                  "virtual)"},
        ErrorCase{"tls:h:70000", "socket \"tls:h:70000\": port out of range (1-65535)"},
        ErrorCase{"tls:h", "socket \"tls:h\": missing port"},
        ErrorCase{"virtual:FAILOVER tls:a:1 tls:A:01",
                  "socket \"virtual:FAILOVER tls:a:1 tls:A:01\": member 2 \"tls:A:01\": "
                  "duplicate of member 1 (tls:a:1)"},
        ErrorCase{" tcp:h:1",
                  "socket \" tcp:h:1\": unsupported scheme \" tcp\" (expected tcp, tls or "
                  "virtual)"},
        ErrorCase{"tcp:", "socket \"tcp:\": missing host"},
        ErrorCase{"tcp:/m", "socket \"tcp:/m\": missing host"},
        ErrorCase{"tcp::80", "socket \"tcp::80\": missing host"},
        ErrorCase{"tcp:h", "socket \"tcp:h\": missing port"},
        ErrorCase{"tcp:h:", "socket \"tcp:h:\": missing port"},
        ErrorCase{"tcp:h:/m", "socket \"tcp:h:/m\": missing port"},
        ErrorCase{"tcp:h:0", "socket \"tcp:h:0\": port out of range (1-65535)"},
        ErrorCase{"tcp:h:65536", "socket \"tcp:h:65536\": port out of range (1-65535)"},
        ErrorCase{"tcp:h:70000", "socket \"tcp:h:70000\": port out of range (1-65535)"},
        ErrorCase{"tcp:h:99999999999999999999",
                  "socket \"tcp:h:99999999999999999999\": port out of range (1-65535)"},
        ErrorCase{"tcp:h:+80",
                  "socket \"tcp:h:+80\": invalid port \"+80\" (expected decimal 1-65535)"},
        ErrorCase{"tcp:h:-1",
                  "socket \"tcp:h:-1\": invalid port \"-1\" (expected decimal 1-65535)"},
        ErrorCase{"tcp:h:0x50",
                  "socket \"tcp:h:0x50\": invalid port \"0x50\" (expected decimal 1-65535)"},
        ErrorCase{"tcp:h:80a",
                  "socket \"tcp:h:80a\": invalid port \"80a\" (expected decimal 1-65535)"},
        ErrorCase{"tcp:h: 80",
                  "socket \"tcp:h: 80\": unexpected whitespace in \"h: 80\" (only "
                  "virtual: sockets have several members)"},
        ErrorCase{"tcp:h:1 tcp:h:2",
                  "socket \"tcp:h:1 tcp:h:2\": unexpected whitespace in \"h:1 tcp:h:2\" (only "
                  "virtual: sockets have several members)"},
        ErrorCase{"tcp:::1:80",
                  "socket \"tcp:::1:80\": IPv6 host must be bracketed (e.g. tcp:[::1]:8080)"},
        ErrorCase{"tcp:::1",
                  "socket \"tcp:::1\": IPv6 host must be bracketed (e.g. tcp:[::1]:8080)"},
        ErrorCase{"tcp:2001:db8::1:80",
                  "socket \"tcp:2001:db8::1:80\": IPv6 host must be "
                  "bracketed (e.g. tcp:[::1]:8080)"},
        ErrorCase{"tcp:h:1:2", "socket \"tcp:h:1:2\": invalid character ':' in host \"h:1\""},
        ErrorCase{"tcp:[::1:80", "socket \"tcp:[::1:80\": missing ']' after IPv6 host"},
        ErrorCase{"tcp:[]:80", "socket \"tcp:[]:80\": missing host"},
        ErrorCase{"tcp:[::1]", "socket \"tcp:[::1]\": missing port"},
        ErrorCase{"tcp:[::1]:", "socket \"tcp:[::1]:\": missing port"},
        ErrorCase{"tcp:[::1]80", "socket \"tcp:[::1]80\": expected ':' after IPv6 host, got '8'"},
        ErrorCase{"tcp:[::g]:80", "socket \"tcp:[::g]:80\": invalid IPv6 address \"::g\""},
        ErrorCase{"tcp:[1.2.3.4]:80",
                  "socket \"tcp:[1.2.3.4]:80\": invalid IPv6 address "
                  "\"1.2.3.4\""},
        ErrorCase{"tcp:[fe80::1%eth0]:80",
                  "socket \"tcp:[fe80::1%eth0]:80\": invalid IPv6 address \"fe80::1%eth0\""},
        ErrorCase{"tcp:999.1.1.1:80",
                  "socket \"tcp:999.1.1.1:80\": invalid IPv4 address \"999.1.1.1\""},
        ErrorCase{"tcp:1.2.3.4.5:80",
                  "socket \"tcp:1.2.3.4.5:80\": invalid IPv4 address \"1.2.3.4.5\""},
        ErrorCase{"tcp:4294967296:80",
                  "socket \"tcp:4294967296:80\": invalid IPv4 address \"4294967296\""},
        ErrorCase{"tcp:127.0.0.1.:80",
                  "socket \"tcp:127.0.0.1.:80\": invalid IPv4 address \"127.0.0.1.\""},
        // Every form getaddrinfo would read as an IPv4 address (inet_aton) but is not a dotted
        // quad is refused the same way, naming the address it would have meant.
        ErrorCase{"tcp:1.2.3:80",
                  "socket \"tcp:1.2.3:80\": invalid IPv4 address \"1.2.3\" (a non-standard form "
                  "of 1.2.0.3; write the dotted quad)"},
        ErrorCase{"tcp:123:80",
                  "socket \"tcp:123:80\": invalid IPv4 address \"123\" (a non-standard form of "
                  "0.0.0.123; write the dotted quad)"},
        ErrorCase{"tcp:01.2.3.4:80",
                  "socket \"tcp:01.2.3.4:80\": invalid IPv4 address \"01.2.3.4\" (a non-standard "
                  "form of 1.2.3.4; write the dotted quad)"},
        ErrorCase{"tcp:127.1:80",
                  "socket \"tcp:127.1:80\": invalid IPv4 address \"127.1\" (a non-standard form "
                  "of 127.0.0.1; write the dotted quad)"},
        ErrorCase{"tcp:0x7f.1:80",
                  "socket \"tcp:0x7f.1:80\": invalid IPv4 address \"0x7f.1\" (a non-standard "
                  "form of 127.0.0.1; write the dotted quad)"},
        ErrorCase{"tcp:0X7F.1:80",
                  "socket \"tcp:0X7F.1:80\": invalid IPv4 address \"0X7F.1\" (a non-standard "
                  "form of 127.0.0.1; write the dotted quad)"},
        ErrorCase{"tcp:0x7f.0.0.1:80",
                  "socket \"tcp:0x7f.0.0.1:80\": invalid IPv4 address \"0x7f.0.0.1\" (a "
                  "non-standard form of 127.0.0.1; write the dotted quad)"},
        ErrorCase{"tcp:0177.0.0.1:80",
                  "socket \"tcp:0177.0.0.1:80\": invalid IPv4 address \"0177.0.0.1\" (a "
                  "non-standard form of 127.0.0.1; write the dotted quad)"},
        ErrorCase{"tcp:127.0.0.01:80",
                  "socket \"tcp:127.0.0.01:80\": invalid IPv4 address \"127.0.0.01\" (a "
                  "non-standard form of 127.0.0.1; write the dotted quad)"},
        ErrorCase{"tcp:2130706433:80",
                  "socket \"tcp:2130706433:80\": invalid IPv4 address \"2130706433\" (a "
                  "non-standard form of 127.0.0.1; write the dotted quad)"},
        ErrorCase{"tcp:0x7f000001:80",
                  "socket \"tcp:0x7f000001:80\": invalid IPv4 address \"0x7f000001\" (a "
                  "non-standard form of 127.0.0.1; write the dotted quad)"},
        ErrorCase{"tcp:0xA9.254.169.254:80",
                  "socket \"tcp:0xA9.254.169.254:80\": invalid IPv4 address "
                  "\"0xA9.254.169.254\" (a non-standard form of 169.254.169.254; write the "
                  "dotted quad)"},
        ErrorCase{"tcp:0:80",
                  "socket \"tcp:0:80\": invalid IPv4 address \"0\" (a non-standard form of "
                  "0.0.0.0; write the dotted quad)"},
        ErrorCase{"virtual:FAILOVER tcp:a:1 tcp:0x7f.1:2",
                  "socket \"virtual:FAILOVER tcp:a:1 tcp:0x7f.1:2\": member 2 \"tcp:0x7f.1:2\": "
                  "invalid IPv4 address \"0x7f.1\" (a non-standard form of 127.0.0.1; write the "
                  "dotted quad)"},
        // A member listed twice, compared after normalisation (host case, port zeros, an empty
        // method, IPv6 spelling).
        ErrorCase{"virtual:PARALLEL tcp:a:1/ tcp:a:1",
                  "socket \"virtual:PARALLEL tcp:a:1/ tcp:a:1\": member 2 \"tcp:a:1\": duplicate "
                  "of member 1 (tcp:a:1)"},
        ErrorCase{"virtual:FAILOVER tcp:Host:01/m tcp:b:2 tcp:host:1/m",
                  "socket \"virtual:FAILOVER tcp:Host:01/m tcp:b:2 tcp:host:1/m\": member 3 "
                  "\"tcp:host:1/m\": duplicate of member 1 (tcp:host:1/m)"},
        ErrorCase{"virtual:ROUND-ROBIN tcp:[0:0::1]:5 tcp:[::1]:5",
                  "socket \"virtual:ROUND-ROBIN tcp:[0:0::1]:5 tcp:[::1]:5\": member 2 "
                  "\"tcp:[::1]:5\": duplicate of member 1 (tcp:[::1]:5)"},
        ErrorCase{"virtual:PARALLEL tcp:1.2.3.4:9 tcp:1.2.3.4:9",
                  "socket \"virtual:PARALLEL tcp:1.2.3.4:9 tcp:1.2.3.4:9\": member 2 "
                  "\"tcp:1.2.3.4:9\": duplicate of member 1 (tcp:1.2.3.4:9)"},
        ErrorCase{"tcp:a!b:80", "socket \"tcp:a!b:80\": invalid character '!' in host \"a!b\""},
        ErrorCase{"tcp:a\x01:80",
                  "socket \"tcp:a\x01:80\": invalid character '\\x01' in host \"a\x01\""},
        ErrorCase{"tcp:a..b:80", "socket \"tcp:a..b:80\": empty label in host \"a..b\""},
        ErrorCase{"tcp:.a:80", "socket \"tcp:.a:80\": empty label in host \".a\""},
        ErrorCase{"tcp:a..:80", "socket \"tcp:a..:80\": empty label in host \"a..\""},
        ErrorCase{absl::StrCat("tcp:", kLongLabel, ".com:80"),
                  absl::StrCat("socket \"tcp:", kLongLabel, ".com:80\": label \"", kLongLabel,
                               "\" longer than 63 bytes")},
        ErrorCase{
            absl::StrCat("tcp:", kLongHost, ":80"),
            absl::StrCat("socket \"tcp:", kLongHost, ":80\": host name longer than 253 bytes")},
        ErrorCase{"virtual:", "socket \"virtual:\": missing virtual policy"},
        ErrorCase{"virtual: \t", "socket \"virtual: \t\": missing virtual policy"},
        ErrorCase{"virtual:FAILOVER",
                  "socket \"virtual:FAILOVER\": virtual socket has no "
                  "members"},
        ErrorCase{"virtual:FAILOVER  \t",
                  "socket \"virtual:FAILOVER  \t\": virtual socket has "
                  "no members"},
        ErrorCase{"virtual:failover tcp:a:1",
                  "socket \"virtual:failover tcp:a:1\": unknown virtual policy \"failover\" "
                  "(expected PARALLEL, FAILOVER or ROUND-ROBIN)"},
        ErrorCase{"virtual:ROUND_ROBIN tcp:a:1",
                  "socket \"virtual:ROUND_ROBIN tcp:a:1\": unknown virtual policy "
                  "\"ROUND_ROBIN\" (expected PARALLEL, FAILOVER or ROUND-ROBIN)"},
        ErrorCase{"VIRTUAL:PARALLEL tcp:a:1",
                  "socket \"VIRTUAL:PARALLEL tcp:a:1\": unsupported scheme \"VIRTUAL\" "
                  "(expected tcp, tls or virtual)"},
        ErrorCase{"virtual:FAILOVER tcp:a:1 udp:b:2",
                  "socket \"virtual:FAILOVER tcp:a:1 udp:b:2\": member 2 \"udp:b:2\": "
                  "unsupported scheme \"udp\" (expected tcp, tls or virtual)"},
        ErrorCase{"virtual:PARALLEL tcp:a:70000 tcp:b:1",
                  "socket \"virtual:PARALLEL tcp:a:70000 tcp:b:1\": member 1 \"tcp:a:70000\": "
                  "port out of range (1-65535)"},
        ErrorCase{"virtual:PARALLEL tcp:a:1 virtual:FAILOVER",
                  "socket \"virtual:PARALLEL tcp:a:1 virtual:FAILOVER\": member 2 "
                  "\"virtual:FAILOVER\": nested virtual sockets are not allowed"},
        ErrorCase{"virtual:PARALLEL tcp:a:1 tcp:b:2 b:3",
                  "socket \"virtual:PARALLEL tcp:a:1 tcp:b:2 b:3\": member 3 \"b:3\": "
                  "unsupported scheme \"b\" (expected tcp, tls or virtual)"},
        ErrorCase{"virtual:PARALLEL tcp:::1:5",
                  "socket \"virtual:PARALLEL tcp:::1:5\": member 1 \"tcp:::1:5\": IPv6 host "
                  "must be bracketed (e.g. tcp:[::1]:8080)"}));

TEST(SocketUriTest, ParseTcpSocketRejectsVirtualSockets) {
  absl::StatusOr<TcpTarget> target = ParseTcpSocket("virtual:PARALLEL tcp:a:1");
  ASSERT_FALSE(target.ok());
  EXPECT_EQ(target.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(target.status().message(),
            "socket \"virtual:PARALLEL tcp:a:1\": a virtual socket is not allowed here "
            "(expected tcp:HOST:PORT or tls:HOST:PORT)");
}

TEST(SocketUriTest, ParseTcpSocketReportsTheSameFaultsAsParseSocket) {
  for (absl::string_view input : {"tcp:h:70000", "udp:h:1", "tcp::80", "tcp:::1:80", "tls::80"}) {
    absl::StatusOr<TcpTarget> target = ParseTcpSocket(input);
    absl::StatusOr<SocketUri> uri = ParseSocket(input);
    ASSERT_FALSE(target.ok()) << input;
    ASSERT_FALSE(uri.ok()) << input;
    EXPECT_EQ(target.status(), uri.status());
  }
}

}  // namespace
}  // namespace eventbus::uri
