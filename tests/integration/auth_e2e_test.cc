// The API's TLS and authentication through the real binaries: eventbusd's start-up refusals
// (exit 2 naming flag, file and problem), the tokens file reloaded on SIGHUP and on change with a
// bad file keeping the old set, and the eventbus CLI over TLS and mTLS with a token from a file
// or $EVENTBUS_TOKEN, raising to a real JSON-RPC peer. Certificates come from TestPki (openssl).
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/eventbusd.h"
#include "tests/testing/jsonrpc_peer.h"
#include "tests/testing/process.h"
#include "tests/testing/test_pki.h"
#include "tests/testing/wait.h"

namespace eventbus {
namespace {

using ::eventbus::testing::CertFiles;
using ::eventbus::testing::CertUsage;
using ::eventbus::testing::Eventbusd;
using ::eventbus::testing::EventbusdOptions;
using ::eventbus::testing::Process;
using ::eventbus::testing::ProcessOptions;
using ::eventbus::testing::TempDir;
using ::eventbus::testing::TestPki;
using ::eventbus::testing::WaitFor;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAdminToken[] = "admin-e2e-token-0000000001";
constexpr char kReaderToken[] = "reader-e2e-token-000000002";
constexpr char kRotatedToken[] = "rotated-e2e-token-00000003";

void WriteFile(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  std::ofstream(tmp) << text;
  std::filesystem::rename(tmp, path);
}

struct CliResult {
  int code = -1;
  std::string output;  // stdout and stderr
};

class AuthE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<TestPki>> pki = TestPki::Create();
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *std::move(pki);
    absl::StatusOr<CertFiles> server = pki_->IssueLocalhostServer();
    ASSERT_TRUE(server.ok()) << server.status();
    server_cert_ = *server;
    tokens_ = dir_.path() / "tokens";
    WriteFile(tokens_, absl::StrCat("admin-1 admin token:", kAdminToken, "\n",
                                    "reader-1 reader token:", kReaderToken, "\n"));
    admin_token_file_ = (dir_.path() / "admin.token").string();
    std::ofstream(admin_token_file_) << kAdminToken << "\n";
  }

  EventbusdOptions Options() const {
    EventbusdOptions options;
    options.binary = EVENTBUSD_PATH;
    options.log_path = (dir_.path() / "eventbusd.log").string();
    options.tls = server_cert_;
    options.extra_args = {"--log_level=debug"};
    return options;
  }

  void Start(const EventbusdOptions& options) {
    absl::StatusOr<Eventbusd> server = testing::StartEventbusd(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  std::string Log() const { return server_.process ? server_.process->ReadLog() : ""; }

  // Runs the CLI against the server with `args` (global flags included) and `env`.
  CliResult Cli(const std::vector<std::string>& args,
                const std::vector<std::pair<std::string, std::string>>& env = {}) {
    ProcessOptions options;
    options.argv = {EVENTBUS_CLI_PATH, absl::StrCat("--server=", server_.address),
                    "--timeout_ms=5000"};
    options.argv.insert(options.argv.end(), args.begin(), args.end());
    options.env = env;
    options.log_path = (dir_.path() / absl::StrCat("cli-", ++cli_runs_, ".log")).string();
    CliResult result;
    absl::StatusOr<std::unique_ptr<Process>> cli = Process::Start(options);
    if (!cli.ok()) {
      result.output = cli.status().ToString();
      return result;
    }
    absl::StatusOr<testing::ExitStatus> status = (*cli)->Wait(absl::Seconds(20));
    result.output = (*cli)->ReadLog();
    if (status.ok() && status->code.has_value()) result.code = *status->code;
    return result;
  }

  // `eventbus events` over TLS with `token_file`: its exit code.
  int EventsWith(const std::string& token_file) {
    return Cli({absl::StrCat("--tls_ca=", pki_->ca_cert_path()),
                absl::StrCat("--token_file=", token_file), "events"})
        .code;
  }

  std::string TokenFile(const std::string& name, const std::string& token) {
    std::string path = (dir_.path() / name).string();
    std::ofstream(path) << token << "\n";
    return path;
  }

  TempDir dir_{"eventbus-auth-e2e"};
  std::unique_ptr<TestPki> pki_;
  CertFiles server_cert_;
  std::filesystem::path tokens_;
  std::string admin_token_file_;
  Eventbusd server_;
  int cli_runs_ = 0;
};

TEST_F(AuthE2eTest, BadTlsOrAuthSettingsExitTwoNamingFlagFileAndProblem) {
  absl::StatusOr<CertFiles> other = pki_->IssueLocalhostServer("other");
  ASSERT_TRUE(other.ok()) << other.status();
  const std::string garbage = (dir_.path() / "garbage.pem").string();
  std::ofstream(garbage) << "not a certificate\n";
  const std::string secret = "leaked-secret-never-logged-0";
  const std::string bad_tokens = (dir_.path() / "bad-tokens").string();
  std::ofstream(bad_tokens) << "ok-1 admin token:" << kAdminToken << "\n"
                            << "oops wizard token:" << secret << "\n";
  const std::string cert = absl::StrCat("--tls_cert=", server_cert_.cert_path);
  const std::string key = absl::StrCat("--tls_key=", server_cert_.key_path);
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{cert}, "--tls_cert is set without --tls_key: give both"},
      {{key}, "--tls_key is set without --tls_cert: give both"},
      {{"--tls_cert=/nonexistent/eventbus.crt", key},
       "--tls_cert \\\"/nonexistent/eventbus.crt\\\": cannot read: No such file or directory"},
      {{absl::StrCat("--tls_cert=", garbage), key},
       absl::StrCat("--tls_cert \\\"", garbage, "\\\": no PEM certificate in it")},
      {{cert, absl::StrCat("--tls_key=", other->key_path)},
       absl::StrCat("--tls_key \\\"", other->key_path,
                    "\\\": the private key does not match the certificate in --tls_cert")},
      {{cert, key, absl::StrCat("--tls_client_ca=", garbage)},
       absl::StrCat("--tls_client_ca \\\"", garbage, "\\\": no PEM certificate in it")},
      {{absl::StrCat("--auth_tokens_file=", tokens_.string())},
       "needs --tls_cert and --tls_key: bearer tokens over plaintext could be read"},
      {{cert, key, "--auth_tokens_file=/nonexistent/tokens"},
       "auth tokens file \\\"/nonexistent/tokens\\\": cannot read: No such file or directory"},
      {{cert, key, absl::StrCat("--auth_tokens_file=", bad_tokens)},
       absl::StrCat("auth tokens file \\\"", bad_tokens,
                    "\\\" line 2: unknown role \\\"wizard\\\"")},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    ProcessOptions options;
    options.argv = {EVENTBUSD_PATH, "--listen=127.0.0.1:0", "--store=memory"};
    options.argv.insert(options.argv.end(), c.args.begin(), c.args.end());
    options.log_path = (dir_.path() / absl::StrCat("bad-", i, ".log")).string();
    absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(options);
    ASSERT_TRUE(process.ok()) << process.status();
    absl::StatusOr<testing::ExitStatus> exit = (*process)->Wait(absl::Seconds(20));
    ASSERT_TRUE(exit.ok()) << absl::StrJoin(c.args, " ") << ": " << exit.status();
    const std::string log = (*process)->ReadLog();
    EXPECT_EQ(exit->code, 2) << absl::StrJoin(c.args, " ") << "\n" << log;
    EXPECT_THAT(log, HasSubstr("eventbusd cannot start")) << log;
    EXPECT_THAT(log, HasSubstr(c.message)) << log;
    EXPECT_THAT(log, Not(HasSubstr(secret))) << log;
  }
}

TEST_F(AuthE2eTest, SighupReloadsTheTokensFileAndABadFileKeepsTheOldSet) {
  EventbusdOptions options = Options();
  options.auth_tokens_file = tokens_.string();
  options.extra_args.push_back("--auth_tokens_poll_ms=0");  // SIGHUP only, for this test
  ASSERT_NO_FATAL_FAILURE(Start(options));
  const std::string rotated = TokenFile("rotated.token", kRotatedToken);
  ASSERT_EQ(EventsWith(admin_token_file_), 0) << Log();
  ASSERT_EQ(EventsWith(rotated), 1);

  WriteFile(tokens_, absl::StrCat("admin-2 admin token:", kRotatedToken, "\n"));
  // Not polled: nothing changes until the signal.
  absl::SleepFor(absl::Milliseconds(1500));
  EXPECT_EQ(EventsWith(rotated), 1);
  ASSERT_TRUE(server_.process->Signal(SIGHUP).ok());
  ASSERT_TRUE(WaitFor(absl::Seconds(10), [&] { return EventsWith(rotated) == 0; })) << Log();
  EXPECT_EQ(EventsWith(admin_token_file_), 1);
  EXPECT_THAT(Log(), HasSubstr("msg=\"auth credentials loaded\""));
  EXPECT_THAT(Log(), HasSubstr("credentials=1 reason=SIGHUP"));

  // A bad file: logged with file and line, and the set in use stays.
  WriteFile(tokens_, absl::StrCat("admin-3 admin token:", kAdminToken, "\nhalf-a-line\n"));
  ASSERT_TRUE(server_.process->Signal(SIGHUP).ok());
  ASSERT_TRUE(WaitFor(absl::Seconds(10), [&] {
    return absl::StrContains(Log(), "auth credentials not reloaded; keeping the previous ones");
  })) << Log();
  EXPECT_THAT(Log(), HasSubstr(absl::StrCat(tokens_.string(), "\\\" line 2: expected NAME")));
  EXPECT_EQ(EventsWith(rotated), 0);
  EXPECT_EQ(EventsWith(admin_token_file_), 1);
  EXPECT_TRUE(server_.process->Running());
  for (const char* secret : {kAdminToken, kReaderToken, kRotatedToken}) {
    EXPECT_THAT(Log(), Not(HasSubstr(secret)));
  }
}

TEST_F(AuthE2eTest, AChangedTokensFileIsPickedUpWithoutASignal) {
  EventbusdOptions options = Options();
  options.auth_tokens_file = tokens_.string();
  ASSERT_NO_FATAL_FAILURE(Start(options));
  const std::string rotated = TokenFile("rotated.token", kRotatedToken);
  ASSERT_EQ(EventsWith(rotated), 1);
  WriteFile(tokens_, absl::StrCat("admin-2 admin token:", kRotatedToken, "\n"));
  // Checked every second.
  ASSERT_TRUE(WaitFor(absl::Seconds(10), [&] { return EventsWith(rotated) == 0; })) << Log();
  EXPECT_THAT(Log(), HasSubstr("reason=\"file changed\""));
  EXPECT_EQ(EventsWith(admin_token_file_), 1);
}

TEST_F(AuthE2eTest, TheCliWorksOverTlsWithATokenFromAFileOrTheEnvironment) {
  EventbusdOptions options = Options();
  options.auth_tokens_file = tokens_.string();
  ASSERT_NO_FATAL_FAILURE(Start(options));
  absl::StatusOr<std::unique_ptr<testing::JsonRpcPeer>> peer = testing::JsonRpcPeer::Start();
  ASSERT_TRUE(peer.ok()) << peer.status();
  const std::string ca = absl::StrCat("--tls_ca=", pki_->ca_cert_path());

  CliResult subscribe = Cli({ca, absl::StrCat("--token_file=", admin_token_file_), "subscribe",
                             "E_TLS", (*peer)->socket()});
  ASSERT_EQ(subscribe.code, 0) << subscribe.output << Log();
  CliResult raise =
      Cli({ca, "raise", "--sync", "E_TLS", "ip=192.168.2.11"}, {{"EVENTBUS_TOKEN", kAdminToken}});
  ASSERT_EQ(raise.code, 0) << raise.output;
  EXPECT_THAT(raise.output, HasSubstr("OK"));
  ASSERT_TRUE((*peer)->WaitForMessages(1, absl::Seconds(10)));
  EXPECT_THAT((*peer)->Received(), HasSubstr(R"("method":"E_TLS","params":{"ip":"192.168.2.11"})"));
  EXPECT_THAT(Log(), HasSubstr("caller=admin-1"));

  // A reader is told what it lacks; no token is UNAUTHENTICATED.
  CliResult reader = Cli({ca, "raise", "E_TLS"}, {{"EVENTBUS_TOKEN", kReaderToken}});
  EXPECT_EQ(reader.code, 1);
  EXPECT_THAT(reader.output,
              HasSubstr("eventbus: raise: PERMISSION_DENIED: caller \"reader-1\" may not call "
                        "eventbus.v1.EventBusService/Raise"));
  CliResult anonymous = Cli({ca, "list"});
  EXPECT_EQ(anonymous.code, 1);
  EXPECT_THAT(anonymous.output, HasSubstr("eventbus: list: UNAUTHENTICATED: "));
  // --token_file wins over the environment.
  CliResult both = Cli({ca, absl::StrCat("--token_file=", admin_token_file_), "list"},
                       {{"EVENTBUS_TOKEN", kReaderToken + std::string("-wrong")}});
  EXPECT_EQ(both.code, 0) << both.output;

  // Health needs no token, over TLS; plaintext reaches nothing.
  CliResult health = Cli({ca, "health"});
  EXPECT_EQ(health.code, 0) << health.output;
  EXPECT_THAT(health.output, HasSubstr("SERVING"));
  CliResult plaintext = Cli({"health"});
  EXPECT_EQ(plaintext.code, 2) << plaintext.output;
  // A token is never sent in the clear, and never taken from the command line.
  CliResult clear = Cli({"events"}, {{"EVENTBUS_TOKEN", kAdminToken}});
  EXPECT_EQ(clear.code, 2);
  EXPECT_THAT(clear.output, HasSubstr("is sent only over TLS"));
  EXPECT_EQ(Cli({ca, "--token", kAdminToken, "events"}).code, 2);
  CliResult missing = Cli({ca, "--token_file=/nonexistent/token", "events"});
  EXPECT_EQ(missing.code, 2);
  EXPECT_THAT(missing.output, HasSubstr("--token_file \"/nonexistent/token\": cannot read"));
  for (const char* secret : {kAdminToken, kReaderToken}) {
    EXPECT_THAT(Log(), Not(HasSubstr(secret)));
  }
}

TEST_F(AuthE2eTest, TheCliPresentsAClientCertificateForMutualTls) {
  EventbusdOptions options = Options();
  options.tls_client_ca = pki_->ca_cert_path();
  ASSERT_NO_FATAL_FAILURE(Start(options));
  absl::StatusOr<CertFiles> client = pki_->Issue("cli", "operator-1", {}, CertUsage::kClient);
  ASSERT_TRUE(client.ok()) << client.status();
  const std::string ca = absl::StrCat("--tls_ca=", pki_->ca_cert_path());
  CliResult without = Cli({ca, "events"});
  EXPECT_EQ(without.code, 1) << without.output;
  EXPECT_THAT(without.output, HasSubstr("UNAVAILABLE"));
  CliResult with =
      Cli({ca, absl::StrCat("--tls_cert=", client->cert_path),
           absl::StrCat("--tls_key=", client->key_path), "subscribe", "E_MTLS", "tcp:127.0.0.1:9"});
  EXPECT_EQ(with.code, 0) << with.output << Log();
  EXPECT_THAT(Log(), HasSubstr("caller=operator-1"));
  // Verified for "localhost" while dialling the IP: the override is what is checked.
  const std::string cert = absl::StrCat("--tls_cert=", client->cert_path);
  const std::string key = absl::StrCat("--tls_key=", client->key_path);
  CliResult named = Cli({ca, cert, key, "--tls_server_name=localhost", "health"});
  EXPECT_EQ(named.code, 0) << named.output;
  CliResult wrong_name = Cli({ca, cert, key, "--tls_server_name=eventbus.example.org", "health"});
  EXPECT_EQ(wrong_name.code, 2) << wrong_name.output;
}

}  // namespace
}  // namespace eventbus
