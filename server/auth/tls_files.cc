#include "server/auth/tls_files.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace eventbus::auth {
namespace {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* x509) const { X509_free(x509); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};

absl::Status Bad(const char* flag, const std::string& path, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, " \"", path, "\": ", problem));
}

// The last OpenSSL error as text (and the queue cleared), for messages.
std::string OpensslError() {
  unsigned long code = ERR_peek_last_error();  // NOLINT(runtime/int): OpenSSL's type
  ERR_clear_error();
  if (code == 0) return "";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return absl::StrCat(" (", text, ")");
}

absl::StatusOr<std::string> ReadFile(const char* flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Bad(flag, path, absl::StrCat("cannot read: ", std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Bad(flag, path, absl::StrCat("read error: ", std::strerror(errno)));
  return text.str();
}

std::unique_ptr<BIO, BioFree> MemBio(const std::string& text) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// The certificates of a PEM text, in order; an error when there is none or one does not parse.
absl::StatusOr<std::vector<std::unique_ptr<X509, X509Free>>> ReadCertificates(
    const char* flag, const std::string& path, const std::string& pem) {
  if (!absl::StrContains(pem, "-----BEGIN CERTIFICATE-----")) {
    return Bad(flag, path, "not a PEM certificate (no \"-----BEGIN CERTIFICATE-----\")");
  }
  std::vector<std::unique_ptr<X509, X509Free>> certs;
  auto bio = MemBio(pem);
  ERR_clear_error();
  for (;;) {
    X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (cert == nullptr) break;
    certs.emplace_back(cert);
  }
  // The loop ends with "no start line" at the end of the text; anything else is a bad block.
  unsigned long last = ERR_peek_last_error();  // NOLINT(runtime/int)
  if (last != 0 &&
      !(ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE)) {
    return Bad(flag, path, absl::StrCat("a certificate in it does not parse", OpensslError()));
  }
  ERR_clear_error();
  if (certs.empty()) return Bad(flag, path, "no PEM certificate in it");
  return certs;
}

}  // namespace

absl::StatusOr<ServerTlsPem> LoadServerTls(const ServerTlsFiles& files) {
  ServerTlsPem pem;
  if (files.cert_path.empty() != files.key_path.empty()) {
    return absl::InvalidArgumentError(files.cert_path.empty()
                                          ? "--tls_key is set without --tls_cert: give both"
                                          : "--tls_cert is set without --tls_key: give both");
  }
  if (files.cert_path.empty()) {
    if (!files.client_ca_path.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca needs --tls_cert and --tls_key (client certificates need TLS)");
    }
    return pem;
  }
  absl::StatusOr<std::string> cert_text = ReadFile("tls_cert", files.cert_path);
  if (!cert_text.ok()) return cert_text.status();
  auto certs = ReadCertificates("tls_cert", files.cert_path, *cert_text);
  if (!certs.ok()) return certs.status();

  absl::StatusOr<std::string> key_text = ReadFile("tls_key", files.key_path);
  if (!key_text.ok()) return key_text.status();
  if (!absl::StrContains(*key_text, "-----BEGIN") ||
      !absl::StrContains(*key_text, "PRIVATE KEY-----")) {
    return Bad("tls_key", files.key_path, "not a PEM private key (no \"PRIVATE KEY\" block)");
  }
  auto key_bio = MemBio(*key_text);
  ERR_clear_error();
  std::unique_ptr<EVP_PKEY, PkeyFree> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return Bad("tls_key", files.key_path,
               absl::StrCat("the private key does not parse (encrypted keys are not supported)",
                            OpensslError()));
  }
  if (X509_check_private_key(certs->front().get(), key.get()) != 1) {
    ERR_clear_error();
    return Bad(
        "tls_key", files.key_path,
        absl::StrCat("does not match the certificate in --tls_cert \"", files.cert_path, "\""));
  }
  pem.cert_chain = *std::move(cert_text);
  pem.private_key = *std::move(key_text);

  if (!files.client_ca_path.empty()) {
    absl::StatusOr<std::string> ca_text = ReadFile("tls_client_ca", files.client_ca_path);
    if (!ca_text.ok()) return ca_text.status();
    auto cas = ReadCertificates("tls_client_ca", files.client_ca_path, *ca_text);
    if (!cas.ok()) return cas.status();
    pem.client_ca = *std::move(ca_text);
  }
  return pem;
}

}  // namespace eventbus::auth
