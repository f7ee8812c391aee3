#include "server/net/resolver.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/net/event_loop.h"
#include "tests/net/test_sync.h"

namespace eventbus::net {
namespace {

constexpr absl::Duration kWait = absl::Seconds(10);

TEST(ParseIpLiteralTest, ConvertsIpv4WithThePort) {
  std::optional<SocketAddress> addr = ParseIpLiteral("127.0.0.1", 8080);
  ASSERT_TRUE(addr.has_value());
  EXPECT_EQ(addr->storage.ss_family, AF_INET);
  EXPECT_EQ(addr->length, sizeof(sockaddr_in));
  EXPECT_EQ(ntohs(reinterpret_cast<const sockaddr_in*>(&addr->storage)->sin_port), 8080);
  EXPECT_EQ(addr->text, "127.0.0.1:8080");
}

TEST(ParseIpLiteralTest, ConvertsIpv6AndBracketsItsText) {
  std::optional<SocketAddress> addr = ParseIpLiteral("::1", 9);
  ASSERT_TRUE(addr.has_value());
  EXPECT_EQ(addr->storage.ss_family, AF_INET6);
  EXPECT_EQ(addr->length, sizeof(sockaddr_in6));
  EXPECT_EQ(addr->text, "[::1]:9");
}

TEST(ParseIpLiteralTest, RejectsNamesAndBracketedIpv6) {
  EXPECT_FALSE(ParseIpLiteral("localhost", 1).has_value());
  EXPECT_FALSE(ParseIpLiteral("[::1]", 1).has_value());
  EXPECT_FALSE(ParseIpLiteral("1.2.3", 1).has_value());
}

TEST(ResolveBlockingTest, ResolvesLocalhostToLoopbackWithThePort) {
  ResolveResult result = ResolveBlocking("localhost", 4242);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_FALSE(result->empty());
  for (const SocketAddress& addr : *result) {
    EXPECT_TRUE(addr.text == "127.0.0.1:4242" || addr.text == "[::1]:4242") << addr.text;
  }
}

TEST(ResolveBlockingTest, UnknownNameIsNotFoundNamingTheHost) {
  ResolveResult result = ResolveBlocking("no-such-host.invalid", 80);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StartsWith(result.status().message(), "resolve \"no-such-host.invalid\": "))
      << result.status();
}

TEST(ResolverTest, DeliversTheResultOnTheRequestingLoop) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  std::thread thread([&] { (*loop)->Run(); });
  Resolver resolver(1);
  TestEvent done;
  bool on_loop = false;
  bool ok = false;
  resolver.Resolve("localhost", 1, loop->get(), [&](ResolveResult result) {
    on_loop = (*loop)->InLoopThread();
    ok = result.ok();
    done.Notify();
  });
  ASSERT_TRUE(done.WaitFor(kWait));
  (*loop)->Stop();
  thread.join();
  EXPECT_TRUE(on_loop);
  EXPECT_TRUE(ok);
}

TEST(ResolverTest, NothingIsDeliveredAfterClose) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  Resolver resolver(1);
  resolver.Close();
  bool ran = false;
  resolver.Resolve("localhost", 1, loop->get(), [&](ResolveResult) { ran = true; });
  // Run one iteration of the loop: nothing was posted to it.
  (*loop)->Post([&] { (*loop)->Stop(); });
  (*loop)->Run();
  EXPECT_FALSE(ran);
}

}  // namespace
}  // namespace eventbus::net
