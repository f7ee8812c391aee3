// Durable subscriptions through the real eventbusd binary: the default SQLite store across a
// SIGKILL in the middle of a Subscribe burst and with a corrupt or unusable data directory, and
// the etcd store shared by two or three replicas (propagation, unsubscribe, expiry, an etcd
// outage and its recovery). Every server is a child process on its own loopback port and data dir.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "server/base/mutex.h"
#include "tests/testing/delay_proxy.h"
#include "tests/testing/etcd_harness.h"
#include "tests/testing/jsonrpc_peer.h"
#include "tests/testing/ports.h"
#include "tests/testing/process.h"
#include "tests/testing/wait.h"

namespace eventbus {
namespace {

namespace v1 = ::eventbus::v1;
using ::eventbus::client::Client;
using ::eventbus::client::ClientOptions;
using ::eventbus::testing::EtcdHarness;
using ::eventbus::testing::JsonRpcPeer;
using ::eventbus::testing::PortAccepts;
using ::eventbus::testing::Process;
using ::eventbus::testing::ProcessOptions;
using ::eventbus::testing::TempDir;
using ::eventbus::testing::WaitFor;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

constexpr char kStoreHealth[] = "eventbus.store";
constexpr char kServiceHealth[] = "eventbus.v1.EventBusService";

// The spec's promise for replicas: a subscription made on one is used by all within a second.
constexpr absl::Duration kPropagation = absl::Seconds(1);

// Returns once the clock has passed `instant`, which is itself the condition a test waits for
// (an expiry). Bounded by how far ahead `instant` is.
void WaitUntilPast(absl::Time instant) {
  while (absl::Now() <= instant) absl::SleepFor(instant - absl::Now() + absl::Microseconds(1));
}

// One eventbusd child process and a client to it.
struct Server {
  std::unique_ptr<Process> process;
  std::string address;
  std::unique_ptr<Client> client;

  std::string Log() const { return process->ReadLog(); }
};

// Starts eventbusd on a fresh port with `data_dir` and `extra` flags, and waits until it answers
// ListEvents. Must run on the test thread (the child dies with the thread that started it).
absl::StatusOr<Server> StartEventbusdOnce(const std::filesystem::path& data_dir,
                                          const std::filesystem::path& log_path,
                                          const std::vector<std::string>& extra) {
  Server server;
  uint16_t port = testing::PickUnusedPort();
  server.address = absl::StrCat("127.0.0.1:", port);
  ProcessOptions options;
  options.argv = {EVENTBUSD_PATH, absl::StrCat("--listen=", server.address),
                  absl::StrCat("--data_dir=", data_dir.string())};
  options.argv.insert(options.argv.end(), extra.begin(), extra.end());
  options.log_path = log_path.string();
  absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(std::move(options));
  if (!process.ok()) return process.status();
  server.process = *std::move(process);
  // The port opens only once the store has loaded; connecting first keeps the client's channel
  // out of gRPC's reconnect backoff.
  bool listening =
      WaitFor(absl::Seconds(20), [&] { return !server.process->Running() || PortAccepts(port); });
  if (!listening || !server.process->Running()) {
    return absl::UnavailableError(
        absl::StrCat("eventbusd on ", server.address, " did not start:\n", server.Log()));
  }
  ClientOptions client_options;
  client_options.deadline = absl::Seconds(10);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(server.address, client_options);
  if (!client.ok()) return client.status();
  server.client = *std::move(client);
  absl::StatusOr<v1::ListEventsResponse> events = server.client->ListEvents();
  if (!events.ok()) {
    return absl::UnavailableError(absl::StrCat("eventbusd on ", server.address,
                                               " does not answer: ", events.status().ToString(),
                                               "\n", server.Log()));
  }
  return server;
}

// StartEventbusdOnce, again on another port when another process took the one picked (the
// machine is shared) before eventbusd could bind it.
absl::StatusOr<Server> StartEventbusd(const std::filesystem::path& data_dir,
                                      const std::filesystem::path& log_path,
                                      std::vector<std::string> extra = {}) {
  absl::StatusOr<Server> server = StartEventbusdOnce(data_dir, log_path, extra);
  for (int attempt = 1; attempt < 3; ++attempt) {
    if (server.ok() || !absl::StrContains(server.status().message(), "cannot bind")) break;
    server = StartEventbusdOnce(data_dir, log_path, extra);
  }
  return server;
}

// grpc.health.v1.Health/Check for `service`; the status name ("SERVING", "NOT_SERVING", ...) or
// the RPC error.
std::string HealthOf(Client& client, const std::string& service) {
  absl::StatusOr<HealthCheckResponse::ServingStatus> status = client.CheckHealth(service);
  if (!status.ok()) return absl::StrCat("rpc error ", status.status().ToString());
  return HealthCheckResponse::ServingStatus_Name(*status);
}

v1::SubscribeRequest SubscribeRequest(const std::string& event, const std::string& socket,
                                      std::optional<uint32_t> expire_seconds) {
  v1::SubscribeRequest request;
  request.set_event(event);
  request.set_socket(socket);
  if (expire_seconds.has_value()) request.set_expire_seconds(*expire_seconds);
  return request;
}

// An async Raise of `event` whose answer lists every delivery (QUEUED ones too), so the tests can
// see which subscriptions it reached.
v1::RaiseRequest RaiseRequest(const std::string& event) {
  v1::RaiseRequest request;
  request.set_event(event);
  request.set_all_deliveries(true);
  return request;
}

// The subscriptions of `event` on `server`, by socket; empty on error.
std::map<std::string, v1::Subscription> ListBySocket(Server& server, const std::string& event) {
  v1::ListSubscriptionsRequest request;
  request.set_event(event);
  absl::StatusOr<v1::ListSubscriptionsResponse> response =
      server.client->ListSubscriptions(request);
  std::map<std::string, v1::Subscription> out;
  if (!response.ok()) return out;
  for (const v1::Subscription& sub : response->subscriptions()) out[sub.socket()] = sub;
  return out;
}

bool HasSubscriptionId(Server& server, const std::string& event, const std::string& id) {
  for (const auto& [socket, sub] : ListBySocket(server, event)) {
    if (sub.id() == id) return true;
  }
  return false;
}

// The `stale` flag of ListEvents and of ListSubscriptions when both answer and agree; nullopt
// otherwise.
std::optional<bool> Stale(Server& server) {
  absl::StatusOr<v1::ListEventsResponse> events = server.client->ListEvents();
  absl::StatusOr<v1::ListSubscriptionsResponse> subs = server.client->ListSubscriptions({});
  if (!events.ok() || !subs.ok() || events->stale() != subs->stale()) return std::nullopt;
  return events->stale();
}

// Deliveries of one async Raise of `event` on `server`; -1 when the call fails.
int RaiseCount(Server& server, const std::string& event) {
  absl::StatusOr<v1::RaiseResponse> response = server.client->Raise(RaiseRequest(event));
  if (!response.ok()) return -1;
  return response->deliveries_size();
}

// The "method" of each JSON-RPC message the peer received (the socket's /METHOD, or the event).
std::vector<std::string> Methods(const JsonRpcPeer& peer) {
  std::vector<std::string> methods;
  const std::string kKey = "\"method\":\"";
  for (const std::string& message : peer.Messages()) {
    size_t start = message.find(kKey);
    if (start == std::string::npos) {
      methods.push_back("<none>");
      continue;
    }
    start += kKey.size();
    methods.push_back(message.substr(start, message.find('"', start) - start));
  }
  return methods;
}

// ---------------------------------------------------------------------------------------------
// SQLite (the default store).

class SqliteE2eTest : public ::testing::Test {
 protected:
  TempDir dir_{"store-e2e-sqlite"};
};

// What a client was told about one subscription.
struct Acked {
  std::string id;
  std::string socket;
  std::optional<google::protobuf::Timestamp> expire_time;
  google::protobuf::Timestamp create_time;
};

TEST_F(SqliteE2eTest, SqliteSurvivesSigkillDuringSubscribeBurst) {
  constexpr int kSubscribes = 1000;
  constexpr int kKillAfter = 500;
  constexpr int kThreads = 8;
  constexpr char kEvent[] = "E_BURST";
  const std::filesystem::path data = dir_.path() / "data";

  absl::StatusOr<std::unique_ptr<JsonRpcPeer>> peer = JsonRpcPeer::Start();
  ASSERT_TRUE(peer.ok()) << peer.status();
  absl::StatusOr<Server> first = StartEventbusd(data, dir_.path() / "first.log");
  ASSERT_TRUE(first.ok()) << first.status();

  eventbus::Mutex mu;
  std::vector<Acked> acked;  // guarded by mu
  std::atomic<int> next{0};
  std::atomic<int> failed{0};
  std::atomic<bool> killed{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      // Bounded: each index is taken once; after the kill a thread stops at its first failure.
      for (int i = next++; i < kSubscribes; i = next++) {
        std::optional<uint32_t> expire = i % 3 == 0 ? 0u : 3600u;
        absl::StatusOr<v1::SubscribeResponse> response = first->client->Subscribe(
            SubscribeRequest(kEvent, (*peer)->socket(absl::StrCat("m", i)), expire));
        if (!response.ok()) {
          ++failed;
          if (killed.load()) return;
          continue;
        }
        Acked ack;
        ack.id = response->subscription().id();
        ack.socket = response->subscription().socket();
        ack.create_time = response->subscription().create_time();
        if (response->subscription().has_expire_time()) {
          ack.expire_time = response->subscription().expire_time();
        }
        eventbus::MutexLock lock(&mu);
        acked.push_back(std::move(ack));
      }
    });
  }
  {
    eventbus::MutexLock lock(&mu);
    bool reached =
        mu.AwaitWithTimeout([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(
                                mu) { return acked.size() >= static_cast<size_t>(kKillAfter); },
                            absl::Seconds(60));
    EXPECT_TRUE(reached) << "only " << acked.size() << " Subscribes acknowledged";
  }
  killed = true;
  absl::StatusOr<testing::ExitStatus> exit = first->process->Kill();
  for (std::thread& thread : threads) thread.join();
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->signal, SIGKILL) << exit->ToString();

  std::vector<Acked> survivors;
  {
    eventbus::MutexLock lock(&mu);
    survivors = acked;
  }
  ASSERT_GE(survivors.size(), static_cast<size_t>(kKillAfter));
  // The kill landed mid-burst: some Subscribes were still to come or in flight.
  EXPECT_LT(survivors.size(), static_cast<size_t>(kSubscribes))
      << "the burst finished before the kill";
  EXPECT_GT(failed.load(), 0);

  absl::StatusOr<Server> second = StartEventbusd(data, dir_.path() / "second.log");
  ASSERT_TRUE(second.ok()) << second.status();
  std::map<std::string, v1::Subscription> listed = ListBySocket(*second, kEvent);
  // Subscriptions committed whose answer the kill cut off may be there too; the acknowledged ones
  // must all be there, unchanged.
  ASSERT_GE(listed.size(), survivors.size()) << second->Log();
  int mismatches = 0;
  for (const Acked& ack : survivors) {
    auto it = listed.find(ack.socket);
    if (it == listed.end()) {
      ADD_FAILURE() << "acknowledged subscription lost: " << ack.id << " " << ack.socket;
      if (++mismatches > 10) break;
      continue;
    }
    const v1::Subscription& sub = it->second;
    bool same = sub.id() == ack.id && sub.has_expire_time() == ack.expire_time.has_value() &&
                sub.create_time().seconds() == ack.create_time.seconds() &&
                sub.create_time().nanos() == ack.create_time.nanos();
    if (same && ack.expire_time.has_value()) {
      same = sub.expire_time().seconds() == ack.expire_time->seconds() &&
             sub.expire_time().nanos() == ack.expire_time->nanos();
    }
    if (!same) {
      ADD_FAILURE() << "subscription " << ack.socket << " changed across the restart: acknowledged"
                    << " id=" << ack.id << " create=" << ack.create_time.ShortDebugString()
                    << " expire="
                    << (ack.expire_time ? ack.expire_time->ShortDebugString() : "never")
                    << "; after restart id=" << sub.id()
                    << " create=" << sub.create_time().ShortDebugString() << " expire="
                    << (sub.has_expire_time() ? sub.expire_time().ShortDebugString() : "never");
      if (++mismatches > 10) break;
    }
  }

  // One Raise reaches every listed subscription: one message per socket method.
  absl::StatusOr<v1::RaiseResponse> raised = second->client->Raise(RaiseRequest(kEvent));
  ASSERT_TRUE(raised.ok()) << raised.status();
  EXPECT_EQ(raised->deliveries_size(), static_cast<int>(listed.size()));
  for (const v1::Delivery& delivery : raised->deliveries()) {
    EXPECT_EQ(delivery.status(), v1::DELIVERY_STATUS_QUEUED) << delivery.ShortDebugString();
  }
  ASSERT_TRUE((*peer)->WaitForMessages(listed.size(), absl::Seconds(30)))
      << (*peer)->message_count() << " of " << listed.size() << " messages arrived";
  std::vector<std::string> methods = Methods(**peer);
  std::set<std::string> unique(methods.begin(), methods.end());
  EXPECT_EQ(methods.size(), listed.size());
  EXPECT_EQ(unique.size(), methods.size()) << "a subscription got the event twice";
  for (const Acked& ack : survivors) {
    std::string method = ack.socket.substr(ack.socket.rfind('/') + 1);
    if (unique.count(method) == 0) {
      ADD_FAILURE() << "no delivery to " << ack.socket;
      break;
    }
  }
}

TEST_F(SqliteE2eTest, CorruptDatabaseFailsAtStartupWithAClearError) {
  const std::filesystem::path data = dir_.path() / "data";
  std::filesystem::create_directories(data);
  const std::filesystem::path db = data / "subscriptions.db";
  {
    std::ofstream out(db, std::ios::binary);
    // Longer than SQLite's 100-byte header and nowhere near its magic string.
    for (int i = 0; i < 512; ++i) out << "garbage!";
  }
  ProcessOptions options;
  options.argv = {EVENTBUSD_PATH, absl::StrCat("--listen=127.0.0.1:", testing::PickUnusedPort()),
                  absl::StrCat("--data_dir=", data.string())};
  options.log_path = (dir_.path() / "eventbusd.log").string();
  absl::StatusOr<std::unique_ptr<Process>> server = Process::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<testing::ExitStatus> exit = (*server)->Wait(absl::Seconds(20));
  ASSERT_TRUE(exit.ok()) << "eventbusd kept running on a corrupt database:\n"
                         << (*server)->ReadLog();
  std::string log = (*server)->ReadLog();
  ASSERT_TRUE(exit->code.has_value()) << "eventbusd crashed: " << exit->ToString() << "\n" << log;
  EXPECT_NE(*exit->code, 0);
  EXPECT_THAT(log, HasSubstr(db.string()));
  EXPECT_THAT(log, HasSubstr("not a database"));
}

// Issue 7, defect 7: a file whose index page is corrupt used to pass start-up (loading scans the
// table only) and then fail every Subscribe. eventbusd now refuses to start, naming the file.
TEST_F(SqliteE2eTest, CorruptIndexPageFailsAtStartupWithAClearError) {
  const std::filesystem::path data = dir_.path() / "data";
  const std::filesystem::path db = data / "subscriptions.db";
  {
    absl::StatusOr<Server> server = StartEventbusd(data, dir_.path() / "first.log");
    ASSERT_TRUE(server.ok()) << server.status();
    for (int i = 0; i < 300; ++i) {
      absl::StatusOr<v1::SubscribeResponse> response = server->client->Subscribe(
          SubscribeRequest("E_INDEX", absl::StrCat("tcp:127.0.0.1:", 1000 + i, "/m", i), 0));
      ASSERT_TRUE(response.ok()) << response.status();
    }
    absl::StatusOr<testing::ExitStatus> exit = server->process->Stop(absl::Seconds(20));
    ASSERT_TRUE(exit.ok() && exit->Success()) << server->Log();
  }
  // Overwrite the root page of the UNIQUE (event, socket) index with garbage.
  int64_t page_size = 0;
  int64_t root = 0;
  {
    sqlite3* handle = nullptr;
    ASSERT_EQ(sqlite3_open(db.c_str(), &handle), SQLITE_OK);
    auto query = [&](const char* sql) {
      sqlite3_stmt* stmt = nullptr;
      int64_t value = 0;
      if (sqlite3_prepare_v2(handle, sql, -1, &stmt, nullptr) == SQLITE_OK &&
          sqlite3_step(stmt) == SQLITE_ROW) {
        value = sqlite3_column_int64(stmt, 0);
      }
      sqlite3_finalize(stmt);
      return value;
    };
    page_size = query("PRAGMA page_size");
    root =
        query("SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_subscriptions_2'");
    sqlite3_close(handle);
  }
  ASSERT_GT(page_size, 0);
  ASSERT_GT(root, 1);
  {
    std::fstream file(db, std::ios::binary | std::ios::in | std::ios::out);
    file.seekp((root - 1) * page_size);
    std::string garbage(static_cast<size_t>(page_size), '\xa5');
    file.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
    ASSERT_TRUE(file.good());
  }

  ProcessOptions options;
  options.argv = {EVENTBUSD_PATH, absl::StrCat("--listen=127.0.0.1:", testing::PickUnusedPort()),
                  absl::StrCat("--data_dir=", data.string())};
  options.log_path = (dir_.path() / "second.log").string();
  absl::StatusOr<std::unique_ptr<Process>> server = Process::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<testing::ExitStatus> exit = (*server)->Wait(absl::Seconds(20));
  ASSERT_TRUE(exit.ok()) << "eventbusd kept running on a corrupt index:\n" << (*server)->ReadLog();
  std::string log = (*server)->ReadLog();
  ASSERT_TRUE(exit->code.has_value()) << "eventbusd crashed: " << exit->ToString() << "\n" << log;
  EXPECT_NE(*exit->code, 0);
  EXPECT_THAT(log, HasSubstr(db.string()));
  EXPECT_THAT(log, HasSubstr("database file is corrupt"));
}

TEST_F(SqliteE2eTest, UncreatableDataDirFailsAtStartupWithAClearError) {
  const std::filesystem::path file = dir_.path() / "a-regular-file";
  { std::ofstream(file) << "not a directory"; }
  const std::filesystem::path data = file / "data";
  ProcessOptions options;
  options.argv = {EVENTBUSD_PATH, absl::StrCat("--listen=127.0.0.1:", testing::PickUnusedPort()),
                  absl::StrCat("--data_dir=", data.string())};
  options.log_path = (dir_.path() / "eventbusd.log").string();
  absl::StatusOr<std::unique_ptr<Process>> server = Process::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<testing::ExitStatus> exit = (*server)->Wait(absl::Seconds(20));
  ASSERT_TRUE(exit.ok()) << "eventbusd kept running without a data dir:\n" << (*server)->ReadLog();
  std::string log = (*server)->ReadLog();
  ASSERT_TRUE(exit->code.has_value()) << "eventbusd crashed: " << exit->ToString() << "\n" << log;
  EXPECT_NE(*exit->code, 0);
  EXPECT_THAT(log, HasSubstr(data.string()));
  EXPECT_THAT(log, HasSubstr("cannot create data directory"));
  EXPECT_THAT(log, HasSubstr("Not a directory"));
}

// ---------------------------------------------------------------------------------------------
// etcd, shared by replicas.

class EtcdReplicasE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!EtcdHarness::Available()) {
      GTEST_SKIP() << EtcdHarness::kEtcdBinary << " is not installed (package etcd-server)";
    }
    absl::StatusOr<std::unique_ptr<EtcdHarness>> etcd = EtcdHarness::Start();
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
    store_ = absl::StrCat("--store=etcd://", etcd_->endpoint(), "/eventbus-test-", ::getpid(), "-",
                          absl::ToUnixNanos(absl::Now()));
    absl::StatusOr<std::unique_ptr<JsonRpcPeer>> peer = JsonRpcPeer::Start();
    ASSERT_TRUE(peer.ok()) << peer.status();
    peer_ = *std::move(peer);
  }

  // Starts `n` replicas on the shared etcd prefix.
  void StartReplicas(int n) {
    for (int i = 0; i < n; ++i) {
      std::string name = absl::StrCat("replica", i);
      absl::StatusOr<Server> server =
          StartEventbusd(dir_.path() / name, dir_.path() / (name + ".log"), {store_});
      ASSERT_TRUE(server.ok()) << server.status();
      replicas_.push_back(std::make_unique<Server>(*std::move(server)));
    }
  }

  Server& replica(int i) { return *replicas_[i]; }

  // Subscribes on `on` and returns the subscription.
  v1::Subscription Subscribe(Server& on, const std::string& event, const std::string& socket,
                             uint32_t expire_seconds = 0) {
    absl::StatusOr<v1::SubscribeResponse> response =
        on.client->Subscribe(SubscribeRequest(event, socket, expire_seconds));
    EXPECT_TRUE(response.ok()) << response.status() << "\n" << on.Log();
    if (!response.ok()) return v1::Subscription();
    return response->subscription();
  }

  // Waits until `on` lists subscription `id`; EXPECTs it happened within kPropagation of `since`.
  void ExpectPropagated(Server& on, const std::string& event, const std::string& id,
                        absl::Time since) {
    bool seen = WaitFor(absl::Seconds(10), [&] { return HasSubscriptionId(on, event, id); });
    absl::Duration took = absl::Now() - since;
    ASSERT_TRUE(seen) << on.address << " never listed " << id << "\n" << on.Log();
    EXPECT_LE(took, kPropagation) << on.address << " listed " << id << " only after " << took;
  }

  // Members destroyed in reverse: replicas stop before etcd, then the directories go.
  TempDir dir_{"store-e2e-etcd"};
  std::unique_ptr<EtcdHarness> etcd_;
  std::string store_;
  std::unique_ptr<JsonRpcPeer> peer_;
  std::vector<std::unique_ptr<Server>> replicas_;
};

TEST_F(EtcdReplicasE2eTest, SubscribeOnAReachesSubscriberRaisedOnB) {
  ASSERT_NO_FATAL_FAILURE(StartReplicas(2));
  absl::Time subscribed = absl::Now();
  v1::Subscription sub = Subscribe(replica(0), "E_AB", peer_->socket());
  ASSERT_FALSE(sub.id().empty());
  ASSERT_NO_FATAL_FAILURE(ExpectPropagated(replica(1), "E_AB", sub.id(), subscribed));

  absl::StatusOr<v1::RaiseResponse> raised = replica(1).client->Raise(RaiseRequest("E_AB"));
  ASSERT_TRUE(raised.ok()) << raised.status();
  ASSERT_EQ(raised->deliveries_size(), 1);
  EXPECT_EQ(raised->deliveries(0).subscription_id(), sub.id());
  EXPECT_EQ(raised->deliveries(0).status(), v1::DELIVERY_STATUS_QUEUED);
  ASSERT_TRUE(peer_->WaitForMessages(1, absl::Seconds(10)));
  EXPECT_EQ(peer_->Messages()[0], R"({"jsonrpc":"2.0","method":"E_AB"})");
}

TEST_F(EtcdReplicasE2eTest, UnsubscribeOnBStopsDeliveriesFromA) {
  ASSERT_NO_FATAL_FAILURE(StartReplicas(2));
  absl::Time subscribed = absl::Now();
  v1::Subscription gone = Subscribe(replica(0), "E_UNSUB", peer_->socket("gone"));
  v1::Subscription sentinel = Subscribe(replica(0), "E_UNSUB", peer_->socket("sentinel"));
  ASSERT_NO_FATAL_FAILURE(ExpectPropagated(replica(1), "E_UNSUB", gone.id(), subscribed));
  ASSERT_NO_FATAL_FAILURE(ExpectPropagated(replica(1), "E_UNSUB", sentinel.id(), subscribed));

  v1::UnsubscribeRequest request;
  request.set_id(gone.id());
  absl::Time unsubscribed = absl::Now();
  absl::StatusOr<v1::UnsubscribeResponse> response = replica(1).client->Unsubscribe(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->removed(), 1u);

  bool left_a = WaitFor(absl::Seconds(10),
                        [&] { return !HasSubscriptionId(replica(0), "E_UNSUB", gone.id()); });
  absl::Duration took = absl::Now() - unsubscribed;
  ASSERT_TRUE(left_a) << "A still lists the subscription removed on B";
  EXPECT_LE(took, kPropagation);

  // A delivers to the sentinel only; the peer's one connection carries both in order, so once the
  // sentinel's message is there nothing for "gone" is still on its way.
  absl::StatusOr<v1::RaiseResponse> raised = replica(0).client->Raise(RaiseRequest("E_UNSUB"));
  ASSERT_TRUE(raised.ok()) << raised.status();
  ASSERT_EQ(raised->deliveries_size(), 1);
  EXPECT_EQ(raised->deliveries(0).subscription_id(), sentinel.id());
  ASSERT_TRUE(peer_->WaitForMessages(1, absl::Seconds(10)));
  EXPECT_THAT(Methods(*peer_), ::testing::ElementsAre("sentinel"));
}

TEST_F(EtcdReplicasE2eTest, TwoSecondExpiryEndsDeliveriesOnBoth) {
  ASSERT_NO_FATAL_FAILURE(StartReplicas(2));
  absl::Time subscribed = absl::Now();
  v1::Subscription sub = Subscribe(replica(0), "E_EXPIRE", peer_->socket("short"), 2);
  ASSERT_TRUE(sub.has_expire_time());
  const absl::Time expire = absl::FromUnixSeconds(sub.expire_time().seconds()) +
                            absl::Nanoseconds(sub.expire_time().nanos());
  ASSERT_NO_FATAL_FAILURE(ExpectPropagated(replica(1), "E_EXPIRE", sub.id(), subscribed));
  // B holds the same instants A answered with.
  v1::Subscription on_b = ListBySocket(replica(1), "E_EXPIRE")[sub.socket()];
  EXPECT_EQ(on_b.expire_time().ShortDebugString(), sub.expire_time().ShortDebugString());
  EXPECT_EQ(on_b.create_time().ShortDebugString(), sub.create_time().ShortDebugString());

  // Before the instant, both deliver.
  ASSERT_LT(absl::Now(), expire - absl::Milliseconds(200)) << "too slow to test before expiry";
  EXPECT_EQ(RaiseCount(replica(0), "E_EXPIRE"), 1);
  EXPECT_EQ(RaiseCount(replica(1), "E_EXPIRE"), 1);
  ASSERT_TRUE(peer_->WaitForMessages(2, absl::Seconds(10)));

  // From the expiry instant on, neither delivers.
  WaitUntilPast(expire);
  EXPECT_EQ(RaiseCount(replica(0), "E_EXPIRE"), 0);
  EXPECT_EQ(RaiseCount(replica(1), "E_EXPIRE"), 0);

  // Nothing more reaches the peer: a sentinel subscribed afterwards is the only target of the
  // next Raises, carried on each replica's one connection to the peer behind anything the expired
  // subscription might still have sent.
  absl::Time resubscribed = absl::Now();
  v1::Subscription sentinel = Subscribe(replica(0), "E_EXPIRE", peer_->socket("sentinel"));
  ASSERT_NO_FATAL_FAILURE(ExpectPropagated(replica(1), "E_EXPIRE", sentinel.id(), resubscribed));
  EXPECT_EQ(RaiseCount(replica(0), "E_EXPIRE"), 1);
  EXPECT_EQ(RaiseCount(replica(1), "E_EXPIRE"), 1);
  ASSERT_TRUE(peer_->WaitForMessages(4, absl::Seconds(10)));
  EXPECT_THAT(Methods(*peer_), ::testing::ElementsAre("short", "short", "sentinel", "sentinel"));

  // The timers removed it from both lists (and etcd's lease from the store).
  EXPECT_TRUE(WaitFor(absl::Seconds(5), [&] {
    return !HasSubscriptionId(replica(0), "E_EXPIRE", sub.id()) &&
           !HasSubscriptionId(replica(1), "E_EXPIRE", sub.id());
  }));
}

// Issue 7, defect 1, end to end: replica A reaches etcd through a proxy that holds back etcd's
// answer to the put of a refresh for longer than A's etcd call timeout (2 s). The refresh fails
// UNAVAILABLE, and the subscription stays in etcd, on both replicas, and keeps receiving events.
TEST_F(EtcdReplicasE2eTest, ARefreshWhoseEtcdReplyIsLateKeepsTheSubscriptionEverywhere) {
  absl::StatusOr<std::unique_ptr<testing::DelayProxy>> proxy =
      testing::DelayProxy::Start(etcd_->client_port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  const std::string prefix = absl::StrCat("/eventbus-test-", ::getpid(), "-late");
  absl::StatusOr<Server> a =
      StartEventbusd(dir_.path() / "a", dir_.path() / "a.log",
                     {absl::StrCat("--store=etcd://", (*proxy)->endpoint(), prefix)});
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<Server> b =
      StartEventbusd(dir_.path() / "b", dir_.path() / "b.log",
                     {absl::StrCat("--store=etcd://", etcd_->endpoint(), prefix)});
  ASSERT_TRUE(b.ok()) << b.status();

  // A long method makes the put (which carries the socket) far larger than the lease grant
  // before it, so the proxy can delay the put's answer alone.
  const std::string socket = peer_->socket(std::string(400, 'm'));
  absl::Time subscribed = absl::Now();
  v1::Subscription sub = Subscribe(*a, "E_LATE", socket, 3600);
  ASSERT_FALSE(sub.id().empty());
  ASSERT_NO_FATAL_FAILURE(ExpectPropagated(*b, "E_LATE", sub.id(), subscribed));

  (*proxy)->DelayRepliesAfter(absl::Seconds(3), 200);
  absl::StatusOr<v1::SubscribeResponse> refreshed =
      a->client->Subscribe(SubscribeRequest("E_LATE", socket, 7200));
  ASSERT_FALSE(refreshed.ok()) << "the refresh was answered in time: " << refreshed->DebugString();
  EXPECT_EQ(refreshed.status().code(), absl::StatusCode::kUnavailable) << refreshed.status();

  // Whatever A did after its failure reached etcd before this: a sentinel written through A
  // afterwards, which B can only learn from its watch, follows it in etcd's order.
  (*proxy)->SetReplyDelay(absl::ZeroDuration());
  v1::Subscription sentinel = Subscribe(*a, "E_LATE", peer_->socket("sentinel"));
  ASSERT_FALSE(sentinel.id().empty());
  ASSERT_TRUE(WaitFor(absl::Seconds(10), [&] {
    return HasSubscriptionId(*b, "E_LATE", sentinel.id());
  })) << b->Log();

  EXPECT_TRUE(HasSubscriptionId(*b, "E_LATE", sub.id())) << "B lost the subscription";
  EXPECT_TRUE(HasSubscriptionId(*a, "E_LATE", sub.id())) << "A lost the subscription";
  absl::StatusOr<std::optional<EtcdHarness::KeyValue>> kv =
      etcd_->Get(absl::StrCat(prefix, "/subscriptions/", sub.id()));
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_TRUE(kv->has_value()) << "etcd lost the subscription";
  EXPECT_EQ(RaiseCount(*b, "E_LATE"), 2);
  ASSERT_TRUE(peer_->WaitForMessages(2, absl::Seconds(10)));
  EXPECT_THAT(Methods(*peer_), ::testing::UnorderedElementsAre(std::string(400, 'm'), "sentinel"));
}

TEST_F(EtcdReplicasE2eTest, EtcdOutageKeepsRaiseWorkingAndConvergesAfter) {
  ASSERT_NO_FATAL_FAILURE(StartReplicas(2));
  Server& a = replica(0);
  Server& b = replica(1);
  absl::Time subscribed = absl::Now();
  v1::Subscription known = Subscribe(a, "E_OUTAGE", peer_->socket("known"));
  ASSERT_NO_FATAL_FAILURE(ExpectPropagated(b, "E_OUTAGE", known.id(), subscribed));
  for (Server* s : {&a, &b}) {
    EXPECT_EQ(HealthOf(*s->client, kStoreHealth), "SERVING");
    EXPECT_EQ(Stale(*s), false);
  }

  ASSERT_TRUE(etcd_->Stop().ok());

  // Writes fail fast and say why.
  absl::Time start = absl::Now();
  absl::StatusOr<v1::SubscribeResponse> failed =
      a.client->Subscribe(SubscribeRequest("E_OUTAGE", peer_->socket("later"), 0));
  absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
  EXPECT_THAT(failed.status().message(), HasSubstr("etcd"));
  EXPECT_THAT(failed.status().message(), HasSubstr(etcd_->endpoint()));
  EXPECT_LE(took, absl::Seconds(5));

  // Raise still delivers to the subscriber both replicas know.
  EXPECT_EQ(RaiseCount(a, "E_OUTAGE"), 1);
  EXPECT_EQ(RaiseCount(b, "E_OUTAGE"), 1);
  ASSERT_TRUE(peer_->WaitForMessages(2, absl::Seconds(10)));

  // The store's health and the stale flag say so; the service itself stays up.
  for (Server* s : {&a, &b}) {
    EXPECT_TRUE(WaitFor(absl::Seconds(10),
                        [&] { return HealthOf(*s->client, kStoreHealth) == "NOT_SERVING"; }))
        << s->address << ": " << HealthOf(*s->client, kStoreHealth);
    EXPECT_TRUE(WaitFor(absl::Seconds(10), [&] { return Stale(*s) == true; }))
        << s->address << " does not report stale lists";
    EXPECT_EQ(HealthOf(*s->client, ""), "SERVING");
    EXPECT_EQ(HealthOf(*s->client, kServiceHealth), "SERVING");
  }

  ASSERT_TRUE(etcd_->Restart().ok()) << etcd_->Log();
  absl::Time restarted = absl::Now();

  // Without restarting the replicas: writes work again within a few seconds...
  std::optional<v1::Subscription> later;
  EXPECT_TRUE(WaitFor(absl::Seconds(10), [&] {
    absl::StatusOr<v1::SubscribeResponse> response =
        a.client->Subscribe(SubscribeRequest("E_OUTAGE", peer_->socket("later"), 0));
    if (response.ok()) later = response->subscription();
    return response.ok();
  })) << a.Log();
  ASSERT_TRUE(later.has_value());
  EXPECT_LE(absl::Now() - restarted, absl::Seconds(5));
  // ...B hears of them, and both say the store is back.
  EXPECT_TRUE(WaitFor(absl::Seconds(10), [&] {
    return HasSubscriptionId(b, "E_OUTAGE", later->id());
  })) << b.Log();
  for (Server* s : {&a, &b}) {
    EXPECT_TRUE(
        WaitFor(absl::Seconds(10), [&] { return HealthOf(*s->client, kStoreHealth) == "SERVING"; }))
        << s->address << ": " << HealthOf(*s->client, kStoreHealth);
    EXPECT_TRUE(WaitFor(absl::Seconds(10), [&] { return Stale(*s) == false; }))
        << s->address << " still reports stale lists";
    EXPECT_LE(absl::Now() - restarted, absl::Seconds(8));
  }
  // The write that failed during the outage left nothing behind: B has exactly the two.
  std::map<std::string, v1::Subscription> on_b = ListBySocket(b, "E_OUTAGE");
  EXPECT_EQ(on_b.size(), 2u);
  EXPECT_EQ(RaiseCount(b, "E_OUTAGE"), 2);
  ASSERT_TRUE(peer_->WaitForMessages(4, absl::Seconds(10)));
}

TEST_F(EtcdReplicasE2eTest, SubscribeOnAnyOfThreeReplicasIsUsedByAll) {
  ASSERT_NO_FATAL_FAILURE(StartReplicas(3));
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    absl::Time subscribed = absl::Now();
    v1::Subscription sub = Subscribe(replica(i), "E_THREE", peer_->socket(absl::StrCat("via", i)));
    ASSERT_FALSE(sub.id().empty());
    ids.push_back(sub.id());
    for (int j = 0; j < 3; ++j) {
      ASSERT_NO_FATAL_FAILURE(ExpectPropagated(replica(j), "E_THREE", sub.id(), subscribed));
    }
  }
  for (int j = 0; j < 3; ++j) {
    absl::StatusOr<v1::RaiseResponse> raised = replica(j).client->Raise(RaiseRequest("E_THREE"));
    ASSERT_TRUE(raised.ok()) << raised.status();
    std::set<std::string> got;
    for (const v1::Delivery& delivery : raised->deliveries()) {
      got.insert(delivery.subscription_id());
    }
    EXPECT_EQ(got, std::set<std::string>(ids.begin(), ids.end())) << "raised on replica " << j;
  }
  ASSERT_TRUE(peer_->WaitForMessages(9, absl::Seconds(10)));
  std::multiset<std::string> methods;
  for (const std::string& method : Methods(*peer_)) methods.insert(method);
  EXPECT_EQ(methods.count("via0"), 3u);
  EXPECT_EQ(methods.count("via1"), 3u);
  EXPECT_EQ(methods.count("via2"), 3u);
}

}  // namespace
}  // namespace eventbus
