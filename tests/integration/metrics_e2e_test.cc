// Prometheus metrics of the real eventbusd binary (issue 8): a mixed run of sync and async Raises
// through the gRPC API against a healthy peer, a peer answering with errors, a closed port and a
// peer that never reads, then a scrape of /metrics over a plain TCP socket. Once everything has
// settled, accepted = completed (every status) for each event and mode, the sync counts per status
// are exactly what Raise returned, the async ones account for every QUEUED, RPC_ERROR counts as
// failed, and `promtool check metrics` finds nothing to report. A taken --metrics_listen port
// fails start-up with an error naming the flag.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "tests/testing/jsonrpc_peer.h"
#include "tests/testing/ports.h"
#include "tests/testing/process.h"
#include "tests/testing/wait.h"

namespace eventbus {
namespace {

namespace v1 = ::eventbus::v1;
using ::eventbus::client::Client;
using ::eventbus::testing::ConnectTcp;
using ::eventbus::testing::JsonRpcPeer;
using ::eventbus::testing::PeerMode;
using ::eventbus::testing::Process;
using ::eventbus::testing::ProcessOptions;
using ::eventbus::testing::WaitFor;

std::string EventbusdPath() {
  const char* path = std::getenv("EVENTBUS_TEST_EVENTBUSD");
  return path != nullptr && *path != '\0' ? path : EVENTBUSD_PATH;
}

// GET /metrics over a plain TCP socket (HTTP/1.0: the server closes when done). The body, or an
// error naming what went wrong.
absl::StatusOr<std::string> FetchMetrics(uint16_t port) {
  int fd = ConnectTcp(port);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("connect to metrics port ", port));
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return absl::UnavailableError("write GET /metrics");
  }
  std::string response;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n <= 0) break;
    response.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  size_t end_of_headers = response.find("\r\n\r\n");
  if (!absl::StartsWith(response, "HTTP/1.1 200") && !absl::StartsWith(response, "HTTP/1.0 200")) {
    return absl::InternalError(absl::StrCat("GET /metrics: ", response.substr(0, 200)));
  }
  if (end_of_headers == std::string::npos) return absl::InternalError("GET /metrics: no body");
  return response.substr(end_of_headers + 4);
}

// The samples of a scrape: "name{labels}" exactly as written -> value.
class Scrape {
 public:
  explicit Scrape(std::string text) : text_(std::move(text)) {
    for (absl::string_view line : absl::StrSplit(text_, '\n')) {
      if (line.empty() || line[0] == '#') continue;
      size_t space = line.rfind(' ');
      double value = 0;
      if (space == absl::string_view::npos || !absl::SimpleAtod(line.substr(space + 1), &value)) {
        continue;
      }
      samples_[std::string(line.substr(0, space))] = value;
    }
  }

  // The sum of every sample of metric `name` whose labels include each of `labels`
  // (`key="value"` strings).
  double Sum(absl::string_view name, const std::vector<std::string>& labels = {}) const {
    double sum = 0;
    for (const auto& [series, value] : samples_) {
      absl::string_view s = series;
      if (!absl::ConsumePrefix(&s, name) || (!s.empty() && s[0] != '{')) continue;
      bool match = true;
      for (const std::string& label : labels) {
        if (!absl::StrContains(s, absl::StrCat("{", label, ",")) &&
            !absl::StrContains(s, absl::StrCat(",", label, ",")) &&
            !absl::StrContains(s, absl::StrCat(",", label, "}")) &&
            !absl::StrContains(s, absl::StrCat("{", label, "}"))) {
          match = false;
        }
      }
      if (match) sum += value;
    }
    return sum;
  }

  const std::string& text() const { return text_; }

 private:
  std::string text_;
  std::map<std::string, double> samples_;
};

// "OK", "QUEUE_FULL", ... as the metrics label them.
std::string StatusLabel(v1::DeliveryStatus status) {
  std::string name = v1::DeliveryStatus_Name(status);
  absl::string_view s = name;
  absl::ConsumePrefix(&s, "DELIVERY_STATUS_");
  return std::string(s);
}

// promtool on PATH, or "".
std::string FindPromtool() {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return "";
  for (absl::string_view dir : absl::StrSplit(path, ':')) {
    std::string candidate = absl::StrCat(dir, "/promtool");
    if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// Runs `promtool check metrics` on `text`: its exit code and everything it printed.
std::pair<int, std::string> PromtoolCheck(const std::string& promtool, const std::string& text) {
  const std::string file = absl::StrCat(::testing::TempDir(), "metrics_e2e_", ::getpid(), ".txt");
  std::ofstream(file) << text;
  const std::string command = absl::StrCat(promtool, " check metrics < ", file, " 2>&1");
  FILE* pipe = ::popen(command.c_str(), "r");
  std::string output;
  char buffer[4096];
  size_t n;
  while (pipe != nullptr && (n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    output.append(buffer, n);
  }
  int status = pipe == nullptr ? -1 : ::pclose(pipe);
  std::remove(file.c_str());
  return {status == -1 ? -1 : WEXITSTATUS(status), output};
}

class MetricsE2eTest : public ::testing::Test {
 protected:
  // Starts eventbusd (memory store) with metrics on a free port; retries with other ports when
  // another process took the one picked.
  void StartServer(const std::vector<std::string>& extra) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      grpc_port_ = testing::PickUnusedPort();
      metrics_port_ = testing::PickUnusedPort();
      ProcessOptions options;
      options.argv = {EventbusdPath(), absl::StrCat("--listen=127.0.0.1:", grpc_port_),
                      "--store=memory", absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port_)};
      options.argv.insert(options.argv.end(), extra.begin(), extra.end());
      log_path_ = absl::StrCat(::testing::TempDir(), "metrics_e2e_", grpc_port_, ".log");
      options.log_path = log_path_;
      absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(std::move(options));
      ASSERT_TRUE(process.ok()) << process.status();
      server_ = *std::move(process);
      bool up = WaitFor(absl::Seconds(20), [&] {
        return !server_->Running() ||
               (testing::PortAccepts(grpc_port_) && testing::PortAccepts(metrics_port_));
      });
      if (up && server_->Running()) break;
      std::string log = server_->ReadLog();
      server_.reset();
      ASSERT_LT(attempt, 2) << "eventbusd did not start:\n" << log;
    }
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Connect(absl::StrCat("127.0.0.1:", grpc_port_));
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  void TearDown() override {
    if (server_ != nullptr && HasFailure()) std::cerr << "eventbusd log:\n" << server_->ReadLog();
    server_.reset();
    if (!HasFailure() && !log_path_.empty()) std::remove(log_path_.c_str());
  }

  std::string Subscribe(const std::string& event, const std::string& socket) {
    v1::SubscribeRequest request;
    request.set_event(event);
    request.set_socket(socket);
    absl::StatusOr<v1::SubscribeResponse> response = client_->Subscribe(request);
    EXPECT_TRUE(response.ok()) << socket << ": " << response.status();
    return response.ok() ? response->subscription().id() : "";
  }

  Scrape MustScrape() {
    absl::StatusOr<std::string> text = FetchMetrics(metrics_port_);
    EXPECT_TRUE(text.ok()) << text.status();
    return Scrape(text.ok() ? *text : "");
  }

  uint16_t grpc_port_ = 0;
  uint16_t metrics_port_ = 0;
  std::string log_path_;
  std::unique_ptr<Process> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(MetricsE2eTest, CountersAddUpAfterAMixedRunAndPromtoolAcceptsTheScrape) {
  const std::string promtool = FindPromtool();
  ASSERT_FALSE(promtool.empty()) << "promtool not found on PATH (Debian package prometheus)";
  // Small per-target queues, so that the peer that never reads fills its queue (QUEUE_FULL) and
  // what stays queued expires.
  ASSERT_NO_FATAL_FAILURE(StartServer(
      {"--queue_max_bytes=65536", "--connect_timeout_ms=200", "--reconnect_min_backoff_ms=20"}));

  auto healthy = JsonRpcPeer::Start();
  ASSERT_TRUE(healthy.ok()) << healthy.status();
  JsonRpcPeer::Options error_options;
  error_options.behavior.mode = PeerMode::kReplyError;
  auto erring = JsonRpcPeer::Start(error_options);
  ASSERT_TRUE(erring.ok()) << erring.status();
  JsonRpcPeer::Options stuck_options;
  stuck_options.behavior.mode = PeerMode::kNoRead;
  stuck_options.receive_buffer_bytes = 4096;
  auto stuck = JsonRpcPeer::Start(stuck_options);
  ASSERT_TRUE(stuck.ok()) << stuck.status();
  const std::string closed = absl::StrCat("tcp:127.0.0.1:", testing::ClosedPort());

  const std::string kEvent = "orders";
  Subscribe(kEvent, (*healthy)->socket());
  const std::string erring_id = Subscribe(kEvent, (*erring)->socket());
  Subscribe(kEvent, closed);
  Subscribe(kEvent, (*stuck)->socket());

  // What Raise answered, per mode and status.
  std::map<std::string, int64_t> answered_async, answered_sync;
  int64_t async_deliveries = 0, sync_deliveries = 0;
  constexpr int kAsync = 150;
  constexpr int kSync = 8;
  const std::string padding(30000, 'x');
  for (int i = 0; i < kAsync; ++i) {
    v1::RaiseRequest request;
    request.set_event(kEvent);
    request.set_json(absl::StrCat(R"({"seq":)", i, R"(,"pad":")", padding, R"("})"));
    request.set_sync(false);
    request.set_timeout_ms(300);
    absl::StatusOr<v1::RaiseResponse> response = client_->Raise(request);
    ASSERT_TRUE(response.ok()) << response.status();
    // The counts of the compact answer: QUEUED only counted, everything else listed.
    EXPECT_EQ(response->queued() + response->ok() + response->failed(), response->subscribers());
    EXPECT_EQ(response->ok() + response->failed(),
              static_cast<uint32_t>(response->deliveries_size()));
    answered_async["QUEUED"] += response->queued();
    async_deliveries += response->subscribers();
    for (const v1::Delivery& d : response->deliveries()) ++answered_async[StatusLabel(d.status())];
  }
  for (int i = 0; i < kSync; ++i) {
    v1::RaiseRequest request;
    request.set_event(kEvent);
    request.set_json(absl::StrCat(R"({"sync":)", i, "}"));
    request.set_sync(true);
    request.set_timeout_ms(300);
    absl::StatusOr<v1::RaiseResponse> response = client_->Raise(request);
    ASSERT_TRUE(response.ok()) << response.status();
    sync_deliveries += response->deliveries_size();
    for (const v1::Delivery& d : response->deliveries()) ++answered_sync[StatusLabel(d.status())];
  }
  // A Raise the service refuses shows up in the gRPC counters only.
  v1::RaiseRequest bad;
  bad.set_event("no spaces allowed");
  EXPECT_FALSE(client_->Raise(bad).ok());

  EXPECT_EQ(async_deliveries, 4 * kAsync);
  EXPECT_EQ(sync_deliveries, 4 * kSync);
  EXPECT_GT(answered_async["QUEUE_FULL"], 0) << "the stuck peer's queue never filled";
  EXPECT_EQ(answered_sync["RPC_ERROR"], kSync);

  // Settled: nothing in flight, queued or awaiting a reply.
  Scrape scrape("");
  ASSERT_TRUE(WaitFor(absl::Seconds(20), [&] {
    scrape = MustScrape();
    return scrape.Sum("eventbus_deliveries_accepted_total") == 4 * (kAsync + kSync) &&
           scrape.Sum("eventbus_deliveries_in_flight") == 0 &&
           scrape.Sum("eventbus_queued_messages") == 0 &&
           scrape.Sum("eventbus_outstanding_requests") == 0;
  })) << scrape.text();

  const std::string event = absl::StrCat("event=\"", kEvent, "\"");
  EXPECT_EQ(scrape.Sum("eventbus_raises_total", {event, "mode=\"async\""}), kAsync);
  EXPECT_EQ(scrape.Sum("eventbus_raises_total", {event, "mode=\"sync\""}), kSync);

  // accepted = completed, per mode (nothing is in flight any more).
  for (const auto& [mode, deliveries] :
       {std::pair<std::string, int64_t>{"async", async_deliveries}, {"sync", sync_deliveries}}) {
    const std::string m = absl::StrCat("mode=\"", mode, "\"");
    EXPECT_EQ(scrape.Sum("eventbus_deliveries_accepted_total", {event, m}), deliveries) << mode;
    EXPECT_EQ(scrape.Sum("eventbus_deliveries_completed_total", {event, m}), deliveries) << mode;
  }
  // Sync: exactly what Raise answered, status by status.
  double sync_completed = 0;
  for (const auto& [status, n] : answered_sync) {
    EXPECT_EQ(scrape.Sum("eventbus_deliveries_completed_total",
                         {event, "mode=\"sync\"", absl::StrCat("status=\"", status, "\"")}),
              n)
        << "sync " << status;
    sync_completed += static_cast<double>(n);
  }
  EXPECT_EQ(sync_completed, sync_deliveries);
  // Async: each immediate failure Raise answered is counted as such, and every QUEUED has an
  // outcome of its own: written (OK) or failed after the answer.
  int64_t immediate = 0;
  for (const auto& [status, n] : answered_async) {
    if (status == "QUEUED") continue;
    immediate += n;
    EXPECT_GE(scrape.Sum("eventbus_deliveries_completed_total",
                         {event, "mode=\"async\"", absl::StrCat("status=\"", status, "\"")}),
              n)
        << "async " << status;
  }
  EXPECT_EQ(scrape.Sum("eventbus_deliveries_completed_total",
                       {event, "mode=\"async\"", "status=\"QUEUE_FULL\""}),
            answered_async["QUEUE_FULL"])
      << "QUEUE_FULL is only ever immediate";
  EXPECT_EQ(immediate + answered_async["QUEUED"], async_deliveries);
  const double async_ok =
      scrape.Sum("eventbus_deliveries_completed_total", {event, "mode=\"async\"", "status=\"OK\""});
  EXPECT_GE(async_ok, 2 * kAsync) << "the healthy and the erring peer read every notification";
  EXPECT_GT(answered_async["QUEUED"] - async_ok, 0)
      << "some QUEUED notifications should have expired after the answer";

  // Per target: RPC_ERROR is a failure, here and in ListSubscriptions.
  const std::string erring_target = absl::StrCat("target=\"127.0.0.1:", (*erring)->port(), "\"");
  EXPECT_EQ(scrape.Sum("eventbus_target_messages_total", {erring_target, "result=\"delivered\""}),
            kAsync);
  EXPECT_EQ(scrape.Sum("eventbus_target_messages_total", {erring_target, "result=\"failed\""}),
            kSync);
  v1::ListSubscriptionsRequest list;
  list.set_event(kEvent);
  absl::StatusOr<v1::ListSubscriptionsResponse> listed = client_->ListSubscriptions(list);
  ASSERT_TRUE(listed.ok()) << listed.status();
  bool found = false;
  for (const v1::Subscription& sub : listed->subscriptions()) {
    if (sub.id() != erring_id) continue;
    found = true;
    ASSERT_EQ(sub.targets_size(), 1);
    EXPECT_EQ(sub.targets(0).delivered(), static_cast<uint64_t>(kAsync));
    EXPECT_EQ(sub.targets(0).failed(), static_cast<uint64_t>(kSync));
  }
  EXPECT_TRUE(found);
  const std::string closed_target =
      absl::StrCat("target=\"127.0.0.1:", testing::ClosedPort(), "\"");
  EXPECT_EQ(scrape.Sum("eventbus_target_messages_total", {closed_target, "result=\"delivered\""}),
            0);
  EXPECT_GT(scrape.Sum("eventbus_target_connect_failures_total", {closed_target}), 0);
  // The peer that never reads: its notifications filled the queue, the rest expired there.
  const std::string stuck_target = absl::StrCat("target=\"127.0.0.1:", (*stuck)->port(), "\"");
  EXPECT_GT(scrape.Sum("eventbus_target_messages_total", {stuck_target, "result=\"expired\""}), 0);
  // Per target too: every message handed to the pool was delivered, failed or expired.
  EXPECT_EQ(scrape.Sum("eventbus_target_messages_total"), 4 * (kAsync + kSync));

  // Gauges read at scrape time.
  EXPECT_EQ(scrape.Sum("eventbus_subscriptions"), 4);
  EXPECT_EQ(scrape.Sum("eventbus_event_subscriptions", {event}), 4);
  EXPECT_EQ(scrape.Sum("eventbus_store_healthy", {"store=\"memory\""}), 1);
  // One store write per Subscribe, each timed.
  EXPECT_EQ(scrape.Sum("eventbus_store_operations_total", {"operation=\"put\"", "result=\"ok\""}),
            4);
  EXPECT_EQ(scrape.Sum("eventbus_store_operation_duration_seconds_count", {"operation=\"put\""}),
            4);
  EXPECT_GE(scrape.Sum("eventbus_target_connections", {"state=\"connected\""}), 2);

  // gRPC calls by method and code, the raw Raise method included.
  const std::string service = "grpc_service=\"eventbus.v1.EventBusService\"";
  EXPECT_EQ(scrape.Sum("eventbus_grpc_server_handled_total",
                       {service, "grpc_method=\"Raise\"", "grpc_code=\"OK\""}),
            kAsync + kSync);
  EXPECT_EQ(scrape.Sum("eventbus_grpc_server_handled_total",
                       {service, "grpc_method=\"Raise\"", "grpc_code=\"INVALID_ARGUMENT\""}),
            1);
  EXPECT_EQ(scrape.Sum("eventbus_grpc_server_handled_total",
                       {service, "grpc_method=\"Subscribe\"", "grpc_code=\"OK\""}),
            4);

  auto [code, output] = PromtoolCheck(promtool, scrape.text());
  EXPECT_EQ(code, 0) << output;
  EXPECT_EQ(output, "") << "promtool check metrics reported:\n" << output;

  // The part of the scrape an operator looks at first, for the test log.
  for (absl::string_view line : absl::StrSplit(scrape.text(), '\n')) {
    if (absl::StartsWith(line, "eventbus_") && !absl::StrContains(line, "_bucket") &&
        !absl::StrContains(line, "grpc") && !absl::StrContains(line, " 0") &&
        !absl::StrContains(line, "store_op")) {
      std::cout << line << "\n";
    }
  }
}

TEST_F(MetricsE2eTest, TakenMetricsPortFailsStartUpNamingTheFlag) {
  // A listener on the metrics port, so eventbusd cannot bind it.
  const uint16_t taken = testing::PickUnusedPort();
  const int fd = testing::ListenTcp(taken);
  ASSERT_GE(fd, 0);

  ProcessOptions options;
  const std::string address = absl::StrCat("127.0.0.1:", taken);
  options.argv = {EventbusdPath(), absl::StrCat("--listen=127.0.0.1:", testing::PickUnusedPort()),
                  "--store=memory", absl::StrCat("--metrics_listen=", address)};
  log_path_ = absl::StrCat(::testing::TempDir(), "metrics_e2e_taken_", taken, ".log");
  options.log_path = log_path_;
  absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(std::move(options));
  ASSERT_TRUE(process.ok()) << process.status();
  server_ = *std::move(process);
  absl::StatusOr<testing::ExitStatus> exit = server_->Wait(absl::Seconds(20));
  ::close(fd);
  ASSERT_TRUE(exit.ok()) << "eventbusd kept running with its metrics port taken";
  EXPECT_EQ(exit->code, 1) << exit->ToString();
  const std::string log = server_->ReadLog();
  // The message is a logfmt value: its quotes are escaped.
  EXPECT_TRUE(absl::StrContains(log, absl::StrCat("metrics_listen \\\"", address, "\\\"")) &&
              absl::StrContains(log, "cannot serve /metrics"))
      << log;
}

}  // namespace
}  // namespace eventbus
