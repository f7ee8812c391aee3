// The API's TLS and authentication through a real EventBusServer in-process and real TLS
// (certificates made by TestPki with openssl): TLS required, server verification, mTLS refusing
// clients without a good certificate, tokens and certificate identities per method
// (UNAUTHENTICATED vs PERMISSION_DENIED), health and reflection open, reloads, and no secret in
// any log line. tests/integration/auth_e2e_test.cc covers flags, SIGHUP and the CLI through the
// real binaries.
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "server/auth/credentials.h"
#include "server/service/server.h"
#include "src/proto/grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/testing/log_capture.h"
#include "tests/testing/ports.h"
#include "tests/testing/test_pki.h"
#include "tests/testing/wait.h"

namespace eventbus::service {
namespace {

namespace v1 = ::eventbus::v1;
using ::eventbus::client::Client;
using ::eventbus::client::ClientOptions;
using ::eventbus::testing::CertFiles;
using ::eventbus::testing::CertUsage;
using ::eventbus::testing::LogCapture;
using ::eventbus::testing::TempDir;
using ::eventbus::testing::TestPki;
using ::eventbus::testing::WaitFor;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kReaderToken[] = "reader-secret-token-0001";
constexpr char kPublisherToken[] = "publisher-secret-token-02";
constexpr char kSubscriberToken[] = "subscriber-secret-token-3";
constexpr char kAdminToken[] = "admin-secret-token-000004";

std::string TokensFile() {
  return absl::StrCat("# test credentials\n", "reader-1 reader token:", kReaderToken, "\n",
                      "pub-1 publisher token:", kPublisherToken, "\n",
                      "sub-1 subscriber token:", kSubscriberToken, "\n",
                      "admin-1 admin token:", kAdminToken, "\n",
                      "sip subscriber cert:sip-proxy.example.net\n");
}

void WriteFile(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  std::ofstream(tmp) << text;
  std::filesystem::rename(tmp, path);
}

class AuthServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<TestPki>> pki = TestPki::Create();
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *std::move(pki);
    absl::StatusOr<CertFiles> server = pki_->IssueLocalhostServer();
    ASSERT_TRUE(server.ok()) << server.status();
    server_cert_ = *server;
    tokens_path_ = dir_.path() / "tokens";
    WriteFile(tokens_path_, TokensFile());
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  }

  ServerConfig TlsConfig() const {
    ServerConfig config;
    config.listen = "127.0.0.1:0";
    config.store = "memory";
    config.pool.num_loops = 1;
    config.tls_cert = server_cert_.cert_path;
    config.tls_key = server_cert_.key_path;
    return config;
  }

  void Start(const ServerConfig& config) {
    absl::StatusOr<std::unique_ptr<EventBusServer>> server = EventBusServer::Start(config);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // Client options trusting the test CA, with `token` and, when given, a client certificate.
  ClientOptions Tls(const std::string& token = "", const CertFiles* cert = nullptr) const {
    ClientOptions options;
    options.deadline = absl::Seconds(5);
    options.tls_ca_file = pki_->ca_cert_path();
    options.token = token;
    if (cert != nullptr) {
      options.tls_cert_file = cert->cert_path;
      options.tls_key_file = cert->key_path;
    }
    return options;
  }

  std::unique_ptr<Client> Dial(const ClientOptions& options) const {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(server_->address(), options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  CertFiles ClientCert(TestPki& pki, const std::string& stem, const std::string& cn,
                       const std::vector<std::string>& sans = {}) {
    absl::StatusOr<CertFiles> cert = pki.Issue(stem, cn, sans, CertUsage::kClient);
    EXPECT_TRUE(cert.ok()) << cert.status();
    return cert.ok() ? *cert : CertFiles{};
  }

  // Calls `method` of the EventBus service; returns its status code.
  absl::StatusCode Call(Client& client, const std::string& method) {
    const std::string socket = absl::StrCat("tcp:127.0.0.1:", testing::ClosedPort());
    absl::Status status;
    if (method == "Raise") {
      v1::RaiseRequest request;
      request.set_event("E_AUTH");
      request.set_json("{}");
      status = client.Raise(request).status();
    } else if (method == "RaiseStream") {
      auto stream = client.OpenRaiseStream(absl::Seconds(10));
      v1::RaiseStreamRequest message;
      message.add_events()->set_event("E_AUTH");
      if (stream->Write(message)) stream->WritesDone();
      v1::RaiseStreamResponse response;
      while (stream->Read(&response)) {
      }
      status = stream->Finish();
    } else if (method == "Subscribe") {
      v1::SubscribeRequest request;
      request.set_event("E_AUTH");
      request.set_socket(socket);
      status = client.Subscribe(request).status();
    } else if (method == "Unsubscribe") {
      v1::UnsubscribeRequest request;
      request.set_event("E_AUTH");
      request.set_socket(socket);
      status = client.Unsubscribe(request).status();
    } else if (method == "ListSubscriptions") {
      status = client.ListSubscriptions({}).status();
    } else {
      status = client.ListEvents().status();
    }
    last_status_ = status;
    return status.code();
  }

  TempDir dir_{"eventbus-auth-server"};
  std::unique_ptr<TestPki> pki_;
  CertFiles server_cert_;
  std::filesystem::path tokens_path_;
  std::unique_ptr<EventBusServer> server_;
  absl::Status last_status_;
};

TEST_F(AuthServerTest, ATlsServerRefusesPlaintextClientsAndServesVerifiedTlsOnes) {
  ASSERT_NO_FATAL_FAILURE(Start(TlsConfig()));
  EXPECT_FALSE(server_->auth_enabled());
  ClientOptions plain;
  plain.deadline = absl::Seconds(5);
  std::unique_ptr<Client> plaintext = Dial(plain);
  ASSERT_NE(plaintext, nullptr);
  EXPECT_EQ(plaintext->ListEvents().status().code(), absl::StatusCode::kUnavailable);

  std::unique_ptr<Client> tls = Dial(Tls());
  ASSERT_NE(tls, nullptr);
  EXPECT_TRUE(tls->ListEvents().ok());
  // TLS alone authenticates nobody: every method is open to every TLS client.
  EXPECT_EQ(Call(*tls, "Subscribe"), absl::StatusCode::kOk) << last_status_;
}

TEST_F(AuthServerTest, AClientThatDoesNotTrustTheServersCaIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Start(TlsConfig()));
  absl::StatusOr<std::unique_ptr<TestPki>> other = TestPki::Create("Another CA");
  ASSERT_TRUE(other.ok()) << other.status();
  ClientOptions options = Tls();
  options.tls_ca_file = (*other)->ca_cert_path();
  std::unique_ptr<Client> client = Dial(options);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->ListEvents().status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(AuthServerTest, TheServerNameOverrideIsWhatTheCertificateIsVerifiedAgainst) {
  absl::StatusOr<CertFiles> named =
      pki_->Issue("named", "eventbus.internal", {"DNS:eventbus.internal"}, CertUsage::kServer);
  ASSERT_TRUE(named.ok()) << named.status();
  ServerConfig config = TlsConfig();
  config.tls_cert = named->cert_path;
  config.tls_key = named->key_path;
  ASSERT_NO_FATAL_FAILURE(Start(config));
  // Dialled by IP, the certificate (for eventbus.internal only) does not match.
  std::unique_ptr<Client> by_ip = Dial(Tls());
  EXPECT_EQ(by_ip->ListEvents().status().code(), absl::StatusCode::kUnavailable);
  ClientOptions options = Tls();
  options.tls_server_name = "eventbus.internal";
  std::unique_ptr<Client> by_name = Dial(options);
  EXPECT_TRUE(by_name->ListEvents().ok());
}

TEST_F(AuthServerTest, MutualTlsRefusesClientsWithoutOrWithAWrongCaCertificate) {
  ServerConfig config = TlsConfig();
  config.tls_client_ca = pki_->ca_cert_path();
  LogCapture logs(base::LogLevel::kInfo);
  ASSERT_NO_FATAL_FAILURE(Start(config));
  EXPECT_TRUE(server_->auth_enabled());

  std::unique_ptr<Client> no_cert = Dial(Tls());
  EXPECT_EQ(no_cert->ListEvents().status().code(), absl::StatusCode::kUnavailable);

  absl::StatusOr<std::unique_ptr<TestPki>> other = TestPki::Create("Rogue CA");
  ASSERT_TRUE(other.ok()) << other.status();
  CertFiles rogue = ClientCert(**other, "rogue", "client-1");
  std::unique_ptr<Client> wrong_ca = Dial(Tls("", &rogue));
  EXPECT_EQ(wrong_ca->ListEvents().status().code(), absl::StatusCode::kUnavailable);

  // Without a tokens file, a certificate from the CA is an admin, named by its CN.
  CertFiles good = ClientCert(*pki_, "client", "client-1");
  std::unique_ptr<Client> admin = Dial(Tls("", &good));
  for (const char* method :
       {"Subscribe", "Raise", "ListSubscriptions", "ListEvents", "Unsubscribe"}) {
    EXPECT_EQ(Call(*admin, method), absl::StatusCode::kOk) << method << " " << last_status_;
  }
  EXPECT_EQ(logs.Matching({"msg=subscribed", "caller=client-1"}).size(), 1u);
}

TEST_F(AuthServerTest, TokensGetTheirRolesMethodsAndNothingElse) {
  ServerConfig config = TlsConfig();
  config.auth_tokens_file = tokens_path_.string();
  ASSERT_NO_FATAL_FAILURE(Start(config));
  EXPECT_TRUE(server_->auth_enabled());
  using Code = absl::StatusCode;
  constexpr Code kOk = Code::kOk;
  constexpr Code kDenied = Code::kPermissionDenied;
  constexpr Code kUnauth = Code::kUnauthenticated;
  struct Row {
    std::string token;
    // Raise, Subscribe, Unsubscribe, ListSubscriptions, ListEvents, RaiseStream
    std::vector<Code> expected;
  };
  const std::vector<std::string> methods = {
      "Raise", "Subscribe", "Unsubscribe", "ListSubscriptions", "ListEvents", "RaiseStream"};
  const std::vector<Row> rows = {
      {"", {kUnauth, kUnauth, kUnauth, kUnauth, kUnauth, kUnauth}},
      {"wrong-token-not-in-the-file", {kUnauth, kUnauth, kUnauth, kUnauth, kUnauth, kUnauth}},
      {kReaderToken, {kDenied, kDenied, kDenied, kOk, kOk, kDenied}},
      {kPublisherToken, {kOk, kDenied, kDenied, kDenied, kDenied, kOk}},
      {kSubscriberToken, {kDenied, kOk, kOk, kOk, kOk, kDenied}},
      {kAdminToken, {kOk, kOk, kOk, kOk, kOk, kOk}},
  };
  for (const Row& row : rows) {
    std::unique_ptr<Client> client = Dial(Tls(row.token));
    ASSERT_NE(client, nullptr);
    for (size_t i = 0; i < methods.size(); ++i) {
      EXPECT_EQ(Call(*client, methods[i]), row.expected[i])
          << "token " << row.token << " method " << methods[i] << ": " << last_status_;
      if (row.expected[i] == kDenied) {
        EXPECT_THAT(last_status_.message(),
                    HasSubstr(absl::StrCat("may not call eventbus.v1.EventBusService/", methods[i],
                                           ": it needs ")));
      }
    }
  }
  std::unique_ptr<Client> reader = Dial(Tls(kReaderToken));
  Call(*reader, "Raise");
  EXPECT_EQ(last_status_, absl::PermissionDeniedError(
                              "caller \"reader-1\" may not call eventbus.v1.EventBusService/Raise: "
                              "it needs one of the roles publisher, admin (it has reader)"));
  std::unique_ptr<Client> nobody = Dial(Tls());
  Call(*nobody, "ListEvents");
  EXPECT_THAT(last_status_.message(), HasSubstr("no credentials"));
}

// gRPC 1.51 gives all calls of a connection one AuthContext: the caller must still be each
// call's own, and a client cannot name itself through the metadata the caller is recorded in.
TEST_F(AuthServerTest, EachCallOnOneConnectionHasItsOwnCallerAndCannotClaimAnother) {
  ServerConfig config = TlsConfig();
  config.auth_tokens_file = tokens_path_.string();
  LogCapture logs(base::LogLevel::kInfo);
  ASSERT_NO_FATAL_FAILURE(Start(config));
  std::unique_ptr<Client> client = Dial(Tls());  // one channel, a token per call
  auto subscribe = [&](const std::string& token, const std::string& event,
                       const std::vector<std::pair<std::string, std::string>>& metadata) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    context.set_credentials(grpc::AccessTokenCredentials(token));
    for (const auto& [key, value] : metadata) context.AddMetadata(key, value);
    v1::SubscribeRequest request;
    request.set_event(event);
    request.set_socket(absl::StrCat("tcp:127.0.0.1:", testing::ClosedPort()));
    v1::SubscribeResponse response;
    return client->stub()->Subscribe(&context, request, &response);
  };
  ASSERT_TRUE(subscribe(kAdminToken, "E_ONE", {}).ok());
  ASSERT_TRUE(subscribe(kSubscriberToken, "E_TWO", {}).ok());
  ASSERT_TRUE(subscribe(kAdminToken, "E_THREE", {}).ok());
  grpc::Status spoofed = subscribe(kSubscriberToken, "E_FOUR",
                                   {{"eventbus.caller", "admin-1"}, {"eventbus.roles", "15"}});
  ASSERT_TRUE(spoofed.ok()) << spoofed.error_message();
  EXPECT_EQ(logs.Matching({"msg=subscribed", "caller=admin-1", "event=E_ONE"}).size(), 1u);
  EXPECT_EQ(logs.Matching({"msg=subscribed", "caller=sub-1", "event=E_TWO"}).size(), 1u);
  EXPECT_EQ(logs.Matching({"msg=subscribed", "caller=admin-1", "event=E_THREE"}).size(), 1u);
  EXPECT_EQ(logs.Matching({"msg=subscribed", "caller=sub-1", "event=E_FOUR"}).size(), 1u)
      << ::testing::PrintToString(logs.lines());
  // Claimed roles do not count either: the publisher stays a publisher.
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  context.set_credentials(grpc::AccessTokenCredentials(kPublisherToken));
  context.AddMetadata("eventbus.roles", "15");
  v1::ListEventsResponse events;
  EXPECT_EQ(client->stub()->ListEvents(&context, {}, &events).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(AuthServerTest, HealthAndReflectionStayOpenWithoutAToken) {
  ServerConfig config = TlsConfig();
  config.auth_tokens_file = tokens_path_.string();
  ASSERT_NO_FATAL_FAILURE(Start(config));
  std::unique_ptr<Client> client = Dial(Tls());
  EXPECT_EQ(Call(*client, "ListEvents"), absl::StatusCode::kUnauthenticated);
  for (const char* service : {"", "eventbus.v1.EventBusService"}) {
    absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> health =
        client->CheckHealth(service);
    ASSERT_TRUE(health.ok()) << service << ": " << health.status();
    EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::SERVING);
  }

  auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(client->channel());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  auto stream = stub->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("*");
  ASSERT_TRUE(stream->Write(request));
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response)) << stream->Finish().error_message();
  std::set<std::string> services;
  for (const auto& service : response.list_services_response().service()) {
    services.insert(service.name());
  }
  EXPECT_TRUE(services.count("eventbus.v1.EventBusService")) << response.DebugString();
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(AuthServerTest, ACertificateIdentityGetsTheRolesOfItsCertLine) {
  ServerConfig config = TlsConfig();
  config.tls_client_ca = pki_->ca_cert_path();
  config.auth_tokens_file = tokens_path_.string();
  LogCapture logs(base::LogLevel::kInfo);
  ASSERT_NO_FATAL_FAILURE(Start(config));

  // The identity is a SAN here (the CN differs).
  CertFiles sip = ClientCert(*pki_, "sip", "proxy-7", {"DNS:sip-proxy.example.net"});
  std::unique_ptr<Client> subscriber = Dial(Tls("", &sip));
  EXPECT_EQ(Call(*subscriber, "Subscribe"), absl::StatusCode::kOk) << last_status_;
  EXPECT_EQ(Call(*subscriber, "Raise"), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(last_status_.message(), HasSubstr("caller \"sip\" may not call"));
  EXPECT_EQ(logs.Matching({"msg=subscribed", "caller=sip"}).size(), 1u);

  // A certificate from the CA without a cert: line authenticates nobody, unless a token does.
  CertFiles stranger = ClientCert(*pki_, "stranger", "stranger");
  std::unique_ptr<Client> unknown = Dial(Tls("", &stranger));
  EXPECT_EQ(Call(*unknown, "ListEvents"), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(last_status_.message(), HasSubstr("\"stranger\" has no cert: line"));
  std::unique_ptr<Client> with_token = Dial(Tls(kPublisherToken, &stranger));
  EXPECT_EQ(Call(*with_token, "Raise"), absl::StatusCode::kOk) << last_status_;
}

TEST_F(AuthServerTest, ChangedTokensApplyToNewCallsAndABadFileKeepsTheOldSet) {
  ServerConfig config = TlsConfig();
  config.auth_tokens_file = tokens_path_.string();
  config.auth_reload_poll = absl::Milliseconds(50);
  ASSERT_NO_FATAL_FAILURE(Start(config));
  std::unique_ptr<Client> old_admin = Dial(Tls(kAdminToken));
  std::unique_ptr<Client> new_admin = Dial(Tls("rotated-admin-token-000005"));
  ASSERT_EQ(Call(*old_admin, "ListEvents"), absl::StatusCode::kOk);
  ASSERT_EQ(Call(*new_admin, "ListEvents"), absl::StatusCode::kUnauthenticated);

  // Rotated on disk: picked up by the file watch, without a signal.
  WriteFile(tokens_path_, "admin-2 admin token:rotated-admin-token-000005\n");
  ASSERT_TRUE(WaitFor(absl::Seconds(10), [&] {
    return Call(*new_admin, "ListEvents") == absl::StatusCode::kOk;
  })) << last_status_;
  EXPECT_EQ(Call(*old_admin, "ListEvents"), absl::StatusCode::kUnauthenticated);

  // A bad file is refused (by the watch, and by an explicit reload as on SIGHUP) and the set in
  // use stays.
  WriteFile(tokens_path_, absl::StrCat("admin-1 admin token:", kAdminToken, "\nbad\n"));
  absl::SleepFor(absl::Milliseconds(300));
  absl::Status reload = server_->ReloadAuth();
  EXPECT_THAT(reload.message(), HasSubstr(absl::StrCat(tokens_path_.string(), "\" line 2: ")));
  EXPECT_EQ(Call(*new_admin, "ListEvents"), absl::StatusCode::kOk) << last_status_;
  EXPECT_EQ(Call(*old_admin, "ListEvents"), absl::StatusCode::kUnauthenticated);

  // Fixed, and reloaded explicitly.
  WriteFile(tokens_path_, absl::StrCat("admin-1 admin token:", kAdminToken, "\n"));
  EXPECT_TRUE(server_->ReloadAuth().ok());
  EXPECT_EQ(Call(*old_admin, "ListEvents"), absl::StatusCode::kOk) << last_status_;
  EXPECT_EQ(Call(*new_admin, "ListEvents"), absl::StatusCode::kUnauthenticated);
}

TEST_F(AuthServerTest, NoTokenHashOrAuthorizationHeaderReachesAnyLogLine) {
  ServerConfig config = TlsConfig();
  config.auth_tokens_file = tokens_path_.string();
  config.auth_reload_poll = absl::ZeroDuration();
  LogCapture logs(base::LogLevel::kDebug);
  ASSERT_NO_FATAL_FAILURE(Start(config));
  const std::string wrong = "wrong-token-never-logged-9";
  for (const std::string& token :
       {std::string(kAdminToken), std::string(kReaderToken), std::string(kPublisherToken), wrong}) {
    std::unique_ptr<Client> client = Dial(Tls(token));
    for (const char* method :
         {"Subscribe", "Raise", "ListSubscriptions", "ListEvents", "Unsubscribe"}) {
      Call(*client, method);
    }
  }
  // A reload of a file whose bad line carries a secret.
  WriteFile(tokens_path_, absl::StrCat(TokensFile(), "leaky admin token:", wrong, " extra\n"));
  EXPECT_FALSE(server_->ReloadAuth().ok());

  // What the operator sees: who did what, refusals at debug level, the reload error.
  EXPECT_EQ(logs.Matching({"msg=subscribed", "caller=admin-1"}).size(), 1u);
  EXPECT_EQ(logs.Matching({"msg=unsubscribed", "caller=admin-1"}).size(), 1u)
      << ::testing::PrintToString(logs.lines());
  EXPECT_FALSE(logs.Matching({"msg=\"call refused\"", "caller=reader-1"}).empty());
  EXPECT_EQ(logs.Matching({"auth credentials not reloaded", "line 7"}).size(), 1u);
  std::vector<std::string> secrets = {kAdminToken, kReaderToken, kPublisherToken, wrong};
  for (const std::string& secret : std::vector<std::string>(secrets)) {
    auth::Sha256Digest digest = auth::Sha256(secret);
    secrets.push_back(absl::BytesToHexString(
        absl::string_view(reinterpret_cast<const char*>(digest.data()), digest.size())));
  }
  ASSERT_GT(logs.lines().size(), 10u);
  for (const std::string& line : logs.lines()) {
    for (const std::string& secret : secrets) EXPECT_THAT(line, Not(HasSubstr(secret))) << line;
    EXPECT_THAT(line, Not(HasSubstr("Bearer"))) << line;
    EXPECT_THAT(line, Not(HasSubstr("authorization"))) << line;
  }
}

TEST_F(AuthServerTest, StartRefusesTokensWithoutTlsAndBadAuthFiles) {
  ServerConfig plain;
  plain.listen = "127.0.0.1:0";
  plain.store = "memory";
  plain.auth_tokens_file = tokens_path_.string();
  absl::StatusOr<std::unique_ptr<EventBusServer>> refused = EventBusServer::Start(plain);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(),
              HasSubstr(absl::StrCat("--auth_tokens_file \"", tokens_path_.string(),
                                     "\" needs --tls_cert and --tls_key")));

  ServerConfig bad = TlsConfig();
  WriteFile(tokens_path_, "alice wizard token:alice-secret-token-00001\n");
  bad.auth_tokens_file = tokens_path_.string();
  refused = EventBusServer::Start(bad);
  EXPECT_EQ(refused.status(),
            absl::InvalidArgumentError(absl::StrCat(
                "auth tokens file \"", tokens_path_.string(),
                "\" line 1: unknown role \"wizard\" (expected reader, publisher, subscriber or "
                "admin, separated by commas)")));

  ServerConfig mismatched = TlsConfig();
  absl::StatusOr<CertFiles> other = pki_->IssueLocalhostServer("other");
  ASSERT_TRUE(other.ok());
  mismatched.tls_key = other->key_path;
  refused = EventBusServer::Start(mismatched);
  EXPECT_THAT(refused.status().message(),
              HasSubstr(absl::StrCat("--tls_key \"", other->key_path,
                                     "\": the private key does not match the certificate")));
}

}  // namespace
}  // namespace eventbus::service
