// The `eventbus` command line: argument parsing (pure, testable without a server), output
// formatting, and RunCli, which ties them to a Client. cli_main.cc only forwards argv.
//   eventbus [--server ADDR] [--timeout_ms MS] [--tls] [--tls_ca FILE] [--tls_cert FILE
//            --tls_key FILE] [--tls_server_name NAME] [--token_file FILE] COMMAND ...
//   eventbus --version
#ifndef EVENTBUS_CLIENT_CLI_H_
#define EVENTBUS_CLIENT_CLI_H_

#include <cstddef>
#include <istream>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "eventbus/v1/eventbus.pb.h"
#include "google/protobuf/struct.pb.h"

namespace eventbus::client {

enum class OutputFormat { kTable, kJson };

// Parses one JSON text (any value, surrounding whitespace allowed) into a protobuf Value.
// INVALID_ARGUMENT with the parser's one-line complaint.
absl::StatusOr<google::protobuf::Value> ParseJsonValue(absl::string_view text);

struct RaiseCommand {
  eventbus::v1::RaiseRequest request;
  OutputFormat output = OutputFormat::kTable;
};

// Parses `raise [--sync|--async] [--timeout MS] [--all] [--output table|json] EVENT [ARGS...]` and
// `raise [options] EVENT --json TEXT` (args after "raise"). Options may appear anywhere; "--" ends
// them. ARGS:
//   name=value    named, string value
//   name:=json    named, typed JSON value (3, true, null, [1,2], {"a":1})
//   value         positional (no '=' after a name): parsed as JSON when valid, else a string
// A name is [A-Za-z0-9_.-]+; anything else containing '=' is a positional value. INVALID_ARGUMENT
// (naming the argument) for a missing event, an empty name, bad `:=` JSON, mixing named and
// positional, or --json with ARGS.
absl::StatusOr<RaiseCommand> ParseRaiseCommand(const std::vector<std::string>& args);
// ParseRaiseCommand without the output format.
absl::StatusOr<eventbus::v1::RaiseRequest> ParseRaiseArgs(const std::vector<std::string>& args);

// Parses one input line of `raise-stream`: a JSON object with "event" (required), "params" (an
// object or an array, sent as JSON text exactly as typed), "sync", "timeout_ms" and "all"
// (all_deliveries); fields it does not set come from `defaults` (the command's flags).
// INVALID_ARGUMENT naming the problem (invalid JSON, not an object, a key of the wrong type, an
// unknown key, no event).
absl::StatusOr<eventbus::v1::RaiseRequest> ParseStreamLine(
    absl::string_view line, const eventbus::v1::RaiseRequest& defaults);
// The line `raise-stream` prints for input line `line`: "line N: S subscribers: Q QUEUED, K OK,
// F failed" (with the first failed delivery, if any), "line N: no subscribers", or
// "line N: error CODE: MESSAGE".
std::string FormatStreamResult(size_t line, const eventbus::v1::RaiseStreamResult& result);

struct SubscribeCommand {
  eventbus::v1::SubscribeRequest request;
  OutputFormat output = OutputFormat::kTable;
};
// Parses `subscribe EVENT SOCKET [--expire SECONDS] [--event_param KEY] [--output table|json]`.
absl::StatusOr<SubscribeCommand> ParseSubscribeArgs(const std::vector<std::string>& args);
// Parses `unsubscribe ID` or `unsubscribe EVENT SOCKET`.
absl::StatusOr<eventbus::v1::UnsubscribeRequest> ParseUnsubscribeArgs(
    const std::vector<std::string>& args);

// "OK", "QUEUED", "RPC_ERROR", ... ; "CONNECTED", "IDLE", ...
std::string StatusName(eventbus::v1::DeliveryStatus status);
std::string StateName(eventbus::v1::ConnectionState state);

// One line per delivery: socket, status, latency in ms, then the result, `error CODE: MESSAGE`
// or the detail; a virtual group's attempts follow it, indented. When the answer left deliveries
// out (async without --all: the QUEUED ones), a last line counts them:
// "N subscribers: Q QUEUED, K OK, F failed". "no subscribers" when there were none.
std::string FormatRaiseTable(const eventbus::v1::RaiseResponse& response);
// The fields of one subscription, one per line.
std::string FormatSubscription(const eventbus::v1::Subscription& sub, bool created);
// One line per subscription: id, event, socket, expiry, ttl, target states.
std::string FormatSubscriptionsTable(const eventbus::v1::ListSubscriptionsResponse& response);
// One line per event: name and subscriber count.
std::string FormatEventsTable(const eventbus::v1::ListEventsResponse& response);

// Runs the CLI on `args` (argv without the program name), writing results to `out` and errors
// to `err`. `default_server` is used when --server is absent, `env_token` (from $EVENTBUS_TOKEN)
// when --token_file is. Returns the exit code: 0 on success, 1 when the call fails (one line
// naming the gRPC code), 2 on a usage error or an unusable token or TLS setting. `health` exits
// 0 when SERVING, 1 for any other answer, 2 when there is none (the call fails).
// `raise-stream` reads its events from `in` (null: std::cin).
int RunCli(const std::vector<std::string>& args, const std::string& default_server,
           std::ostream& out, std::ostream& err, const std::string& env_token = "",
           std::istream* in = nullptr);

}  // namespace eventbus::client

#endif  // EVENTBUS_CLIENT_CLI_H_
