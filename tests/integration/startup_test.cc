// Start-up with the store unreachable, through the real binaries: eventbusd pointed at an etcd
// that is not running yet opens its port, answers health (alive, not ready) and refuses EventBus
// calls with UNAVAILABLE naming the store; once a real etcd starts on that port it loads the
// store and becomes ready without a restart. SIGTERM while it waits exits at once.
#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/etcd_harness.h"
#include "tests/testing/jsonrpc_peer.h"
#include "tests/testing/ports.h"
#include "tests/testing/process.h"
#include "tests/testing/test_pki.h"
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

constexpr char kReadiness[] = "eventbus.v1.EventBusService";
constexpr char kStore[] = "eventbus.store";

// "SERVING", "NOT_SERVING", ... or the call's error.
std::string HealthOf(Client& client, const std::string& service) {
  absl::StatusOr<HealthCheckResponse::ServingStatus> status = client.CheckHealth(service);
  if (!status.ok()) return status.status().ToString();
  return HealthCheckResponse::ServingStatus_Name(*status);
}

// How many log lines carry `msg`.
int CountLines(const std::string& log, const std::string& msg) {
  int count = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StrContains(line, msg)) ++count;
  }
  return count;
}

class StartupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!EtcdHarness::Available()) GTEST_SKIP() << EtcdHarness::kEtcdBinary << " not installed";
    // Reserved and refusing connections until etcd binds it.
    etcd_port_ = testing::PickUnusedPort();
    store_url_ = absl::StrCat("etcd://127.0.0.1:", etcd_port_, "/eventbus-startup");
  }

  // Starts eventbusd on the not-yet-running etcd and waits for its port (which opens at once).
  void StartEventbusd() {
    uint16_t port = testing::PickUnusedPort();
    address_ = absl::StrCat("127.0.0.1:", port);
    ProcessOptions options;
    options.argv = {EVENTBUSD_PATH, absl::StrCat("--listen=", address_),
                    absl::StrCat("--store=", store_url_),
                    absl::StrCat("--data_dir=", (dir_.path() / "data").string())};
    options.argv.insert(options.argv.end(), extra_flags_.begin(), extra_flags_.end());
    options.log_path = (dir_.path() / "eventbusd.log").string();
    absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(std::move(options));
    ASSERT_TRUE(process.ok()) << process.status();
    server_ = *std::move(process);
    ASSERT_TRUE(
        WaitFor(absl::Seconds(10), [&] { return !server_->Running() || PortAccepts(port); }));
    ASSERT_TRUE(server_->Running()) << "eventbusd exited without its store:\n" << Log();
    ClientOptions client_options;
    client_options.deadline = absl::Seconds(5);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(address_, client_options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  std::string Log() const { return server_ == nullptr ? "" : server_->ReadLog(); }

  TempDir dir_{"eventbus-startup"};
  uint16_t etcd_port_ = 0;
  std::string store_url_;
  std::string address_;
  // Added to eventbusd's command line.
  std::vector<std::string> extra_flags_;
  std::unique_ptr<Process> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(StartupTest, ServesOnceEtcdComesUpWithoutARestart) {
  ASSERT_NO_FATAL_FAILURE(StartEventbusd());
  const pid_t pid = server_->pid();

  // Alive, not ready: liveness SERVING, readiness and the store NOT_SERVING.
  EXPECT_EQ(HealthOf(*client_, ""), "SERVING") << Log();
  EXPECT_EQ(HealthOf(*client_, kReadiness), "NOT_SERVING") << Log();
  EXPECT_EQ(HealthOf(*client_, kStore), "NOT_SERVING") << Log();

  // Every EventBus call is refused, naming the store and why it is not loaded.
  const std::string not_loaded = absl::StrCat("store \"", store_url_, "\": not loaded yet: ");
  absl::StatusOr<std::unique_ptr<JsonRpcPeer>> peer = JsonRpcPeer::Start();
  ASSERT_TRUE(peer.ok()) << peer.status();
  v1::SubscribeRequest subscribe;
  subscribe.set_event("E_STARTUP");
  subscribe.set_socket((*peer)->socket());
  absl::StatusOr<v1::SubscribeResponse> refused = client_->Subscribe(subscribe);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr(not_loaded));
  EXPECT_THAT(refused.status().message(), HasSubstr(absl::StrCat("127.0.0.1:", etcd_port_)));
  v1::RaiseRequest raise;
  raise.set_event("E_STARTUP");
  v1::Param* param = raise.mutable_named()->add_params();
  param->set_name("ip");
  param->mutable_value()->set_string_value("192.168.2.11");
  EXPECT_EQ(client_->Raise(raise).status().code(), absl::StatusCode::kUnavailable);
  absl::StatusOr<v1::ListEventsResponse> events = client_->ListEvents();
  EXPECT_EQ(events.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(events.status().message(), HasSubstr(not_loaded));

  // Let it retry for a while: a warning for the first failure, not one per attempt.
  absl::SleepFor(absl::Seconds(2));
  const int warnings = CountLines(Log(), "msg=\"store not loaded yet; retrying\"");
  EXPECT_GE(warnings, 1) << Log();
  EXPECT_LE(warnings, 2) << Log();

  absl::StatusOr<std::unique_ptr<EtcdHarness>> etcd = EtcdHarness::StartOnPort(etcd_port_);
  ASSERT_TRUE(etcd.ok()) << etcd.status();

  // Backoff is capped at 5 s (+20%): ready well within 15 s of etcd answering.
  EXPECT_TRUE(
      WaitFor(absl::Seconds(15), [&] { return HealthOf(*client_, kReadiness) == "SERVING"; }))
      << HealthOf(*client_, kReadiness) << "\n"
      << Log();
  EXPECT_TRUE(WaitFor(absl::Seconds(5), [&] { return HealthOf(*client_, kStore) == "SERVING"; }));
  EXPECT_EQ(HealthOf(*client_, ""), "SERVING");

  absl::StatusOr<v1::SubscribeResponse> subscribed = client_->Subscribe(subscribe);
  ASSERT_TRUE(subscribed.ok()) << subscribed.status() << "\n" << Log();
  absl::StatusOr<v1::RaiseResponse> raised = client_->Raise(raise);
  ASSERT_TRUE(raised.ok()) << raised.status();
  ASSERT_EQ(raised->subscribers(), 1u);
  ASSERT_TRUE((*peer)->WaitForMessages(1, absl::Seconds(10))) << Log();
  EXPECT_EQ((*peer)->Received(),
            R"({"jsonrpc":"2.0","method":"E_STARTUP","params":{"ip":"192.168.2.11"}})");
  // The subscription went to etcd.
  absl::StatusOr<int64_t> revision = (*etcd)->CurrentRevision();
  ASSERT_TRUE(revision.ok()) << revision.status();
  EXPECT_GT(*revision, 1);

  // The same process all along: one start-up, one load.
  EXPECT_TRUE(server_->Running());
  EXPECT_EQ(server_->pid(), pid);
  const std::string log = Log();
  EXPECT_EQ(CountLines(log, "msg=\"eventbusd serving\""), 1) << log;
  EXPECT_THAT(log, HasSubstr("store_loaded=false"));
  EXPECT_EQ(CountLines(log, "msg=\"store loaded\""), 1) << log;

  absl::StatusOr<testing::ExitStatus> exit = server_->Stop(absl::Seconds(15));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_TRUE(exit->Success()) << exit->ToString() << "\n" << Log();
}

TEST_F(StartupTest, SigtermWhileWaitingForTheStoreExitsCleanlyAtOnce) {
  ASSERT_NO_FATAL_FAILURE(StartEventbusd());
  // Several attempts in, waiting in its backoff.
  absl::SleepFor(absl::Seconds(1));
  ASSERT_TRUE(server_->Signal(SIGTERM).ok());
  const absl::Time sent = absl::Now();
  absl::StatusOr<testing::ExitStatus> exit = server_->Wait(absl::Seconds(10));
  ASSERT_TRUE(exit.ok()) << "eventbusd ignored SIGTERM while waiting for its store:\n" << Log();
  EXPECT_TRUE(exit->Success()) << exit->ToString() << "\n" << Log();
  EXPECT_LT(absl::Now() - sent, absl::Seconds(2)) << Log();
}

// etcd over TLS through the real binary: eventbusd with --store_ca/--store_cert/--store_key loads
// from an etcd that requires client certificates and writes a Subscribe there; a store it does
// not trust keeps it not ready, saying why; a key that does not match its certificate is a
// configuration error (exit 2) named before anything starts.
class StartupTlsTest : public StartupTest {
 protected:
  void SetUp() override {
    StartupTest::SetUp();
    if (IsSkipped()) return;
    auto pki = testing::TestPki::Create();
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *std::move(pki);
    auto server = pki_->IssueLocalhostServer("etcd");
    ASSERT_TRUE(server.ok()) << server.status();
    auto client = pki_->Issue("eventbusd", "eventbusd", {}, testing::CertUsage::kClient);
    ASSERT_TRUE(client.ok()) << client.status();
    client_cert_ = *std::move(client);
    auto etcd = EtcdHarness::StartTls({pki_->ca_cert_path(), server->cert_path, server->key_path});
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
    store_url_ = absl::StrCat("etcd://", etcd_->endpoint(), "/eventbus-startup");
  }

  std::vector<std::string> TlsFlags(const std::string& ca) const {
    return {absl::StrCat("--store_ca=", ca), absl::StrCat("--store_cert=", client_cert_.cert_path),
            absl::StrCat("--store_key=", client_cert_.key_path)};
  }

  std::unique_ptr<testing::TestPki> pki_;
  testing::CertFiles client_cert_;
  std::unique_ptr<EtcdHarness> etcd_;
};

TEST_F(StartupTlsTest, LoadsFromAndWritesToAnEtcdThatRequiresClientCertificates) {
  extra_flags_ = TlsFlags(pki_->ca_cert_path());
  ASSERT_NO_FATAL_FAILURE(StartEventbusd());
  EXPECT_TRUE(WaitFor(absl::Seconds(10), [&] {
    return HealthOf(*client_, kReadiness) == "SERVING";
  })) << Log();
  v1::SubscribeRequest subscribe;
  subscribe.set_event("E_TLS_STORE");
  subscribe.set_socket("tcp:127.0.0.1:9");
  absl::StatusOr<v1::SubscribeResponse> subscribed = client_->Subscribe(subscribe);
  ASSERT_TRUE(subscribed.ok()) << subscribed.status() << "\n" << Log();
  auto stored =
      etcd_->Get(absl::StrCat("/eventbus-startup/subscriptions/", subscribed->subscription().id()));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_TRUE(stored->has_value());
}

TEST_F(StartupTlsTest, AnEtcdItDoesNotTrustKeepsItNotReadyAndSaysWhy) {
  auto other = testing::TestPki::Create("Other CA");
  ASSERT_TRUE(other.ok()) << other.status();
  extra_flags_ = TlsFlags((*other)->ca_cert_path());
  ASSERT_NO_FATAL_FAILURE(StartEventbusd());
  v1::SubscribeRequest subscribe;
  subscribe.set_event("E_TLS_STORE");
  subscribe.set_socket("tcp:127.0.0.1:9");
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(HealthOf(*client_, kReadiness), "NOT_SERVING") << Log();
  absl::StatusOr<v1::SubscribeResponse> refused = client_->Subscribe(subscribe);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("not loaded yet")) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("certificate verify failed"))
      << refused.status();
}

TEST_F(StartupTlsTest, AKeyThatDoesNotMatchItsCertificateIsAConfigurationError) {
  auto stray = pki_->Issue("stray", "stray", {}, testing::CertUsage::kClient);
  ASSERT_TRUE(stray.ok()) << stray.status();
  ProcessOptions options;
  options.argv = {EVENTBUSD_PATH,
                  "--listen=127.0.0.1:0",
                  absl::StrCat("--store=", store_url_),
                  absl::StrCat("--store_ca=", pki_->ca_cert_path()),
                  absl::StrCat("--store_cert=", client_cert_.cert_path),
                  absl::StrCat("--store_key=", stray->key_path)};
  options.log_path = (dir_.path() / "bad.log").string();
  auto process = Process::Start(std::move(options));
  ASSERT_TRUE(process.ok()) << process.status();
  auto exit = (*process)->Wait(absl::Seconds(10));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->code, 2) << exit->ToString() << "\n" << (*process)->ReadLog();
  EXPECT_THAT((*process)->ReadLog(),
              HasSubstr(absl::StrCat("--store_key \\\"", stray->key_path,
                                     "\\\": the private key does not match the certificate")));
}

}  // namespace
}  // namespace eventbus
