// Reads the PEM files an operator names on the command line (TLS certificates, CAs, private keys)
// and checks them at start-up with OpenSSL, so that a wrong file is an error naming the flag, the
// file and the problem, not a handshake failure minutes later. Shared by every TLS user: the
// API's server credentials, etcd's client credentials and tls: subscriber targets.
#ifndef EVENTBUS_SERVER_TLS_PEM_H_
#define EVENTBUS_SERVER_TLS_PEM_H_

#include <string>

#include "absl/status/statusor.h"

namespace eventbus::tls {

// A file named by a flag: errors read `--store_ca "/etc/ca.pem": ...`.
struct PemFile {
  std::string flag;  // "--store_ca"
  std::string path;
};

// The file's text when it holds one or more PEM certificates (a CA bundle, a chain).
// INVALID_ARGUMENT otherwise: `cannot read: No such file or directory`, `no PEM certificate in
// it`, `certificate 2 is not valid PEM: ...`.
absl::StatusOr<std::string> ReadCertificates(const PemFile& file);

// A certificate chain (leaf first) and its private key, as PEM text.
struct KeyPair {
  std::string cert_pem;
  std::string key_pem;
};

// Reads `cert` (ReadCertificates) and `key` (one unencrypted PEM private key) and checks that the
// key belongs to the first certificate. INVALID_ARGUMENT naming the flag and file at fault.
absl::StatusOr<KeyPair> ReadKeyPair(const PemFile& cert, const PemFile& key);

}  // namespace eventbus::tls

#endif  // EVENTBUS_SERVER_TLS_PEM_H_
