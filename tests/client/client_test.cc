// The client library and the CLI against an in-process EventBusServer (memory store, port 0).
#include "client/client.h"

#include <algorithm>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/cli.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "server/service/server.h"
#include "tests/testing/ports.h"

namespace eventbus::client {
namespace {

namespace v1 = ::eventbus::v1;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service::ServerConfig config;
    config.listen = "127.0.0.1:0";
    config.store = "memory";
    config.pool.num_loops = 1;
    auto server = service::EventBusServer::Start(config);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto client = Client::Connect(server_->address(), ClientOptions{absl::Seconds(10)});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(2));
  }

  // Runs the CLI against the server; returns the exit code.
  int Cli(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    return RunCli(args, server_->address(), out_, err_);
  }

  std::unique_ptr<service::EventBusServer> server_;
  std::unique_ptr<Client> client_;
  std::ostringstream out_, err_;
};

TEST_F(ClientTest, CallsEveryMethod) {
  v1::SubscribeRequest subscribe;
  subscribe.set_event("E");
  subscribe.set_socket("tcp:127.0.0.1:9000");
  auto subscribed = client_->Subscribe(subscribe);
  ASSERT_TRUE(subscribed.ok()) << subscribed.status();
  EXPECT_TRUE(subscribed->created());

  auto list = client_->ListSubscriptions({});
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->subscriptions_size(), 1);
  EXPECT_EQ(list->subscriptions(0).id(), subscribed->subscription().id());

  auto events = client_->ListEvents();
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->events_size(), 1);
  EXPECT_EQ(events->events(0).subscribers(), 1u);

  v1::RaiseRequest raise;
  raise.set_event("E");
  raise.set_sync(false);
  raise.set_all_deliveries(true);
  auto raised = client_->Raise(raise);
  ASSERT_TRUE(raised.ok()) << raised.status();
  ASSERT_EQ(raised->deliveries_size(), 1);
  EXPECT_EQ(raised->deliveries(0).status(), v1::DELIVERY_STATUS_QUEUED);

  v1::UnsubscribeRequest unsubscribe;
  unsubscribe.set_id(subscribed->subscription().id());
  auto removed = client_->Unsubscribe(unsubscribe);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(removed->removed(), 1u);
}

TEST_F(ClientTest, ReturnsTheServersCodeAndMessage) {
  v1::SubscribeRequest subscribe;
  subscribe.set_event("E");
  subscribe.set_socket("tcp:h:70000");
  auto subscribed = client_->Subscribe(subscribe);
  EXPECT_EQ(subscribed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(subscribed.status().message(), HasSubstr("tcp:h:70000"));
}

TEST(ClientConnectTest, RejectsEmptyAddressAndNonPositiveDeadline) {
  EXPECT_EQ(Client::Connect("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Client::Connect("127.0.0.1:1", ClientOptions{absl::ZeroDuration()}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ClientConnectTest, RefusesBadTlsAndTokenSettingsNamingThem) {
  ClientOptions token_in_clear;
  token_in_clear.token = "secret-token-0123456789";
  absl::Status clear = Client::Connect("127.0.0.1:1", token_in_clear).status();
  EXPECT_EQ(clear.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(clear.message(), HasSubstr("a bearer token is sent only over TLS"));
  EXPECT_THAT(clear.message(), Not(HasSubstr("secret-token")));

  ClientOptions missing_ca;
  missing_ca.tls_ca_file = "/nonexistent/ca.crt";
  EXPECT_EQ(Client::Connect("127.0.0.1:1", missing_ca).status(),
            absl::InvalidArgumentError(
                "tls_ca \"/nonexistent/ca.crt\": cannot read: No such file or directory"));

  ClientOptions cert_only;
  cert_only.tls = true;
  cert_only.tls_cert_file = "/nonexistent/client.crt";
  EXPECT_EQ(
      Client::Connect("127.0.0.1:1", cert_only).status(),
      absl::InvalidArgumentError("connect: a client certificate needs both tls_cert and tls_key"));

  // TLS with the system's roots and a token: accepted (the connection is made by the first call).
  ClientOptions system_roots;
  system_roots.tls = true;
  system_roots.token = "secret-token-0123456789";
  EXPECT_TRUE(Client::Connect("127.0.0.1:1", system_roots).ok());
}

TEST(ClientConnectTest, UnreachableServerIsUnavailableWithinTheDeadline) {
  auto client = Client::Connect(absl::StrCat("127.0.0.1:", testing::ClosedPort()),
                                ClientOptions{absl::Seconds(5)});
  ASSERT_TRUE(client.ok());
  absl::Time start = absl::Now();
  auto events = (*client)->ListEvents();
  EXPECT_EQ(events.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_LT(absl::Now() - start, absl::Seconds(6));
}

TEST_F(ClientTest, CliSubscribeListRaiseEventsUnsubscribe) {
  std::string socket = absl::StrCat("tcp:127.0.0.1:", testing::ClosedPort());
  ASSERT_EQ(Cli({"subscribe", "E_PIKE_BLOCKED", socket, "--expire", "0"}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("(new subscription)"));
  EXPECT_THAT(out_.str(), HasSubstr("never"));
  ASSERT_EQ(Cli({"subscribe", "E_PIKE_BLOCKED", socket}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("refreshed"));

  ASSERT_EQ(Cli({"list"}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("E_PIKE_BLOCKED"));
  EXPECT_THAT(out_.str(), HasSubstr(socket));
  EXPECT_EQ(err_.str(), "");

  ASSERT_EQ(Cli({"events"}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("E_PIKE_BLOCKED  1"));

  ASSERT_EQ(Cli({"raise", "--async", "E_PIKE_BLOCKED", "ip=192.168.2.11", "count:=3"}), 0)
      << err_.str();
  // Compact: the one QUEUED delivery is counted, not listed.
  EXPECT_THAT(out_.str(), HasSubstr("1 subscriber: 1 QUEUED, 0 OK, 0 failed\n"));
  EXPECT_THAT(out_.str(), ::testing::Not(HasSubstr(socket + "  QUEUED")));
  ASSERT_EQ(Cli({"raise", "--async", "--all", "E_PIKE_BLOCKED", "ip=192.168.2.11"}), 0)
      << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr(socket + "  QUEUED"));

  ASSERT_EQ(Cli({"raise", "--sync", "--timeout", "300", "E_PIKE_BLOCKED"}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("CONNECT_FAILED"));

  ASSERT_EQ(Cli({"raise", "--output", "json", "--sync", "--timeout=300", "E_PIKE_BLOCKED"}), 0)
      << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("\"DELIVERY_STATUS_CONNECT_FAILED\""));

  ASSERT_EQ(Cli({"raise", "E_NOBODY", "1"}), 0) << err_.str();
  EXPECT_EQ(out_.str(), "no subscribers\n");

  ASSERT_EQ(Cli({"unsubscribe", "E_PIKE_BLOCKED", socket}), 0) << err_.str();
  EXPECT_EQ(out_.str(), "removed 1\n");
  ASSERT_EQ(Cli({"unsubscribe", "E_PIKE_BLOCKED", socket}), 0) << err_.str();
  EXPECT_EQ(out_.str(), "removed 0\n");
}

TEST_F(ClientTest, ListAllPagesThroughEverySubscriptionAndEvent) {
  std::vector<std::string> expected;
  for (int i = 0; i < 10; ++i) {
    v1::SubscribeRequest subscribe;
    subscribe.set_event(absl::StrCat("E", i % 3));
    subscribe.set_socket(absl::StrCat("tcp:127.0.0.1:", 9000 + i));
    ASSERT_TRUE(client_->Subscribe(subscribe).ok());
    expected.push_back(absl::StrCat(subscribe.event(), " ", subscribe.socket()));
  }
  std::sort(expected.begin(), expected.end());
  v1::ListSubscriptionsRequest request;
  request.set_page_size(3);
  request.set_page_token("ignored: paging starts at the first page");
  std::vector<std::string> got;
  int pages = 0;
  absl::Status status =
      client_->ListAllSubscriptions(request, [&](const v1::ListSubscriptionsResponse& page) {
        ++pages;
        for (const v1::Subscription& sub : page.subscriptions()) {
          got.push_back(absl::StrCat(sub.event(), " ", sub.socket()));
        }
        return absl::OkStatus();
      });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(pages, 4);
  EXPECT_EQ(got, expected);

  // The callback's error stops the paging and is returned.
  pages = 0;
  status = client_->ListAllSubscriptions(request, [&](const v1::ListSubscriptionsResponse&) {
    ++pages;
    return absl::CancelledError("enough");
  });
  EXPECT_EQ(status, absl::CancelledError("enough"));
  EXPECT_EQ(pages, 1);

  v1::ListEventsRequest events;
  events.set_page_size(2);
  std::vector<std::string> names;
  status = client_->ListAllEvents(events, [&](const v1::ListEventsResponse& page) {
    for (const v1::EventInfo& info : page.events()) {
      names.push_back(absl::StrCat(info.event(), "=", info.subscribers()));
    }
    return absl::OkStatus();
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_THAT(names, ::testing::ElementsAre("E0=4", "E1=3", "E2=3"));

  // A bad page size is the server's INVALID_ARGUMENT.
  request.set_page_size(-1);
  status = client_->ListAllSubscriptions(
      request, [](const v1::ListSubscriptionsResponse&) { return absl::OkStatus(); });
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

// The CLI prints page by page what it used to print from one answer: the same table (when no
// later page needs wider columns) and the same JSON, byte for byte.
TEST_F(ClientTest, CliListAndEventsPageThroughEverythingPrintingWhatOneAnswerWould) {
  for (int i = 0; i < 7; ++i) {
    v1::SubscribeRequest subscribe;
    subscribe.set_event(absl::StrCat("E_PAGED", i % 2));
    subscribe.set_socket(absl::StrCat("tcp:127.0.0.1:", 9100 + i));
    subscribe.set_expire_seconds(0);  // no TTL that moves between the calls
    ASSERT_TRUE(client_->Subscribe(subscribe).ok());
  }
  v1::ListSubscriptionsRequest all_request;
  all_request.set_page_size(100);
  auto all = client_->ListSubscriptions(all_request);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->subscriptions_size(), 7);
  ASSERT_TRUE(all->next_page_token().empty());
  auto events = client_->ListEvents();
  ASSERT_TRUE(events.ok()) << events.status();
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  std::string all_json, events_json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(*all, &all_json, options).ok());
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(*events, &events_json, options).ok());

  for (const char* page_size : {"1", "2", "7", "10000"}) {
    ASSERT_EQ(Cli({"list", "--page_size", page_size}), 0) << err_.str();
    EXPECT_EQ(out_.str(), FormatSubscriptionsTable(*all)) << page_size;
    ASSERT_EQ(Cli({"list", "--output", "json", "--page_size", page_size}), 0) << err_.str();
    EXPECT_EQ(out_.str(), all_json) << page_size;
    ASSERT_EQ(Cli({"events", "--page_size", page_size}), 0) << err_.str();
    EXPECT_EQ(out_.str(), FormatEventsTable(*events)) << page_size;
    ASSERT_EQ(Cli({"events", "--output=json", "--page_size", page_size}), 0) << err_.str();
    EXPECT_EQ(out_.str(), events_json) << page_size;
  }
  ASSERT_EQ(Cli({"list", "E_NONE", "--output", "json"}), 0) << err_.str();
  EXPECT_EQ(out_.str(), "{\n}\n");
  ASSERT_EQ(Cli({"list", "E_NONE"}), 0) << err_.str();
  EXPECT_EQ(out_.str(), "no subscriptions\n");
  EXPECT_EQ(Cli({"list", "--page_size", "0"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("list: --page_size 0 is outside 1..10000"));
}

TEST_F(ClientTest, CliServerErrorIsOneLineWithTheCodeNameAndExitsOne) {
  EXPECT_EQ(Cli({"subscribe", "E", "tcp:h:70000"}), 1);
  EXPECT_THAT(err_.str(), StartsWith("eventbus: subscribe: INVALID_ARGUMENT: "));
  EXPECT_THAT(err_.str(), HasSubstr("tcp:h:70000"));
  std::string err = err_.str();
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

TEST(CliConnectTest, UnreachableServerIsOneLineUnavailable) {
  std::ostringstream out, err;
  std::string address = absl::StrCat("127.0.0.1:", testing::ClosedPort());
  EXPECT_EQ(RunCli({"--timeout_ms=3000", "events"}, address, out, err), 1);
  EXPECT_THAT(err.str(), StartsWith("eventbus: events: UNAVAILABLE: "));
  std::string text = err.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
}

}  // namespace
}  // namespace eventbus::client
