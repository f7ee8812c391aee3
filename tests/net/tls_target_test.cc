// tls: targets through the real writer pool, against a real TLS peer on loopback: a TlsFront
// (OpenSSL server, certificates from a TestPki made with Debian's openssl) in front of a
// JsonRpcPeer that records every plaintext byte. Covers the bytes inside TLS (the same as for
// tcp:), sync replies, verification failures (TLS_FAILED with the reason), SNI, mTLS, the
// separation of tcp: and tls: connections, reconnects, and bad TLS files at pool creation.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/base/mutex.h"
#include "server/net/writer_pool.h"
#include "tests/testing/jsonrpc_peer.h"
#include "tests/testing/test_pki.h"
#include "tests/testing/tls_front.h"
#include "tests/testing/wait.h"

namespace eventbus::net {
namespace {

using ::eventbus::testing::CertFiles;
using ::eventbus::testing::CertUsage;
using ::eventbus::testing::JsonRpcPeer;
using ::eventbus::testing::PeerBehavior;
using ::eventbus::testing::PeerMode;
using ::eventbus::testing::TestPki;
using ::eventbus::testing::TlsFront;
using ::eventbus::testing::TlsFrontMode;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr absl::Duration kWait = absl::Seconds(10);

// Outcomes by index, from whatever loop thread completes them.
class Outcomes {
 public:
  OutcomeCallback Callback(int index) {
    return [this, index](Outcome outcome) {
      MutexLock lock(&mu_);
      outcomes_[index] = std::move(outcome);
    };
  }
  bool WaitFor(size_t count, absl::Duration timeout = kWait) {
    return testing::WaitFor(timeout, [&] {
      MutexLock lock(&mu_);
      return outcomes_.size() >= count;
    });
  }
  Outcome Get(int index) {
    MutexLock lock(&mu_);
    auto it = outcomes_.find(index);
    if (it != outcomes_.end()) return it->second;
    Outcome pending;
    pending.code = DeliveryCode::kQueued;
    return pending;
  }

 private:
  Mutex mu_;
  std::map<int, Outcome> outcomes_ ABSL_GUARDED_BY(mu_);
};

uri::TcpTarget Target(uint16_t port, bool tls, std::string host = "127.0.0.1") {
  uri::TcpTarget t;
  t.host = std::move(host);
  t.port = port;
  t.tls = tls;
  return t;
}

std::shared_ptr<const std::string> Body(absl::string_view method, absl::string_view params = "") {
  std::string body = absl::StrCat("\"jsonrpc\":\"2.0\",\"method\":\"", method, "\"");
  if (!params.empty()) absl::StrAppend(&body, ",\"params\":", params);
  body += "}";
  return std::make_shared<const std::string>(std::move(body));
}

Request MakeRequest(const uri::TcpTarget& target, std::shared_ptr<const std::string> body,
                    bool expect_reply, OutcomeCallback done,
                    absl::Duration timeout = absl::Seconds(5)) {
  Request r;
  r.target = target;
  r.body = std::move(body);
  r.expect_reply = expect_reply;
  r.deadline = absl::Now() + timeout;
  r.done = std::move(done);
  return r;
}

void SubmitOne(WriterPool& pool, Request r) {
  std::vector<Request> batch;
  batch.push_back(std::move(r));
  pool.Submit(std::move(batch));
}

class TlsTargetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pki = TestPki::Create();
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *std::move(pki);
    auto server = pki_->IssueLocalhostServer();
    ASSERT_TRUE(server.ok()) << server.status();
    server_cert_ = *server;
  }

  // A pool trusting this test's CA unless `options.tls` says otherwise.
  void StartPool(PoolOptions options = PoolOptions(), bool trust_test_ca = true) {
    if (options.num_loops == 0) options.num_loops = 2;
    if (trust_test_ca && options.tls.ca_file.empty()) options.tls.ca_file = pki_->ca_cert_path();
    auto pool = WriterPool::Create(options);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
  }

  std::unique_ptr<JsonRpcPeer> StartPeer(PeerBehavior behavior = PeerBehavior()) {
    JsonRpcPeer::Options options;
    options.behavior = std::move(behavior);
    auto peer = JsonRpcPeer::Start(options);
    EXPECT_TRUE(peer.ok()) << peer.status();
    return peer.ok() ? *std::move(peer) : nullptr;
  }

  std::unique_ptr<TlsFront> StartFront(uint16_t upstream, TlsFront::Options options = {}) {
    if (options.cert.cert_path.empty()) options.cert = server_cert_;
    options.upstream_port = upstream;
    auto front = TlsFront::Start(std::move(options));
    EXPECT_TRUE(front.ok()) << front.status();
    return front.ok() ? *std::move(front) : nullptr;
  }

  // One fail-fast call to `target`: its outcome after the first connect (or handshake) attempt.
  Outcome CallOnce(const uri::TcpTarget& target) {
    Outcomes outcomes;
    Request r = MakeRequest(target, Body("E"), true, outcomes.Callback(0));
    r.fail_fast = true;
    SubmitOne(*pool_, std::move(r));
    EXPECT_TRUE(outcomes.WaitFor(1));
    return outcomes.Get(0);
  }

  std::unique_ptr<TestPki> pki_;
  CertFiles server_cert_;
  std::unique_ptr<WriterPool> pool_;
};

TEST_F(TlsTargetTest, NotificationsInsideTlsAreByteForByteTheTcpOnes) {
  StartPool();
  auto plain = StartPeer();
  auto behind = StartPeer();
  auto front = StartFront(behind->port());
  ASSERT_TRUE(plain && behind && front);
  // Small ones, and one larger than a TLS record (16 KiB), which spans several.
  std::vector<std::shared_ptr<const std::string>> bodies = {
      Body("E_PIKE_BLOCKED", R"({"ip":"192.168.2.11","count":3})"), Body("E_NO_PARAMS"),
      Body("E_BIG", absl::StrCat("[\"", std::string(40000, 'x'), "\"]")),
      Body("E_UTF8", "[\"caf\xc3\xa9\",\"a\\\"b\"]")};
  Outcomes outcomes;
  std::vector<Request> batch;
  for (size_t i = 0; i < bodies.size(); ++i) {
    batch.push_back(MakeRequest(Target(plain->port(), false), bodies[i], false,
                                outcomes.Callback(static_cast<int>(2 * i))));
    batch.push_back(MakeRequest(Target(front->port(), true), bodies[i], false,
                                outcomes.Callback(static_cast<int>(2 * i + 1))));
  }
  pool_->Submit(std::move(batch));
  ASSERT_TRUE(outcomes.WaitFor(2 * bodies.size()));
  for (size_t i = 0; i < 2 * bodies.size(); ++i) {
    EXPECT_EQ(outcomes.Get(static_cast<int>(i)).code, DeliveryCode::kOk)
        << i << ": " << outcomes.Get(static_cast<int>(i)).detail;
  }
  ASSERT_TRUE(behind->WaitForMessages(bodies.size(), kWait));
  ASSERT_TRUE(plain->WaitForMessages(bodies.size(), kWait));
  EXPECT_EQ(behind->Received(), plain->Received());
  EXPECT_EQ(
      behind->Messages()[0],
      R"({"jsonrpc":"2.0","method":"E_PIKE_BLOCKED","params":{"ip":"192.168.2.11","count":3}})");
  EXPECT_EQ(front->handshakes(), 1);
  EXPECT_EQ(behind->connections_accepted(), 1);
}

TEST_F(TlsTargetTest, PipelinedRequestsGetTheirOwnRepliesInAnyOrderAndTheSameBytesAsTcp) {
  StartPool();
  PeerBehavior behavior;
  behavior.mode = PeerMode::kCustom;
  // Each reply carries the request's method, so a mismatched id would show.
  behavior.responder = [](absl::string_view message,
                          absl::string_view id) -> std::optional<std::string> {
    if (id.empty()) return std::nullopt;
    size_t at = message.find("\"method\":\"") + 10;
    std::string method(message.substr(at, message.find('"', at) - at));
    return absl::StrCat(R"({"jsonrpc":"2.0","id":)", id, R"(,"result":")", method, "\"}");
  };
  behavior.reverse_batch = 5;
  auto plain = StartPeer(behavior);
  auto behind = StartPeer(behavior);
  auto front = StartFront(behind->port());
  ASSERT_TRUE(plain && behind && front);
  constexpr int kCalls = 50;
  Outcomes outcomes;
  std::vector<Request> batch;
  for (int i = 0; i < kCalls; ++i) {
    batch.push_back(MakeRequest(Target(plain->port(), false), Body(absl::StrCat("M", i)), true,
                                outcomes.Callback(2 * i)));
    batch.push_back(MakeRequest(Target(front->port(), true), Body(absl::StrCat("M", i)), true,
                                outcomes.Callback(2 * i + 1)));
  }
  pool_->Submit(std::move(batch));
  ASSERT_TRUE(outcomes.WaitFor(2 * kCalls));
  for (int i = 0; i < 2 * kCalls; ++i) {
    Outcome o = outcomes.Get(i);
    ASSERT_EQ(o.code, DeliveryCode::kOk) << i << ": " << o.detail;
    EXPECT_EQ(o.result, absl::StrCat("\"M", i / 2, "\"")) << i;
  }
  EXPECT_EQ(behind->Received(), plain->Received());
  EXPECT_THAT(behind->Messages()[0], StartsWith(R"({"id":1,"jsonrpc":"2.0","method":"M0"})"));
}

TEST_F(TlsTargetTest, ReplyWrittenByteByByteArrivesInManyTlsRecordsAndIsReassembled) {
  StartPool();
  PeerBehavior behavior;
  behavior.result_json = R"({"split":"across records"})";
  behavior.chunk_bytes = 1;
  behavior.chunk_pause = absl::Milliseconds(1);
  auto behind = StartPeer(behavior);
  auto front = StartFront(behind->port());
  ASSERT_TRUE(behind && front);
  Outcomes outcomes;
  for (int i = 0; i < 3; ++i) {
    SubmitOne(*pool_,
              MakeRequest(Target(front->port(), true), Body("E"), true, outcomes.Callback(i)));
  }
  ASSERT_TRUE(outcomes.WaitFor(3));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(outcomes.Get(i).code, DeliveryCode::kOk) << outcomes.Get(i).detail;
    EXPECT_EQ(outcomes.Get(i).result, R"({"split":"across records"})");
  }
}

TEST_F(TlsTargetTest, PeerThatStopsReadingBlocksTlsWritesAndEverythingArrivesInOrderLater) {
  PoolOptions options;
  // One wakeup writes until the socket refuses (the default 1 MiB per wakeup never meets a full
  // buffer: epoll reports writable only with room for more than that).
  options.max_write_bytes_per_wakeup = 64 << 20;
  StartPool(options);
  JsonRpcPeer::Options peer_options;
  peer_options.behavior.mode = PeerMode::kNoRead;
  peer_options.receive_buffer_bytes = 4096;
  auto peer = JsonRpcPeer::Start(peer_options);
  ASSERT_TRUE(peer.ok()) << peer.status();
  TlsFront::Options front_options;
  // Small, but not below the loopback MSS (a window under one segment stalls the sender).
  front_options.receive_buffer_bytes = 64 << 10;
  auto front = StartFront((*peer)->port(), front_options);
  ASSERT_TRUE(front);
  // Far more than the socket buffers hold: SSL_write meets SSL_ERROR_WANT_WRITE mid-record and
  // must be retried with the same bytes while the queue behind it keeps growing.
  constexpr int kMessages = 6000;
  const std::string filler(2000, 'f');
  std::string expected;
  Outcomes outcomes;
  std::vector<Request> batch;
  for (int i = 0; i < kMessages; ++i) {
    auto body = Body("E", absl::StrCat("[", i, ",\"", filler, "\"]"));
    absl::StrAppend(&expected, "{", *body);
    batch.push_back(MakeRequest(Target(front->port(), true), body, false, outcomes.Callback(i),
                                absl::Seconds(30)));
  }
  pool_->Submit(std::move(batch));
  const std::string key = absl::StrCat("tls:127.0.0.1:", front->port());
  ASSERT_TRUE(testing::WaitFor(kWait, [&] {
    auto stats = pool_->Stats(key);
    return stats && stats->state == ConnState::kConnected && stats->queued_messages > 0 &&
           stats->delivered > 0;
  }));
  // Stuck, not draining: the same backlog a little later.
  absl::SleepFor(absl::Milliseconds(100));
  ASSERT_GT(pool_->Stats(key)->queued_messages, 0u);
  (*peer)->SetMode(PeerMode::kReplyResult);
  ASSERT_TRUE(outcomes.WaitFor(kMessages, absl::Seconds(30)));
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_EQ(outcomes.Get(i).code, DeliveryCode::kOk) << i << ": " << outcomes.Get(i).detail;
  }
  ASSERT_TRUE((*peer)->WaitForBytes(expected.size(), kWait));
  EXPECT_TRUE((*peer)->Received() == expected) << "the bytes differ from the queued messages";
  EXPECT_EQ(front->handshakes(), 1);
}

TEST_F(TlsTargetTest, RepliesLargerThanOneWakeupsReadsArriveWhole) {
  StartPool();
  PeerBehavior behavior;
  // 700 KB: about 45 TLS records, more than one wakeup reads (4 x 64 KiB).
  behavior.result_json = absl::StrCat("\"", std::string(700000, 'r'), "\"");
  auto behind = StartPeer(behavior);
  auto front = StartFront(behind->port());
  ASSERT_TRUE(behind && front);
  Outcomes outcomes;
  for (int i = 0; i < 4; ++i) {
    SubmitOne(*pool_,
              MakeRequest(Target(front->port(), true), Body("BIG"), true, outcomes.Callback(i)));
  }
  ASSERT_TRUE(outcomes.WaitFor(4));
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(outcomes.Get(i).code, DeliveryCode::kOk) << outcomes.Get(i).detail;
    EXPECT_EQ(outcomes.Get(i).result, behavior.result_json);
  }
}

TEST_F(TlsTargetTest, CertificateFromAnotherCaFailsWithTlsFailedNamingTheVerifyError) {
  auto other = TestPki::Create("Some Other CA");
  ASSERT_TRUE(other.ok()) << other.status();
  PoolOptions options;
  options.tls.ca_file = (*other)->ca_cert_path();
  StartPool(options);
  auto behind = StartPeer();
  auto front = StartFront(behind->port());
  ASSERT_TRUE(behind && front);
  Outcome o = CallOnce(Target(front->port(), true));
  EXPECT_EQ(o.code, DeliveryCode::kTlsFailed);
  EXPECT_EQ(o.detail, absl::StrCat("tls handshake with 127.0.0.1:", front->port(),
                                   ": certificate verify failed: unable to get local issuer "
                                   "certificate"));
  EXPECT_EQ(behind->message_count(), 0u);
  EXPECT_EQ(front->handshakes(), 0);
}

TEST_F(TlsTargetTest, FailedHandshakesBackOffAndRetryLikeRefusedConnectsUntilTheDeadline) {
  auto other = TestPki::Create("Some Other CA");
  ASSERT_TRUE(other.ok()) << other.status();
  PoolOptions options;
  options.tls.ca_file = (*other)->ca_cert_path();
  options.min_backoff = absl::Milliseconds(20);
  options.max_backoff = absl::Milliseconds(40);
  StartPool(options);
  auto behind = StartPeer();
  auto front = StartFront(behind->port());
  ASSERT_TRUE(behind && front);
  // Not fail-fast: the message waits through the retries and fails at its deadline.
  Outcomes outcomes;
  absl::Time start = absl::Now();
  SubmitOne(*pool_, MakeRequest(Target(front->port(), true), Body("E"), false, outcomes.Callback(0),
                                absl::Milliseconds(600)));
  ASSERT_TRUE(outcomes.WaitFor(1));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(500));
  Outcome o = outcomes.Get(0);
  EXPECT_EQ(o.code, DeliveryCode::kTlsFailed);
  EXPECT_THAT(o.detail, HasSubstr("certificate verify failed"));
  // Several attempts, each a full handshake the peer saw start.
  EXPECT_GE(front->accepted(), 3);
  auto stats = pool_->Stats(absl::StrCat("tls:127.0.0.1:", front->port()));
  ASSERT_TRUE(stats.has_value());
  EXPECT_NE(stats->last_connect_failure, absl::InfinitePast());
  // Failed at an attempt whose retry would come too late, or expired in backoff: either way
  // accounted for once.
  EXPECT_EQ(stats->failed + stats->expired, 1u);
  EXPECT_EQ(behind->message_count(), 0u);
}

TEST_F(TlsTargetTest, SystemStoreDoesNotTrustTheTestCa) {
  StartPool(PoolOptions(), /*trust_test_ca=*/false);
  auto behind = StartPeer();
  auto front = StartFront(behind->port());
  ASSERT_TRUE(behind && front);
  Outcome o = CallOnce(Target(front->port(), true));
  EXPECT_EQ(o.code, DeliveryCode::kTlsFailed);
  EXPECT_THAT(o.detail, HasSubstr("certificate verify failed"));
}

TEST_F(TlsTargetTest, CertificateForAnotherNameOrAddressFailsVerification) {
  auto wrong = pki_->Issue("wrong", "other.example", {"DNS:other.example", "IP:10.9.8.7"},
                           CertUsage::kServer);
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  StartPool();
  auto behind = StartPeer();
  TlsFront::Options front_options;
  front_options.cert = *wrong;
  auto front = StartFront(behind->port(), front_options);
  ASSERT_TRUE(behind && front);
  Outcome by_address = CallOnce(Target(front->port(), true));
  EXPECT_EQ(by_address.code, DeliveryCode::kTlsFailed);
  EXPECT_EQ(by_address.detail, absl::StrCat("tls handshake with 127.0.0.1:", front->port(),
                                            ": certificate verify failed: IP address mismatch"));
  Outcome by_name = CallOnce(Target(front->port(), true, "localhost"));
  EXPECT_EQ(by_name.code, DeliveryCode::kTlsFailed);
  EXPECT_THAT(by_name.detail, HasSubstr(": certificate verify failed: hostname mismatch"));
  EXPECT_EQ(behind->message_count(), 0u);
}

TEST_F(TlsTargetTest, SendsSniForHostNamesAndNoneForAddresses) {
  StartPool();
  auto behind = StartPeer();
  auto front = StartFront(behind->port());
  ASSERT_TRUE(behind && front);
  EXPECT_EQ(CallOnce(Target(front->port(), true, "localhost")).code, DeliveryCode::kOk);
  EXPECT_EQ(CallOnce(Target(front->port(), true, "127.0.0.1")).code, DeliveryCode::kOk);
  EXPECT_EQ(front->server_names(), (std::vector<std::string>{"localhost", ""}));
}

TEST_F(TlsTargetTest, PeerAnsweringInPlaintextFailsTheHandshake) {
  StartPool();
  TlsFront::Options options;
  options.mode = TlsFrontMode::kPlaintext;
  auto front = StartFront(1, options);
  ASSERT_TRUE(front);
  Outcome o = CallOnce(Target(front->port(), true));
  EXPECT_EQ(o.code, DeliveryCode::kTlsFailed);
  EXPECT_THAT(o.detail,
              StartsWith(absl::StrCat("tls handshake with 127.0.0.1:", front->port(), ": ")));
  // OpenSSL's reason for a record that is not TLS.
  EXPECT_THAT(o.detail, ::testing::AnyOf(HasSubstr("wrong version number"),
                                         HasSubstr("packet length too long")));
}

TEST_F(TlsTargetTest, PeerClosingMidHandshakeFailsTheHandshake) {
  StartPool();
  TlsFront::Options options;
  options.mode = TlsFrontMode::kCloseMidHandshake;
  auto front = StartFront(1, options);
  ASSERT_TRUE(front);
  Outcome o = CallOnce(Target(front->port(), true));
  EXPECT_EQ(o.code, DeliveryCode::kTlsFailed);
  EXPECT_THAT(o.detail,
              StartsWith(absl::StrCat("tls handshake with 127.0.0.1:", front->port(), ": ")));
  EXPECT_THAT(o.detail, ::testing::AnyOf(HasSubstr("closed by the peer during the handshake"),
                                         HasSubstr("Connection reset by peer")));
}

TEST_F(TlsTargetTest, PeerThatNeverAnswersTheHandshakeTimesOutAfterTheConnectTimeout) {
  PoolOptions options;
  options.connect_timeout = absl::Milliseconds(300);
  StartPool(options);
  // A plain JSON-RPC server: it reads the ClientHello and waits for JSON that never comes.
  auto plain = StartPeer();
  ASSERT_TRUE(plain);
  absl::Time start = absl::Now();
  Outcome o = CallOnce(Target(plain->port(), true));
  absl::Duration took = absl::Now() - start;
  EXPECT_EQ(o.code, DeliveryCode::kTlsFailed);
  EXPECT_EQ(o.detail, absl::StrCat("tls handshake with 127.0.0.1:", plain->port(),
                                   ": timed out after 300ms"));
  EXPECT_GE(took, absl::Milliseconds(280));
  EXPECT_LT(took, absl::Seconds(3));
  EXPECT_GT(plain->bytes_received(), 0u);  // the ClientHello
}

TEST_F(TlsTargetTest, TcpAndTlsToOneHostAndPortAreSeparateConnections) {
  StartPool();
  auto behind = StartPeer();
  auto front = StartFront(behind->port());
  ASSERT_TRUE(behind && front);
  ASSERT_EQ(CallOnce(Target(front->port(), true)).code, DeliveryCode::kOk);
  // tcp: to the TLS port: plaintext JSON on a connection of its own (the front's handshake
  // fails on it), never the bytes of the established TLS connection.
  Outcomes outcomes;
  SubmitOne(*pool_,
            MakeRequest(Target(front->port(), false), Body("PLAIN"), false, outcomes.Callback(0)));
  ASSERT_TRUE(outcomes.WaitFor(1));
  ASSERT_TRUE(testing::WaitFor(kWait, [&] { return front->accepted() == 2; }));
  const std::string tls_key = absl::StrCat("tls:127.0.0.1:", front->port());
  const std::string tcp_key = absl::StrCat("127.0.0.1:", front->port());
  EXPECT_TRUE(pool_->Stats(tls_key).has_value());
  EXPECT_TRUE(pool_->Stats(tcp_key).has_value());
  EXPECT_EQ(pool_->Stats(tls_key)->delivered, 1u);
  EXPECT_EQ(front->handshakes(), 1);
  EXPECT_EQ(behind->message_count(), 1u);
  EXPECT_FALSE(absl::StrContains(behind->Received(), "PLAIN"));
}

TEST_F(TlsTargetTest, ReconnectsWithANewHandshakeAfterThePeerRestarts) {
  StartPool();
  auto behind = StartPeer();
  auto front = StartFront(behind->port());
  ASSERT_TRUE(behind && front);
  ASSERT_EQ(CallOnce(Target(front->port(), true)).code, DeliveryCode::kOk);
  front->Stop();
  const std::string key = absl::StrCat("tls:127.0.0.1:", front->port());
  ASSERT_TRUE(testing::WaitFor(kWait, [&] {
    auto stats = pool_->Stats(key);
    return stats && stats->state != ConnState::kConnected;
  }));
  ASSERT_TRUE(front->Restart().ok());
  Outcomes outcomes;
  SubmitOne(*pool_,
            MakeRequest(Target(front->port(), true), Body("AGAIN"), true, outcomes.Callback(0)));
  ASSERT_TRUE(outcomes.WaitFor(1));
  EXPECT_EQ(outcomes.Get(0).code, DeliveryCode::kOk) << outcomes.Get(0).detail;
  EXPECT_EQ(front->handshakes(), 2);
  EXPECT_EQ(pool_->Stats(key)->reconnects, 1u);
}

TEST_F(TlsTargetTest, PresentsTheClientCertificateToPeersThatRequireOne) {
  auto client = pki_->Issue("client", "eventbus-client", {}, CertUsage::kClient);
  ASSERT_TRUE(client.ok()) << client.status();
  PoolOptions options;
  options.tls.cert_file = client->cert_path;
  options.tls.key_file = client->key_path;
  StartPool(options);
  auto behind = StartPeer();
  TlsFront::Options front_options;
  front_options.client_ca_file = pki_->ca_cert_path();
  auto front = StartFront(behind->port(), front_options);
  ASSERT_TRUE(behind && front);
  Outcome o = CallOnce(Target(front->port(), true));
  EXPECT_EQ(o.code, DeliveryCode::kOk) << o.detail;
  EXPECT_EQ(front->client_names(), std::vector<std::string>{"eventbus-client"});
}

TEST_F(TlsTargetTest, PeerRequiringAClientCertificateRefusesAPoolWithout) {
  StartPool();
  auto behind = StartPeer();
  TlsFront::Options front_options;
  front_options.client_ca_file = pki_->ca_cert_path();
  auto front = StartFront(behind->port(), front_options);
  ASSERT_TRUE(behind && front);
  Outcome o = CallOnce(Target(front->port(), true));
  // TLS 1.3: the client's side of the handshake is complete before the server checks; its
  // refusal arrives as an alert on the first read.
  EXPECT_EQ(o.code, DeliveryCode::kConnectionLost) << DeliveryCodeName(o.code);
  EXPECT_EQ(o.detail, absl::StrCat("read from 127.0.0.1:", front->port(),
                                   ": tlsv13 alert certificate required"));
  EXPECT_EQ(behind->message_count(), 0u);
}

TEST_F(TlsTargetTest, UnusableTlsFilesFailPoolCreationNamingOptionFileAndProblem) {
  auto client = pki_->Issue("client", "eventbus-client", {}, CertUsage::kClient);
  ASSERT_TRUE(client.ok()) << client.status();
  struct Case {
    TargetTlsOptions tls;
    std::string message;
  };
  const std::string missing = pki_->dir() + "/missing.pem";
  std::vector<Case> cases = {
      {{missing, "", ""},
       absl::StrCat("--target_ca_file \"", missing, "\": cannot read: No such file or directory")},
      {{client->key_path, "", ""},
       absl::StrCat("--target_ca_file \"", client->key_path, "\": no PEM certificate in it")},
      {{"", client->cert_path, ""},
       absl::StrCat("--target_cert \"", client->cert_path, "\" needs --target_key as well")},
      {{"", "", client->key_path},
       absl::StrCat("--target_key \"", client->key_path, "\" needs --target_cert as well")},
      {{"", client->cert_path, missing},
       absl::StrCat("--target_key \"", missing, "\": cannot read: No such file or directory")},
      {{"", client->cert_path, server_cert_.key_path},
       absl::StrCat("--target_key \"", server_cert_.key_path,
                    "\": the private key does not match the certificate in --target_cert")},
  };
  for (const Case& c : cases) {
    PoolOptions options;
    options.num_loops = 1;
    options.tls = c.tls;
    auto pool = WriterPool::Create(options);
    ASSERT_FALSE(pool.ok()) << c.message;
    EXPECT_EQ(pool.status().code(), absl::StatusCode::kInvalidArgument) << pool.status();
    EXPECT_THAT(std::string(pool.status().message()), StartsWith(c.message));
  }
}

}  // namespace
}  // namespace eventbus::net
