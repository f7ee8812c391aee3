#include "tests/testing/test_pki.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/process.h"

namespace eventbus::testing {
namespace {

using ::testing::HasSubstr;

// openssl itself must accept what TestPki issued: the chain, the SANs and the usage.
absl::StatusOr<std::string> Verify(const TestPki& pki, const std::vector<std::string>& extra) {
  ProcessOptions options;
  options.argv = {TestPki::kOpensslBinary, "verify", "-CAfile", pki.ca_cert_path()};
  options.argv.insert(options.argv.end(), extra.begin(), extra.end());
  options.log_path = pki.dir() + "/verify.log";
  auto process = Process::Start(options);
  if (!process.ok()) return process.status();
  auto exit = (*process)->Wait(absl::Seconds(30));
  if (!exit.ok()) return exit.status();
  std::string log = (*process)->ReadLog();
  if (!exit->Success()) return absl::InternalError(log);
  return log;
}

TEST(TestPkiTest, IssuesCertificatesThatOpensslVerifiesForTheirNamesAndPurpose) {
  auto pki = TestPki::Create();
  ASSERT_TRUE(pki.ok()) << pki.status();
  auto server = (*pki)->IssueLocalhostServer();
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = (*pki)->Issue("alice", "alice", {}, CertUsage::kClient);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_THAT(server->cert_pem, HasSubstr("BEGIN CERTIFICATE"));
  EXPECT_THAT(server->key_pem, HasSubstr("PRIVATE KEY"));

  auto ok = Verify(**pki, {"-purpose", "sslserver", "-verify_ip", "127.0.0.1", server->cert_path});
  EXPECT_TRUE(ok.ok()) << ok.status();
  ok = Verify(**pki, {"-purpose", "sslserver", "-verify_hostname", "localhost", server->cert_path});
  EXPECT_TRUE(ok.ok()) << ok.status();
  ok = Verify(**pki, {"-purpose", "sslclient", client->cert_path});
  EXPECT_TRUE(ok.ok()) << ok.status();

  // And refuses the wrong name, the wrong purpose and another CA's certificate.
  EXPECT_FALSE(Verify(**pki, {"-verify_hostname", "example.com", server->cert_path}).ok());
  EXPECT_FALSE(Verify(**pki, {"-purpose", "sslserver", client->cert_path}).ok());
  auto other = TestPki::Create("Other CA");
  ASSERT_TRUE(other.ok()) << other.status();
  auto foreign = (*other)->IssueLocalhostServer();
  ASSERT_TRUE(foreign.ok()) << foreign.status();
  EXPECT_FALSE(Verify(**pki, {foreign->cert_path}).ok());
}

}  // namespace
}  // namespace eventbus::testing
