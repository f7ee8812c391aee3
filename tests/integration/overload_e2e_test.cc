// No silent loss under bursts (issue 11, part 6), end to end: an async Raise to more new targets
// than the writer loop can connect to within the timeout gets OVERLOADED refusals in its answer
// instead of QUEUED deliveries that later expire, and the numbers add up: queued + refused ==
// targets, the sinks receive exactly the queued ones, ListSubscriptions shows them delivered and
// nothing expired, and the metrics count the refusals. The loop's connect cost is set (as the
// estimate a loop starts with) so that the burst is beyond it on any machine.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/service/server.h"
#include "tests/testing/jsonrpc_peer.h"

namespace eventbus {
namespace {

using ::testing::HasSubstr;
using testing::JsonRpcPeer;

constexpr absl::Duration kWait = absl::Seconds(10);
constexpr int kTargets = 30;

// GET /metrics (HTTP/1.0: the server closes when done): the body, or "" on any failure.
std::string Scrape(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return "";
  }
  std::string response;
  char buffer[65536];
  for (ssize_t n; (n = ::read(fd, buffer, sizeof(buffer))) > 0;) response.append(buffer, n);
  ::close(fd);
  size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// The value of the sample written exactly as `name_and_labels`; 0 when absent.
double Sample(const std::string& scrape, absl::string_view name_and_labels) {
  for (absl::string_view line : absl::StrSplit(scrape, '\n')) {
    if (absl::StartsWith(line, name_and_labels) && line.size() > name_and_labels.size() &&
        line[name_and_labels.size()] == ' ') {
      return std::stod(std::string(line.substr(name_and_labels.size() + 1)));
    }
  }
  return 0;
}

TEST(OverloadE2eTest, ABurstBeyondTheLoopGetsRefusalsAndWhatIsQueuedArrives) {
  service::ServerConfig config;
  config.listen = "127.0.0.1:0";
  config.store = "memory";
  config.metrics_listen = "127.0.0.1:0";
  // One loop, which assumes 100 ms per new connection until it has measured its own: within the
  // default 1 s timeout at most 10 of the 30 new targets can be connected to.
  config.pool.num_loops = 1;
  config.pool.initial_flush_costs.connect = absl::Milliseconds(100);
  config.pool.initial_flush_costs.enqueue = absl::ZeroDuration();
  auto server = service::EventBusServer::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  client::ClientOptions options;
  options.deadline = kWait;
  auto client = client::Client::Connect((*server)->address(), options);
  ASSERT_TRUE(client.ok()) << client.status();

  std::vector<std::unique_ptr<JsonRpcPeer>> sinks;
  for (int i = 0; i < kTargets; ++i) {
    auto sink = JsonRpcPeer::Start();
    ASSERT_TRUE(sink.ok()) << sink.status();
    sinks.push_back(*std::move(sink));
    v1::SubscribeRequest subscribe;
    subscribe.set_event("burst");
    subscribe.set_socket(sinks.back()->socket());
    ASSERT_TRUE((*client)->Subscribe(subscribe).ok());
  }

  v1::RaiseRequest raise;
  raise.set_event("burst");
  auto answer = (*client)->Raise(raise);
  ASSERT_TRUE(answer.ok()) << answer.status();
  int refused = 0;
  for (const v1::Delivery& d : answer->deliveries()) {
    ASSERT_EQ(d.status(), v1::DELIVERY_STATUS_OVERLOADED) << d.ShortDebugString();
    EXPECT_THAT(d.detail(), HasSubstr("not queued: the writer loop would write it in "));
    ++refused;
  }
  const int queued = static_cast<int>(answer->queued());
  EXPECT_EQ(answer->subscribers(), static_cast<uint32_t>(kTargets));
  EXPECT_EQ(queued + refused, kTargets);
  EXPECT_GE(refused, kTargets - 10);
  EXPECT_GE(queued, 1);
  EXPECT_EQ(answer->failed(), static_cast<uint32_t>(refused));

  // Every queued one arrives, and only those.
  auto received = [&] {
    size_t n = 0;
    for (const auto& sink : sinks) n += sink->message_count();
    return n;
  };
  const absl::Time give_up = absl::Now() + kWait;
  while (received() < static_cast<size_t>(queued) && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(received(), static_cast<size_t>(queued));
  int connected_sinks = 0;
  for (const auto& sink : sinks) connected_sinks += sink->connections_accepted();
  EXPECT_EQ(connected_sinks, queued);  // nothing was opened for the refused ones

  // ListSubscriptions: the queued ones delivered, none expired.
  v1::ListSubscriptionsRequest list;
  list.set_event("burst");
  auto listed = (*client)->ListSubscriptions(list);
  ASSERT_TRUE(listed.ok()) << listed.status();
  uint64_t delivered = 0, expired = 0;
  for (const v1::Subscription& sub : listed->subscriptions()) {
    for (const v1::TargetState& t : sub.targets()) {
      delivered += t.delivered();
      expired += t.expired();
    }
  }
  EXPECT_EQ(delivered, static_cast<uint64_t>(queued));
  EXPECT_EQ(expired, 0u);

  // The metrics count the refusals beside the deliveries.
  const std::string scrape = Scrape((*server)->metrics_port());
  ASSERT_FALSE(scrape.empty());
  EXPECT_EQ(Sample(scrape, R"(eventbus_deliveries_accepted_total{event="burst",mode="async"})"),
            kTargets);
  EXPECT_EQ(
      Sample(
          scrape,
          R"(eventbus_deliveries_completed_total{event="burst",mode="async",status="OVERLOADED"})"),
      refused);
  EXPECT_EQ(
      Sample(scrape,
             R"(eventbus_deliveries_completed_total{event="burst",mode="async",status="OK"})"),
      queued);
  (*server)->Shutdown(absl::Seconds(1));
}

}  // namespace
}  // namespace eventbus
