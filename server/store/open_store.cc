// OpenStore: picks the SubscriptionStore backend named by the --store url.

#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/store/etcd_store.h"
#include "server/store/memory_store.h"
#include "server/store/sqlite_store.h"
#include "server/store/subscription_store.h"
#include "server/tls/pem.h"

namespace eventbus::store {
namespace {

using StoreOr = absl::StatusOr<std::unique_ptr<SubscriptionStore>>;

// `url` is "sqlite" or "sqlite:PATH". The default file lives in `data_dir`, which is created when
// missing; an explicit PATH is used as given (its directory must exist).
StoreOr OpenSqlite(absl::string_view url, absl::string_view data_dir) {
  SqliteStoreOptions options;
  if (url == "sqlite") {
    if (data_dir.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("store \"", url, "\": no data directory for the default database file"));
    }
    std::error_code error;
    std::filesystem::create_directories(std::string(data_dir), error);
    if (error) {
      return absl::FailedPreconditionError(absl::StrCat("store \"", url,
                                                        "\": cannot create data directory \"",
                                                        data_dir, "\": ", error.message()));
    }
    options.path = absl::StrCat(data_dir, "/subscriptions.db");
  } else {
    options.path = std::string(url.substr(7));  // after "sqlite:"
    if (options.path.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("store \"", url, "\": empty path"));
    }
  }
  return std::make_unique<SqliteStore>(std::move(options));
}

// Checks one "HOST:PORT" (HOST may be a bracketed IPv6 literal).
bool ValidEndpoint(absl::string_view endpoint) {
  size_t colon = endpoint.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  absl::string_view host = endpoint.substr(0, colon);
  if (host.front() == '[' && host.back() != ']') return false;
  uint32_t port = 0;
  return absl::SimpleAtoi(endpoint.substr(colon + 1), &port) && port >= 1 && port <= 65535 &&
         endpoint.find_first_of(" \t/") == absl::string_view::npos;
}

// Reads and checks the TLS files of an etcd store.
absl::StatusOr<EtcdStoreOptions::Tls> LoadEtcdTls(const StoreTlsFiles& files) {
  EtcdStoreOptions::Tls tls;
  if (!files.ca.empty()) {
    absl::StatusOr<std::string> ca = tls::ReadCertificates({"--store_ca", files.ca});
    if (!ca.ok()) return ca.status();
    tls.ca_pem = *std::move(ca);
  }
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(
        "--store_cert and --store_key: a client certificate needs both (or neither)");
  }
  if (!files.cert.empty()) {
    absl::StatusOr<tls::KeyPair> pair =
        tls::ReadKeyPair({"--store_cert", files.cert}, {"--store_key", files.key});
    if (!pair.ok()) return pair.status();
    tls.cert_pem = std::move(pair->cert_pem);
    tls.key_pem = std::move(pair->key_pem);
  }
  return tls;
}

// `url` is "etcd://HOST:PORT[,HOST:PORT...][/PREFIX][?max_request_bytes=N]"; PREFIX defaults to
// /eventbus, N (the cluster's --max-request-bytes) to etcd's default.
StoreOr OpenEtcd(absl::string_view url, const StoreTlsFiles& tls) {
  absl::string_view rest = url.substr(7);  // after "etcd://"
  EtcdStoreOptions options;
  if (!tls.empty()) {
    absl::StatusOr<EtcdStoreOptions::Tls> loaded = LoadEtcdTls(tls);
    if (!loaded.ok()) return loaded.status();
    options.tls = *std::move(loaded);
  }
  if (size_t question = rest.find('?'); question != absl::string_view::npos) {
    for (absl::string_view option : absl::StrSplit(rest.substr(question + 1), '&')) {
      constexpr absl::string_view kMaxRequestBytes = "max_request_bytes=";
      size_t value = 0;
      if (!absl::StartsWith(option, kMaxRequestBytes) ||
          !absl::SimpleAtoi(option.substr(kMaxRequestBytes.size()), &value) || value == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("store \"", url, "\": bad option \"", option,
                         "\" (expected max_request_bytes=BYTES, BYTES > 0)"));
      }
      options.max_request_bytes = value;
    }
    rest = rest.substr(0, question);
  }
  size_t slash = rest.find('/');
  if (slash != absl::string_view::npos) {
    absl::string_view prefix = rest.substr(slash);
    if (prefix != "/") options.prefix = std::string(prefix);
    rest = rest.substr(0, slash);
  }
  for (absl::string_view endpoint : absl::StrSplit(rest, ',')) {
    if (!ValidEndpoint(endpoint)) {
      return absl::InvalidArgumentError(absl::StrCat("store \"", url, "\": bad endpoint \"",
                                                     endpoint, "\" (expected HOST:PORT)"));
    }
    options.endpoints.emplace_back(endpoint);
  }
  // One round over the endpoints per Start: the server retries a failed Start with its own
  // backoff (service/store_loader.h), and can stop between two attempts.
  options.start_timeout = absl::ZeroDuration();
  return std::make_unique<EtcdStore>(std::move(options));
}

}  // namespace

StoreOr OpenStore(absl::string_view url, absl::string_view data_dir, const StoreTlsFiles& tls) {
  if (absl::StartsWith(url, "etcd://")) return OpenEtcd(url, tls);
  if (!tls.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--store_ca, --store_cert and --store_key apply to etcd stores only (store \"",
                     url, "\")"));
  }
  if (url == "memory") return std::make_unique<MemoryStore>();
  if (url == "sqlite" || absl::StartsWith(url, "sqlite:")) return OpenSqlite(url, data_dir);
  return absl::InvalidArgumentError(
      absl::StrCat("store \"", url,
                   "\": unknown scheme (expected memory, sqlite[:PATH] or "
                   "etcd://HOST:PORT[,...][/PREFIX])"));
}

}  // namespace eventbus::store
