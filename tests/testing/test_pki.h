// A throw-away certificate authority for TLS tests, made at test time with Debian's openssl CLI:
// one CA, and certificates it signs for servers (SANs such as DNS:localhost, IP:127.0.0.1) and
// clients (identified by their common name). Everything lives in a temporary directory removed
// with the TestPki. Used by the API TLS/mTLS tests, etcd over TLS and tls: subscriber targets.
#ifndef EVENTBUS_TESTS_TESTING_TEST_PKI_H_
#define EVENTBUS_TESTS_TESTING_TEST_PKI_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/testing/wait.h"

namespace eventbus::testing {

// PEM files of one issued certificate and its (unencrypted) private key.
struct CertFiles {
  std::string cert_path;
  std::string key_path;
  // The files' contents, for APIs that take PEM text (grpc::SslCredentialsOptions).
  std::string cert_pem;
  std::string key_pem;
};

enum class CertUsage { kServer, kClient };

// Thread-compatible; owned by one test.
class TestPki {
 public:
  static constexpr char kOpensslBinary[] = "openssl";

  // Creates the CA (EC P-256, valid 2 days) with `ca_name` as its common name.
  static absl::StatusOr<std::unique_ptr<TestPki>> Create(
      const std::string& ca_name = "EventBus Test CA");

  // Issues a certificate signed by this CA, files named `<file_stem>.crt` / `.key`.
  // `sans` are openssl subjectAltName entries ("DNS:localhost", "IP:127.0.0.1"); a server
  // certificate gets extendedKeyUsage serverAuth, a client one clientAuth.
  absl::StatusOr<CertFiles> Issue(const std::string& file_stem, const std::string& common_name,
                                  const std::vector<std::string>& sans, CertUsage usage);
  // Issue() for the usual loopback server: CN=localhost, SANs DNS:localhost, IP:127.0.0.1, IP:::1.
  absl::StatusOr<CertFiles> IssueLocalhostServer(const std::string& file_stem = "server");

  // The CA certificate (PEM), as a path and as text.
  const std::string& ca_cert_path() const { return ca_cert_path_; }
  const std::string& ca_cert_pem() const { return ca_cert_pem_; }
  const std::string& dir() const { return dir_path_; }

 private:
  explicit TestPki(const std::string& tag) : dir_(tag), dir_path_(dir_.path().string()) {}
  // Runs openssl with `args`; the error names the command and carries openssl's output.
  absl::Status RunOpenssl(const std::vector<std::string>& args);

  TempDir dir_;
  std::string dir_path_;
  std::string ca_cert_path_;
  std::string ca_key_path_;
  std::string ca_cert_pem_;
  int serial_ = 1;
};

// The whole file, or NOT_FOUND naming it.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

}  // namespace eventbus::testing

#endif  // EVENTBUS_TESTS_TESTING_TEST_PKI_H_
