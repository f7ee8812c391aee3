// Self-test of the loopback JSON-RPC peer (tests/testing/jsonrpc_peer.h) with plain sockets, so
// the net/delivery tests that rely on it can trust what it does.
#include "tests/testing/jsonrpc_peer.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ports.h"

namespace eventbus::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr absl::Duration kTimeout = absl::Seconds(10);

const char kRequest1[] = R"({"id":1,"jsonrpc":"2.0","method":"E","params":{"s":"{[\"}"}})";
const char kRequest2[] = R"({"id":2,"jsonrpc":"2.0","method":"E"})";
const char kNotification[] = R"({"jsonrpc":"2.0","method":"N","params":[1]})";

// A plain blocking-free client socket with bounded reads.
class Client {
 public:
  static std::unique_ptr<Client> Connect(uint16_t port, bool ipv6 = false) {
    auto client = std::make_unique<Client>();
    client->fd_ = ::socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc;
    if (ipv6) {
      sockaddr_in6 addr{};
      addr.sin6_family = AF_INET6;
      addr.sin6_addr = in6addr_loopback;
      addr.sin6_port = htons(port);
      rc = ::connect(client->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    } else {
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(port);
      rc = ::connect(client->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    }
    client->connect_errno_ = rc == 0 ? 0 : errno;
    return client;
  }

  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }

  int connect_errno() const { return connect_errno_; }
  int fd() const { return fd_; }

  bool Send(absl::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads until `n` bytes arrived in total, EOF, an error, or the deadline.
  std::string ReadAtLeast(size_t n, absl::Duration timeout = kTimeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (buffer_.size() < n && !eof_) {
      if (!ReadOnce(deadline)) break;
    }
    return buffer_;
  }

  // Reads until EOF or error (true), or the deadline (false).
  bool ReadUntilClosed(absl::Duration timeout = kTimeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!eof_) {
      if (!ReadOnce(deadline)) break;
    }
    return eof_;
  }

  int reads() const { return reads_; }

 private:
  bool ReadOnce(absl::Time deadline) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) return false;
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) {
      eof_ = true;  // EOF or reset
      return false;
    }
    ++reads_;
    buffer_.append(buf, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  int connect_errno_ = 0;
  std::string buffer_;
  bool eof_ = false;
  int reads_ = 0;
};

std::unique_ptr<JsonRpcPeer> StartPeer(PeerBehavior behavior = {}) {
  JsonRpcPeer::Options options;
  options.behavior = std::move(behavior);
  absl::StatusOr<std::unique_ptr<JsonRpcPeer>> peer = JsonRpcPeer::Start(options);
  EXPECT_TRUE(peer.ok()) << peer.status();
  return peer.ok() ? std::move(*peer) : nullptr;
}

PeerBehavior WithMode(PeerMode mode) {
  PeerBehavior behavior;
  behavior.mode = mode;
  return behavior;
}

const std::string kTwoRequests = absl::StrCat(kRequest1, kNotification, kRequest2);

TEST(JsonRpcPeerTest, RepliesResultToEachRequestAndRecordsEverything) {
  auto peer = StartPeer();
  ASSERT_NE(peer, nullptr);
  EXPECT_NE(peer->port(), 0);
  EXPECT_EQ(peer->socket(), absl::StrCat("tcp:127.0.0.1:", peer->port()));
  EXPECT_EQ(peer->socket("m"), absl::StrCat("tcp:127.0.0.1:", peer->port(), "/m"));

  auto client = Client::Connect(peer->port());
  ASSERT_EQ(client->connect_errno(), 0);
  ASSERT_TRUE(client->Send(kTwoRequests));
  const std::string expected =
      R"({"jsonrpc":"2.0","id":1,"result":"ok"}{"jsonrpc":"2.0","id":2,"result":"ok"})";
  EXPECT_EQ(client->ReadAtLeast(expected.size()), expected);

  ASSERT_TRUE(peer->WaitForMessages(3, kTimeout));
  EXPECT_THAT(peer->Messages(), ElementsAre(kRequest1, kNotification, kRequest2));
  EXPECT_EQ(peer->Received(), kTwoRequests);
  EXPECT_EQ(peer->bytes_received(), kTwoRequests.size());
  EXPECT_EQ(peer->connections_accepted(), 1);
  EXPECT_EQ(peer->open_connections(), 1);
}

TEST(JsonRpcPeerTest, RepliesConfiguredResultJson) {
  PeerBehavior behavior;
  behavior.result_json = R"({"a":[1,2]})";
  auto peer = StartPeer(behavior);
  ASSERT_NE(peer, nullptr);
  auto client = Client::Connect(peer->port());
  ASSERT_TRUE(client->Send(kRequest2));
  const std::string expected = R"({"jsonrpc":"2.0","id":2,"result":{"a":[1,2]}})";
  EXPECT_EQ(client->ReadAtLeast(expected.size()), expected);
}

TEST(JsonRpcPeerTest, RepliesErrors) {
  PeerBehavior behavior;
  behavior.mode = PeerMode::kReplyError;
  behavior.error_code = -32601;
  behavior.error_message = "no \"such\" method";
  auto peer = StartPeer(behavior);
  ASSERT_NE(peer, nullptr);
  auto client = Client::Connect(peer->port());
  ASSERT_TRUE(client->Send(kTwoRequests));
  const std::string expected =
      R"({"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no \"such\" method"}})"
      R"({"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"no \"such\" method"}})";
  EXPECT_EQ(client->ReadAtLeast(expected.size()), expected);
}

TEST(JsonRpcPeerTest, NeverReplyRecordsButSendsNothing) {
  auto peer = StartPeer(WithMode(PeerMode::kNeverReply));
  ASSERT_NE(peer, nullptr);
  auto client = Client::Connect(peer->port());
  ASSERT_TRUE(client->Send(kTwoRequests));
  ASSERT_TRUE(peer->WaitForMessages(3, kTimeout));
  // A reply would have been queued before this marker.
  peer->SendToAll("MARK");
  EXPECT_EQ(client->ReadAtLeast(4), "MARK");
}

TEST(JsonRpcPeerTest, NoReadLeavesBytesInKernelUntilModeChanges) {
  JsonRpcPeer::Options options;
  options.behavior.mode = PeerMode::kNoRead;
  options.receive_buffer_bytes = 4096;
  auto peer = JsonRpcPeer::Start(options).value();
  auto client = Client::Connect(peer->port());
  ASSERT_EQ(client->connect_errno(), 0);
  ASSERT_TRUE(peer->WaitForConnectionsAccepted(1, kTimeout));
  // Fill the pipe: non-blocking sends until the kernel refuses more (bounded).
  ASSERT_EQ(::fcntl(client->fd(), F_SETFL, O_NONBLOCK), 0);
  const std::string block(4096, 'x');
  size_t sent = 0;
  bool full = false;
  for (int i = 0; i < 100000 && !full; ++i) {
    ssize_t n = ::send(client->fd(), block.data(), block.size(), MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else {
      ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK) << errno;
      full = true;
    }
  }
  EXPECT_TRUE(full);
  EXPECT_EQ(peer->bytes_received(), 0u);

  peer->SetMode(PeerMode::kNeverReply);
  EXPECT_TRUE(peer->WaitForBytes(sent, kTimeout));
  EXPECT_EQ(peer->Messages().size(), 0u);
}

TEST(JsonRpcPeerTest, CloseAfterReadClosesTheConnection) {
  auto peer = StartPeer(WithMode(PeerMode::kCloseAfterRead));
  ASSERT_NE(peer, nullptr);
  auto client = Client::Connect(peer->port());
  ASSERT_TRUE(client->Send(kRequest1));
  EXPECT_TRUE(client->ReadUntilClosed());
  EXPECT_EQ(client->ReadAtLeast(1), "");
  EXPECT_TRUE(peer->WaitForOpenConnections(0, kTimeout));
  EXPECT_THAT(peer->Messages(), ElementsAre(kRequest1));
  EXPECT_EQ(peer->connections_accepted(), 1);
}

TEST(JsonRpcPeerTest, CloseAfterReadWaitsForACompleteMessage) {
  auto peer = StartPeer(WithMode(PeerMode::kCloseAfterRead));
  ASSERT_NE(peer, nullptr);
  auto client = Client::Connect(peer->port());
  const std::string request = kRequest1;
  ASSERT_TRUE(client->Send(request.substr(0, 10)));
  ASSERT_TRUE(peer->WaitForBytes(10, kTimeout));
  EXPECT_EQ(peer->open_connections(), 1);
  ASSERT_TRUE(client->Send(request.substr(10)));
  EXPECT_TRUE(client->ReadUntilClosed());
  EXPECT_TRUE(peer->WaitForOpenConnections(0, kTimeout));
}

TEST(JsonRpcPeerTest, GarbageAnswersEachRequest) {
  auto peer = StartPeer(WithMode(PeerMode::kGarbage));
  ASSERT_NE(peer, nullptr);
  auto client = Client::Connect(peer->port());
  ASSERT_TRUE(client->Send(kTwoRequests));
  const std::string expected = "\x01\x02garbage\x01\x02garbage";
  EXPECT_EQ(client->ReadAtLeast(expected.size()), expected);
}

TEST(JsonRpcPeerTest, CustomResponderSeesEveryMessageAndItsId) {
  PeerBehavior behavior;
  behavior.mode = PeerMode::kCustom;
  behavior.responder = [](absl::string_view message,
                          absl::string_view id) -> std::optional<std::string> {
    if (id.empty()) return "<notification>";
    return absl::StrCat("<", id, ">");
  };
  auto peer = StartPeer(behavior);
  ASSERT_NE(peer, nullptr);
  auto client = Client::Connect(peer->port());
  ASSERT_TRUE(client->Send(kTwoRequests));
  const std::string expected = "<1><notification><2>";
  EXPECT_EQ(client->ReadAtLeast(expected.size()), expected);
}

TEST(JsonRpcPeerTest, EchoesNonNumericIdsVerbatimAndTreatsNullIdAsNotification) {
  auto peer = StartPeer();
  ASSERT_NE(peer, nullptr);
  auto client = Client::Connect(peer->port());
  ASSERT_TRUE(client->Send(R"({"id":null,"method":"a"} { "method" : "b", "id" : "x\"y" })"));
  const std::string expected = R"({"jsonrpc":"2.0","id":"x\"y","result":"ok"})";
  EXPECT_EQ(client->ReadAtLeast(expected.size()), expected);
}

TEST(JsonRpcPeerTest, DelaysReplies) {
  PeerBehavior behavior;
  behavior.reply_delay = absl::Milliseconds(100);
  auto peer = StartPeer(behavior);
  ASSERT_NE(peer, nullptr);
  auto client = Client::Connect(peer->port());
  const absl::Time start = absl::Now();
  ASSERT_TRUE(client->Send(kRequest2));
  const std::string expected = R"({"jsonrpc":"2.0","id":2,"result":"ok"})";
  EXPECT_EQ(client->ReadAtLeast(expected.size()), expected);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
}

TEST(JsonRpcPeerTest, AnswersBatchesInReverseOrder) {
  PeerBehavior behavior;
  behavior.reverse_batch = 2;
  behavior.separator = "\n";
  auto peer = StartPeer(behavior);
  ASSERT_NE(peer, nullptr);
  auto client = Client::Connect(peer->port());
  ASSERT_TRUE(client->Send(kTwoRequests));
  const std::string expected =
      "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":\"ok\"}\n"
      "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"ok\"}\n";
  EXPECT_EQ(client->ReadAtLeast(expected.size()), expected);
}

TEST(JsonRpcPeerTest, WritesRepliesByteByByte) {
  PeerBehavior behavior;
  behavior.chunk_bytes = 1;
  behavior.chunk_pause = absl::Milliseconds(1);
  auto peer = StartPeer(behavior);
  ASSERT_NE(peer, nullptr);
  auto client = Client::Connect(peer->port());
  ASSERT_TRUE(client->Send(kTwoRequests));
  const std::string expected =
      R"({"jsonrpc":"2.0","id":1,"result":"ok"}{"jsonrpc":"2.0","id":2,"result":"ok"})";
  EXPECT_EQ(client->ReadAtLeast(expected.size()), expected);
  // Pauses between single bytes make the client see separate reads.
  EXPECT_GT(client->reads(), 1);
}

TEST(JsonRpcPeerTest, SplitsRepliesAtOffset) {
  PeerBehavior behavior;
  behavior.split_at = 5;
  behavior.chunk_pause = absl::Milliseconds(50);
  auto peer = StartPeer(behavior);
  ASSERT_NE(peer, nullptr);
  auto client = Client::Connect(peer->port());
  ASSERT_TRUE(client->Send(kRequest2));
  // The first read normally ends at the split (a descheduled client may see more at once).
  EXPECT_EQ(client->ReadAtLeast(5).substr(0, 5), R"({"jso)");
  const std::string expected = R"({"jsonrpc":"2.0","id":2,"result":"ok"})";
  EXPECT_EQ(client->ReadAtLeast(expected.size()), expected);
}

TEST(JsonRpcPeerTest, ReassemblesRequestsSplitAcrossWrites) {
  auto peer = StartPeer(WithMode(PeerMode::kNeverReply));
  ASSERT_NE(peer, nullptr);
  auto client = Client::Connect(peer->port());
  const std::string stream = absl::StrCat(kRequest1, "\n", kRequest2);
  for (size_t i = 0; i < stream.size(); ++i) {
    ASSERT_TRUE(client->Send(stream.substr(i, 1)));
  }
  ASSERT_TRUE(peer->WaitForMessages(2, kTimeout));
  EXPECT_THAT(peer->Messages(), ElementsAre(kRequest1, kRequest2));
}

TEST(JsonRpcPeerTest, ServesConcurrentConnections) {
  auto peer = StartPeer();
  ASSERT_NE(peer, nullptr);
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 5; ++i) clients.push_back(Client::Connect(peer->port()));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(clients[i]->Send(absl::StrCat(R"({"id":)", 100 + i, R"(,"method":"m"})")));
  }
  for (int i = 0; i < 5; ++i) {
    const std::string expected =
        absl::StrCat(R"({"jsonrpc":"2.0","id":)", 100 + i, R"(,"result":"ok"})");
    EXPECT_EQ(clients[i]->ReadAtLeast(expected.size()), expected);
  }
  EXPECT_EQ(peer->connections_accepted(), 5);
  EXPECT_EQ(peer->open_connections(), 5);
  clients.clear();
  EXPECT_TRUE(peer->WaitForOpenConnections(0, kTimeout));
}

TEST(JsonRpcPeerTest, ModeChangesApplyWhileRunning) {
  auto peer = StartPeer();
  ASSERT_NE(peer, nullptr);
  auto client = Client::Connect(peer->port());
  ASSERT_TRUE(client->Send(kRequest1));
  std::string expected = R"({"jsonrpc":"2.0","id":1,"result":"ok"})";
  EXPECT_EQ(client->ReadAtLeast(expected.size()), expected);
  peer->SetMode(PeerMode::kGarbage);
  EXPECT_EQ(peer->behavior().mode, PeerMode::kGarbage);
  ASSERT_TRUE(client->Send(kRequest2));
  expected += "\x01\x02garbage";
  EXPECT_EQ(client->ReadAtLeast(expected.size()), expected);
}

TEST(JsonRpcPeerTest, DropConnectionsClosesButKeepsListening) {
  auto peer = StartPeer();
  ASSERT_NE(peer, nullptr);
  auto first = Client::Connect(peer->port());
  ASSERT_TRUE(peer->WaitForOpenConnections(1, kTimeout));
  peer->DropConnections();
  EXPECT_EQ(peer->open_connections(), 0);
  EXPECT_TRUE(first->ReadUntilClosed());
  auto second = Client::Connect(peer->port());
  ASSERT_TRUE(second->Send(kRequest2));
  EXPECT_THAT(second->ReadAtLeast(10), HasSubstr("\"id\":2"));
}

TEST(JsonRpcPeerTest, StopRefusesConnectionsAndRestartListensOnSamePort) {
  auto peer = StartPeer();
  ASSERT_NE(peer, nullptr);
  const uint16_t port = peer->port();
  auto client = Client::Connect(port);
  ASSERT_TRUE(client->Send(kRequest2));
  ASSERT_TRUE(peer->WaitForMessages(1, kTimeout));
  peer->Stop();
  peer->Stop();  // idempotent
  EXPECT_EQ(peer->open_connections(), 0);
  EXPECT_TRUE(client->ReadUntilClosed());
  EXPECT_EQ(Client::Connect(port)->connect_errno(), ECONNREFUSED);

  ASSERT_TRUE(peer->Restart().ok());
  EXPECT_EQ(peer->port(), port);
  auto again = Client::Connect(port);
  ASSERT_EQ(again->connect_errno(), 0);
  ASSERT_TRUE(again->Send(kRequest1));
  ASSERT_TRUE(peer->WaitForMessages(2, kTimeout));
  EXPECT_EQ(peer->connections_accepted(), 2);
  peer->ClearRecorded();
  EXPECT_EQ(peer->Received(), "");
  EXPECT_TRUE(peer->Messages().empty());
}

TEST(JsonRpcPeerTest, StartsOnGivenPortAndFailsWhenItIsTaken) {
  const uint16_t port = PickUnusedPort();
  JsonRpcPeer::Options options;
  options.port = port;
  auto peer = JsonRpcPeer::Start(options);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ((*peer)->port(), port);

  absl::StatusOr<std::unique_ptr<JsonRpcPeer>> second = JsonRpcPeer::Start(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(absl::StrCat("127.0.0.1:", port)));
}

TEST(JsonRpcPeerTest, ListensOnIpv6Loopback) {
  JsonRpcPeer::Options options;
  options.ipv6 = true;
  auto peer = JsonRpcPeer::Start(options);
  if (!peer.ok()) GTEST_SKIP() << "no IPv6 loopback: " << peer.status();
  EXPECT_EQ((*peer)->socket(), absl::StrCat("tcp:[::1]:", (*peer)->port()));
  EXPECT_EQ((*peer)->host(), "::1");
  auto client = Client::Connect((*peer)->port(), /*ipv6=*/true);
  ASSERT_EQ(client->connect_errno(), 0);
  ASSERT_TRUE(client->Send(kRequest2));
  const std::string expected = R"({"jsonrpc":"2.0","id":2,"result":"ok"})";
  EXPECT_EQ(client->ReadAtLeast(expected.size()), expected);
}

TEST(JsonRpcPeerTest, WaitsReturnFalseAtDeadline) {
  auto peer = StartPeer();
  ASSERT_NE(peer, nullptr);
  EXPECT_FALSE(peer->WaitForMessages(1, absl::Milliseconds(10)));
  EXPECT_FALSE(peer->WaitForBytes(1, absl::Milliseconds(10)));
  EXPECT_FALSE(peer->WaitForConnectionsAccepted(1, absl::Milliseconds(10)));
  EXPECT_FALSE(peer->WaitForOpenConnections(1, absl::Milliseconds(10)));
  EXPECT_TRUE(peer->WaitForOpenConnections(0, absl::Milliseconds(10)));
}

TEST(PortsTest, ClosedPortRefusesConnections) {
  const uint16_t port = ClosedPort();
  EXPECT_NE(port, 0);
  EXPECT_EQ(ClosedPort(), port);
  EXPECT_EQ(Client::Connect(port)->connect_errno(), ECONNREFUSED);
}

TEST(PortsTest, PickUnusedPortCanBeListenedOn) {
  const uint16_t port = PickUnusedPort();
  EXPECT_NE(port, 0);
  JsonRpcPeer::Options options;
  options.port = port;
  auto peer = JsonRpcPeer::Start(options);
  ASSERT_TRUE(peer.ok()) << peer.status();
}

}  // namespace
}  // namespace eventbus::testing
