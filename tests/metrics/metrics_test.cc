// Metrics on their own: label values beyond the caps share "other", RPC_ERROR counts as a failed
// target message, reconnects count only after a loss, and serving reports a bad or taken address
// as an error instead of aborting.
#include "server/metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ports.h"

namespace eventbus::metrics {
namespace {

using net::ConnState;
using net::DeliveryCode;
using ::testing::HasSubstr;
using ::testing::Not;

MetricsOptions Caps(size_t max_events, size_t max_targets) {
  MetricsOptions options;
  options.max_events = max_events;
  options.max_targets = max_targets;
  return options;
}

net::Outcome OutcomeOf(DeliveryCode code) {
  net::Outcome o;
  o.code = code;
  return o;
}

TEST(MetricsTest, EventsBeyondTheCapShareTheOtherLabel) {
  Metrics metrics(Caps(2, 10));
  for (const char* event : {"a", "b", "c", "d", "a"}) {
    auto* scope = metrics.OnRaise(event, /*sync=*/false, 3);
    metrics.OnOutcome(scope, DeliveryCode::kOk, absl::Milliseconds(1));
  }
  const std::string text = metrics.Scrape();
  EXPECT_THAT(text, HasSubstr("eventbus_raises_total{event=\"a\",mode=\"async\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("eventbus_raises_total{event=\"b\",mode=\"async\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("eventbus_raises_total{event=\"other\",mode=\"async\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("eventbus_deliveries_accepted_total{event=\"other\",mode=\"async\"} "
                              "6\n"));
  EXPECT_THAT(text, HasSubstr("eventbus_deliveries_completed_total{event=\"other\",mode=\"async\","
                              "status=\"OK\"} 2\n"));
  EXPECT_THAT(text, Not(HasSubstr("event=\"c\"")));
  EXPECT_THAT(text, Not(HasSubstr("event=\"d\"")));
  // 15 accepted, 5 completed.
  EXPECT_THAT(text, HasSubstr("eventbus_deliveries_in_flight 10\n"));
}

// The writer loop tells a share's written notifications, and a connection's, in one call each:
// the same counters and histogram as that many single outcomes.
TEST(MetricsTest, BatchedOutcomesCountAsThatManySingleOnes) {
  Metrics metrics(Caps(10, 10));
  auto* scope = metrics.OnRaise("e", /*sync=*/false, 5);
  metrics.OnOutcomes(scope, DeliveryCode::kOk, absl::Milliseconds(2), 4);
  metrics.OnOutcome(scope, DeliveryCode::kOk, absl::Milliseconds(2));
  metrics.OnWritten("10.0.0.1:80", 3);
  const std::string text = metrics.Scrape();
  EXPECT_THAT(text, HasSubstr("eventbus_deliveries_completed_total{event=\"e\",mode=\"async\","
                              "status=\"OK\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("eventbus_deliveries_in_flight 0\n"));
  EXPECT_THAT(text, HasSubstr("eventbus_delivery_duration_seconds_count{mode=\"async\","
                              "result=\"delivered\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("eventbus_delivery_duration_seconds_sum{mode=\"async\","
                              "result=\"delivered\"} 0.01\n"));
  EXPECT_THAT(
      text, HasSubstr("eventbus_target_messages_total{result=\"delivered\",target=\"10.0.0.1:80\"} "
                      "3\n"));
}

TEST(MetricsTest, TargetsBeyondTheCapShareTheOtherLabel) {
  Metrics metrics(Caps(10, 1));
  metrics.OnComplete("10.0.0.1:80", OutcomeOf(DeliveryCode::kOk), false, absl::Milliseconds(1));
  metrics.OnComplete("10.0.0.2:80", OutcomeOf(DeliveryCode::kRpcError), false,
                     absl::Milliseconds(1));
  metrics.OnComplete("10.0.0.3:80", OutcomeOf(DeliveryCode::kTimeout), true, absl::Milliseconds(1));
  metrics.OnStateChange("10.0.0.4:80", ConnState::kConnecting, ConnState::kBackoff, "refused");
  const std::string text = metrics.Scrape();
  EXPECT_THAT(
      text, HasSubstr("eventbus_target_messages_total{result=\"delivered\",target=\"10.0.0.1:80\"} "
                      "1\n"));
  // RPC_ERROR is a failure, not a delivery.
  EXPECT_THAT(text,
              HasSubstr("eventbus_target_messages_total{result=\"failed\",target=\"other\"} 1\n"));
  EXPECT_THAT(text,
              HasSubstr("eventbus_target_messages_total{result=\"expired\",target=\"other\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("eventbus_target_connect_failures_total{target=\"other\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("10.0.0.2")));
  EXPECT_THAT(text, Not(HasSubstr("10.0.0.4")));
}

TEST(MetricsTest, ReconnectsCountOnlyConnectsAfterALoss) {
  Metrics metrics({});
  const std::string t = "127.0.0.1:9";
  metrics.OnStateChange(t, ConnState::kIdle, ConnState::kConnecting, "");
  metrics.OnStateChange(t, ConnState::kConnecting, ConnState::kConnected, "");
  metrics.OnStateChange(t, ConnState::kConnected, ConnState::kIdle, "connection lost");
  metrics.OnStateChange(t, ConnState::kIdle, ConnState::kConnecting, "");
  metrics.OnStateChange(t, ConnState::kConnecting, ConnState::kBackoff, "refused");
  metrics.OnStateChange(t, ConnState::kBackoff, ConnState::kConnecting, "");
  metrics.OnStateChange(t, ConnState::kConnecting, ConnState::kConnected, "");
  const std::string text = metrics.Scrape();
  EXPECT_THAT(text, HasSubstr("eventbus_target_connects_total{target=\"127.0.0.1:9\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("eventbus_target_reconnects_total{target=\"127.0.0.1:9\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("eventbus_target_disconnects_total{target=\"127.0.0.1:9\"} 1\n"));
  EXPECT_THAT(text,
              HasSubstr("eventbus_target_connect_failures_total{target=\"127.0.0.1:9\"} 1\n"));
}

TEST(MetricsTest, DestinationDenialsAreCountedByStage) {
  Metrics metrics({});
  EXPECT_THAT(metrics.Scrape(),
              HasSubstr("eventbus_destination_denied_total{stage=\"connect\"} 0\n"));
  metrics.OnDestinationDenied("169.254.169.254:80", net::DenialStage::kSubscribe, "denied");
  metrics.OnDestinationDenied("h:80", net::DenialStage::kConnect, "denied");
  metrics.OnDestinationDenied("h:80", net::DenialStage::kConnect, "denied");
  const std::string text = metrics.Scrape();
  EXPECT_THAT(text, HasSubstr("eventbus_destination_denied_total{stage=\"subscribe\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("eventbus_destination_denied_total{stage=\"connect\"} 2\n"));
}

TEST(MetricsTest, ServeRejectsAnAddressWithoutAPort) {
  Metrics metrics({});
  absl::Status served = metrics.Serve("127.0.0.1");
  EXPECT_EQ(served.code(), absl::StatusCode::kInvalidArgument) << served;
  EXPECT_EQ(metrics.port(), 0);
}

TEST(MetricsTest, ServeReportsATakenPortInsteadOfAborting) {
  const uint16_t port = testing::PickUnusedPort();
  const int fd = testing::ListenTcp(port);
  ASSERT_GE(fd, 0);
  Metrics metrics({});
  absl::Status served = metrics.Serve(absl::StrCat("127.0.0.1:", port));
  ::close(fd);
  EXPECT_EQ(served.code(), absl::StatusCode::kUnavailable) << served;
  EXPECT_THAT(served.message(), HasSubstr("cannot serve /metrics"));
}

TEST(MetricsTest, ServesOnTheGivenPort) {
  Metrics metrics({});
  const uint16_t port = testing::PickUnusedPort();
  ASSERT_TRUE(metrics.Serve(absl::StrCat("127.0.0.1:", port)).ok());
  EXPECT_EQ(metrics.port(), port);
  EXPECT_TRUE(testing::PortAccepts(port));
}

// civetweb's listener polls in 2 s quanta; stopping must not wait for the quantum to end (it
// would delay every eventbusd shutdown by up to 2 s).
TEST(MetricsTest, StopsServingPromptly) {
  for (const char* host : {"127.0.0.1", "0.0.0.0"}) {
    auto metrics = std::make_unique<Metrics>(MetricsOptions{});
    const uint16_t port = testing::PickUnusedPort();
    ASSERT_TRUE(metrics->Serve(absl::StrCat(host, ":", port)).ok());
    ASSERT_TRUE(testing::PortAccepts(port));
    absl::SleepFor(absl::Milliseconds(100));  // the listener is inside its poll
    const absl::Time start = absl::Now();
    metrics.reset();
    EXPECT_LT(absl::Now() - start, absl::Milliseconds(500)) << host;
    EXPECT_FALSE(testing::PortAccepts(port)) << host;
  }
}

}  // namespace
}  // namespace eventbus::metrics
