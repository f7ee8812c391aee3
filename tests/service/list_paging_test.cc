// Paging of ListSubscriptions and ListEvents (AIP-158) through the real gRPC API: EventBusServer
// in-process over the memory store, a deadline on every call. The owner filter with paging is in
// service_test.cc (OwnershipServiceTest), beside the rest of ownership.
#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "eventbus/v1/eventbus.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/service/server.h"

namespace eventbus::service {
namespace {

namespace v1 = ::eventbus::v1;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  return context;
}

class ListPagingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerConfig config;
    config.listen = "127.0.0.1:0";
    config.store = "memory";
    config.pool.num_loops = 1;
    auto server = EventBusServer::Start(config);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = v1::EventBusService::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(2));
  }

  // Subscribes `event` to tcp:127.0.0.1:`port` and returns its key, "event socket".
  std::string Subscribe(const std::string& event, int port) {
    v1::SubscribeRequest request;
    request.set_event(event);
    request.set_socket(absl::StrCat("tcp:127.0.0.1:", port));
    request.set_expire_seconds(0);
    v1::SubscribeResponse response;
    grpc::Status status = stub_->Subscribe(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    ids_[absl::StrCat(event, " ", request.socket())] = response.subscription().id();
    return absl::StrCat(event, " ", request.socket());
  }
  void Unsubscribe(const std::string& key) {
    v1::UnsubscribeRequest request;
    request.set_id(ids_.at(key));
    v1::UnsubscribeResponse response;
    grpc::Status status = stub_->Unsubscribe(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
  }

  grpc::Status List(const v1::ListSubscriptionsRequest& request,
                    v1::ListSubscriptionsResponse* response) {
    return stub_->ListSubscriptions(Context().get(), request, response);
  }

  // Every page of `event` with `page_size`: the keys in the order served, and the pages' sizes.
  std::vector<std::string> AllPages(const std::string& event, int page_size,
                                    std::vector<int>* sizes = nullptr) {
    std::vector<std::string> keys;
    v1::ListSubscriptionsRequest request;
    request.set_event(event);
    request.set_page_size(page_size);
    for (int pages = 0; pages < 2000; ++pages) {  // bounded: a token that repeats loops
      v1::ListSubscriptionsResponse response;
      grpc::Status status = List(request, &response);
      EXPECT_TRUE(status.ok()) << status.error_message();
      if (!status.ok()) break;
      if (sizes != nullptr) sizes->push_back(response.subscriptions_size());
      for (const v1::Subscription& sub : response.subscriptions()) {
        keys.push_back(absl::StrCat(sub.event(), " ", sub.socket()));
      }
      if (response.next_page_token().empty()) break;
      request.set_page_token(response.next_page_token());
    }
    return keys;
  }

  std::unique_ptr<EventBusServer> server_;
  std::unique_ptr<v1::EventBusService::Stub> stub_;
  std::map<std::string, std::string> ids_;  // key -> id
};

TEST_F(ListPagingTest, EveryPageSizeServesEachSubscriptionOnceInEventSocketOrder) {
  std::vector<std::string> expected;
  for (int i = 0; i < 120; ++i) expected.push_back(Subscribe(absl::StrCat("E", i % 7), 1000 + i));
  std::sort(expected.begin(), expected.end());
  for (int page_size : {1, 2, 7, 50, 119, 120, 121, 0}) {
    std::vector<int> sizes;
    EXPECT_THAT(AllPages("", page_size, &sizes), ElementsAreArray(expected)) << page_size;
    // Full pages, then the rest; the last page's token is empty (AllPages stopped on it).
    int per_page = page_size == 0 ? 1000 : page_size;
    ASSERT_EQ(sizes.size(), static_cast<size_t>((120 + per_page - 1) / per_page)) << page_size;
    for (size_t i = 0; i + 1 < sizes.size(); ++i) EXPECT_EQ(sizes[i], per_page);
  }
  // One event's subscriptions, page by page.
  std::vector<std::string> e3;
  std::copy_if(expected.begin(), expected.end(), std::back_inserter(e3),
               [](const std::string& key) { return key.rfind("E3 ", 0) == 0; });
  for (int page_size : {1, 5, 100}) {
    EXPECT_THAT(AllPages("E3", page_size), ElementsAreArray(e3)) << page_size;
  }
  EXPECT_THAT(AllPages("E_NONE", 5), IsEmpty());
}

TEST_F(ListPagingTest, AClientThatSendsNoPageSizeGetsTheFirstThousandAndAToken) {
  for (int i = 0; i < 1001; ++i) Subscribe("E_MANY", 2000 + i);
  v1::ListSubscriptionsResponse first;
  ASSERT_TRUE(List({}, &first).ok());
  EXPECT_EQ(first.subscriptions_size(), 1000);
  EXPECT_FALSE(first.next_page_token().empty());
  v1::ListSubscriptionsRequest next;
  next.set_page_token(first.next_page_token());
  v1::ListSubscriptionsResponse second;
  ASSERT_TRUE(List(next, &second).ok());
  ASSERT_EQ(second.subscriptions_size(), 1);
  EXPECT_TRUE(second.next_page_token().empty());
  // A page_size above the maximum is served as the maximum (10000), not refused.
  v1::ListSubscriptionsRequest huge;
  huge.set_page_size(1 << 30);
  v1::ListSubscriptionsResponse all;
  grpc::Status status = List(huge, &all);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(all.subscriptions_size(), 1001);
  EXPECT_TRUE(all.next_page_token().empty());
}

// A page of page_size subscriptions with long sockets could outgrow gRPC's 4 MiB: it stops near
// 2 MiB instead, with a token, and the next pages carry the rest.
TEST_F(ListPagingTest, APageStopsNearTwoMebibytesWhateverItsPageSize) {
  constexpr int kSubs = 2500;
  const std::string method(1000, 'm');  // sockets of about 1 KB, near --max_socket_bytes
  for (int i = 0; i < kSubs; ++i) {
    v1::SubscribeRequest request;
    request.set_event("E_LONG");
    request.set_socket(absl::StrCat("tcp:127.0.0.1:", 1 + i % 9, "/", method, i));
    request.set_expire_seconds(0);
    v1::SubscribeResponse response;
    grpc::Status status = stub_->Subscribe(Context().get(), request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  v1::ListSubscriptionsRequest request;
  request.set_page_size(10000);
  v1::ListSubscriptionsResponse first;
  ASSERT_TRUE(List(request, &first).ok());
  EXPECT_LT(first.subscriptions_size(), kSubs);
  EXPECT_GT(first.ByteSizeLong(), size_t{3} << 19);  // 1.5 MiB
  EXPECT_LT(first.ByteSizeLong(), size_t{5} << 19);  // 2.5 MiB
  EXPECT_FALSE(first.next_page_token().empty());
  std::vector<int> sizes;
  std::vector<std::string> keys = AllPages("", 10000, &sizes);
  EXPECT_EQ(keys.size(), static_cast<size_t>(kSubs));
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  EXPECT_EQ(std::adjacent_find(keys.begin(), keys.end()), keys.end());
  EXPECT_EQ(sizes.size(), 2u);
}

TEST_F(ListPagingTest, SubscriptionsThatStayAreNeitherRepeatedNorSkippedWhileOthersComeAndGo) {
  std::set<std::string> stayers;
  for (int i = 0; i < 60; ++i) stayers.insert(Subscribe(absl::StrCat("E", i % 4), 3000 + i));
  std::vector<std::string> added;
  std::map<std::string, int> seen;
  v1::ListSubscriptionsRequest request;
  request.set_page_size(7);
  int round = 0;
  for (; round < 200;) {  // bounded: a token that repeats would loop
    v1::ListSubscriptionsResponse response;
    ASSERT_TRUE(List(request, &response).ok());
    for (const v1::Subscription& sub : response.subscriptions()) {
      ++seen[absl::StrCat(sub.event(), " ", sub.socket())];
    }
    if (response.next_page_token().empty()) break;
    request.set_page_token(response.next_page_token());
    // Between pages: subscriptions before, at and after the boundary come, and some go again,
    // the last key served among them.
    ++round;
    for (const char* event : {"E0", "E2", "E9", "A"}) {
      added.push_back(Subscribe(event, 5000 + round));
    }
    if (round % 2 == 0) {
      Unsubscribe(added[added.size() - 5]);
      Unsubscribe(added[added.size() - 6]);
    }
  }
  for (const std::string& key : stayers) EXPECT_EQ(seen[key], 1) << key;
  for (const auto& [key, count] : seen) EXPECT_EQ(count, 1) << key;
}

TEST_F(ListPagingTest, BadPageSizesAndTokensAreInvalidArgumentNamingTheField) {
  for (int i = 0; i < 5; ++i) Subscribe(i < 3 ? "E_A" : "E_B", 4000 + i);
  v1::ListSubscriptionsResponse response;
  v1::ListSubscriptionsRequest negative;
  negative.set_page_size(-1);
  grpc::Status status = List(negative, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "page_size: -1 is negative (0 = the default, 1000)");

  v1::ListSubscriptionsRequest garbage;
  garbage.set_page_token("not-a-token");
  status = List(garbage, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("page_token: not a token this server issued"));

  // A token of one filter does not page another: not another event, nor every event.
  v1::ListSubscriptionsRequest of_a;
  of_a.set_event("E_A");
  of_a.set_page_size(1);
  ASSERT_TRUE(List(of_a, &response).ok());
  ASSERT_FALSE(response.next_page_token().empty());
  v1::ListSubscriptionsRequest of_b;
  of_b.set_event("E_B");
  of_b.set_page_token(response.next_page_token());
  status = List(of_b, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("page_token: issued for event \"E_A\", but this request asks for event "
                        "\"E_B\""));
  of_b.clear_event();
  status = List(of_b, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("asks for every event"));

  // A ListEvents token does not page ListSubscriptions, nor the reverse.
  v1::ListEventsRequest events;
  events.set_page_size(1);
  v1::ListEventsResponse events_page;
  ASSERT_TRUE(stub_->ListEvents(Context().get(), events, &events_page).ok());
  ASSERT_FALSE(events_page.next_page_token().empty());
  v1::ListSubscriptionsRequest crossed;
  crossed.set_page_token(events_page.next_page_token());
  status = List(crossed, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("page_token: a token of ListEvents"));
  events.set_page_size(-5);
  status = stub_->ListEvents(Context().get(), events, &events_page);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("page_size: -5 is negative"));
}

TEST_F(ListPagingTest, EventsArePagedByName) {
  std::vector<std::string> expected;
  for (int i = 0; i < 25; ++i) {
    std::string event = absl::StrCat("EV_", (i * 7) % 25);
    Subscribe(event, 6000 + i);
    if (i % 5 == 0) Subscribe(event, 7000 + i);
    expected.push_back(absl::StrCat(event, "=", i % 5 == 0 ? 2 : 1));
  }
  std::sort(expected.begin(), expected.end(), [](const std::string& a, const std::string& b) {
    return a.substr(0, a.find('=')) < b.substr(0, b.find('='));
  });
  for (int page_size : {1, 4, 25, 0}) {
    std::vector<std::string> got;
    v1::ListEventsRequest request;
    request.set_page_size(page_size);
    for (int pages = 1;; ++pages) {
      v1::ListEventsResponse response;
      grpc::Status status = stub_->ListEvents(Context().get(), request, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      for (const v1::EventInfo& info : response.events()) {
        got.push_back(absl::StrCat(info.event(), "=", info.subscribers()));
      }
      if (response.next_page_token().empty()) {
        int per_page = page_size == 0 ? 1000 : page_size;
        EXPECT_EQ(pages, (25 + per_page - 1) / per_page) << page_size;
        break;
      }
      request.set_page_token(response.next_page_token());
    }
    EXPECT_THAT(got, ElementsAreArray(expected)) << page_size;
  }
}

}  // namespace
}  // namespace eventbus::service
