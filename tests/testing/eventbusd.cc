#include "tests/testing/eventbusd.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/ports.h"
#include "tests/testing/wait.h"

namespace eventbus::testing {

std::vector<std::string> EventbusdArgv(const EventbusdOptions& options, uint16_t port) {
  std::vector<std::string> argv = {options.binary, absl::StrCat("--listen=127.0.0.1:", port),
                                   absl::StrCat("--store=", options.store)};
  if (options.tls.has_value()) {
    argv.push_back(absl::StrCat("--tls_cert=", options.tls->cert_path));
    argv.push_back(absl::StrCat("--tls_key=", options.tls->key_path));
  }
  if (!options.tls_client_ca.empty()) {
    argv.push_back(absl::StrCat("--tls_client_ca=", options.tls_client_ca));
  }
  if (!options.auth_tokens_file.empty()) {
    argv.push_back(absl::StrCat("--auth_tokens_file=", options.auth_tokens_file));
  }
  argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());
  return argv;
}

absl::StatusOr<Eventbusd> StartEventbusd(const EventbusdOptions& options) {
  Eventbusd server;
  server.port = PickUnusedPort();
  server.address = absl::StrCat("127.0.0.1:", server.port);
  ProcessOptions process_options;
  process_options.argv = EventbusdArgv(options, server.port);
  process_options.env = options.env;
  process_options.log_path = options.log_path;
  absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(std::move(process_options));
  if (!process.ok()) return process.status();
  server.process = *std::move(process);
  Process* child = server.process.get();
  const uint16_t port = server.port;
  bool up = WaitFor(options.ready_timeout, [&] { return !child->Running() || PortAccepts(port); });
  if (!child->Running()) {
    return absl::FailedPreconditionError(
        absl::StrCat("eventbusd exited at start-up:\n", child->ReadLog()));
  }
  if (!up) {
    return absl::DeadlineExceededError(
        absl::StrCat("eventbusd did not open its port in time:\n", child->ReadLog()));
  }
  return server;
}

}  // namespace eventbus::testing
