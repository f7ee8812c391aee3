// Client connections to the real eventbusd binary: running out of file descriptors must not stop
// the gRPC listener for good, connections beyond --max_client_connections are refused at once
// while the others keep working, and connections that never finish the handshake or stay idle
// are closed. Every server is a child process on its own loopback port.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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
#include "tests/testing/process.h"
#include "tests/testing/wait.h"

namespace eventbus {
namespace {

namespace v1 = ::eventbus::v1;
using ::eventbus::client::Client;
using ::eventbus::client::ClientOptions;
using ::eventbus::testing::ConnectTcp;
using ::eventbus::testing::Process;
using ::eventbus::testing::ProcessOptions;
using ::eventbus::testing::WaitFor;
using ::grpc::health::v1::HealthCheckResponse;

// The binary under test; EVENTBUS_TEST_EVENTBUSD overrides it (to run these tests against
// another build, e.g. to see them fail before a fix).
std::string EventbusdPath() {
  const char* path = std::getenv("EVENTBUS_TEST_EVENTBUSD");
  return path != nullptr && *path != '\0' ? path : EVENTBUSD_PATH;
}

// Reads and discards until the peer closes (read returns 0 or an error) or `timeout` passes;
// true when it closed.
bool WaitForPeerClose(int fd, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  char buffer[4096];
  for (;;) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (ready < 0 && errno != EINTR) return false;
    if (ready <= 0) continue;
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n == 0) return true;
    if (n < 0 && errno != EINTR && errno != EAGAIN) return true;  // ECONNRESET and the like
  }
}

// One eventbusd child process; its log is removed at the end unless the test failed.
struct Server {
  Server() = default;
  Server(Server&&) = default;
  ~Server() {
    if (process == nullptr) return;
    process.reset();
    if (!::testing::Test::HasFailure()) std::remove(log_path.c_str());
  }

  std::unique_ptr<Process> process;
  uint16_t port = 0;
  std::string address;
  std::string log_path;

  std::string Log() const { return process->ReadLog(); }
};

// Starts eventbusd (memory store) on a fresh port with `extra` flags, wrapped by `prefix` (e.g.
// prlimit), and waits until the port accepts. Must run on the test thread.
absl::StatusOr<Server> StartEventbusd(const std::vector<std::string>& extra,
                                      const std::vector<std::string>& prefix = {}) {
  for (int attempt = 0;; ++attempt) {
    Server server;
    server.port = testing::PickUnusedPort();
    server.address = absl::StrCat("127.0.0.1:", server.port);
    ProcessOptions options;
    options.argv = prefix;
    options.argv.push_back(EventbusdPath());
    options.argv.push_back(absl::StrCat("--listen=", server.address));
    options.argv.push_back("--store=memory");
    options.argv.insert(options.argv.end(), extra.begin(), extra.end());
    server.log_path =
        absl::StrCat(::testing::TempDir(), "client_connections_", server.port, ".log");
    options.log_path = server.log_path;
    absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(std::move(options));
    if (!process.ok()) return process.status();
    server.process = *std::move(process);
    bool listening = WaitFor(absl::Seconds(20), [&] {
      if (!server.process->Running()) return true;
      int fd = ConnectTcp(server.port);
      if (fd < 0) return false;
      ::close(fd);
      return true;
    });
    if (listening && server.process->Running()) return server;
    std::string log = server.Log();
    // Another process may have taken the port picked (the machine is shared): try another.
    if (attempt < 2 && absl::StrContains(log, "cannot bind")) continue;
    return absl::UnavailableError(
        absl::StrCat("eventbusd on ", server.address, " did not start:\n", log));
  }
}

// A channel with a TCP connection of its own (gRPC shares subchannels between channels with the
// same target and arguments unless told otherwise).
std::shared_ptr<grpc::Channel> OwnChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// grpc.health.v1.Health/Check of "" on `channel`; OK with SERVING, or the RPC's error.
absl::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                         absl::Duration deadline = absl::Seconds(5)) {
  absl::StatusOr<HealthCheckResponse::ServingStatus> status =
      client::CheckHealth(channel, "", deadline);
  if (!status.ok()) return status.status();
  if (*status != HealthCheckResponse::SERVING) {
    return absl::UnknownError(HealthCheckResponse::ServingStatus_Name(*status));
  }
  return absl::OkStatus();
}

// A Raise of an event nobody subscribed to through a new client: the API answers.
absl::Status RaiseThroughNewClient(const std::string& address) {
  ClientOptions options;
  options.deadline = absl::Seconds(5);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(address, options);
  if (!client.ok()) return client.status();
  v1::RaiseRequest request;
  request.set_event("fd_test");
  return (*client)->Raise(request).status();
}

// Open descriptors of process `pid` (its /proc/PID/fd entries); -1 when unreadable.
int OpenFds(pid_t pid) {
  std::error_code error;
  int count = 0;
  for (auto it = std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fd"), error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    ++count;
  }
  return error ? -1 : count;
}

// Connections waiting in the accept queue of the socket listening on 127.0.0.1:`port` (the
// rx_queue column of its LISTEN row in /proc/net/tcp); -1 when there is no such row.
int AcceptQueue(uint16_t port) {
  std::ifstream table("/proc/net/tcp");
  std::string line;
  std::getline(table, line);  // header
  const std::string local = absl::StrCat(
      "0100007F:", absl::AsciiStrToUpper(absl::StrCat(absl::Hex(port, absl::kZeroPad4))));
  while (std::getline(table, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    // sl local_address rem_address st tx_queue:rx_queue ...
    if (fields.size() < 5 || fields[1] != local || fields[3] != "0A") continue;
    std::vector<std::string> queues = absl::StrSplit(fields[4], ':');
    if (queues.size() != 2) return -1;
    return static_cast<int>(std::strtol(queues[1].c_str(), nullptr, 16));
  }
  return -1;
}

// Holds raw TCP connections and closes them all at once.
class Connections {
 public:
  ~Connections() { CloseAll(); }
  // Opens up to `count` connections; returns how many connected.
  int Open(uint16_t port, int count) {
    int opened = 0;
    for (int i = 0; i < count; ++i) {
      int fd = ConnectTcp(port);
      if (fd < 0) continue;
      fds_.push_back(fd);
      ++opened;
    }
    return opened;
  }
  void CloseAll() {
    for (int fd : fds_) ::close(fd);
    fds_.clear();
  }

 private:
  std::vector<int> fds_;
};

// 300 connections arrive at a server with 128 descriptors, then leave; a new client must be
// served afterwards.
void ExpectServedAfterAFlood(const std::vector<std::string>& flags) {
  absl::StatusOr<Server> server = StartEventbusd(flags, {"prlimit", "--nofile=128:128"});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(HealthCheck(OwnChannel(server->address)).ok()) << server->Log();

  Connections flood;
  // The kernel completes connections into the listen backlog whether or not the server accepts
  // them, so they connect.
  EXPECT_GT(flood.Open(server->port, 300), 128);
  // Until the server has taken them all from the accept queue (accepted or refused), or has run
  // out of descriptors trying (then its listener used to stop, leaving the rest queued).
  EXPECT_TRUE(WaitFor(
      absl::Seconds(10),
      [&] { return AcceptQueue(server->port) == 0 || OpenFds(server->process->pid()) >= 127; }))
      << AcceptQueue(server->port) << " queued, " << OpenFds(server->process->pid()) << " fds";
  flood.CloseAll();

  // Served again: a health check and a Raise, each through a new connection.
  EXPECT_TRUE(
      WaitFor(absl::Seconds(10),
              [&] { return HealthCheck(OwnChannel(server->address), absl::Seconds(1)).ok(); }))
      << HealthCheck(OwnChannel(server->address)) << "\n"
      << server->Log();
  EXPECT_TRUE(RaiseThroughNewClient(server->address).ok()) << server->Log();
  EXPECT_TRUE(server->process->Running());
}

// Issue 7, defect 2: with 128 descriptors, 300 connections that arrive and then leave used to
// stop gRPC's listener for good (one `accept4: Too many open files` and it never accepted
// again). Now the derived connection cap (16 at 128) refuses most of them.
TEST(ClientConnectionsTest, ServesNewClientsAfterRunningOutOfDescriptors) {
  ExpectServedAfterAFlood({});
}

// The same with the cap out of the way: the descriptor check refuses them instead.
TEST(ClientConnectionsTest, ServesNewClientsAfterRunningOutOfDescriptorsWithoutACap) {
  ExpectServedAfterAFlood({"--max_client_connections=100000"});
}

// Connections beyond --max_client_connections are closed at once: the client sees UNAVAILABLE
// promptly (no handshake wait), the connected clients keep working, and a place that frees up is
// used by the next client.
TEST(ClientConnectionsTest, RefusesConnectionsBeyondTheCapWhileOthersKeepWorking) {
  absl::StatusOr<Server> server = StartEventbusd({"--max_client_connections=3"});
  ASSERT_TRUE(server.ok()) << server.status();

  std::vector<std::shared_ptr<grpc::Channel>> admitted;
  for (int i = 0; i < 3; ++i) {
    admitted.push_back(OwnChannel(server->address));
    ASSERT_TRUE(HealthCheck(admitted.back()).ok()) << i << "\n" << server->Log();
  }

  absl::Time start = absl::Now();
  absl::Status refused = HealthCheck(OwnChannel(server->address), absl::Seconds(5));
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_TRUE(WaitFor(absl::Seconds(5), [&] {
    return absl::StrContains(server->Log(), "client connection refused");
  })) << server->Log();

  for (const auto& channel : admitted) EXPECT_TRUE(HealthCheck(channel).ok());

  // One leaves; its place goes to the next client.
  admitted.pop_back();
  EXPECT_TRUE(WaitFor(absl::Seconds(10), [&] {
    return HealthCheck(OwnChannel(server->address), absl::Seconds(1)).ok();
  })) << server->Log();
}

// A connection that sent the HTTP/2 preface and then nothing is closed after
// --client_idle_timeout_ms; one that never sends anything after --client_handshake_timeout_ms.
TEST(ClientConnectionsTest, ClosesIdleAndSilentConnections) {
  absl::StatusOr<Server> server =
      StartEventbusd({"--client_idle_timeout_ms=1000", "--client_handshake_timeout_ms=1000"});
  ASSERT_TRUE(server.ok()) << server.status();

  int idle = ConnectTcp(server->port);
  ASSERT_GE(idle, 0);
  // The client preface and an empty SETTINGS frame (length 0, type 4, flags 0, stream 0).
  const std::string preface =
      std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + std::string("\0\0\0\4\0\0\0\0\0", 9);
  ASSERT_EQ(::write(idle, preface.data(), preface.size()), static_cast<ssize_t>(preface.size()));
  int silent = ConnectTcp(server->port);
  ASSERT_GE(silent, 0);

  absl::Time start = absl::Now();
  EXPECT_TRUE(WaitForPeerClose(idle, absl::Seconds(15)));
  absl::Duration idle_closed_after = absl::Now() - start;
  EXPECT_GE(idle_closed_after, absl::Milliseconds(900));
  EXPECT_TRUE(WaitForPeerClose(silent, absl::Seconds(15)));
  ::close(idle);
  ::close(silent);

  // Still serving.
  EXPECT_TRUE(HealthCheck(OwnChannel(server->address)).ok()) << server->Log();
}

// A connection whose peer answers no ping (dead, or half-open) is closed after
// --client_keepalive_time_ms + --client_keepalive_timeout_ms, even with no idle timeout.
TEST(ClientConnectionsTest, ClosesConnectionsThatAnswerNoPing) {
  absl::StatusOr<Server> server =
      StartEventbusd({"--client_idle_timeout_ms=0", "--client_keepalive_time_ms=1000",
                      "--client_keepalive_timeout_ms=1000"});
  ASSERT_TRUE(server.ok()) << server.status();
  int mute = ConnectTcp(server->port);
  ASSERT_GE(mute, 0);
  const std::string preface =
      std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + std::string("\0\0\0\4\0\0\0\0\0", 9);
  ASSERT_EQ(::write(mute, preface.data(), preface.size()), static_cast<ssize_t>(preface.size()));
  EXPECT_TRUE(WaitForPeerClose(mute, absl::Seconds(15)));
  ::close(mute);
  // A real client answers the pings and stays connected.
  std::shared_ptr<grpc::Channel> channel = OwnChannel(server->address);
  ASSERT_TRUE(HealthCheck(channel).ok());
  absl::SleepFor(absl::Milliseconds(1500));
  EXPECT_EQ(channel->GetState(false), GRPC_CHANNEL_READY);
}

// The defaults leave an idle connection alone well past a second (and serve it).
TEST(ClientConnectionsTest, KeepsIdleConnectionsByDefault) {
  absl::StatusOr<Server> server = StartEventbusd({});
  ASSERT_TRUE(server.ok()) << server.status();
  std::shared_ptr<grpc::Channel> channel = OwnChannel(server->address);
  ASSERT_TRUE(HealthCheck(channel).ok());
  absl::SleepFor(absl::Milliseconds(1500));
  EXPECT_EQ(channel->GetState(false), GRPC_CHANNEL_READY);
  EXPECT_TRUE(HealthCheck(channel).ok());
}

}  // namespace
}  // namespace eventbus
