#include "server/auth/tls_files.h"

#include <utility>

#include "absl/status/status.h"
#include "server/tls/pem.h"

namespace eventbus::auth {

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
  absl::StatusOr<tls::KeyPair> pair =
      tls::ReadKeyPair({"--tls_cert", files.cert_path}, {"--tls_key", files.key_path});
  if (!pair.ok()) return pair.status();
  pem.cert_chain = std::move(pair->cert_pem);
  pem.private_key = std::move(pair->key_pem);
  if (!files.client_ca_path.empty()) {
    absl::StatusOr<std::string> ca =
        tls::ReadCertificates({"--tls_client_ca", files.client_ca_path});
    if (!ca.ok()) return ca.status();
    pem.client_ca = *std::move(ca);
  }
  return pem;
}

}  // namespace eventbus::auth
