// The destination policy (SPEC §10) through the real gRPC API of an in-process EventBusServer
// (memory store, port 0), against real JSON-RPC peers on loopback. Host names ending in ".test"
// resolve through the pool's resolver seam (PoolOptions::resolve_lookup) to loopback addresses the
// test picks per lookup, so a name can change its answer between Subscribe and connect (DNS
// rebinding); every other name goes to the system resolver (localhost). Nothing leaves 127.0.0.1.
#include <unistd.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "eventbus/v1/eventbus.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/net/resolver.h"
#include "server/policy/destination_policy.h"
#include "server/service/server.h"
#include "tests/testing/jsonrpc_peer.h"
#include "tests/testing/log_capture.h"
#include "tests/testing/ports.h"
#include "tests/testing/wait.h"

namespace eventbus::service {
namespace {

namespace v1 = ::eventbus::v1;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr absl::Duration kCallDeadline = absl::Seconds(10);

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + kCallDeadline));
  return context;
}

// GET /metrics over a plain TCP socket (HTTP/1.0: the server closes when done); "" on failure.
std::string FetchMetrics(int port) {
  int fd = testing::ConnectTcp(static_cast<uint16_t>(port));
  if (fd < 0) return "";
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return "";
  }
  std::string response;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n <= 0) break;
    response.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return response;
}

class DestinationPolicyServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto peer = testing::JsonRpcPeer::Start();
    ASSERT_TRUE(peer.ok()) << peer.status();
    peer_ = *std::move(peer);
  }

  // Starts the server with `--deny_targets=deny` (the defaults stay) and metrics on.
  void StartServer(const std::string& deny = "") {
    ServerConfig config;
    config.listen = "127.0.0.1:0";
    config.store = "memory";
    config.pool.num_loops = 2;
    config.pool.min_backoff = absl::Milliseconds(20);
    config.pool.max_backoff = absl::Milliseconds(50);
    config.metrics_listen = "127.0.0.1:0";
    absl::StatusOr<policy::PolicyConfig> destinations = policy::ParsePolicyFlags("", deny);
    ASSERT_TRUE(destinations.ok()) << destinations.status();
    config.destination_policy = *std::move(destinations);
    config.pool.resolve_lookup = [this](const std::string& host) -> net::ResolveResult {
      if (!absl::EndsWith(host, ".test")) return net::ResolveBlocking(host, 0);
      std::lock_guard<std::mutex> lock(mu_);
      auto it = answers_.find(host);
      if (it == answers_.end() || it->second.empty()) {
        return absl::NotFoundError(
            absl::StrCat("resolve \"", host, "\": Name or service not known"));
      }
      std::string ip = it->second.front();
      if (it->second.size() > 1) it->second.erase(it->second.begin());
      std::vector<net::SocketAddress> out;
      out.push_back(*net::ParseIpLiteral(ip, 0));
      return out;
    };
    auto server = EventBusServer::Start(config);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::EventBusService::NewStub(channel_);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(2));
  }

  // The addresses `host` resolves to, one per lookup in order (the last one repeats).
  void Answer(const std::string& host, std::vector<std::string> ips) {
    std::lock_guard<std::mutex> lock(mu_);
    answers_[host] = std::move(ips);
  }

  grpc::Status Subscribe(const std::string& socket) {
    v1::SubscribeRequest request;
    request.set_event("E");
    request.set_socket(socket);
    v1::SubscribeResponse response;
    return stub_->Subscribe(Context().get(), request, &response);
  }

  // A sync Raise of "E" with `timeout_ms`; the deliveries.
  std::vector<v1::Delivery> RaiseSync(int timeout_ms = 300) {
    v1::RaiseRequest request;
    request.set_event("E");
    request.set_sync(true);
    request.set_timeout_ms(timeout_ms);
    request.mutable_named();
    v1::RaiseResponse response;
    grpc::Status status = stub_->Raise(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return {response.deliveries().begin(), response.deliveries().end()};
  }

  size_t SubscriptionCount() {
    v1::ListSubscriptionsResponse list;
    EXPECT_TRUE(stub_->ListSubscriptions(Context().get(), {}, &list).ok());
    return static_cast<size_t>(list.subscriptions_size());
  }

  // The value of eventbus_destination_denied_total{stage="STAGE"}, or -1 when absent.
  double Denied(const std::string& stage) {
    const std::string text = FetchMetrics(server_->metrics_port());
    const std::string series =
        absl::StrCat("eventbus_destination_denied_total{stage=\"", stage, "\"} ");
    size_t at = text.find(series);
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + series.size()));
  }

  std::unique_ptr<testing::JsonRpcPeer> peer_;
  std::unique_ptr<EventBusServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::EventBusService::Stub> stub_;
  std::mutex mu_;
  std::map<std::string, std::vector<std::string>> answers_;  // guarded by mu_
};

TEST_F(DestinationPolicyServiceTest, ALiteralDeniedAddressIsPermissionDeniedAtSubscribe) {
  StartServer();
  grpc::Status status = Subscribe("tcp:169.254.169.254:80");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(status.error_message(),
            "socket \"tcp:169.254.169.254:80\": destination 169.254.169.254:80 is denied by the "
            "destination policy (169.254.0.0/16, default)");
  // The other spellings of the metadata and link-local addresses.
  for (const char* socket :
       {"tcp:[::ffff:169.254.169.254]:80", "tcp:[::ffff:a9fe:a9fe]:80", "tcp:[fe80::1]:8080",
        "tcp:[fd00:ec2::254]:80", "tcp:[64:ff9b::a9fe:a9fe]:80", "tcp:169.254.0.1:1"}) {
    status = Subscribe(socket);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << socket;
    EXPECT_THAT(status.error_message(), HasSubstr("is denied by the destination policy")) << socket;
  }
  EXPECT_EQ(SubscriptionCount(), 0u);
  EXPECT_EQ(Denied("subscribe"), 7);
  EXPECT_EQ(Denied("connect"), 0);
}

TEST_F(DestinationPolicyServiceTest, ANameResolvingToADeniedAddressIsPermissionDeniedAtSubscribe) {
  StartServer();
  Answer("metadata.test", {"169.254.169.254"});
  grpc::Status status = Subscribe("tcp:metadata.test:80");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(status.error_message(),
            "socket \"tcp:metadata.test:80\": destination metadata.test:80 resolves to "
            "169.254.169.254:80, which is denied by the destination policy (169.254.0.0/16, "
            "default)");
  EXPECT_EQ(SubscriptionCount(), 0u);
}

TEST_F(DestinationPolicyServiceTest, DnsRebindingAfterSubscribeIsDeniedAtConnectTime) {
  // The peer's own address and port are denied; the name first resolves elsewhere (allowed), then
  // to the peer. Without the connect-time check the event would reach the peer.
  StartServer(absl::StrCat("127.0.0.1:", peer_->port()));
  Answer("rebind.test", {"127.0.0.2", "127.0.0.1"});
  const std::string socket = absl::StrCat("tcp:rebind.test:", peer_->port());
  testing::LogCapture log(base::LogLevel::kInfo);
  ASSERT_TRUE(Subscribe(socket).ok());

  std::vector<v1::Delivery> deliveries = RaiseSync();
  ASSERT_EQ(deliveries.size(), 1u);
  EXPECT_EQ(deliveries[0].status(), v1::DELIVERY_STATUS_DESTINATION_DENIED)
      << deliveries[0].detail();
  EXPECT_EQ(deliveries[0].detail(),
            absl::StrCat("connect to rebind.test:", peer_->port(),
                         ": destination 127.0.0.1:", peer_->port(),
                         " is denied by the destination policy (127.0.0.1/32:", peer_->port(),
                         ", --deny_targets)"));
  EXPECT_EQ(peer_->connections_accepted(), 0);
  EXPECT_EQ(peer_->message_count(), 0u);
  EXPECT_GE(Denied("connect"), 1);
  // The failure log reports it like any other failing target.
  const std::string target = absl::StrCat("rebind.test:", peer_->port());
  EXPECT_TRUE(testing::WaitFor(absl::Seconds(5), [&] {
    return !log.Matching({"level=warning", target, "is denied by the destination policy"}).empty();
  }));
}

TEST_F(DestinationPolicyServiceTest, ANameThatDoesNotResolveAtSubscribeIsAcceptedAndCheckedLater) {
  StartServer(absl::StrCat("127.0.0.1:", peer_->port()));
  const std::string socket = absl::StrCat("tcp:later.test:", peer_->port());
  ASSERT_TRUE(Subscribe(socket).ok());
  Answer("later.test", {"127.0.0.1"});
  std::vector<v1::Delivery> deliveries = RaiseSync();
  ASSERT_EQ(deliveries.size(), 1u);
  EXPECT_EQ(deliveries[0].status(), v1::DELIVERY_STATUS_DESTINATION_DENIED)
      << deliveries[0].detail();
  EXPECT_EQ(peer_->message_count(), 0u);
}

TEST_F(DestinationPolicyServiceTest, EventBusOwnPortsAreDeniedOnEveryLocalAddress) {
  StartServer();
  const int grpc_port = server_->port();
  for (const std::string host :
       {"127.0.0.1", "127.0.0.53", "0.0.0.0", "[::1]", "[::]", "[::ffff:127.0.0.1]", "localhost"}) {
    grpc::Status status = Subscribe(absl::StrCat("tcp:", host, ":", grpc_port));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << host;
    EXPECT_THAT(status.error_message(), HasSubstr("EventBus's own gRPC (--listen) port")) << host;
  }
  grpc::Status metrics = Subscribe(absl::StrCat("tcp:127.0.0.1:", server_->metrics_port()));
  EXPECT_EQ(metrics.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(metrics.error_message(), HasSubstr("own metrics (--metrics_listen) port"));
  EXPECT_EQ(SubscriptionCount(), 0u);
}

TEST_F(DestinationPolicyServiceTest, AVirtualGroupWithOneDeniedMemberIsRefusedNamingIt) {
  StartServer();
  const std::string socket =
      absl::StrCat("virtual:PARALLEL ", peer_->socket(), " tcp:169.254.169.254:80");
  grpc::Status status = Subscribe(socket);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(status.error_message(),
            absl::StrCat("socket \"", socket,
                         "\": member 2 \"tcp:169.254.169.254:80\": destination "
                         "169.254.169.254:80 is denied by the destination policy (169.254.0.0/16, "
                         "default)"));
  EXPECT_EQ(SubscriptionCount(), 0u);
}

TEST_F(DestinationPolicyServiceTest, TheDefaultsKeepLoopbackSubscribersWorking) {
  StartServer();
  ASSERT_TRUE(Subscribe(peer_->socket()).ok());
  ASSERT_TRUE(Subscribe(absl::StrCat("tcp:localhost:", peer_->port(), "/m")).ok());
  ASSERT_TRUE(Subscribe(absl::StrCat("virtual:FAILOVER tcp:127.0.0.2:", peer_->port(), " ",
                                     peer_->socket("v")))
                  .ok());
  std::vector<v1::Delivery> deliveries = RaiseSync(2000);
  ASSERT_EQ(deliveries.size(), 3u);
  for (const v1::Delivery& d : deliveries) {
    EXPECT_EQ(d.status(), v1::DELIVERY_STATUS_OK) << d.socket() << ": " << d.detail();
  }
  EXPECT_EQ(Denied("subscribe"), 0);
  EXPECT_EQ(Denied("connect"), 0);
}

}  // namespace
}  // namespace eventbus::service
