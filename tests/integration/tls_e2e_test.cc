// tls: subscribers end to end: the real gRPC API (in-process EventBusServer, memory store) raising
// to real TLS peers on loopback (TlsFront in front of a JsonRpcPeer, certificates from a TestPki
// made with Debian's openssl): the bytes inside TLS, sync replies, TLS_FAILED in RaiseResponse,
// a tls: member inside a virtual group, and bad TLS files refusing to start.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/service/server.h"
#include "tests/testing/jsonrpc_peer.h"
#include "tests/testing/test_pki.h"
#include "tests/testing/tls_front.h"

namespace eventbus {
namespace {

using ::testing::HasSubstr;
using testing::JsonRpcPeer;
using ::testing::SizeIs;
using testing::TestPki;
using testing::TlsFront;
using testing::TlsFrontMode;

constexpr absl::Duration kWait = absl::Seconds(10);

class TlsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pki = TestPki::Create();
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *std::move(pki);
    auto cert = pki_->IssueLocalhostServer();
    ASSERT_TRUE(cert.ok()) << cert.status();
    cert_ = *cert;
    service::ServerConfig config;
    config.pool.tls.ca_file = pki_->ca_cert_path();
    StartServer(config);
  }

  void StartServer(service::ServerConfig config) {
    client_.reset();
    server_.reset();
    config.listen = "127.0.0.1:0";
    config.store = "memory";
    config.pool.num_loops = 2;
    config.pool.min_backoff = absl::Milliseconds(20);
    config.pool.max_backoff = absl::Milliseconds(200);
    auto server = service::EventBusServer::Start(config);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    client::ClientOptions options;
    options.deadline = absl::Seconds(10);
    auto c = client::Client::Connect(server_->address(), options);
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
  }

  std::unique_ptr<JsonRpcPeer> StartPeer() {
    auto peer = JsonRpcPeer::Start();
    EXPECT_TRUE(peer.ok()) << peer.status();
    return peer.ok() ? *std::move(peer) : nullptr;
  }

  std::unique_ptr<TlsFront> StartFront(uint16_t upstream,
                                       TlsFrontMode mode = TlsFrontMode::kForward) {
    TlsFront::Options options;
    options.cert = cert_;
    options.upstream_port = upstream;
    options.mode = mode;
    auto front = TlsFront::Start(options);
    EXPECT_TRUE(front.ok()) << front.status();
    return front.ok() ? *std::move(front) : nullptr;
  }

  v1::Subscription Subscribe(const std::string& event, const std::string& socket) {
    v1::SubscribeRequest req;
    req.set_event(event);
    req.set_socket(socket);
    auto resp = client_->Subscribe(req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() ? resp->subscription() : v1::Subscription{};
  }

  v1::RaiseResponse Raise(const std::string& event, bool sync) {
    v1::RaiseRequest req;
    req.set_event(event);
    req.set_sync(sync);
    req.set_timeout_ms(2000);
    auto* p = req.mutable_named()->add_params();
    p->set_name("ip");
    p->mutable_value()->set_string_value("192.168.2.11");
    auto resp = client_->Raise(req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() ? *resp : v1::RaiseResponse{};
  }

  std::unique_ptr<TestPki> pki_;
  testing::CertFiles cert_;
  std::unique_ptr<service::EventBusServer> server_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(TlsE2eTest, RaiseReachesATlsSubscriberWithTheTcpBytesAndReturnsItsReply) {
  auto peer = StartPeer();
  auto front = StartFront(peer->port());
  ASSERT_TRUE(peer && front);
  v1::Subscription sub = Subscribe("E_PIKE_BLOCKED", front->socket("LOCALHOST"));
  EXPECT_EQ(sub.socket(), absl::StrCat("tls:localhost:", front->port()));
  v1::RaiseResponse sync = Raise("E_PIKE_BLOCKED", true);
  ASSERT_THAT(sync.deliveries(), SizeIs(1));
  EXPECT_EQ(sync.deliveries(0).status(), v1::DELIVERY_STATUS_OK) << sync.deliveries(0).detail();
  EXPECT_EQ(sync.deliveries(0).result(), "\"ok\"");
  v1::RaiseResponse async = Raise("E_PIKE_BLOCKED", false);
  EXPECT_THAT(async.deliveries(), SizeIs(0));
  EXPECT_EQ(async.queued(), 1u);
  ASSERT_TRUE(peer->WaitForMessages(2, kWait));
  EXPECT_EQ(peer->Received(),
            R"({"id":1,"jsonrpc":"2.0","method":"E_PIKE_BLOCKED","params":{"ip":"192.168.2.11"}})"
            R"({"jsonrpc":"2.0","method":"E_PIKE_BLOCKED","params":{"ip":"192.168.2.11"}})");
  EXPECT_EQ(front->server_names(), std::vector<std::string>{"localhost"});
}

TEST_F(TlsE2eTest, UntrustedSubscriberIsTlsFailedWithTheVerifyErrorInDetail) {
  // A server trusting only the system store: the test CA is unknown to it.
  StartServer(service::ServerConfig{});
  auto peer = StartPeer();
  auto front = StartFront(peer->port());
  ASSERT_TRUE(peer && front);
  Subscribe("E_T", front->socket());
  v1::RaiseResponse resp = Raise("E_T", true);
  ASSERT_THAT(resp.deliveries(), SizeIs(1));
  EXPECT_EQ(resp.deliveries(0).status(), v1::DELIVERY_STATUS_TLS_FAILED);
  EXPECT_EQ(resp.deliveries(0).detail(),
            absl::StrCat("tls handshake with 127.0.0.1:", front->port(),
                         ": certificate verify failed: unable to get local issuer certificate"));
  EXPECT_EQ(peer->message_count(), 0u);
}

TEST_F(TlsE2eTest, FailoverGroupMovesPastATlsMemberWhoseHandshakeFails) {
  auto peer = StartPeer();
  auto good = StartFront(peer->port());
  auto plaintext = StartFront(peer->port(), TlsFrontMode::kPlaintext);
  ASSERT_TRUE(peer && good && plaintext);
  const std::string bad_member = plaintext->socket();
  Subscribe("E_V", absl::StrCat("virtual:FAILOVER ", bad_member, " ", good->socket()));
  v1::RaiseResponse resp = Raise("E_V", true);
  ASSERT_THAT(resp.deliveries(), SizeIs(1));
  const v1::Delivery& d = resp.deliveries(0);
  EXPECT_EQ(d.status(), v1::DELIVERY_STATUS_OK) << d.detail();
  ASSERT_THAT(d.attempts(), SizeIs(2));
  EXPECT_EQ(d.attempts(0).member(), bad_member);
  EXPECT_EQ(d.attempts(0).status(), v1::DELIVERY_STATUS_TLS_FAILED);
  EXPECT_THAT(d.attempts(0).detail(), HasSubstr("tls handshake with 127.0.0.1:"));
  EXPECT_EQ(d.attempts(1).member(), good->socket());
  EXPECT_EQ(d.attempts(1).status(), v1::DELIVERY_STATUS_OK);
  EXPECT_EQ(peer->message_count(), 1u);
}

TEST_F(TlsE2eTest, MissingTargetCaFileRefusesToStart) {
  service::ServerConfig config;
  config.listen = "127.0.0.1:0";
  config.store = "memory";
  config.pool.tls.ca_file = pki_->dir() + "/nope.pem";
  auto server = service::EventBusServer::Start(config);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()),
              HasSubstr(absl::StrCat("--target_ca_file \"", pki_->dir(),
                                     "/nope.pem\": cannot read: No such file or directory")));
}

}  // namespace
}  // namespace eventbus
