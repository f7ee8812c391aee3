#include "server/tls/pem.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace eventbus::tls {
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
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

absl::Status FileError(const PemFile& file, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(file.flag, " \"", file.path, "\": ", problem));
}

// The oldest error on OpenSSL's queue, as text (the queue is cleared).
std::string OpensslError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown error";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

absl::StatusOr<std::string> ReadFile(const PemFile& file) {
  if (file.path.empty()) return FileError(file, "empty path");
  std::ifstream in(file.path, std::ios::binary);
  if (!in) return FileError(file, absl::StrCat("cannot read: ", std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return FileError(file, absl::StrCat("cannot read: ", std::strerror(errno)));
  return text.str();
}

BioPtr MemoryBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

}  // namespace

absl::StatusOr<std::string> ReadCertificates(const PemFile& file) {
  absl::StatusOr<std::string> text = ReadFile(file);
  if (!text.ok()) return text.status();
  if (!absl::StrContains(*text, "-----BEGIN CERTIFICATE-----")) {
    return FileError(file, "no PEM certificate in it");
  }
  BioPtr bio = MemoryBio(*text);
  int count = 0;
  ERR_clear_error();
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    ++count;
  }
  // The loop ends at the end of the text (PEM_R_NO_START_LINE) or at a block it cannot parse.
  unsigned long last = ERR_peek_last_error();
  if (last != 0 &&
      !(ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE)) {
    return FileError(
        file, absl::StrCat("certificate ", count + 1, " is not valid PEM: ", OpensslError()));
  }
  ERR_clear_error();
  if (count == 0) return FileError(file, "no PEM certificate in it");
  return text;
}

absl::StatusOr<KeyPair> ReadKeyPair(const PemFile& cert, const PemFile& key) {
  absl::StatusOr<std::string> cert_pem = ReadCertificates(cert);
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = ReadFile(key);
  if (!key_pem.ok()) return key_pem.status();
  if (absl::StrContains(*key_pem, "ENCRYPTED")) {
    return FileError(key, "the private key is encrypted (give an unencrypted key)");
  }
  ERR_clear_error();
  BioPtr key_bio = MemoryBio(*key_pem);
  // A null passphrase callback that fails: an encrypted key must not prompt on the terminal.
  PkeyPtr pkey(PEM_read_bio_PrivateKey(
      key_bio.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr));
  if (pkey == nullptr) {
    return FileError(key, absl::StrCat("no PEM private key in it: ", OpensslError()));
  }
  BioPtr cert_bio = MemoryBio(*cert_pem);
  X509Ptr leaf(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  if (leaf == nullptr) return FileError(cert, OpensslError());
  if (X509_check_private_key(leaf.get(), pkey.get()) != 1) {
    ERR_clear_error();
    return FileError(key, absl::StrCat("the private key does not match the certificate in ",
                                       cert.flag, " \"", cert.path, "\""));
  }
  return KeyPair{*std::move(cert_pem), *std::move(key_pem)};
}

}  // namespace eventbus::tls
