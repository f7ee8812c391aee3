#include "server/policy/destination_policy.h"

#include <netinet/in.h>

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eventbus::policy {
namespace {

using ::testing::HasSubstr;

IpAddress Ip(const std::string& text) {
  std::optional<IpAddress> address = IpAddress::Parse(text);
  EXPECT_TRUE(address.has_value()) << text;
  return address.value_or(IpAddress());
}

PolicyConfig Flags(const std::string& allow, const std::string& deny) {
  absl::StatusOr<PolicyConfig> config = ParsePolicyFlags(allow, deny);
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *std::move(config) : PolicyConfig{};
}

// ---------------------------------------------------------------------------------------------
// Addresses

TEST(IpAddressTest, ParsesStrictDottedQuadsAndIpv6) {
  EXPECT_EQ(Ip("169.254.169.254").ToString(), "169.254.169.254");
  EXPECT_TRUE(Ip("10.0.0.1").is_v4());
  EXPECT_EQ(Ip("FD00:EC2::254").ToString(), "fd00:ec2::254");
  EXPECT_FALSE(Ip("::1").is_v4());
  for (const char* bad : {"127.1", "0x7f.0.0.1", "0177.0.0.1", "2130706433", "1.2.3.4.5", "",
                          "fe80::1%eth0", "[::1]", "localhost", "1.2.3.256", " 1.2.3.4"}) {
    EXPECT_FALSE(IpAddress::Parse(bad).has_value()) << bad;
  }
}

TEST(IpAddressTest, Ipv4MappedIpv6IsHeldAsIpv4) {
  IpAddress mapped = Ip("::ffff:169.254.169.254");
  EXPECT_TRUE(mapped.is_v4());
  EXPECT_EQ(mapped, IpAddress::V4(169, 254, 169, 254));
  EXPECT_EQ(Ip("::FFFF:a9fe:a9fe"), IpAddress::V4(169, 254, 169, 254));

  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(80);
  std::optional<IpAddress> parsed = IpAddress::Parse("::ffff:127.0.0.1");
  ASSERT_TRUE(parsed.has_value());
  in6.sin6_addr.s6_addr[10] = 0xff;
  in6.sin6_addr.s6_addr[11] = 0xff;
  in6.sin6_addr.s6_addr[12] = 127;
  in6.sin6_addr.s6_addr[15] = 1;
  uint16_t port = 0;
  std::optional<IpAddress> from =
      IpAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&in6), sizeof(in6), &port);
  ASSERT_TRUE(from.has_value());
  EXPECT_EQ(*from, IpAddress::V4(127, 0, 0, 1));
  EXPECT_EQ(port, 80);
  EXPECT_EQ(from->WithPort(port), "127.0.0.1:80");
  EXPECT_EQ(Ip("::1").WithPort(9), "[::1]:9");
}

// ---------------------------------------------------------------------------------------------
// Parsing entries

struct RuleCase {
  const char* entry;
  const char* normalised;
};

TEST(ParseTargetRuleTest, ParsesEveryForm) {
  const RuleCase cases[] = {
      {"10.0.0.0/8", "10.0.0.0/8"},
      {"10.1.2.3", "10.1.2.3/32"},
      {"10.0.0.0/8:443", "10.0.0.0/8:443"},
      {"10.0.0.0/8:8000-8999", "10.0.0.0/8:8000-8999"},
      {"0.0.0.0/0:25", "0.0.0.0/0:25"},
      {"fd00::/8", "fd00::/8"},
      {"::1", "::1/128"},
      {"[fd00::/8]:443", "[fd00::/8]:443"},
      {"[::1]:8080", "[::1/128]:8080"},
      {"[FD00:EC2::254/128]", "fd00:ec2::254/128"},
      {"[::ffff:169.254.0.0/112]:80", "169.254.0.0/16:80"},
      {"::ffff:10.0.0.0/104", "10.0.0.0/8"},
      {"*", "*"},
      {"*:25", "*:25"},
      {"*:1-1023", "*:1-1023"},
  };
  for (const RuleCase& c : cases) {
    absl::StatusOr<TargetRule> rule = ParseTargetRule(c.entry, "test");
    ASSERT_TRUE(rule.ok()) << c.entry << ": " << rule.status();
    EXPECT_EQ(rule->ToString(), c.normalised) << c.entry;
    EXPECT_EQ(rule->source, "test");
  }
}

struct BadCase {
  const char* entry;
  const char* problem;
};

TEST(ParseTargetRuleTest, RejectsBadEntriesSayingWhy) {
  const BadCase cases[] = {
      {"10.0.0.1/8", "host bits set beyond /8 (the network is 10.0.0.0/8)"},
      {"10.0.0.0/33", "prefix length \"/33\" is not 0-32"},
      {"fd00::/129", "prefix length \"/129\" is not 0-128"},
      {"10.0.0.0/-1", "prefix length"},
      {"10.0.0.0/8:0", "port \"0\" is not a port"},
      {"10.0.0.0/8:65536", "port \"65536\" is not a port"},
      {"10.0.0.0/8:http", "port \"http\" is not a port"},
      {"10.0.0.0/8:", "port \"\" is not a port"},
      {"10.0.0.0/8:90-80", "port range 90-80: the low end is above the high end"},
      {"10.0.0.0/8:80-", "is not a port"},
      {"127.1", "\"127.1\" is not an IPv4 address"},
      {"0x7f.0.0.1/32", "is not an IPv4 address"},
      {"example.com", "is not an IPv4 address"},
      {"fd00::/8:443", "an IPv6 range with ports is written in brackets: [fd00::/8]:443"},
      {"[fd00::/8", "missing \"]\""},
      {"[10.0.0.0/8]:80", "brackets are for IPv6 only"},
      {"[fd00::/8]443", "expected \":PORT\" after \"]\""},
      {":80", "missing address"},
      {"::ffff:0:0/95", "shorter than /96"},
      {"fe80::1%eth0", "is not an IPv6 address"},
  };
  for (const BadCase& c : cases) {
    absl::StatusOr<TargetRule> rule = ParseTargetRule(c.entry, "test");
    ASSERT_FALSE(rule.ok()) << c.entry << " parsed as " << rule->ToString();
    EXPECT_EQ(rule.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(rule.status().message()), HasSubstr(c.problem)) << c.entry;
  }
}

TEST(ParsePolicyFlagsTest, ErrorsNameTheFlagTheEntryAndTheProblem) {
  absl::StatusOr<PolicyConfig> config = ParsePolicyFlags("", "192.168.0.0/16, 10.0.0.1/8");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(),
            "--deny_targets: entry \"10.0.0.1/8\": host bits set beyond /8 (the network is "
            "10.0.0.0/8)");
  config = ParsePolicyFlags("10.0.0.0/8:99999", "");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()),
              HasSubstr("--allow_targets: entry \"10.0.0.0/8:99999\": port"));
  config = ParsePolicyFlags("10.0.0.0/8,,192.168.0.0/16", "");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("--allow_targets: empty entry"));
  config = ParsePolicyFlags("none", "");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()),
              HasSubstr("--allow_targets: entry \"none\": only --deny_targets"));
  config = ParsePolicyFlags("", "none,10.0.0.0/8");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("nodefaults"));
}

TEST(ParsePolicyFlagsTest, OperatorEntriesAddToTheDefaultsUnlessNoneOrNodefaults) {
  PolicyConfig config = Flags("", " 10.0.0.0/8 , [fd00::/8]:443 ");
  EXPECT_TRUE(config.default_deny);
  ASSERT_EQ(config.deny.size(), 2u);
  EXPECT_EQ(config.deny[0].source, "--deny_targets");
  EXPECT_TRUE(config.allow.empty());

  config = Flags("", "none");
  EXPECT_FALSE(config.default_deny);
  EXPECT_TRUE(config.deny.empty());

  config = Flags("", "nodefaults,10.0.0.0/8");
  EXPECT_FALSE(config.default_deny);
  ASSERT_EQ(config.deny.size(), 1u);

  config = Flags("", "");
  EXPECT_TRUE(config.default_deny);
}

// ---------------------------------------------------------------------------------------------
// Matching

TEST(TargetRuleTest, MatchesByFamilyPrefixAndPorts) {
  TargetRule v4 = *ParseTargetRule("10.0.0.0/8:8000-8999", "t");
  EXPECT_TRUE(v4.Matches(Ip("10.255.1.2"), 8000));
  EXPECT_TRUE(v4.Matches(Ip("10.0.0.0"), 8999));
  EXPECT_FALSE(v4.Matches(Ip("10.0.0.1"), 7999));
  EXPECT_FALSE(v4.Matches(Ip("10.0.0.1"), 9000));
  EXPECT_FALSE(v4.Matches(Ip("11.0.0.1"), 8000));
  EXPECT_TRUE(v4.Matches(Ip("::ffff:10.0.0.1"), 8000));

  TargetRule odd = *ParseTargetRule("192.168.0.0/23", "t");
  EXPECT_TRUE(odd.Matches(Ip("192.168.1.255"), 1));
  EXPECT_FALSE(odd.Matches(Ip("192.168.2.0"), 1));

  TargetRule v6 = *ParseTargetRule("fe80::/10", "t");
  EXPECT_TRUE(v6.Matches(Ip("fe80::1"), 80));
  EXPECT_TRUE(v6.Matches(Ip("febf:ffff::1"), 80));
  EXPECT_FALSE(v6.Matches(Ip("fec0::1"), 80));
  // An IPv6 range never matches IPv4.
  EXPECT_FALSE(ParseTargetRule("::/0", "t")->Matches(Ip("10.0.0.1"), 80));
  EXPECT_TRUE(ParseTargetRule("::/0", "t")->Matches(Ip("2001:db8::1"), 80));

  TargetRule any = *ParseTargetRule("*:25", "t");
  EXPECT_TRUE(any.Matches(Ip("1.2.3.4"), 25));
  EXPECT_TRUE(any.Matches(Ip("2001:db8::1"), 25));
  EXPECT_FALSE(any.Matches(Ip("1.2.3.4"), 26));
}

class DestinationPolicyTest : public ::testing::Test {
 protected:
  // The defaults, with own ports 50051 (gRPC) and 9464 (metrics) and host address 10.9.8.7.
  static std::unique_ptr<DestinationPolicy> Make(const std::string& allow,
                                                 const std::string& deny) {
    auto policy = std::make_unique<DestinationPolicy>(
        Flags(allow, deny), std::vector<IpAddress>{Ip("10.9.8.7"), Ip("2001:db8::7")});
    policy->SetOwnPorts({{50051, "gRPC (--listen)"}, {9464, "metrics (--metrics_listen)"}});
    return policy;
  }

  static std::string Verdict(const DestinationPolicy& policy, const std::string& address,
                             uint16_t port) {
    Decision d = policy.Check(Ip(address), port);
    return d.allowed ? "allowed" : d.reason;
  }
};

TEST_F(DestinationPolicyTest, DefaultsDenyLinkLocalAndMetadataAddresses) {
  auto policy = Make("", "");
  EXPECT_EQ(Verdict(*policy, "169.254.169.254", 80), "169.254.0.0/16, default");
  EXPECT_EQ(Verdict(*policy, "169.254.0.1", 1), "169.254.0.0/16, default");
  EXPECT_EQ(Verdict(*policy, "::ffff:169.254.169.254", 80), "169.254.0.0/16, default");
  EXPECT_EQ(Verdict(*policy, "fe80::1", 80), "fe80::/10, default");
  EXPECT_EQ(Verdict(*policy, "fd00:ec2::254", 80), "fd00:ec2::254/128, default");
  EXPECT_EQ(Verdict(*policy, "fd00:ec2::253", 80), "allowed");
}

TEST_F(DestinationPolicyTest, DefaultsKeepLoopbackPrivateAndPublicRangesAllowed) {
  auto policy = Make("", "");
  for (const char* address : {"127.0.0.1", "127.8.9.10", "::1", "10.0.0.1", "172.16.0.1",
                              "192.168.1.1", "8.8.8.8", "fd12::1", "2001:db8::1"}) {
    EXPECT_EQ(Verdict(*policy, address, 8080), "allowed") << address;
  }
  // The host's own address on another port.
  EXPECT_EQ(Verdict(*policy, "10.9.8.7", 8080), "allowed");
}

TEST_F(DestinationPolicyTest, DefaultsDenyOwnPortsOnEveryAddressThatReachesThisHost) {
  auto policy = Make("", "");
  const std::string grpc = "default: EventBus's own gRPC (--listen) port";
  EXPECT_EQ(Verdict(*policy, "127.0.0.1", 50051), "127.0.0.0/8:50051, " + grpc);
  EXPECT_EQ(Verdict(*policy, "127.3.2.1", 50051), "127.0.0.0/8:50051, " + grpc);
  EXPECT_EQ(Verdict(*policy, "::ffff:127.0.0.1", 50051), "127.0.0.0/8:50051, " + grpc);
  EXPECT_EQ(Verdict(*policy, "::1", 50051), "[::1/128]:50051, " + grpc);
  EXPECT_EQ(Verdict(*policy, "0.0.0.0", 50051), "0.0.0.0/8:50051, " + grpc);
  EXPECT_EQ(Verdict(*policy, "::", 50051), "[::/128]:50051, " + grpc);
  EXPECT_EQ(Verdict(*policy, "10.9.8.7", 50051), "10.9.8.7/32:50051, " + grpc);
  EXPECT_EQ(Verdict(*policy, "2001:db8::7", 9464),
            "[2001:db8::7/128]:9464, default: EventBus's own metrics (--metrics_listen) port");
  // Another host's port 50051 is someone else's service.
  EXPECT_EQ(Verdict(*policy, "10.9.8.6", 50051), "allowed");
}

TEST_F(DestinationPolicyTest, SetOwnPortsReplacesTheOwnPorts) {
  auto policy = Make("", "");
  policy->SetOwnPorts({{40000, "gRPC"}});
  EXPECT_EQ(Verdict(*policy, "127.0.0.1", 50051), "allowed");
  EXPECT_NE(Verdict(*policy, "127.0.0.1", 40000), "allowed");
  // The other defaults stay.
  EXPECT_NE(Verdict(*policy, "169.254.169.254", 80), "allowed");
}

TEST_F(DestinationPolicyTest, DisguisedAddressesAreMatchedAsWhatTheyReach) {
  // An operator entry on loopback also catches 0.0.0.0 and ::, which connect to this host, and
  // the IPv4 inside NAT64 and IPv4-compatible IPv6 addresses.
  auto policy = Make("", "127.0.0.0/8:6379,10.0.0.0/8:5432");
  EXPECT_EQ(Verdict(*policy, "0.0.0.0", 6379), "127.0.0.0/8:6379, --deny_targets, as 127.0.0.1");
  EXPECT_EQ(Verdict(*policy, "0.1.2.3", 6379), "127.0.0.0/8:6379, --deny_targets, as 127.0.0.1");
  EXPECT_EQ(Verdict(*policy, "64:ff9b::a9fe:a9fe", 80),
            "169.254.0.0/16, default, as 169.254.169.254");
  EXPECT_EQ(Verdict(*policy, "64:ff9b::10.1.1.1", 5432),
            "10.0.0.0/8:5432, --deny_targets, as 10.1.1.1");
  EXPECT_EQ(Verdict(*policy, "::169.254.169.254", 80),
            "169.254.0.0/16, default, as 169.254.169.254");
  EXPECT_EQ(Verdict(*policy, "64:ff9b::8.8.8.8", 5432), "allowed");
  // :: reaches ::1; a rule on ::1 catches it.
  auto v6 = Make("", "[::1]:6379");
  EXPECT_EQ(Verdict(*v6, "::", 6379), "[::1/128]:6379, --deny_targets, as ::1");
}

TEST_F(DestinationPolicyTest, DenyWinsOverAllow) {
  auto policy = Make("10.0.0.0/8", "10.1.0.0/16");
  EXPECT_EQ(Verdict(*policy, "10.2.0.1", 80), "allowed");
  EXPECT_EQ(Verdict(*policy, "10.1.0.1", 80), "10.1.0.0/16, --deny_targets");
}

TEST_F(DestinationPolicyTest, AnAllowListAllowsOnlyWhatItMatchesInEveryForm) {
  auto policy = Make("10.0.0.0/8:8000-8999,[fd00::/8]:443", "");
  EXPECT_EQ(Verdict(*policy, "10.1.2.3", 8080), "allowed");
  EXPECT_EQ(Verdict(*policy, "10.1.2.3", 9000), "not in --allow_targets");
  EXPECT_EQ(Verdict(*policy, "192.168.1.1", 8080), "not in --allow_targets");
  EXPECT_EQ(Verdict(*policy, "fd00::1", 443), "allowed");
  EXPECT_EQ(Verdict(*policy, "fd00::1", 80), "not in --allow_targets");
  // A NAT64 spelling of an allowed IPv4 address is itself not in the list.
  EXPECT_EQ(Verdict(*policy, "64:ff9b::10.1.2.3", 8080), "not in --allow_targets");
  // 0.0.0.0/0 allowed, but 0.0.0.0 is 127.0.0.1 too, which must be allowed as well.
  auto zero = Make("0.0.0.0/32", "");
  EXPECT_EQ(Verdict(*zero, "0.0.0.0", 80), "not in --allow_targets, as 127.0.0.1");
  // The defaults still apply inside an allow list.
  auto wide = Make("*", "");
  EXPECT_EQ(Verdict(*wide, "169.254.169.254", 80), "169.254.0.0/16, default");
  EXPECT_EQ(Verdict(*wide, "8.8.8.8", 80), "allowed");
}

TEST_F(DestinationPolicyTest, NoneDeniesNothingAndNodefaultsKeepsOnlyTheOperatorsEntries) {
  auto none = Make("", "none");
  EXPECT_EQ(Verdict(*none, "169.254.169.254", 80), "allowed");
  EXPECT_EQ(Verdict(*none, "127.0.0.1", 50051), "allowed");
  auto mine = Make("", "nodefaults,10.0.0.0/8");
  EXPECT_EQ(Verdict(*mine, "169.254.169.254", 80), "allowed");
  EXPECT_EQ(Verdict(*mine, "10.0.0.1", 80), "10.0.0.0/8, --deny_targets");
}

TEST_F(DestinationPolicyTest, DenialTextNamesTheDestinationAndTheRule) {
  auto policy = Make("", "");
  Decision d = policy->Check(Ip("169.254.169.254"), 80);
  EXPECT_EQ(DenialText("169.254.169.254:80", d),
            "destination 169.254.169.254:80 is denied by the destination policy (169.254.0.0/16, "
            "default)");
}

TEST_F(DestinationPolicyTest, DescribeListsEveryEntry) {
  auto policy = Make("10.0.0.0/8", "192.168.0.0/16:22");
  std::string text = policy->Describe();
  EXPECT_THAT(text, HasSubstr("169.254.0.0/16 (default)"));
  EXPECT_THAT(text, HasSubstr("127.0.0.0/8:50051"));
  EXPECT_THAT(text, HasSubstr("192.168.0.0/16:22 (--deny_targets)"));
  EXPECT_THAT(text, HasSubstr("allow=[10.0.0.0/8]"));
}

TEST(HostAddressesTest, IncludesLoopback) {
  std::vector<IpAddress> host = HostAddresses();
  bool loopback = false;
  for (const IpAddress& a : host) loopback = loopback || a == IpAddress::V4(127, 0, 0, 1);
  EXPECT_TRUE(loopback);
}

}  // namespace
}  // namespace eventbus::policy
