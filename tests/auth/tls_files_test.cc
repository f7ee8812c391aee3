// The API's TLS files are checked at start-up: each refusal names the flag, the file and the
// problem (unreadable, not PEM, a key that is not the certificate's, only one of the pair).
#include "server/auth/tls_files.h"

#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_pki.h"

namespace eventbus::auth {
namespace {

using ::eventbus::testing::CertFiles;
using ::eventbus::testing::TestPki;
using ::testing::HasSubstr;

class TlsFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<TestPki>> pki = TestPki::Create();
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *std::move(pki);
    absl::StatusOr<CertFiles> server = pki_->IssueLocalhostServer();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *server;
    absl::StatusOr<CertFiles> other = pki_->IssueLocalhostServer("other");
    ASSERT_TRUE(other.ok()) << other.status();
    other_ = *other;
    garbage_ = pki_->dir() + "/garbage.pem";
    std::ofstream(garbage_) << "this is not PEM\n";
    broken_ = pki_->dir() + "/broken.pem";
    std::ofstream(broken_) << "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  }

  std::string Error(const ServerTlsFiles& files) {
    absl::StatusOr<ServerTlsPem> pem = LoadServerTls(files);
    EXPECT_FALSE(pem.ok());
    EXPECT_EQ(pem.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(pem.status().message());
  }

  std::unique_ptr<TestPki> pki_;
  CertFiles server_;
  CertFiles other_;
  std::string garbage_;
  std::string broken_;
};

TEST_F(TlsFilesTest, LoadsAMatchingPairAndTheClientCa) {
  absl::StatusOr<ServerTlsPem> pem =
      LoadServerTls({server_.cert_path, server_.key_path, pki_->ca_cert_path()});
  ASSERT_TRUE(pem.ok()) << pem.status();
  EXPECT_EQ(pem->cert_chain, server_.cert_pem);
  EXPECT_EQ(pem->private_key, server_.key_pem);
  EXPECT_EQ(pem->client_ca, pki_->ca_cert_pem());
  // Nothing set: plaintext.
  absl::StatusOr<ServerTlsPem> none = LoadServerTls({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->cert_chain.empty());
}

TEST_F(TlsFilesTest, RefusesEachBadSettingNamingFlagFileAndProblem) {
  EXPECT_EQ(Error({server_.cert_path, "", ""}), "--tls_cert is set without --tls_key: give both");
  EXPECT_EQ(Error({"", server_.key_path, ""}), "--tls_key is set without --tls_cert: give both");
  EXPECT_THAT(Error({"", "", pki_->ca_cert_path()}), HasSubstr("--tls_client_ca needs --tls_cert"));
  EXPECT_EQ(Error({"/nonexistent/server.crt", server_.key_path, ""}),
            "--tls_cert \"/nonexistent/server.crt\": cannot read: No such file or directory");
  EXPECT_EQ(Error({garbage_, server_.key_path, ""}),
            absl::StrCat("--tls_cert \"", garbage_, "\": no PEM certificate in it"));
  EXPECT_THAT(
      Error({broken_, server_.key_path, ""}),
      HasSubstr(absl::StrCat("--tls_cert \"", broken_, "\": certificate 1 is not valid PEM")));
  EXPECT_EQ(Error({server_.cert_path, "/nonexistent/server.key", ""}),
            "--tls_key \"/nonexistent/server.key\": cannot read: No such file or directory");
  EXPECT_THAT(
      Error({server_.cert_path, server_.cert_path, ""}),
      HasSubstr(absl::StrCat("--tls_key \"", server_.cert_path, "\": no PEM private key in it")));
  EXPECT_EQ(Error({server_.cert_path, other_.key_path, ""}),
            absl::StrCat("--tls_key \"", other_.key_path,
                         "\": the private key does not match the certificate in --tls_cert \"",
                         server_.cert_path, "\""));
  EXPECT_EQ(Error({server_.cert_path, server_.key_path, "/nonexistent/ca.crt"}),
            "--tls_client_ca \"/nonexistent/ca.crt\": cannot read: No such file or directory");
  EXPECT_THAT(Error({server_.cert_path, server_.key_path, server_.key_path}),
              HasSubstr(absl::StrCat("--tls_client_ca \"", server_.key_path,
                                     "\": no PEM certificate in it")));
}

}  // namespace
}  // namespace eventbus::auth
