// Runs a real single-member etcd (v3.4, Debian's etcd-server: /usr/bin/etcd) for tests of the etcd
// store and of replicas: free 127.0.0.1 ports, a fresh data directory under /tmp that is removed
// afterwards, and Stop/Restart on the same ports and data to simulate an outage. Helpers speak
// etcd's JSON gateway over plain HTTP, so this needs no gRPC.
#ifndef EVENTBUS_TESTS_TESTING_ETCD_HARNESS_H_
#define EVENTBUS_TESTS_TESTING_ETCD_HARNESS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/testing/process.h"

namespace eventbus::testing {

// etcd serving its clients over TLS (StartTls): PEM file paths.
struct EtcdTlsFiles {
  std::string ca_cert;  // --trusted-ca-file: verifies client certificates
  std::string server_cert;
  std::string server_key;
  // --client-cert-auth: a client must present a certificate signed by ca_cert.
  bool client_cert_auth = true;
};

// Owned by one test. Thread-compatible.
class EtcdHarness {
 public:
  static constexpr char kEtcdBinary[] = "/usr/bin/etcd";

  // True when the etcd binary is installed. Tests skip (GTEST_SKIP) only when it is not.
  static bool Available();

  // Starts etcd and waits until it serves requests (up to `ready_timeout`). The error carries
  // the tail of etcd's log.
  static absl::StatusOr<std::unique_ptr<EtcdHarness>> Start(
      absl::Duration ready_timeout = absl::Seconds(20));
  // As Start, with its client port given (a port from PickUnusedPort that a server under test
  // was pointed at before etcd ran).
  static absl::StatusOr<std::unique_ptr<EtcdHarness>> StartOnPort(
      uint16_t client_port, absl::Duration ready_timeout = absl::Seconds(20));

  // As Start, with the client port serving TLS only. The harness's own helpers (Get, Put,
  // CurrentRevision...) use a second, plaintext client port that no store is pointed at.
  static absl::StatusOr<std::unique_ptr<EtcdHarness>> StartTls(
      EtcdTlsFiles tls, absl::Duration ready_timeout = absl::Seconds(20));

  // Stops etcd and removes its data directory.
  ~EtcdHarness();

  EtcdHarness(const EtcdHarness&) = delete;
  EtcdHarness& operator=(const EtcdHarness&) = delete;

  // "127.0.0.1:PORT", for the store and for gRPC clients (TLS only after StartTls).
  std::string endpoint() const;
  uint16_t client_port() const { return client_port_; }
  const std::string& data_dir() const { return dir_; }
  bool running() const { return process_ != nullptr; }

  // Stops etcd (SIGTERM; SIGKILL after 10 s) keeping its ports and data.
  absl::Status Stop();
  // Kills etcd with SIGKILL, as a crash would.
  absl::Status Kill();
  // Starts etcd again on the same ports with the same data and waits until it serves requests.
  absl::Status Restart(absl::Duration ready_timeout = absl::Seconds(20));

  // Returns the store's current revision.
  absl::StatusOr<int64_t> CurrentRevision();
  // Compacts the history up to `revision` and waits until the compaction is applied.
  absl::Status Compact(int64_t revision);

  struct KeyValue {
    std::string value;
    int64_t mod_revision = 0;
    // 0 when the key has no lease.
    int64_t lease = 0;
  };
  // Reads one key; nullopt when it does not exist.
  absl::StatusOr<std::optional<KeyValue>> Get(const std::string& key);
  // Writes one key (no lease), as another client would.
  absl::Status Put(const std::string& key, const std::string& value);
  // Returns the lease's remaining TTL in seconds, or -1 once it has expired or was revoked.
  absl::StatusOr<int64_t> LeaseTtl(int64_t lease);

  // etcd's log so far (for failure messages).
  std::string Log() const;

 private:
  EtcdHarness(std::string dir, uint16_t client_port, uint16_t peer_port)
      : dir_(std::move(dir)),
        client_port_(client_port),
        peer_port_(peer_port),
        http_port_(client_port) {}
  static absl::StatusOr<std::unique_ptr<EtcdHarness>> StartWith(std::optional<EtcdTlsFiles> tls,
                                                                absl::Duration ready_timeout);
  absl::Status Launch(absl::Duration ready_timeout);
  // POSTs `body` to the JSON gateway at `path`; returns the response body of a 200.
  absl::StatusOr<std::string> Post(const std::string& path, const std::string& body);

  std::string dir_;
  uint16_t client_port_;
  uint16_t peer_port_;
  // The plaintext port the helpers speak HTTP to: client_port_, or a second one under TLS.
  uint16_t http_port_;
  std::optional<EtcdTlsFiles> tls_;
  std::unique_ptr<Process> process_;
};

}  // namespace eventbus::testing

#endif  // EVENTBUS_TESTS_TESTING_ETCD_HARNESS_H_
