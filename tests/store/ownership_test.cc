// Subscription ownership (SPEC §10) through the SubscriptionManager over the durable stores: a real
// SQLite file reopened as a restart would (including one made by the schema before owners), and
// replicas sharing a real etcd, each checking against the owner the record carries.
#include <sqlite3.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/base/clock.h"
#include "server/base/mutex.h"
#include "server/registry/registry.h"
#include "server/store/etcd_store.h"
#include "server/store/sqlite_store.h"
#include "server/store/subscription_manager.h"
#include "tests/testing/etcd_harness.h"
#include "tests/testing/wait.h"

namespace eventbus::store {
namespace {

using ::eventbus::testing::EtcdHarness;
using ::eventbus::testing::TempDir;
using registry::Actor;
using registry::SubscriptionPtr;
using ::testing::HasSubstr;

const Actor kAlice{"alice", false};
const Actor kBob{"bob", false};
const Actor kRoot{"root", true};

SubscribeRequest Req(std::string event, std::string socket, uint32_t expire_seconds) {
  SubscribeRequest request;
  request.event = std::move(event);
  request.socket = std::move(socket);
  request.expire_seconds = expire_seconds;
  return request;
}

// One replica: a registry, a store and the manager over them, on the real clock.
class Node {
 public:
  explicit Node(std::unique_ptr<SubscriptionStore> store)
      : store_(std::move(store)),
        manager_(&registry_, store_.get(), base::RealClock::Get(), SubscriptionLimits{}) {}
  ~Node() { manager_.Stop(); }

  absl::Status Start() { return manager_.Start(); }
  registry::Registry& registry() { return registry_; }

  absl::StatusOr<SubscribeResult> Subscribe(const Actor& actor, SubscribeRequest request) {
    return Wait<absl::StatusOr<SubscribeResult>>(
        [&](auto done) { manager_.Subscribe(actor, std::move(request), std::move(done)); });
  }
  absl::StatusOr<int> Unsubscribe(const Actor& actor, std::string id, std::string event = "",
                                  std::string socket = "") {
    absl::StatusOr<UnsubscribeResult> result =
        Wait<absl::StatusOr<UnsubscribeResult>>([&](auto done) {
          manager_.Unsubscribe(actor, std::move(id), std::move(event), std::move(socket),
                               std::move(done));
        });
    if (!result.ok()) return result.status();
    return result->removed;
  }

 private:
  // Runs `call` with a callback and waits (bounded) for its answer.
  template <typename T, typename Call>
  static T Wait(Call call) {
    struct Slot {
      eventbus::Notification done;
      std::optional<T> value;
    };
    auto slot = std::make_shared<Slot>();
    call([slot](T value) {
      slot->value.emplace(std::move(value));
      slot->done.Notify();
    });
    if (!slot->done.WaitForNotificationWithTimeout(absl::Seconds(10))) {
      return T(absl::DeadlineExceededError("no answer within 10 s"));
    }
    return *std::move(slot->value);
  }

  registry::Registry registry_;
  std::unique_ptr<SubscriptionStore> store_;
  SubscriptionManager manager_;
};

class SqliteOwnershipTest : public ::testing::Test {
 protected:
  std::unique_ptr<Node> Open() {
    SqliteStoreOptions options;
    options.path = path_;
    auto node = std::make_unique<Node>(std::make_unique<SqliteStore>(options));
    absl::Status status = node->Start();
    EXPECT_TRUE(status.ok()) << status;
    return node;
  }

  TempDir dir_{"ownership"};
  std::string path_ = (dir_.path() / "subscriptions.db").string();
};

TEST_F(SqliteOwnershipTest, TheOwnerSurvivesARestartAndStillDecides) {
  std::string id;
  {
    auto node = Open();
    absl::StatusOr<SubscribeResult> created = node->Subscribe(kAlice, Req("E", "tcp:h:1", 3600));
    ASSERT_TRUE(created.ok()) << created.status();
    id = created->subscription->id;
  }
  auto node = Open();
  SubscriptionPtr loaded = node->registry().FindById(id);
  ASSERT_NE(loaded, nullptr);
  EXPECT_EQ(loaded->owner, "alice");

  EXPECT_EQ(node->Subscribe(kBob, Req("E", "tcp:h:1", 1)).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(node->Unsubscribe(kBob, id).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(node->Unsubscribe(kBob, "", "E", "tcp:h:1").status().code(),
            absl::StatusCode::kPermissionDenied);
  absl::StatusOr<SubscribeResult> by_admin = node->Subscribe(kRoot, Req("E", "tcp:h:1", 60));
  ASSERT_TRUE(by_admin.ok()) << by_admin.status();
  EXPECT_EQ(by_admin->subscription->owner, "alice");

  // The admin's refresh was written with alice still the owner.
  node = Open();
  ASSERT_NE(node->registry().FindById(id), nullptr);
  EXPECT_EQ(node->registry().FindById(id)->owner, "alice");
  EXPECT_TRUE(node->Subscribe(kAlice, Req("E", "tcp:h:1", 60)).ok());
  EXPECT_EQ(node->Unsubscribe(kAlice, id).value_or(-1), 1);
  node = Open();
  EXPECT_EQ(node->registry().size(), 0u);
}

// A file written before owners were kept (the schema-1 table, made here with its exact
// CREATE TABLE): its subscriptions have no owner, so once authentication is on only an admin may
// change them, and an admin's refresh does not make them anyone's.
TEST_F(SqliteOwnershipTest, SubscriptionsFromAnOldFileAreAnAdminsAlone) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  const std::string sql = absl::StrCat(
      "CREATE TABLE IF NOT EXISTS subscriptions ("
      "  id TEXT PRIMARY KEY NOT NULL,"
      "  event TEXT NOT NULL,"
      "  socket TEXT NOT NULL,"
      "  create_time_us INTEGER NOT NULL,"
      "  expire_time_us INTEGER,"
      "  event_param TEXT,"
      "  UNIQUE (event, socket));"
      "PRAGMA user_version=1;"
      "INSERT INTO subscriptions (id, event, socket, create_time_us, expire_time_us) "
      "VALUES ('00000000000000aa', 'E', 'tcp:h:1', 1700000000000000, ",
      absl::ToUnixMicros(absl::Now() + absl::Hours(1)), ");");
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);

  auto node = Open();
  SubscriptionPtr old = node->registry().FindById("00000000000000aa");
  ASSERT_NE(old, nullptr);
  EXPECT_EQ(old->owner, "");
  absl::Status refused = node->Subscribe(kAlice, Req("E", "tcp:h:1", 1)).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << refused;
  EXPECT_THAT(refused.message(), HasSubstr("00000000000000aa"));
  EXPECT_THAT(refused.message(), HasSubstr("has no owner"));
  EXPECT_EQ(node->Unsubscribe(kAlice, "00000000000000aa").status().code(),
            absl::StatusCode::kPermissionDenied);
  absl::StatusOr<SubscribeResult> by_admin = node->Subscribe(kRoot, Req("E", "tcp:h:1", 60));
  ASSERT_TRUE(by_admin.ok()) << by_admin.status();
  EXPECT_EQ(by_admin->subscription->owner, "");

  node = Open();
  ASSERT_NE(node->registry().FindById("00000000000000aa"), nullptr);
  EXPECT_EQ(node->registry().FindById("00000000000000aa")->owner, "");
  EXPECT_EQ(node->Unsubscribe(kRoot, "", "E", "tcp:h:1").value_or(-1), 1);
}

class EtcdOwnershipTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!EtcdHarness::Available()) {
      GTEST_SKIP() << EtcdHarness::kEtcdBinary << " is not installed (package etcd-server)";
    }
    absl::StatusOr<std::unique_ptr<EtcdHarness>> etcd = EtcdHarness::Start();
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
  }

  std::unique_ptr<Node> Open() {
    EtcdStoreOptions options;
    options.endpoints = {etcd_->endpoint()};
    options.prefix = "/eventbus-ownership";
    auto node = std::make_unique<Node>(std::make_unique<EtcdStore>(options));
    absl::Status status = node->Start();
    EXPECT_TRUE(status.ok()) << status;
    return node;
  }

  // Waits until `node` holds subscription `id` and `check` holds for it.
  template <typename Check>
  static bool WaitForSub(Node& node, const std::string& id, Check check) {
    return testing::WaitFor(absl::Seconds(5), [&] {
      SubscriptionPtr sub = node.registry().FindById(id);
      return sub != nullptr && check(*sub);
    });
  }

  // Declared first: the nodes stop before etcd does.
  std::unique_ptr<EtcdHarness> etcd_;
};

TEST_F(EtcdOwnershipTest, ReplicasEnforceTheOwnerTheRecordCarries) {
  auto a = Open();
  auto b = Open();
  absl::StatusOr<SubscribeResult> created = a->Subscribe(kAlice, Req("E", "tcp:h:1", 3600));
  ASSERT_TRUE(created.ok()) << created.status();
  const std::string id = created->subscription->id;
  ASSERT_TRUE(
      WaitForSub(*b, id, [](const registry::Subscription& sub) { return sub.owner == "alice"; }));

  // Bob, on the other replica, can neither take it over nor remove it.
  absl::Status refused = b->Subscribe(kBob, Req("E", "tcp:h:1", 1)).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << refused;
  EXPECT_THAT(refused.message(), HasSubstr(id));
  EXPECT_EQ(b->Unsubscribe(kBob, id).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(b->registry().FindById(id)->expire_time, created->subscription->expire_time);

  // An admin on B refreshes it; A sees the new expiry, still alice's.
  absl::StatusOr<SubscribeResult> by_admin = b->Subscribe(kRoot, Req("E", "tcp:h:1", 7200));
  ASSERT_TRUE(by_admin.ok()) << by_admin.status();
  EXPECT_EQ(by_admin->subscription->owner, "alice");
  const absl::Time new_expiry = by_admin->subscription->expire_time;
  ASSERT_TRUE(WaitForSub(
      *a, id, [&](const registry::Subscription& sub) { return sub.expire_time == new_expiry; }));
  EXPECT_EQ(a->registry().FindById(id)->owner, "alice");

  // Alice removes it from B; A follows.
  EXPECT_EQ(b->Unsubscribe(kAlice, "", "E", "tcp:h:1").value_or(-1), 1);
  EXPECT_TRUE(
      testing::WaitFor(absl::Seconds(5), [&] { return a->registry().FindById(id) == nullptr; }));
}

// A record an older build wrote (no "owner" member): every replica reads it as ownerless.
TEST_F(EtcdOwnershipTest, ARecordWithoutAnOwnerIsAnAdminsAlone) {
  ASSERT_TRUE(etcd_
                  ->Put("/eventbus-ownership/subscriptions/00000000000000bb",
                        R"({"v":1,"id":"00000000000000bb","event":"E","socket":"tcp:h:1",)"
                        R"("create_time_us":1700000000000000})")
                  .ok());
  auto a = Open();
  ASSERT_NE(a->registry().FindById("00000000000000bb"), nullptr);
  EXPECT_EQ(a->Subscribe(kAlice, Req("E", "tcp:h:1", 60)).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(a->Unsubscribe(kAlice, "00000000000000bb").status().code(),
            absl::StatusCode::kPermissionDenied);
  absl::StatusOr<SubscribeResult> by_admin = a->Subscribe(kRoot, Req("E", "tcp:h:1", 60));
  ASSERT_TRUE(by_admin.ok()) << by_admin.status();
  EXPECT_EQ(by_admin->subscription->owner, "");
  EXPECT_EQ(a->Unsubscribe(kRoot, "00000000000000bb").value_or(-1), 1);
}

}  // namespace
}  // namespace eventbus::store
