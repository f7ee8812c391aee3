// Starts the real eventbusd binary for an integration test: on a fresh loopback port, with the
// memory store unless told otherwise, plaintext or with the API's TLS and authentication flags
// (certificates from TestPki), and waits until its port accepts connections. Dial it with
// client::ClientOptions (tls_ca_file, tls_cert_file/tls_key_file, token) for TLS.
#ifndef EVENTBUS_TESTS_TESTING_EVENTBUSD_H_
#define EVENTBUS_TESTS_TESTING_EVENTBUSD_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/testing/process.h"
#include "tests/testing/test_pki.h"

namespace eventbus::testing {

struct EventbusdOptions {
  // Path of the eventbusd binary (the test's EVENTBUSD_PATH).
  std::string binary;
  // Where its stdout and stderr go (required: tests read its log).
  std::string log_path;
  // --store; "memory" keeps the test off the disk.
  std::string store = "memory";
  // API TLS: the server certificate (--tls_cert/--tls_key) when set; --tls_client_ca when not "".
  std::optional<CertFiles> tls;
  std::string tls_client_ca;
  // --auth_tokens_file when not "".
  std::string auth_tokens_file;
  // More flags, and environment variables.
  std::vector<std::string> extra_args;
  std::vector<std::pair<std::string, std::string>> env;
  // How long to wait for the port.
  absl::Duration ready_timeout = absl::Seconds(15);
};

struct Eventbusd {
  std::unique_ptr<Process> process;
  uint16_t port = 0;
  // "127.0.0.1:PORT".
  std::string address;
};

// Starts eventbusd and waits until its port accepts connections. FAILED_PRECONDITION with the
// log when it exits first, DEADLINE_EXCEEDED when the port does not open in time.
absl::StatusOr<Eventbusd> StartEventbusd(const EventbusdOptions& options);

// The argv StartEventbusd runs (port included), for tests that run it themselves and expect it
// to fail.
std::vector<std::string> EventbusdArgv(const EventbusdOptions& options, uint16_t port);

}  // namespace eventbus::testing

#endif  // EVENTBUS_TESTS_TESTING_EVENTBUSD_H_
