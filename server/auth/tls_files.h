// The API's TLS settings (SPEC §10): the server certificate, its key and the CA that client
// certificates must chain to, read and checked with libcrypto at start-up so that a wrong file is
// a clear start-up error, not a handshake failure later, then handed to gRPC as PEM text.
#ifndef EVENTBUS_SERVER_AUTH_TLS_FILES_H_
#define EVENTBUS_SERVER_AUTH_TLS_FILES_H_

#include <string>

#include "absl/status/statusor.h"

namespace eventbus::auth {

struct ServerTlsFiles {
  std::string cert_path;       // --tls_cert: PEM certificate chain, the server's first
  std::string key_path;        // --tls_key: PEM private key of that certificate
  std::string client_ca_path;  // --tls_client_ca: PEM CA certificates; "" = no client certs
};

struct ServerTlsPem {
  std::string cert_chain;
  std::string private_key;
  std::string client_ca;  // "" = no client certificates requested
};

// Reads and checks the files: each readable, PEM, the certificate and key parsable, the key the
// certificate's, the CA file at least one certificate. INVALID_ARGUMENT naming the flag, the file
// and the problem; also when only one of cert and key is given, or a CA without them.
absl::StatusOr<ServerTlsPem> LoadServerTls(const ServerTlsFiles& files);

}  // namespace eventbus::auth

#endif  // EVENTBUS_SERVER_AUTH_TLS_FILES_H_
