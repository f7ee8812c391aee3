// Tests of the test helpers that hand out loopback ports and proxy connections.
#include "tests/testing/ports.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/base/fd.h"
#include "server/base/mutex.h"
#include "tests/testing/delay_proxy.h"

namespace eventbus::testing {
namespace {

int Listen(uint16_t port, uint16_t* bound = nullptr) { return ListenTcp(port, bound); }

int Connect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int error = errno;
    ::close(fd);
    return -error;
  }
  return fd;
}

// Issue 7, defect 7: the port picker closed its probe socket, so the kernel could hand the same
// port out again (to the next pick, or to any bind(0) or outgoing connection) and two etcd
// harnesses were told the same port.
TEST(PortsTest, ManyPicksFromManyThreadsAreDistinct) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 50;  // each pick keeps a socket open: stay far below 1024 fds
  eventbus::Mutex mu;
  std::vector<uint16_t> ports;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      std::vector<uint16_t> mine;
      for (int i = 0; i < kPerThread; ++i) mine.push_back(PickUnusedPort());
      eventbus::MutexLock lock(&mu);
      ports.insert(ports.end(), mine.begin(), mine.end());
    });
  }
  for (std::thread& thread : threads) thread.join();
  absl::flat_hash_set<uint16_t> distinct(ports.begin(), ports.end());
  EXPECT_EQ(distinct.size(), ports.size());
  EXPECT_EQ(distinct.count(0), 0u);
  EXPECT_EQ(distinct.count(ClosedPort()), 0u);
}

TEST(PortsTest, APickedPortIsNeverChosenByTheKernelForSomeoneElse) {
  absl::flat_hash_set<uint16_t> picked;
  for (int i = 0; i < 100; ++i) picked.insert(PickUnusedPort());
  // Listeners on port 0 (as another test process would pick) and outgoing connections (whose
  // local ports come from the same range) never land on a picked port.
  uint16_t target = 0;
  base::UniqueFd listener(Listen(0, &target));
  ASSERT_TRUE(listener.valid());
  std::vector<base::UniqueFd> fds;
  for (int i = 0; i < 100; ++i) {
    uint16_t port = 0;
    fds.emplace_back(Listen(0, &port));
    ASSERT_TRUE(fds.back().valid());
    EXPECT_EQ(picked.count(port), 0u) << port;
    base::UniqueFd client(Connect(target));
    ASSERT_TRUE(client.valid());
    sockaddr_in local{};
    socklen_t len = sizeof(local);
    ::getsockname(client.get(), reinterpret_cast<sockaddr*>(&local), &len);
    EXPECT_EQ(picked.count(ntohs(local.sin_port)), 0u) << ntohs(local.sin_port);
    base::UniqueFd accepted(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  }
}

TEST(PortsTest, APickedPortCanBeListenedOnRefusedUntilThenAndReusedAfter) {
  const uint16_t port = PickUnusedPort();
  EXPECT_EQ(Connect(port), -ECONNREFUSED);
  {
    base::UniqueFd fd(Listen(port));
    ASSERT_TRUE(fd.valid()) << std::strerror(-fd.get());
    // Only one listener at a time.
    EXPECT_EQ(Listen(port), -EADDRINUSE);
    base::UniqueFd client(Connect(port));
    EXPECT_TRUE(client.valid());
  }
  // A restarted server gets it back.
  base::UniqueFd again(Listen(port));
  EXPECT_TRUE(again.valid()) << std::strerror(-again.get());
}

// The delay proxy forwards both ways and holds the server's bytes back for the configured time.
TEST(DelayProxyTest, ForwardsBothWaysAndDelaysReplies) {
  uint16_t server_port = 0;
  base::UniqueFd server(Listen(0, &server_port));
  ASSERT_TRUE(server.valid());
  absl::StatusOr<std::unique_ptr<DelayProxy>> proxy = DelayProxy::Start(server_port);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  base::UniqueFd client(Connect((*proxy)->port()));
  ASSERT_TRUE(client.valid());
  base::UniqueFd peer(::accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(peer.valid());
  timeval tv{5, 0};
  ::setsockopt(client.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(peer.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buffer[16];

  ASSERT_EQ(::send(client.get(), "ping", 4, 0), 4);
  ASSERT_EQ(::recv(peer.get(), buffer, sizeof(buffer), 0), 4);
  EXPECT_EQ(std::string(buffer, 4), "ping");
  ASSERT_EQ(::send(peer.get(), "pong", 4, 0), 4);
  ASSERT_EQ(::recv(client.get(), buffer, sizeof(buffer), 0), 4);
  EXPECT_EQ(std::string(buffer, 4), "pong");

  (*proxy)->SetReplyDelay(absl::Milliseconds(300));
  ASSERT_EQ(::send(client.get(), "a", 1, 0), 1);
  ASSERT_EQ(::recv(peer.get(), buffer, sizeof(buffer), 0), 1);  // requests are not delayed
  absl::Time sent = absl::Now();
  ASSERT_EQ(::send(peer.get(), "b", 1, 0), 1);
  ASSERT_EQ(::recv(client.get(), buffer, sizeof(buffer), 0), 1);
  EXPECT_GE(absl::Now() - sent, absl::Milliseconds(290));
  EXPECT_EQ((*proxy)->connections(), 1);

  (*proxy)->SetReplyDelay(absl::ZeroDuration());
  (*proxy)->SetBlackHole(true);
  ASSERT_EQ(::send(peer.get(), "lost", 4, 0), 4);
  ASSERT_EQ(::send(client.get(), "lost", 4, 0), 4);
  tv = {0, 200000};
  ::setsockopt(client.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(peer.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  EXPECT_EQ(::recv(client.get(), buffer, sizeof(buffer), 0), -1);
  EXPECT_EQ(::recv(peer.get(), buffer, sizeof(buffer), 0), -1);

  // The server closing is passed on.
  (*proxy)->SetBlackHole(false);
  peer.Reset();
  tv = {5, 0};
  ::setsockopt(client.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  EXPECT_EQ(::recv(client.get(), buffer, sizeof(buffer), 0), 0);
}

}  // namespace
}  // namespace eventbus::testing
