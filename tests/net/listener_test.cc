// net::Listener on real loopback sockets: hands accepted connections out, refuses them beyond the
// cap or when descriptors run short, and keeps accepting after running out of descriptors
// (EMFILE, provoked by lowering this process's own RLIMIT_NOFILE).
#include "server/net/listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/net/fd_budget.h"

namespace eventbus::net {
namespace {

// Polls `condition` every 5 ms until it holds or `timeout` passes.
template <typename Condition>
bool WaitFor(absl::Duration timeout, Condition condition) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
}

int NewSocket() { return ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); }

bool Connect(int fd, int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
}

// True when the peer of `fd` closes within `timeout` (read gives 0 or an error).
bool PeerCloses(int fd, absl::Duration timeout) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) <= 0) return false;
  char byte;
  return ::read(fd, &byte, 1) <= 0;
}

// Collects the connections a Listener hands out; closes them at the end.
class Collector {
 public:
  ~Collector() {
    for (int fd : fds_) ::close(fd);
  }
  Listener::Handler Handler() {
    return [this](int, int fd) {
      std::lock_guard<std::mutex> lock(mu_);
      fds_.push_back(fd);
    };
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return fds_.size();
  }
  // Closes the connection handed out `i`-th.
  void Close(size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    ::close(fds_[i]);
    fds_[i] = -1;
  }
  int fd(size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    return fds_[i];
  }

 private:
  std::mutex mu_;
  std::vector<int> fds_;
};

TEST(ListenerTest, HandsOutAcceptedConnections) {
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listener::Bind("127.0.0.1:0", {});
  ASSERT_TRUE(listener.ok()) << listener.status();
  ASSERT_GT((*listener)->port(), 0);
  Collector collector;
  (*listener)->Start(collector.Handler());

  int client = NewSocket();
  ASSERT_TRUE(Connect(client, (*listener)->port()));
  ASSERT_TRUE(WaitFor(absl::Seconds(5), [&] { return collector.size() == 1; }));
  ASSERT_EQ(::write(client, "x", 1), 1);
  int server_side = collector.fd(0);
  EXPECT_TRUE(::fcntl(server_side, F_GETFL) & O_NONBLOCK);
  pollfd p{server_side, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);
  char byte = 0;
  EXPECT_EQ(::read(server_side, &byte, 1), 1);
  EXPECT_EQ(byte, 'x');
  EXPECT_EQ((*listener)->stats().accepted, 1u);
  ::close(client);
}

TEST(ListenerTest, RejectsMalformedAddresses) {
  for (const char* address : {"127.0.0.1", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:-1",
                              "127.0.0.1:8x", "[::1", "[::1]80", "::1:80", "unix:/tmp/eventbus"}) {
    absl::StatusOr<std::unique_ptr<Listener>> listener = Listener::Bind(address, {});
    EXPECT_EQ(listener.status().code(), absl::StatusCode::kInvalidArgument) << address;
    if (!listener.ok()) {
      EXPECT_NE(listener.status().message().find(address), std::string::npos) << listener.status();
    }
  }
}

TEST(ListenerTest, RefusesAPortInUse) {
  absl::StatusOr<std::unique_ptr<Listener>> first = Listener::Bind("127.0.0.1:0", {});
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<std::unique_ptr<Listener>> second =
      Listener::Bind("127.0.0.1:" + std::to_string((*first)->port()), {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("cannot bind"), std::string::npos) << second.status();
}

TEST(ListenerTest, StopClosesThePort) {
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listener::Bind("127.0.0.1:0", {});
  ASSERT_TRUE(listener.ok()) << listener.status();
  Collector collector;
  (*listener)->Start(collector.Handler());
  int port = (*listener)->port();
  (*listener)->Stop();
  (*listener)->Stop();  // idempotent
  int client = NewSocket();
  EXPECT_FALSE(Connect(client, port));
  ::close(client);
}

TEST(ListenerTest, ClosesConnectionsBeyondTheCapUntilOneLeaves) {
  ListenerOptions options;
  options.max_connections = 2;
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listener::Bind("127.0.0.1:0", options);
  ASSERT_TRUE(listener.ok()) << listener.status();
  Collector collector;
  (*listener)->Start(collector.Handler());

  std::vector<int> clients;
  for (int i = 0; i < 2; ++i) {
    clients.push_back(NewSocket());
    ASSERT_TRUE(Connect(clients.back(), (*listener)->port()));
  }
  ASSERT_TRUE(WaitFor(absl::Seconds(5), [&] { return collector.size() == 2; }));
  int over = NewSocket();
  ASSERT_TRUE(Connect(over, (*listener)->port()));  // the kernel completes it; then it is closed
  EXPECT_TRUE(PeerCloses(over, absl::Seconds(5)));
  EXPECT_EQ((*listener)->stats().refused_at_cap, 1u);
  EXPECT_EQ((*listener)->stats().open_connections, 2u);
  EXPECT_FALSE(PeerCloses(clients[0], absl::Milliseconds(50)));  // the admitted stay

  // One leaves (its consumer closes it): the next connection takes its place.
  collector.Close(0);
  int next = NewSocket();
  ASSERT_TRUE(Connect(next, (*listener)->port()));
  EXPECT_TRUE(WaitFor(absl::Seconds(5), [&] { return collector.size() == 3; }));
  EXPECT_EQ((*listener)->stats().refused_at_cap, 1u);
  for (int fd : clients) ::close(fd);
  ::close(over);
  ::close(next);
}

TEST(ListenerTest, ClosesConnectionsWhenDescriptorsRunShort) {
  ListenerOptions options;
  // More headroom than the limit leaves: every connection finds descriptors short.
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  options.fd_headroom = limit.rlim_cur;
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listener::Bind("127.0.0.1:0", options);
  ASSERT_TRUE(listener.ok()) << listener.status();
  Collector collector;
  (*listener)->Start(collector.Handler());
  int client = NewSocket();
  ASSERT_TRUE(Connect(client, (*listener)->port()));
  EXPECT_TRUE(PeerCloses(client, absl::Seconds(5)));
  EXPECT_EQ((*listener)->stats().refused_no_fds, 1u);
  EXPECT_EQ(collector.size(), 0u);
  ::close(client);
}

// Lowers this process's soft RLIMIT_NOFILE and fills every descriptor under it; undoes both.
class DescriptorExhaustion {
 public:
  DescriptorExhaustion() {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    size_t open = 0;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
      (void)entry;
      ++open;
    }
    rlimit lowered = saved_;
    lowered.rlim_cur = open + 32;
    ::setrlimit(RLIMIT_NOFILE, &lowered);
    for (;;) {
      int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) break;
      fillers_.push_back(fd);
    }
  }
  ~DescriptorExhaustion() { Release(); }
  void Release() {
    for (int fd : fillers_) ::close(fd);
    fillers_.clear();
    ::setrlimit(RLIMIT_NOFILE, &saved_);
  }

 private:
  rlimit saved_{};
  std::vector<int> fillers_;
};

// gRPC 1.51's listener stops for good at the first EMFILE; this one refuses the connection (the
// client sees a close at once, not a hang) and serves the next once descriptors are back.
TEST(ListenerTest, KeepsAcceptingAfterRunningOutOfDescriptors) {
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listener::Bind("127.0.0.1:0", {});
  ASSERT_TRUE(listener.ok()) << listener.status();
  Collector collector;
  (*listener)->Start(collector.Handler());
  // Client sockets made before descriptors run out (connect needs none).
  std::vector<int> refused;
  for (int i = 0; i < 3; ++i) refused.push_back(NewSocket());
  int later = NewSocket();

  {
    DescriptorExhaustion exhaustion;
    for (int fd : refused) ASSERT_TRUE(Connect(fd, (*listener)->port()));
    for (int fd : refused) EXPECT_TRUE(PeerCloses(fd, absl::Seconds(5)));
    EXPECT_EQ((*listener)->stats().refused_no_fds, refused.size());
    EXPECT_EQ(collector.size(), 0u);
  }

  ASSERT_TRUE(Connect(later, (*listener)->port()));
  EXPECT_TRUE(WaitFor(absl::Seconds(5), [&] { return collector.size() == 1; }));
  EXPECT_FALSE(PeerCloses(later, absl::Milliseconds(50)));
  for (int fd : refused) ::close(fd);
  ::close(later);
}

TEST(FdBudgetTest, SharesTheLimitOutAfterTheReserve) {
  FdBudget budget = DeriveFdBudget(1024);
  EXPECT_EQ(budget.reserve, 128u);
  EXPECT_EQ(budget.client_connections, 224u);
  EXPECT_EQ(budget.target_connections, 672u);
  EXPECT_EQ(budget.fd_headroom, 64u);

  budget = DeriveFdBudget(128);
  EXPECT_EQ(budget.reserve, 64u);
  EXPECT_EQ(budget.client_connections, 16u);
  EXPECT_EQ(budget.target_connections, 48u);

  budget = DeriveFdBudget(10);  // nothing left after the reserve: still one of each
  EXPECT_EQ(budget.client_connections, 1u);
  EXPECT_EQ(budget.target_connections, 1u);

  EXPECT_EQ(DeriveFdBudget(uint64_t{1} << 40).reserve, DeriveFdBudget(uint64_t{1} << 20).reserve);
}

TEST(FdBudgetTest, RaisesTheSoftLimitToTheHardLimit) {
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &before), 0);
  rlimit lowered = before;
  lowered.rlim_cur = 256;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);
  uint64_t previous = 0;
  absl::StatusOr<FdLimit> limit = RaiseFdLimit(&previous);
  ASSERT_TRUE(limit.ok()) << limit.status();
  EXPECT_EQ(previous, 256u);
  EXPECT_EQ(limit->hard, before.rlim_max);
  if (before.rlim_max != RLIM_INFINITY) {
    EXPECT_EQ(limit->soft, before.rlim_max);
  }
  rlimit after{};
  ::getrlimit(RLIMIT_NOFILE, &after);
  EXPECT_EQ(after.rlim_cur, limit->soft);
  ::setrlimit(RLIMIT_NOFILE, &before);
}

}  // namespace
}  // namespace eventbus::net
