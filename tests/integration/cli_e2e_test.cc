// The README's flow with the real binaries: eventbusd (default store, on a loopback port) and the
// eventbus CLI subscribing a real JSON-RPC peer and raising to it; then SIGTERM shuts the server
// down cleanly.
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/jsonrpc_peer.h"
#include "tests/testing/ports.h"
#include "tests/testing/process.h"

namespace eventbus {
namespace {

using ::testing::HasSubstr;
using testing::Process;
using testing::ProcessOptions;

class CliE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("eventbus-cli-", ::getpid(), "-", absl::ToUnixNanos(absl::Now()));
    std::filesystem::create_directories(dir_);
    StartServer();
  }

  // Starts eventbusd on a fresh port with the data dir of this test.
  void StartServer() {
    port_ = testing::PickUnusedPort();
    address_ = absl::StrCat("127.0.0.1:", port_);
    ProcessOptions options;
    // No --store: the embedded default (SQLite in --data_dir).
    options.argv = {EVENTBUSD_PATH, absl::StrCat("--listen=", address_),
                    absl::StrCat("--data_dir=", (dir_ / "data").string())};
    options.log_path = (dir_ / "eventbusd.log").string();
    auto server = Process::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    // Ready when the CLI can list events.
    absl::Time deadline = absl::Now() + absl::Seconds(15);
    while (absl::Now() < deadline) {
      if (Cli({"events"}).first == 0) return;
      absl::SleepFor(absl::Milliseconds(50));
    }
    FAIL() << "eventbusd did not become ready:\n" << server_->ReadLog();
  }

  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Runs the CLI against the server; returns its exit code and output.
  std::pair<int, std::string> Cli(std::vector<std::string> args) {
    ProcessOptions options;
    options.argv = {EVENTBUS_CLI_PATH, absl::StrCat("--server=", address_)};
    options.argv.insert(options.argv.end(), args.begin(), args.end());
    options.log_path = (dir_ / absl::StrCat("cli-", ++cli_runs_, ".log")).string();
    auto cli = Process::Start(options);
    if (!cli.ok()) return {-1, std::string(cli.status().message())};
    auto status = (*cli)->Wait(absl::Seconds(20));
    std::string output = (*cli)->ReadLog();
    if (!status.ok() || !status->code.has_value()) return {-1, output};
    return {*status->code, output};
  }

  std::filesystem::path dir_;
  uint16_t port_ = 0;
  std::string address_;
  std::unique_ptr<Process> server_;
  int cli_runs_ = 0;
};

TEST_F(CliE2eTest, SubscribeAndRaiseDeliverTheReadmeBytes) {
  auto peer = testing::JsonRpcPeer::Start();
  ASSERT_TRUE(peer.ok());
  auto [code, out] = Cli({"subscribe", "E_PIKE_BLOCKED", (*peer)->socket()});
  ASSERT_EQ(code, 0) << out;
  std::tie(code, out) = Cli({"raise", "E_PIKE_BLOCKED", "ip=192.168.2.11", "count:=3"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("QUEUED"));
  ASSERT_TRUE((*peer)->WaitForMessages(1, absl::Seconds(10)));
  EXPECT_EQ((*peer)->Received(),
            R"({"jsonrpc":"2.0","method":"E_PIKE_BLOCKED","params":{"ip":"192.168.2.11","count":3}})");
}

TEST_F(CliE2eTest, SyncRaisePrintsOneLinePerTargetWithStatus) {
  auto peer = testing::JsonRpcPeer::Start();
  ASSERT_TRUE(peer.ok());
  std::string dead = absl::StrCat("tcp:127.0.0.1:", testing::ClosedPort());
  ASSERT_EQ(Cli({"subscribe", "E_SYNC", (*peer)->socket()}).first, 0);
  ASSERT_EQ(Cli({"subscribe", "E_SYNC", dead}).first, 0);
  auto [code, out] = Cli({"raise", "--sync", "--timeout", "500", "E_SYNC", "ip=192.168.2.11"});
  EXPECT_THAT(out, HasSubstr((*peer)->socket()));
  EXPECT_THAT(out, HasSubstr("OK"));
  EXPECT_THAT(out, HasSubstr("\"ok\""));
  EXPECT_THAT(out, HasSubstr(dead));
  EXPECT_THAT(out, HasSubstr("CONNECT_FAILED"));
}

TEST_F(CliE2eTest, BadSocketPrintsAClearErrorAndFails) {
  auto [code, out] = Cli({"subscribe", "E", "tcp:h:70000"});
  EXPECT_NE(code, 0);
  EXPECT_THAT(out, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(out, HasSubstr("port out of range"));
}

TEST_F(CliE2eTest, SubscriptionsSurviveARestartAndSigtermExitsCleanly) {
  auto peer = testing::JsonRpcPeer::Start();
  ASSERT_TRUE(peer.ok());
  ASSERT_EQ(Cli({"subscribe", "E_KEEP", (*peer)->socket()}).first, 0);
  ASSERT_TRUE(server_->Signal(SIGTERM).ok());
  auto exit = server_->Wait(absl::Seconds(15));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_TRUE(exit->Success()) << exit->ToString() << "\n" << server_->ReadLog();
  StartServer();  // same data dir
  auto [code, out] = Cli({"list", "E_KEEP"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr((*peer)->socket()));
}

}  // namespace
}  // namespace eventbus
