// RaiseStream through the real gRPC API: EventBusServer in-process (memory store, port 0), the C++
// client's RaiseStream, and loopback JSON-RPC peers that record every byte. Covers the order of
// deliveries (async and sync, in one message and across messages), per-event errors that leave the
// stream running, the per-message event limit, flow control (a full target queue, bounded sync
// pipelining, a sender that never reads its answers), cancellation and the stream's deadline.
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "eventbus/v1/eventbus.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/service/eventbus_service.h"
#include "server/service/server.h"
#include "tests/testing/jsonrpc_peer.h"
#include "tests/testing/wait.h"

namespace eventbus::service {
namespace {

namespace v1 = ::eventbus::v1;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr absl::Duration kWait = absl::Seconds(30);

// Event `event` with params {"n":N} given as JSON text, so the wire bytes are known exactly.
v1::RaiseRequest Event(const std::string& event, int n, std::optional<bool> sync = std::nullopt) {
  v1::RaiseRequest request;
  request.set_event(event);
  request.set_json(absl::StrCat(R"({"n":)", n, "}"));
  if (sync.has_value()) request.set_sync(*sync);
  return request;
}

// The notification EventBus writes for Event(event, n).
std::string Notification(const std::string& event, int n) {
  return absl::StrCat(R"({"jsonrpc":"2.0","method":")", event, R"(","params":{"n":)", n, "}}");
}

// A request as the peer records it, without its leading `"id":N,` (ids are the connection's).
std::string WithoutId(const std::string& message) {
  if (!absl::StartsWith(message, R"({"id":)")) return message;
  return absl::StrCat("{", message.substr(message.find(',') + 1));
}

// Polls `condition` until it holds (for figures only the server's own counters show; no sleep
// decides an outcome).
template <typename Condition>
bool Eventually(Condition condition) {
  return eventbus::testing::WaitFor(kWait, condition, absl::Milliseconds(2));
}

class RaiseStreamTest : public ::testing::Test {
 protected:
  static ServerConfig DefaultConfig() {
    ServerConfig config;
    config.listen = "127.0.0.1:0";
    config.store = "memory";
    config.pool.num_loops = 2;
    return config;
  }

  void SetUp() override { StartServer(DefaultConfig()); }

  void StartServer(const ServerConfig& config) {
    client_.reset();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(2));
    auto server = EventBusServer::Start(config);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto client = client::Client::Connect(server_->address());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  void TearDown() override {
    client_.reset();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(2));
  }

  void Subscribe(const std::string& event, const std::string& socket) {
    v1::SubscribeRequest request;
    request.set_event(event);
    request.set_socket(socket);
    ASSERT_TRUE(client_->Subscribe(request).ok());
  }

  // Queued plus outstanding messages of `peer`'s connection.
  size_t Held(const testing::JsonRpcPeer& peer) {
    std::optional<net::TargetStats> stats =
        server_->pool()->Stats(absl::StrCat("127.0.0.1:", peer.port()));
    return stats ? stats->queued_messages + stats->outstanding_requests : 0;
  }

  std::unique_ptr<EventBusServer> server_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(RaiseStreamTest, AsyncEventsReachTheTargetInOrderInABatchAndAcrossMessages) {
  auto peer = testing::JsonRpcPeer::Start();
  ASSERT_TRUE(peer.ok()) << peer.status();
  Subscribe("E", (*peer)->socket());
  std::unique_ptr<client::RaiseStream> stream = client_->OpenRaiseStream(kWait);
  // One batch of 100, then 100 messages of one event each, then another batch.
  std::vector<std::string> expected;
  v1::RaiseStreamRequest batch;
  int n = 0;
  for (int i = 0; i < 100; ++i, ++n) {
    *batch.add_events() = Event("E", n, false);
    expected.push_back(Notification("E", n));
  }
  ASSERT_TRUE(stream->Write(batch));
  for (int i = 0; i < 100; ++i, ++n) {
    v1::RaiseStreamRequest one;
    *one.add_events() = Event("E", n, false);
    expected.push_back(Notification("E", n));
    ASSERT_TRUE(stream->Write(one));
  }
  batch.Clear();
  for (int i = 0; i < 50; ++i, ++n) {
    *batch.add_events() = Event("E", n, false);
    expected.push_back(Notification("E", n));
  }
  ASSERT_TRUE(stream->Write(batch));
  ASSERT_TRUE(stream->WritesDone());

  // One answer per message, in order, one result per event.
  std::vector<int> sizes;
  v1::RaiseStreamResponse response;
  while (stream->Read(&response)) {
    sizes.push_back(response.results_size());
    for (const v1::RaiseStreamResult& result : response.results()) {
      ASSERT_TRUE(result.has_response()) << result.ShortDebugString();
      EXPECT_EQ(result.response().subscribers(), 1u);
      EXPECT_EQ(result.response().queued(), 1u);
    }
  }
  EXPECT_TRUE(stream->Finish().ok());
  ASSERT_EQ(sizes.size(), 102u);
  EXPECT_EQ(sizes.front(), 100);
  EXPECT_EQ(sizes[1], 1);
  EXPECT_EQ(sizes.back(), 50);

  ASSERT_TRUE((*peer)->WaitForMessages(expected.size(), kWait));
  EXPECT_EQ((*peer)->Messages(), expected);
  // Byte-exact: nothing but the notifications, back to back.
  std::string all;
  for (const std::string& m : expected) all += m;
  EXPECT_EQ((*peer)->Received(), all);
}

TEST_F(RaiseStreamTest, SyncEventsAreAnsweredAndDeliveredInOrderToEveryTarget) {
  std::vector<std::unique_ptr<testing::JsonRpcPeer>> peers;
  for (int p = 0; p < 2; ++p) {
    testing::JsonRpcPeer::Options options;
    // Out of order replies on the wire must not reorder the answers.
    options.behavior.reverse_batch = 3;
    auto peer = testing::JsonRpcPeer::Start(options);
    ASSERT_TRUE(peer.ok()) << peer.status();
    Subscribe("S", (*peer)->socket());
    peers.push_back(*std::move(peer));
  }
  std::unique_ptr<client::RaiseStream> stream = client_->OpenRaiseStream(kWait);
  std::vector<std::string> expected;
  // Batches of 3 (so the reversing peers release every batch), sync and async mixed.
  constexpr int kMessages = 20;
  for (int m = 0; m < kMessages; ++m) {
    v1::RaiseStreamRequest batch;
    for (int k = 0; k < 3; ++k) {
      const int n = m * 3 + k;
      v1::RaiseRequest event = Event("S", n, true);
      event.set_timeout_ms(20000);
      *batch.add_events() = event;
      expected.push_back(Notification("S", n));
    }
    ASSERT_TRUE(stream->Write(batch));
  }
  ASSERT_TRUE(stream->WritesDone());
  int answers = 0;
  v1::RaiseStreamResponse response;
  while (stream->Read(&response)) {
    ASSERT_EQ(response.results_size(), 3);
    for (const v1::RaiseStreamResult& result : response.results()) {
      ASSERT_TRUE(result.has_response()) << result.ShortDebugString();
      ASSERT_EQ(result.response().deliveries_size(), 2);
      for (const v1::Delivery& d : result.response().deliveries()) {
        EXPECT_EQ(d.status(), v1::DELIVERY_STATUS_OK) << d.detail();
      }
    }
    ++answers;
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(answers, kMessages);
  for (auto& peer : peers) {
    ASSERT_TRUE(peer->WaitForMessages(expected.size(), kWait));
    std::vector<std::string> got;
    for (const std::string& m : peer->Messages()) got.push_back(WithoutId(m));
    EXPECT_EQ(got, expected);
  }
}

// Async events go to the dispatcher in batches, sync ones one by one: in a message that mixes
// them, of several names, every target still gets the events in the order they were sent.
TEST_F(RaiseStreamTest, MixedSyncAndAsyncEventsOfSeveralNamesArriveInOrder) {
  std::vector<std::unique_ptr<testing::JsonRpcPeer>> peers;
  for (int p = 0; p < 2; ++p) {
    auto peer = testing::JsonRpcPeer::Start();
    ASSERT_TRUE(peer.ok()) << peer.status();
    peers.push_back(*std::move(peer));
  }
  Subscribe("A", peers[0]->socket());
  Subscribe("A", peers[1]->socket());
  Subscribe("B", peers[0]->socket());
  Subscribe("S", peers[0]->socket());
  Subscribe("S", peers[1]->socket());
  std::unique_ptr<client::RaiseStream> stream = client_->OpenRaiseStream(kWait);
  // Per message: A A B S A B A S A (S sync); B goes to the first peer only.
  const std::string pattern = "AABSABASA";
  std::vector<std::string> expected[2];
  constexpr int kMessages = 10;
  int n = 0;
  for (int m = 0; m < kMessages; ++m) {
    v1::RaiseStreamRequest message;
    for (char c : pattern) {
      const std::string name(1, c);
      v1::RaiseRequest event = Event(name, n, c == 'S');
      if (c == 'S') event.set_timeout_ms(20000);
      *message.add_events() = event;
      expected[0].push_back(Notification(name, n));
      if (c != 'B') expected[1].push_back(Notification(name, n));
      ++n;
    }
    ASSERT_TRUE(stream->Write(message));
  }
  ASSERT_TRUE(stream->WritesDone());
  int answers = 0;
  v1::RaiseStreamResponse response;
  while (stream->Read(&response)) {
    ASSERT_EQ(response.results_size(), static_cast<int>(pattern.size()));
    for (int i = 0; i < response.results_size(); ++i) {
      const v1::RaiseStreamResult& result = response.results(i);
      ASSERT_TRUE(result.has_response()) << result.ShortDebugString();
      const uint32_t subscribers = pattern[i] == 'B' ? 1 : 2;
      EXPECT_EQ(result.response().subscribers(), subscribers) << "event " << i;
      if (pattern[i] == 'S') {
        EXPECT_EQ(result.response().ok(), 2u) << result.ShortDebugString();
      } else {
        EXPECT_EQ(result.response().queued(), subscribers) << result.ShortDebugString();
      }
    }
    ++answers;
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(answers, kMessages);
  for (int p = 0; p < 2; ++p) {
    ASSERT_TRUE(peers[p]->WaitForMessages(expected[p].size(), kWait));
    std::vector<std::string> got;
    for (const std::string& message : peers[p]->Messages()) got.push_back(WithoutId(message));
    EXPECT_EQ(got, expected[p]) << "peer " << p;
  }
}

TEST_F(RaiseStreamTest, ABadEventGetsItsOwnErrorAndTheStreamGoesOn) {
  auto peer = testing::JsonRpcPeer::Start();
  ASSERT_TRUE(peer.ok()) << peer.status();
  Subscribe("E", (*peer)->socket());
  std::unique_ptr<client::RaiseStream> stream = client_->OpenRaiseStream(kWait);
  v1::RaiseStreamRequest batch;
  *batch.add_events() = Event("E", 0, false);
  *batch.add_events() = Event("bad name!", 1, false);
  v1::RaiseRequest utf8 = Event("E", 2, false);
  v1::Param* p = utf8.mutable_named()->add_params();
  p->set_name("x");
  p->mutable_value()->set_string_value("\xff\xfe not UTF-8");  // C++ protobuf sends it anyway
  *batch.add_events() = utf8;
  v1::RaiseRequest timeout = Event("E", 3, true);
  timeout.set_timeout_ms(0);
  *batch.add_events() = timeout;
  *batch.add_events() = Event("E", 4, false);
  ASSERT_TRUE(stream->Write(batch));
  v1::RaiseStreamResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_EQ(response.results_size(), 5);
  EXPECT_TRUE(response.results(0).has_response());
  ASSERT_TRUE(response.results(1).has_error());
  EXPECT_EQ(response.results(1).error().code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(response.results(1).error().message(), StartsWith("event [1]: "));
  EXPECT_THAT(response.results(1).error().message(), HasSubstr("bad name!"));
  ASSERT_TRUE(response.results(2).has_error());
  EXPECT_EQ(response.results(2).error().code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(response.results(2).error().message(),
              StartsWith("event [2]: the event is not a valid eventbus.v1.RaiseRequest"));
  EXPECT_THAT(response.results(2).error().message(), HasSubstr("not valid UTF-8"));
  ASSERT_TRUE(response.results(3).has_error());
  EXPECT_EQ(response.results(3).error().message(),
            "event [3]: timeout_ms: 0 is outside 1..3600000");
  EXPECT_TRUE(response.results(4).has_response());

  // The stream goes on.
  v1::RaiseStreamRequest next;
  *next.add_events() = Event("E", 5, false);
  ASSERT_TRUE(stream->Write(next));
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_EQ(response.results_size(), 1);
  EXPECT_TRUE(response.results(0).has_response());
  // An empty message gets an empty answer.
  ASSERT_TRUE(stream->Write(v1::RaiseStreamRequest()));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.results_size(), 0);
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_TRUE(stream->Finish().ok());
  ASSERT_TRUE((*peer)->WaitForMessages(3, kWait));
  EXPECT_EQ((*peer)->Received(),
            absl::StrCat(Notification("E", 0), Notification("E", 4), Notification("E", 5)));
}

TEST_F(RaiseStreamTest, AMessageWithTooManyEventsEndsTheStreamAfterTheEarlierAnswers) {
  std::unique_ptr<client::RaiseStream> stream = client_->OpenRaiseStream(kWait);
  v1::RaiseStreamRequest first;
  *first.add_events() = Event("NOBODY", 0, false);
  ASSERT_TRUE(stream->Write(first));
  v1::RaiseStreamRequest huge;
  for (size_t i = 0; i <= EventBusServiceImpl::kStreamMaxEventsPerMessage; ++i) {
    huge.add_events()->set_event("NOBODY");
  }
  (void)stream->Write(huge);
  v1::RaiseStreamResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.results_size(), 1);
  EXPECT_FALSE(stream->Read(&response));
  absl::Status status = stream->Finish();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "raise_stream: message 2 has more than 10000 events; send them in several messages");
}

// A target whose queue is full gets QUEUE_FULL for each further event: the stream is answered,
// nothing piles up in the server.
TEST_F(RaiseStreamTest, EventsToAFullQueueGetQueueFullPerTarget) {
  ServerConfig config = DefaultConfig();
  // Above what a stream reads ahead (kStreamMaxUnqueuedEvents): a target that keeps up never
  // fills its queue, however fast the stream.
  constexpr size_t kQueue = EventBusServiceImpl::kStreamMaxUnqueuedEvents + 100;
  config.pool.max_queue_messages = kQueue;
  StartServer(config);
  testing::JsonRpcPeer::Options options;
  options.behavior.mode = testing::PeerMode::kNoRead;
  options.receive_buffer_bytes = 4096;
  auto stuck = testing::JsonRpcPeer::Start(options);
  ASSERT_TRUE(stuck.ok()) << stuck.status();
  Subscribe("E", (*stuck)->socket());
  std::unique_ptr<client::RaiseStream> stream = client_->OpenRaiseStream(kWait);
  // 12 MB of events of ~4 KiB: beyond the stuck target's queue and whatever its socket buffers
  // (up to 4 MiB) can hold.
  const std::string big(4000, 'x');
  constexpr int kMessages = 150, kPerMessage = 20;
  std::thread writer([&] {
    for (int m = 0; m < kMessages; ++m) {
      v1::RaiseStreamRequest batch;
      for (int k = 0; k < kPerMessage; ++k) {
        v1::RaiseRequest event;
        event.set_event("E");
        event.set_json(absl::StrCat(R"({"pad":")", big, R"("})"));
        event.set_sync(false);
        event.set_timeout_ms(60000);
        *batch.add_events() = event;
      }
      if (!stream->Write(batch)) return;
    }
    stream->WritesDone();
  });
  uint32_t queued = 0, failed = 0;
  int answers = 0;
  v1::RaiseStreamResponse response;
  while (stream->Read(&response)) {
    ++answers;
    for (const v1::RaiseStreamResult& r : response.results()) {
      ASSERT_TRUE(r.has_response());
      queued += r.response().queued();
      failed += r.response().failed();
      for (const v1::Delivery& d : r.response().deliveries()) {
        EXPECT_EQ(d.status(), v1::DELIVERY_STATUS_QUEUE_FULL) << d.detail();
        EXPECT_EQ(d.socket(), (*stuck)->socket());
      }
    }
  }
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(answers, kMessages);
  EXPECT_EQ(queued + failed, 1u * kMessages * kPerMessage);
  EXPECT_GT(failed, 0u);
  // The stuck target never holds more than its queue bound.
  EXPECT_LE(Held(**stuck), kQueue);
}

// Sync events are pipelined up to kStreamMaxSyncEvents; the server reads no further message
// until one answers. Cancelling the stream abandons those still waiting: nothing stays behind.
TEST_F(RaiseStreamTest, SyncEventsArePipelinedUpToTheBoundAndCancellingLeavesNothingBehind) {
  testing::JsonRpcPeer::Options options;
  options.behavior.mode = testing::PeerMode::kNeverReply;
  auto peer = testing::JsonRpcPeer::Start(options);
  ASSERT_TRUE(peer.ok()) << peer.status();
  Subscribe("E", (*peer)->socket());
  std::unique_ptr<client::RaiseStream> stream = client_->OpenRaiseStream(absl::Minutes(10));
  constexpr int kMessages = 200;
  for (int m = 0; m < kMessages; ++m) {
    v1::RaiseStreamRequest one;
    v1::RaiseRequest event = Event("E", m, true);
    event.set_timeout_ms(3600000);
    *one.add_events() = event;
    ASSERT_TRUE(stream->Write(one));  // small: gRPC's window takes them all
  }
  const size_t bound = EventBusServiceImpl::kStreamMaxSyncEvents;
  ASSERT_TRUE((*peer)->WaitForMessages(bound, kWait))
      << (*peer)->message_count() << " held " << Held(**peer);
  ASSERT_TRUE(Eventually([&] { return Held(**peer) == bound; }));
  // It stays there: no further message is read while 64 sync events wait.
  const absl::Time until = absl::Now() + absl::Milliseconds(300);
  while (absl::Now() < until) {
    ASSERT_EQ(Held(**peer), bound);
    ASSERT_EQ((*peer)->message_count(), bound);
    absl::SleepFor(absl::Milliseconds(10));
  }
  stream->Cancel();
  v1::RaiseStreamResponse response;
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_EQ(stream->Finish().code(), absl::StatusCode::kCancelled);
  // The abandoned requests are forgotten promptly, not after their hour.
  EXPECT_TRUE(Eventually([&] { return Held(**peer) == 0; })) << Held(**peer);
  EXPECT_EQ((*peer)->message_count(), bound);
}

// A sender that never reads its answers is held back by gRPC flow control: the server stops
// reading once kStreamMaxUnwritten answers wait to be written, so the sender's writes stall.
TEST_F(RaiseStreamTest, ASenderThatNeverReadsItsAnswersStalls) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);  // a fixed window: the stall comes sooner
  auto channel =
      grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args);
  auto stub = v1::EventBusService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Minutes(2)));
  auto stream = stub->RaiseStream(&context);
  constexpr int kMessages = 1000000;
  std::atomic<int> written{0};
  std::thread writer([&] {
    v1::RaiseStreamRequest batch;
    for (int k = 0; k < 100; ++k) batch.add_events()->set_event("NOBODY");
    for (int m = 0; m < kMessages; ++m) {
      if (!stream->Write(batch)) return;
      written.fetch_add(1);
    }
  });
  // Stalled: no write completes for a whole second (bounded by the test's 30 s).
  int last = -1;
  absl::Time still_since = absl::Now();
  const absl::Time give_up = absl::Now() + kWait;
  while (absl::Now() < give_up) {
    const int now = written.load();
    if (now != last) {
      last = now;
      still_since = absl::Now();
    } else if (absl::Now() - still_since > absl::Seconds(1)) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_LT(written.load(), kMessages);
  EXPECT_GT(written.load(), 0);
  EXPECT_LT(absl::Now(), give_up) << "the writes never stalled: " << written.load();
  context.TryCancel();
  writer.join();
  (void)stream->Finish();
}

TEST_F(RaiseStreamTest, AStreamPastItsDeadlineEnds) {
  testing::JsonRpcPeer::Options options;
  options.behavior.mode = testing::PeerMode::kNeverReply;
  auto peer = testing::JsonRpcPeer::Start(options);
  ASSERT_TRUE(peer.ok()) << peer.status();
  Subscribe("E", (*peer)->socket());
  std::unique_ptr<client::RaiseStream> stream = client_->OpenRaiseStream(absl::Milliseconds(800));
  v1::RaiseStreamRequest one;
  v1::RaiseRequest event = Event("E", 0, true);
  event.set_timeout_ms(60000);
  *one.add_events() = event;
  ASSERT_TRUE(stream->Write(one));
  // The sync event answers before the stream's deadline (TIMEOUT), as a unary Raise would.
  v1::RaiseStreamResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_EQ(response.results_size(), 1);
  ASSERT_TRUE(response.results(0).has_response());
  ASSERT_EQ(response.results(0).response().deliveries_size(), 1);
  EXPECT_EQ(response.results(0).response().deliveries(0).status(), v1::DELIVERY_STATUS_TIMEOUT);
  // Then the stream ends at its deadline, though the client never half-closed.
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_EQ(stream->Finish().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(Eventually([&] { return Held(**peer) == 0; }));
}

}  // namespace
}  // namespace eventbus::service
