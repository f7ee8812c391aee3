// End to end through the real gRPC API: an in-process EventBusServer (memory store) on a
// loopback port, a real gRPC client with a deadline on every call, and real loopback JSON-RPC
// peers. Covers SPEC §2 bytes on the wire, fan-out, fault isolation, expiry/unsubscribe, and the
// sync statuses of SPEC §3/§5.
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/base/mutex.h"
#include "server/service/server.h"
#include "tests/testing/jsonrpc_peer.h"
#include "tests/testing/ports.h"

namespace eventbus {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::JsonRpcPeer;
using testing::PeerBehavior;
using testing::PeerMode;
using ::testing::SizeIs;
using v1::DeliveryStatus;

constexpr absl::Duration kWait = absl::Seconds(10);

std::unique_ptr<JsonRpcPeer> StartPeer(PeerMode mode = PeerMode::kReplyResult,
                                       int receive_buffer_bytes = 0) {
  JsonRpcPeer::Options options;
  options.behavior.mode = mode;
  options.receive_buffer_bytes = receive_buffer_bytes;
  auto peer = JsonRpcPeer::Start(options);
  EXPECT_TRUE(peer.ok()) << peer.status();
  return std::move(*peer);
}

v1::RaiseRequest Named(const std::string& event,
                       std::vector<std::pair<std::string, google::protobuf::Value>> params) {
  v1::RaiseRequest req;
  req.set_event(event);
  auto* named = req.mutable_named();
  for (auto& [name, value] : params) {
    auto* p = named->add_params();
    p->set_name(name);
    *p->mutable_value() = value;
  }
  return req;
}

google::protobuf::Value Str(const std::string& s) {
  google::protobuf::Value v;
  v.set_string_value(s);
  return v;
}

google::protobuf::Value Num(double d) {
  google::protobuf::Value v;
  v.set_number_value(d);
  return v;
}

std::vector<DeliveryStatus> Statuses(const v1::RaiseResponse& resp) {
  std::vector<DeliveryStatus> out;
  for (const auto& d : resp.deliveries()) out.push_back(d.status());
  return out;
}

class GrpcE2eTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(service::ServerConfig{}); }

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

  v1::Subscription Subscribe(const std::string& event, const std::string& socket,
                             std::optional<uint32_t> expire = std::nullopt) {
    v1::SubscribeRequest req;
    req.set_event(event);
    req.set_socket(socket);
    if (expire) req.set_expire_seconds(*expire);
    auto resp = client_->Subscribe(req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() ? resp->subscription() : v1::Subscription{};
  }

  v1::RaiseResponse Raise(v1::RaiseRequest req) {
    auto resp = client_->Raise(req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() ? *resp : v1::RaiseResponse{};
  }

  v1::RaiseResponse RaiseSync(const std::string& event, uint32_t timeout_ms) {
    v1::RaiseRequest req;
    req.set_event(event);
    req.set_sync(true);
    req.set_timeout_ms(timeout_ms);
    return Raise(req);
  }

  std::unique_ptr<service::EventBusServer> server_;
  std::unique_ptr<client::Client> client_;
};

// --- async delivery (issue: EventBus core) ---

TEST_F(GrpcE2eTest, NamedParamsArriveByteExact) {
  auto peer = StartPeer();
  Subscribe("E_PIKE_BLOCKED", peer->socket());
  auto resp = Raise(Named("E_PIKE_BLOCKED", {{"ip", Str("192.168.2.11")}, {"count", Num(3)}}));
  // The compact async answer: QUEUED is counted, not listed.
  EXPECT_THAT(resp.deliveries(), SizeIs(0));
  EXPECT_EQ(resp.subscribers(), 1u);
  EXPECT_EQ(resp.queued(), 1u);
  ASSERT_TRUE(peer->WaitForMessages(1, kWait));
  EXPECT_EQ(
      peer->Received(),
      R"({"jsonrpc":"2.0","method":"E_PIKE_BLOCKED","params":{"ip":"192.168.2.11","count":3}})");
}

TEST_F(GrpcE2eTest, PositionalRawAndNoParamsArriveByteExact) {
  auto peer = StartPeer();
  Subscribe("E_MY_EVENT", peer->socket());
  v1::RaiseRequest positional;
  positional.set_event("E_MY_EVENT");
  positional.mutable_positional()->add_values()->set_number_value(3);
  positional.mutable_positional()->add_values()->set_string_value("x");
  Raise(positional);
  v1::RaiseRequest raw;
  raw.set_event("E_MY_EVENT");
  // Raw JSON keeps its tokens; the whitespace between them is dropped (compact, no newline).
  raw.set_json("{\"a\": [1, 2.50, null],\n \"b\": {\"c\": \"x y\"}}");
  Raise(raw);
  v1::RaiseRequest none;
  none.set_event("E_MY_EVENT");
  Raise(none);
  ASSERT_TRUE(peer->WaitForMessages(3, kWait));
  EXPECT_EQ(
      peer->Received(),
      R"({"jsonrpc":"2.0","method":"E_MY_EVENT","params":[3,"x"]})"
      R"({"jsonrpc":"2.0","method":"E_MY_EVENT","params":{"a":[1,2.50,null],"b":{"c":"x y"}}})"
      R"({"jsonrpc":"2.0","method":"E_MY_EVENT"})");
  EXPECT_EQ(peer->connections_accepted(), 1);
}

TEST_F(GrpcE2eTest, SocketMethodAndEventParamShapeTheMessage) {
  service::ServerConfig config;
  config.event_param = "opensips_event";
  StartServer(config);
  auto peer = StartPeer();
  Subscribe("E_PIKE_BLOCKED", peer->socket("handle_cmd"));
  Raise(Named("E_PIKE_BLOCKED", {{"ip", Str("192.168.2.11")}}));
  ASSERT_TRUE(peer->WaitForMessages(1, kWait));
  EXPECT_EQ(peer->Received(), R"({"jsonrpc":"2.0","method":"handle_cmd","params":)"
                              R"({"opensips_event":"E_PIKE_BLOCKED","ip":"192.168.2.11"}})");
}

TEST_F(GrpcE2eTest, OneEventFansOutToFiftyPeers) {
  std::vector<std::unique_ptr<JsonRpcPeer>> peers;
  for (int i = 0; i < 50; ++i) {
    peers.push_back(StartPeer());
    Subscribe("E_FAN", peers.back()->socket());
  }
  auto resp = Raise(Named("E_FAN", {{"n", Num(1)}}));
  // Compact: 50 QUEUED counted, none listed; every count present.
  EXPECT_THAT(resp.deliveries(), SizeIs(0));
  EXPECT_EQ(resp.subscribers(), 50u);
  EXPECT_TRUE(resp.has_queued() && resp.has_ok() && resp.has_failed());
  EXPECT_EQ(resp.queued(), 50u);
  EXPECT_EQ(resp.ok(), 0u);
  EXPECT_EQ(resp.failed(), 0u);
  // all_deliveries: one QUEUED delivery per target, named, in subscription order.
  v1::RaiseRequest all = Named("E_FAN", {{"n", Num(2)}});
  all.set_all_deliveries(true);
  auto every = Raise(all);
  ASSERT_THAT(every.deliveries(), SizeIs(50));
  EXPECT_EQ(every.queued(), 50u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(every.deliveries(i).status(), v1::DELIVERY_STATUS_QUEUED);
    EXPECT_EQ(every.deliveries(i).socket(), peers[i]->socket());
    EXPECT_FALSE(every.deliveries(i).subscription_id().empty());
  }
  for (auto& peer : peers) {
    ASSERT_TRUE(peer->WaitForMessages(2, kWait));
    EXPECT_EQ(peer->Received(), R"({"jsonrpc":"2.0","method":"E_FAN","params":{"n":1}})"
                                R"({"jsonrpc":"2.0","method":"E_FAN","params":{"n":2}})");
  }
}

TEST_F(GrpcE2eTest, TwoEventsToOnePeerArriveBackToBackOnOneConnection) {
  auto peer = StartPeer();
  Subscribe("E_A", peer->socket());
  Subscribe("E_B", peer->socket());
  Raise(Named("E_A", {{"i", Num(1)}}));
  Raise(Named("E_B", {{"i", Num(2)}}));
  ASSERT_TRUE(peer->WaitForMessages(2, kWait));
  EXPECT_EQ(peer->Received(), R"({"jsonrpc":"2.0","method":"E_A","params":{"i":1}})"
                              R"({"jsonrpc":"2.0","method":"E_B","params":{"i":2}})");
  EXPECT_EQ(peer->connections_accepted(), 1);
}

TEST_F(GrpcE2eTest, MisbehavingTargetsLeaveOtherPeersUnaffected) {
  auto no_read = StartPeer(PeerMode::kNoRead, /*receive_buffer_bytes=*/4096);
  auto closer = StartPeer(PeerMode::kCloseAfterRead);
  std::vector<std::unique_ptr<JsonRpcPeer>> good;
  for (int i = 0; i < 3; ++i) good.push_back(StartPeer());
  Subscribe("E_MIX", no_read->socket());
  Subscribe("E_MIX", closer->socket());
  Subscribe("E_MIX", absl::StrCat("tcp:127.0.0.1:", testing::ClosedPort()));
  for (auto& p : good) Subscribe("E_MIX", p->socket());

  // Enough bytes to fill the non-reading peer's socket buffers many times over.
  const std::string padding(2000, 'x');
  constexpr int kEvents = 300;
  absl::Duration slowest;
  for (int i = 0; i < kEvents; ++i) {
    absl::Time start = absl::Now();
    auto resp = Raise(Named("E_MIX", {{"i", Num(i)}, {"pad", Str(padding)}}));
    slowest = std::max(slowest, absl::Now() - start);
    ASSERT_EQ(resp.subscribers(), 6u);
  }
  // Raise never waits on a target: no call took anywhere near a network timeout.
  EXPECT_LT(slowest, absl::Milliseconds(500));
  for (auto& p : good) {
    ASSERT_TRUE(p->WaitForMessages(kEvents, kWait)) << p->message_count();
    auto messages = p->Messages();
    EXPECT_THAT(messages.back(), HasSubstr(absl::StrCat("\"i\":", kEvents - 1, ",")));
  }
}

TEST_F(GrpcE2eTest, QueueFullIsReportedAtOnceForThatTargetOnly) {
  service::ServerConfig config;
  config.pool.max_queue_messages = 5;
  config.timeout = absl::Seconds(5);
  StartServer(config);
  auto stuck = StartPeer(PeerMode::kNoRead, /*receive_buffer_bytes=*/4096);
  auto good = StartPeer();
  Subscribe("E_Q", stuck->socket());
  Subscribe("E_Q", good->socket());
  const std::string padding(20000, 'y');
  bool saw_full = false;
  for (int i = 0; i < 200 && !saw_full; ++i) {
    auto resp = Raise(Named("E_Q", {{"pad", Str(padding)}}));
    // Compact: only what was refused is listed; the counts cover both targets.
    EXPECT_EQ(resp.subscribers(), 2u);
    EXPECT_EQ(resp.queued() + resp.failed(), 2u);
    ASSERT_EQ(resp.deliveries_size(), static_cast<int>(resp.failed()));
    for (const auto& d : resp.deliveries()) {
      EXPECT_NE(d.socket(), good->socket()) << "the healthy target was refused";
      if (d.status() == v1::DELIVERY_STATUS_QUEUE_FULL) {
        saw_full = true;
      }
    }
  }
  EXPECT_TRUE(saw_full);
}

TEST_F(GrpcE2eTest, RestartedPeerGetsLaterEventsAgain) {
  auto peer = StartPeer();
  const uint16_t port = peer->port();
  Subscribe("E_R", peer->socket());
  Raise(Named("E_R", {{"n", Num(1)}}));
  ASSERT_TRUE(peer->WaitForMessages(1, kWait));
  peer->Stop();
  ASSERT_TRUE(peer->Restart().ok());
  ASSERT_EQ(peer->port(), port);
  // The old connection is dead; the next events reconnect.
  bool arrived = false;
  for (int i = 0; i < 100 && !arrived; ++i) {
    Raise(Named("E_R", {{"n", Num(2)}}));
    arrived = peer->WaitForMessages(2, absl::Milliseconds(100));
  }
  ASSERT_TRUE(arrived);
  EXPECT_THAT(peer->Messages().back(), HasSubstr("\"n\":2"));
}

TEST_F(GrpcE2eTest, ExpiryStopsDeliveriesAtItsInstant) {
  auto peer = StartPeer();
  v1::Subscription sub = Subscribe("E_EXP", peer->socket(), /*expire=*/1);
  ASSERT_TRUE(sub.has_expire_time());
  EXPECT_EQ(Raise(Named("E_EXP", {})).subscribers(), 1u);
  // The timer removes it at its instant: poll the listing with a deadline.
  absl::Time expire = absl::FromUnixSeconds(sub.expire_time().seconds()) +
                      absl::Nanoseconds(sub.expire_time().nanos());
  absl::Time deadline = expire + absl::Seconds(2);
  bool gone = false;
  while (!gone && absl::Now() < deadline) {
    v1::ListSubscriptionsRequest req;
    req.set_event("E_EXP");
    auto list = client_->ListSubscriptions(req);
    ASSERT_TRUE(list.ok());
    gone = list->subscriptions().empty();
    if (!gone) absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(gone);
  EXPECT_GE(absl::Now(), expire);
  EXPECT_EQ(Raise(Named("E_EXP", {})).subscribers(), 0u);
}

TEST_F(GrpcE2eTest, UnsubscribeStopsDeliveriesAtOnce) {
  auto peer = StartPeer();
  v1::Subscription sub = Subscribe("E_U", peer->socket());
  v1::UnsubscribeRequest req;
  req.set_id(sub.id());
  auto removed = client_->Unsubscribe(req);
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(removed->removed(), 1u);
  EXPECT_EQ(Raise(Named("E_U", {})).subscribers(), 0u);
  // Idempotent.
  removed = client_->Unsubscribe(req);
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(removed->removed(), 0u);
  EXPECT_EQ(peer->message_count(), 0u);
}

TEST_F(GrpcE2eTest, BadSocketIsInvalidArgumentNamingIt) {
  v1::SubscribeRequest req;
  req.set_event("E");
  req.set_socket("tcp:h:70000");
  auto resp = client_->Subscribe(req);
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(resp.status().message(), HasSubstr("socket \"tcp:h:70000\": port out of range"));
}

TEST_F(GrpcE2eTest, GracefulShutdownDrainsQueuedDeliveries) {
  service::ServerConfig config;
  config.timeout = absl::Seconds(20);  // queued events must not expire while they wait
  StartServer(config);
  auto peer = StartPeer(PeerMode::kNoRead, /*receive_buffer_bytes=*/4096);
  Subscribe("E_DRAIN", peer->socket());
  // 12 MB: more than the kernel buffers of a loopback connection hold (tcp_wmem's maximum is
  // 4 MB), so most of it waits in EventBus's queue when the shutdown starts.
  const std::string padding(30000, 'd');
  constexpr int kEvents = 400;
  for (int i = 0; i < kEvents; ++i) {
    auto resp = Raise(Named("E_DRAIN", {{"i", Num(i)}, {"pad", Str(padding)}}));
    ASSERT_EQ(resp.queued(), 1u);
  }
  auto stats = server_->pool()->AllStats();
  ASSERT_THAT(stats, SizeIs(1));
  ASSERT_GT(stats[0].queued_messages, 100u) << "the test needs events still queued at shutdown";
  // Shutdown waits for the queue; the peer starts reading only once it has begun.
  std::thread shutdown([this] { server_->Shutdown(absl::Seconds(20)); });
  absl::SleepFor(absl::Milliseconds(100));  // lets the shutdown start first; not a race guard
  peer->SetMode(PeerMode::kReplyResult);
  shutdown.join();
  // What was written before the connection closed still reaches the peer.
  EXPECT_TRUE(peer->WaitForMessages(kEvents, kWait)) << peer->message_count();
  EXPECT_THAT(peer->Messages().back(), HasSubstr(absl::StrCat("\"i\":", kEvents - 1, ",")));
}

// --- sync mode (issue: Sync mode) ---

TEST_F(GrpcE2eTest, SyncOkCarriesTheRawResult) {
  auto peer = StartPeer();
  PeerBehavior b;
  b.result_json = R"({"accepted":true,"n":[1,2]})";
  peer->SetBehavior(b);
  Subscribe("E_S", peer->socket());
  auto resp = RaiseSync("E_S", 1000);
  ASSERT_THAT(resp.deliveries(), SizeIs(1));
  EXPECT_EQ(resp.deliveries(0).status(), v1::DELIVERY_STATUS_OK);
  EXPECT_EQ(resp.deliveries(0).result(), R"({"accepted":true,"n":[1,2]})");
  EXPECT_THAT(peer->Received(), HasSubstr(R"(,"jsonrpc":"2.0","method":"E_S"})"));
  EXPECT_EQ(peer->Received().rfind("{\"id\":", 0), 0u) << "the id member comes first";
}

TEST_F(GrpcE2eTest, SyncRpcErrorCarriesCodeAndMessage) {
  auto peer = StartPeer(PeerMode::kReplyError);
  Subscribe("E_S", peer->socket());
  auto resp = RaiseSync("E_S", 1000);
  ASSERT_THAT(resp.deliveries(), SizeIs(1));
  EXPECT_EQ(resp.deliveries(0).status(), v1::DELIVERY_STATUS_RPC_ERROR);
  EXPECT_EQ(resp.deliveries(0).error().code(), -32000);
  EXPECT_EQ(resp.deliveries(0).error().message(), "peer error");
}

TEST_F(GrpcE2eTest, SyncNoReplyTimesOutCloseToTheTimeout) {
  auto peer = StartPeer(PeerMode::kNeverReply);
  Subscribe("E_S", peer->socket());
  absl::Time start = absl::Now();
  auto resp = RaiseSync("E_S", 300);
  absl::Duration took = absl::Now() - start;
  ASSERT_THAT(resp.deliveries(), SizeIs(1));
  EXPECT_EQ(resp.deliveries(0).status(), v1::DELIVERY_STATUS_TIMEOUT);
  EXPECT_GE(took, absl::Milliseconds(295));
  EXPECT_LT(took, absl::Milliseconds(450));
}

TEST_F(GrpcE2eTest, SyncPeerClosingAfterReadIsConnectionLost) {
  auto peer = StartPeer(PeerMode::kCloseAfterRead);
  Subscribe("E_S", peer->socket());
  auto resp = RaiseSync("E_S", 1000);
  ASSERT_THAT(resp.deliveries(), SizeIs(1));
  EXPECT_EQ(resp.deliveries(0).status(), v1::DELIVERY_STATUS_CONNECTION_LOST);
}

TEST_F(GrpcE2eTest, SyncGarbageIsBadReplyAndTheNextRaiseWorks) {
  auto peer = StartPeer(PeerMode::kGarbage);
  Subscribe("E_S", peer->socket());
  auto bad = RaiseSync("E_S", 1000);
  ASSERT_THAT(bad.deliveries(), SizeIs(1));
  EXPECT_EQ(bad.deliveries(0).status(), v1::DELIVERY_STATUS_BAD_REPLY);
  peer->SetMode(PeerMode::kReplyResult);
  auto good = RaiseSync("E_S", 1000);
  ASSERT_THAT(good.deliveries(), SizeIs(1));
  EXPECT_EQ(good.deliveries(0).status(), v1::DELIVERY_STATUS_OK) << good.deliveries(0).detail();
}

TEST_F(GrpcE2eTest, SyncNothingListeningIsConnectFailed) {
  Subscribe("E_S", absl::StrCat("tcp:127.0.0.1:", testing::ClosedPort()));
  auto resp = RaiseSync("E_S", 300);
  ASSERT_THAT(resp.deliveries(), SizeIs(1));
  EXPECT_EQ(resp.deliveries(0).status(), v1::DELIVERY_STATUS_CONNECT_FAILED);
  EXPECT_THAT(resp.deliveries(0).detail(), HasSubstr("refused"));
}

TEST_F(GrpcE2eTest, SyncUnresolvableHostIsResolveFailed) {
  Subscribe("E_S", "tcp:no-such-host.invalid:8080");
  auto resp = RaiseSync("E_S", 2000);
  ASSERT_THAT(resp.deliveries(), SizeIs(1));
  EXPECT_EQ(resp.deliveries(0).status(), v1::DELIVERY_STATUS_RESOLVE_FAILED);
}

TEST_F(GrpcE2eTest, TenTargetsThreeMisbehavingSevenOkWithinTheTimeout) {
  std::vector<std::unique_ptr<JsonRpcPeer>> good;
  for (int i = 0; i < 7; ++i) {
    good.push_back(StartPeer());
    Subscribe("E_TEN", good.back()->socket());
  }
  auto silent = StartPeer(PeerMode::kNeverReply);
  auto garbage = StartPeer(PeerMode::kGarbage);
  Subscribe("E_TEN", silent->socket());
  Subscribe("E_TEN", garbage->socket());
  Subscribe("E_TEN", absl::StrCat("tcp:127.0.0.1:", testing::ClosedPort()));
  absl::Time start = absl::Now();
  auto resp = RaiseSync("E_TEN", 500);
  absl::Duration took = absl::Now() - start;
  ASSERT_THAT(resp.deliveries(), SizeIs(10));
  int ok = 0;
  for (const auto& d : resp.deliveries()) ok += d.status() == v1::DELIVERY_STATUS_OK;
  EXPECT_EQ(ok, 7);
  EXPECT_LT(took, absl::Milliseconds(500 + 150));
}

TEST_F(GrpcE2eTest, ThousandConcurrentSyncRaisesAreEachMatchedToTheirOwnReply) {
  // The peer answers in reverse order, in batches, echoing each request's params as its result.
  auto peer = StartPeer();
  PeerBehavior b;
  b.mode = PeerMode::kCustom;
  b.reverse_batch = 10;
  b.responder = [](absl::string_view message, absl::string_view id) -> std::optional<std::string> {
    if (id.empty()) return std::nullopt;
    size_t at = message.find("\"params\":");
    std::string params(message.substr(at + 9, message.size() - at - 9 - 1));
    return absl::StrCat(R"({"jsonrpc":"2.0","id":)", id, R"(,"result":)", params, "}");
  };
  peer->SetBehavior(b);
  Subscribe("E_P", peer->socket());

  constexpr int kCalls = 1000;
  struct Call {
    grpc::ClientContext ctx;
    v1::RaiseRequest req;
    v1::RaiseResponse resp;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Call>> calls;
  eventbus::Mutex mu;
  int done = 0;
  for (int i = 0; i < kCalls; ++i) {
    auto call = std::make_unique<Call>();
    call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    call->req = Named("E_P", {{"n", Num(i)}});
    call->req.set_sync(true);
    call->req.set_timeout_ms(20000);
    calls.push_back(std::move(call));
  }
  for (auto& call : calls) {
    Call* c = call.get();
    client_->stub()->async()->Raise(&c->ctx, &c->req, &c->resp, [&, c](grpc::Status s) {
      c->status = std::move(s);
      eventbus::MutexLock lock(&mu);
      ++done;
    });
  }
  {
    eventbus::MutexLock lock(&mu);
    auto all_done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return done == kCalls; };
    ASSERT_TRUE(mu.AwaitWithTimeout(all_done, absl::Seconds(60)));
  }
  int matched = 0;
  for (int i = 0; i < kCalls; ++i) {
    const Call& c = *calls[i];
    ASSERT_TRUE(c.status.ok()) << c.status.error_message();
    ASSERT_THAT(c.resp.deliveries(), SizeIs(1));
    const auto& d = c.resp.deliveries(0);
    ASSERT_EQ(d.status(), v1::DELIVERY_STATUS_OK) << i << ": " << d.detail();
    matched += d.result() == absl::StrCat(R"({"n":)", i, "}");
  }
  EXPECT_EQ(matched, kCalls);
  EXPECT_EQ(peer->connections_accepted(), 1);
}

TEST_F(GrpcE2eTest, SyncRaiseAnswersBeforeTheCallersDeadline) {
  auto peer = StartPeer(PeerMode::kNeverReply);
  Subscribe("E_S", peer->socket());
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(400)));
  v1::RaiseRequest req;
  req.set_event("E_S");
  req.set_sync(true);
  req.set_timeout_ms(10000);
  v1::RaiseResponse resp;
  grpc::Status status = client_->stub()->Raise(&ctx, req, &resp);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_THAT(resp.deliveries(), SizeIs(1));
  EXPECT_EQ(resp.deliveries(0).status(), v1::DELIVERY_STATUS_TIMEOUT);
}

TEST_F(GrpcE2eTest, ServerSyncModeIsTheDefaultForRaisesThatDoNotSay) {
  service::ServerConfig config;
  config.sync_mode = true;
  StartServer(config);
  auto peer = StartPeer();
  Subscribe("E_S", peer->socket());
  auto resp = Raise(Named("E_S", {}));
  ASSERT_THAT(resp.deliveries(), SizeIs(1));
  EXPECT_EQ(resp.deliveries(0).status(), v1::DELIVERY_STATUS_OK);
}

TEST_F(GrpcE2eTest, FailoverGroupReachesTheFirstMemberThatAnswers) {
  auto good = StartPeer();
  std::string dead = absl::StrCat("tcp:127.0.0.1:", testing::ClosedPort());
  Subscribe("E_V", absl::StrCat("virtual:FAILOVER ", dead, " ", good->socket()));
  auto resp = RaiseSync("E_V", 1000);
  ASSERT_THAT(resp.deliveries(), SizeIs(1));
  const auto& d = resp.deliveries(0);
  EXPECT_EQ(d.status(), v1::DELIVERY_STATUS_OK) << d.detail();
  ASSERT_THAT(d.attempts(), SizeIs(2));
  EXPECT_EQ(d.attempts(0).member(), dead);
  EXPECT_EQ(d.attempts(0).status(), v1::DELIVERY_STATUS_CONNECT_FAILED);
  EXPECT_EQ(d.attempts(1).member(), good->socket());
  EXPECT_EQ(d.attempts(1).status(), v1::DELIVERY_STATUS_OK);
  EXPECT_EQ(good->message_count(), 1u);
}

}  // namespace
}  // namespace eventbus
