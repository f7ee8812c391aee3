// EventBusServer in-process: the client-connection settings (cap, idle, handshake, keepalive) are
// validated, the cap is applied to connections handed to gRPC through net::Listener, and
// Shutdown stops accepting connections. tests/integration/client_connections_test.cc covers the
// same through the real binary, with a low descriptor limit.
#include "server/service/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "grpc/grpc.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "gtest/gtest.h"
#include "server/base/mutex.h"
#include "tests/testing/ports.h"

namespace eventbus::service {
namespace {

using ::eventbus::testing::PortAccepts;
using ::grpc::health::v1::HealthCheckResponse;

ServerConfig TestConfig() {
  ServerConfig config;
  config.listen = "127.0.0.1:0";
  config.store = "memory";
  config.pool.num_loops = 1;
  return config;
}

// A channel with a TCP connection of its own.
std::shared_ptr<grpc::Channel> OwnChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// grpc.health.v1.Health/Check of "" on `channel`: the RPC's status (the serving status aside).
absl::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel) {
  return client::CheckHealth(channel, "", absl::Seconds(5)).status();
}

TEST(EventBusServerConnectionsTest, StartRejectsClientConnectionSettingsNamingTheFlag) {
  struct Case {
    std::function<void(ServerConfig*)> set;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](ServerConfig* c) { c->client_idle_timeout = absl::Milliseconds(-1); },
       "client_idle_timeout_ms must not be negative (0 = never)"},
      {[](ServerConfig* c) { c->client_handshake_timeout = absl::ZeroDuration(); },
       "client_handshake_timeout_ms: 0 must be positive"},
      {[](ServerConfig* c) { c->client_keepalive_time = absl::Milliseconds(-3); },
       "client_keepalive_time_ms: -3 must be positive"},
      {[](ServerConfig* c) { c->client_keepalive_timeout = absl::ZeroDuration(); },
       "client_keepalive_timeout_ms: 0 must be positive"},
  };
  for (const Case& c : cases) {
    ServerConfig config = TestConfig();
    c.set(&config);
    auto server = EventBusServer::Start(config);
    ASSERT_FALSE(server.ok()) << c.message;
    EXPECT_EQ(server.status(), absl::InvalidArgumentError(c.message));
  }
}

TEST(EventBusServerConnectionsTest, StartRejectsAMalformedListenAddress) {
  ServerConfig config = TestConfig();
  config.listen = "127.0.0.1:70000";
  auto server = EventBusServer::Start(config);
  EXPECT_EQ(server.status(), absl::InvalidArgumentError(
                                 "listen \"127.0.0.1:70000\": port \"70000\" is not in 0..65535"));
}

TEST(EventBusServerConnectionsTest, ClosesConnectionsBeyondTheCap) {
  ServerConfig config = TestConfig();
  config.max_client_connections = 1;
  auto server = EventBusServer::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  std::shared_ptr<grpc::Channel> first = OwnChannel((*server)->address());
  ASSERT_TRUE(HealthCheck(first).ok());

  absl::Status refused = HealthCheck(OwnChannel((*server)->address()));
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
  EXPECT_GE((*server)->client_connection_stats().refused_at_cap, 1u);
  EXPECT_EQ((*server)->client_connection_stats().open_connections, 1u);
  EXPECT_TRUE(HealthCheck(first).ok());
  (*server)->Shutdown(absl::Seconds(1));
}

TEST(EventBusServerConnectionsTest, ShutdownStopsAcceptingConnections) {
  auto server = EventBusServer::Start(TestConfig());
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(PortAccepts(static_cast<uint16_t>((*server)->port())));
  ASSERT_TRUE(HealthCheck(OwnChannel((*server)->address())).ok());
  (*server)->Shutdown(absl::Seconds(1));
  EXPECT_FALSE(PortAccepts(static_cast<uint16_t>((*server)->port())));
}

}  // namespace
}  // namespace eventbus::service
