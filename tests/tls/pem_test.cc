#include "server/tls/pem.h"

#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_pki.h"

namespace eventbus::tls {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class PemTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pki = testing::TestPki::Create();
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *std::move(pki);
    auto server = pki_->IssueLocalhostServer();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto other = pki_->IssueLocalhostServer("other");
    ASSERT_TRUE(other.ok()) << other.status();
    other_ = *std::move(other);
  }

  std::string Write(const std::string& name, const std::string& text) {
    std::string path = pki_->dir() + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  std::unique_ptr<testing::TestPki> pki_;
  testing::CertFiles server_;
  testing::CertFiles other_;
};

TEST_F(PemTest, ReadsACertificateBundle) {
  std::string bundle = Write("bundle.pem", pki_->ca_cert_pem() + server_.cert_pem);
  auto text = ReadCertificates({"--store_ca", bundle});
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, pki_->ca_cert_pem() + server_.cert_pem);
}

TEST_F(PemTest, NamesTheFlagTheFileAndTheProblem) {
  auto missing = ReadCertificates({"--store_ca", "/nonexistent/ca.pem"});
  EXPECT_TRUE(absl::IsInvalidArgument(missing.status()));
  EXPECT_EQ(missing.status().message(),
            "--store_ca \"/nonexistent/ca.pem\": cannot read: No such file or directory");

  auto not_pem = ReadCertificates({"--tls_cert", Write("text.pem", "hello\n")});
  EXPECT_THAT(std::string(not_pem.status().message()), HasSubstr("no PEM certificate in it"));
  EXPECT_THAT(std::string(not_pem.status().message()), StartsWith("--tls_cert \""));

  // A key where a certificate belongs.
  auto key_as_cert = ReadCertificates({"--tls_cert", server_.key_path});
  EXPECT_THAT(std::string(key_as_cert.status().message()), HasSubstr("no PEM certificate in it"));

  // A damaged second certificate: the first one parses, the second does not.
  std::string damaged = server_.cert_pem;
  damaged[damaged.size() / 2] = '!';
  auto broken =
      ReadCertificates({"--store_ca", Write("broken.pem", pki_->ca_cert_pem() + damaged)});
  EXPECT_THAT(std::string(broken.status().message()), HasSubstr("certificate 2 is not valid PEM"));
}

TEST_F(PemTest, AKeyPairMustMatch) {
  auto pair = ReadKeyPair({"--tls_cert", server_.cert_path}, {"--tls_key", server_.key_path});
  ASSERT_TRUE(pair.ok()) << pair.status();
  EXPECT_EQ(pair->cert_pem, server_.cert_pem);
  EXPECT_EQ(pair->key_pem, server_.key_pem);

  auto mismatch = ReadKeyPair({"--tls_cert", server_.cert_path}, {"--tls_key", other_.key_path});
  EXPECT_TRUE(absl::IsInvalidArgument(mismatch.status()));
  EXPECT_THAT(std::string(mismatch.status().message()),
              HasSubstr("the private key does not match the certificate in --tls_cert"));
  EXPECT_THAT(std::string(mismatch.status().message()),
              StartsWith("--tls_key \"" + other_.key_path));

  auto cert_as_key =
      ReadKeyPair({"--tls_cert", server_.cert_path}, {"--tls_key", server_.cert_path});
  EXPECT_THAT(std::string(cert_as_key.status().message()), HasSubstr("no PEM private key in it"));

  auto encrypted =
      ReadKeyPair({"--tls_cert", server_.cert_path},
                  {"--tls_key", Write("enc.key",
                                      "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END "
                                      "ENCRYPTED PRIVATE KEY-----\n")});
  EXPECT_THAT(std::string(encrypted.status().message()), HasSubstr("encrypted"));
}

}  // namespace
}  // namespace eventbus::tls
