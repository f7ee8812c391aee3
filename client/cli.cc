#include "client/cli.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "google/protobuf/util/json_util.h"
#include "server/base/version.h"
#include "server/jsonrpc/json_text.h"

namespace eventbus::client {
namespace {

namespace v1 = ::eventbus::v1;

constexpr char kUsage[] =
    "usage: eventbus [--server ADDR] [--timeout_ms MS] [TLS FLAGS] COMMAND ...\n"
    "       eventbus --version\n"
    "\n"
    "global flags:\n"
    "  --server ADDR      EventBus server (default: $EVENTBUS_SERVER or 127.0.0.1:50051)\n"
    "  --timeout_ms MS    deadline of the call (default 10000)\n"
    "  --tls              connect over TLS, verifying the server with the system's CAs\n"
    "  --tls_ca FILE      connect over TLS, verifying the server with the PEM CAs in FILE\n"
    "  --tls_cert FILE    client certificate (PEM) for servers that require one, with\n"
    "  --tls_key FILE     its private key (PEM)\n"
    "  --tls_server_name NAME  verify the server's certificate for NAME (and send it as SNI)\n"
    "  --token_file FILE  send the bearer token in FILE with every call (default: the\n"
    "                     token in $EVENTBUS_TOKEN, if set); needs TLS\n"
    "\n"
    "commands:\n"
    "  subscribe EVENT SOCKET [--expire SECONDS] [--event_param KEY] [--output table|json]\n"
    "      SOCKET: tcp:HOST:PORT[/METHOD], tls:HOST:PORT[/METHOD] or\n"
    "      \"virtual:POLICY SOCKET SOCKET ...\";\n"
    "      --expire 0 never expires; without it the server default applies\n"
    "  unsubscribe ID | unsubscribe EVENT SOCKET\n"
    "  raise [--sync|--async] [--timeout MS] [--all] [--output table|json] EVENT [ARGS...]\n"
    "  raise [--sync|--async] [--timeout MS] [--all] [--output table|json] EVENT --json TEXT\n"
    "      async: lists only the deliveries that are not QUEUED, then the counts;\n"
    "      --all lists every delivery (sync answers always do)\n"
    "      ARGS: name=value (string), name:=json (typed, sent exactly as typed: 3, true, null,\n"
    "      [1,2], {\"a\":1}, 12345678901234567890),\n"
    "      or plain values (positional params, JSON when valid, else strings); use -- before\n"
    "      positional values that start with --\n"
    "  raise-stream [--sync|--async] [--timeout MS] [--all] [--batch N] [--output table|json]\n"
    "      raises one event per line of standard input, a JSON object such as\n"
    "      {\"event\":\"E\",\"params\":{\"ip\":\"10.0.0.1\"},\"sync\":true,\"timeout_ms\":500}\n"
    "      (params: an object or an array, sent as typed; sync, timeout_ms and all override the\n"
    "      flags), over one RaiseStream call in messages of up to N events (default 64);\n"
    "      prints one line per input line, in order (a bad line: its error); exits 1 when any\n"
    "      line failed. The stream has no deadline unless --timeout_ms is given\n"
    "  list [EVENT] [--output table|json] [--page_size N]\n"
    "  events [--output table|json] [--page_size N]\n"
    "      both page through everything, printing each page as it arrives; --page_size\n"
    "      asks for N per call (default: the server's, 1000)\n"
    "  health [SERVICE]\n"
    "      grpc.health.v1 Check; prints SERVING, NOT_SERVING, SERVICE_UNKNOWN, ...; exits 0 when\n"
    "      SERVING, 1 when not, 2 when the server cannot be reached. SERVICE: \"\" (default: the\n"
    "      process is up) or eventbus.v1.EventBusService (ready: its store has loaded)\n";

constexpr char kDefaultServer[] = "127.0.0.1:50051";

// Arguments split into options (in order) and positional words.
struct SplitResult {
  std::vector<std::pair<std::string, std::string>> options;
  std::vector<std::string> positional;
};

// Splits `args` of `command`: "--name value" / "--name=value" for `valued` options, "--name" for
// `flags`; "--" ends options. Unknown "--options" are errors; "-5" is a positional value.
absl::StatusOr<SplitResult> SplitArgs(absl::string_view command,
                                      const std::vector<std::string>& args,
                                      const std::vector<absl::string_view>& valued,
                                      const std::vector<absl::string_view>& flags) {
  SplitResult result;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      result.positional.insert(result.positional.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (!absl::StartsWith(arg, "--") || arg.size() == 2) {
      result.positional.push_back(arg);
      continue;
    }
    size_t eq = arg.find('=');
    std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    if (std::find(flags.begin(), flags.end(), name) != flags.end()) {
      if (eq != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(command, ": --", name, " takes no value"));
      }
      result.options.emplace_back(name, "");
    } else if (std::find(valued.begin(), valued.end(), name) != valued.end()) {
      if (eq != std::string::npos) {
        result.options.emplace_back(name, arg.substr(eq + 1));
      } else if (i + 1 < args.size()) {
        result.options.emplace_back(name, args[++i]);
      } else {
        return absl::InvalidArgumentError(absl::StrCat(command, ": --", name, " needs a value"));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(command, ": unknown option --", name));
    }
  }
  return result;
}

absl::StatusOr<OutputFormat> ParseOutput(absl::string_view command, absl::string_view text) {
  if (text == "table") return OutputFormat::kTable;
  if (text == "json") return OutputFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat(command, ": --output \"", text, "\": expected table or json"));
}

absl::StatusOr<uint32_t> ParseUint32(absl::string_view command, absl::string_view option,
                                     absl::string_view text) {
  uint32_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) {
    return absl::InvalidArgumentError(absl::StrCat(command, ": ", option, " \"", text,
                                                   "\": expected an integer from 0 to 4294967295"));
  }
  return value;
}

// Positional params travel as google.protobuf.Value, whose numbers are doubles: an integer beyond
// 2^53 would arrive rounded (typed named params travel as JSON text and need no such check).
// Returns INVALID_ARGUMENT for the first such integer token of `json` (valid JSON text), so nothing
// the CLI accepts is changed on the way.
absl::Status CheckIntegersAreExact(absl::string_view json) {
  constexpr uint64_t kMaxExact = uint64_t{1} << 53;
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      continue;
    }
    if (c != '-' && !absl::ascii_isdigit(static_cast<unsigned char>(c))) continue;
    size_t end = i;
    bool integer = true;
    while (end < json.size() && (absl::ascii_isdigit(static_cast<unsigned char>(json[end])) ||
                                 absl::StrContains("-+.eE", json[end]))) {
      if (absl::StrContains(".eE", json[end])) integer = false;
      ++end;
    }
    absl::string_view token = json.substr(i, end - i);
    i = end - 1;
    if (!integer) continue;
    absl::string_view digits = absl::StripPrefix(token, "-");
    uint64_t value = 0;
    if (absl::SimpleAtoi(digits, &value) && value <= kMaxExact) continue;
    return absl::InvalidArgumentError(
        absl::StrCat("integer ", token,
                     " is beyond 2^53 and would be rounded (params travel as doubles); use --json "
                     "to send it exactly"));
  }
  return absl::OkStatus();
}

bool IsParamName(absl::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') {
      return false;
    }
  }
  return true;
}

std::string Quote(absl::string_view text) { return absl::StrCat("\"", text, "\""); }

absl::Time FromProto(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

std::string FormatTime(const google::protobuf::Timestamp& ts) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", FromProto(ts), absl::UTCTimeZone());
}

std::string FormatTtl(const google::protobuf::Duration& d) {
  return absl::FormatDuration(absl::Trunc(FromProto(d), absl::Seconds(1)));
}

std::string FormatLatency(const google::protobuf::Duration& d) {
  return absl::StrFormat("%.2f ms", absl::ToDoubleMilliseconds(FromProto(d)));
}

// The last column of a delivery or attempt line.
template <typename Message>
std::string OutcomeText(const Message& m) {
  if (m.status() == v1::DELIVERY_STATUS_RPC_ERROR) {
    std::string text = absl::StrCat("error ", m.error().code(), ": ", m.error().message());
    if (!m.error().data().empty()) absl::StrAppend(&text, " data=", m.error().data());
    return text;
  }
  if (!m.result().empty()) return m.result();
  return m.detail();
}

std::string TargetsText(const v1::Subscription& sub) {
  std::vector<std::string> parts;
  for (const v1::TargetState& t : sub.targets()) {
    std::string part = absl::StrCat(t.address(), " ", StateName(t.state()));
    if (t.delivered() != 0 || t.failed() != 0 || t.expired() != 0 || t.queued_messages() != 0) {
      absl::StrAppend(&part, " (delivered ", t.delivered(), ", failed ", t.failed(), ", expired ",
                      t.expired(), ", queued ", t.queued_messages(), ")");
    }
    parts.push_back(std::move(part));
  }
  return absl::StrJoin(parts, ", ");
}

// Pads every column but the last to its widest cell, and at least to `*widths` (updated to the
// widths used, so later pages of one table line up); two spaces between columns.
std::string RenderTable(const std::vector<std::vector<std::string>>& rows,
                        std::vector<size_t>* carried) {
  std::vector<size_t> own;
  std::vector<size_t>& widths = carried != nullptr ? *carried : own;
  for (const auto& row : rows) {
    for (size_t c = 0; c + 1 < row.size(); ++c) {
      if (widths.size() <= c) widths.resize(c + 1, 0);
      widths[c] = std::max(widths[c], row[c].size());
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line.append(widths[c] - row[c].size() + 2, ' ');
    }
    // Trailing blanks come from empty last cells.
    absl::StripTrailingAsciiWhitespace(&line);
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string RenderTable(const std::vector<std::vector<std::string>>& rows) {
  return RenderTable(rows, nullptr);
}

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  std::string out;
  // Printing a well-formed message cannot fail.
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  if (out.empty() || out.back() != '\n') out.push_back('\n');
  return out;
}

int UsageError(const absl::Status& status, std::ostream& err) {
  err << "eventbus: " << status.message() << "\n\n" << kUsage;
  return 2;
}

int CallError(absl::string_view command, const absl::Status& status, std::ostream& err) {
  // One line, whatever the transport put in the message.
  std::string message(status.message());
  std::replace(message.begin(), message.end(), '\n', ' ');
  err << "eventbus: " << command << ": " << absl::StatusCodeToString(status.code()) << ": "
      << message << "\n";
  return 1;
}

// `health [SERVICE]`: exit 0 when SERVING, 1 for any other answer, 2 without one (the server
// cannot be reached, or answers with an error), as a container HEALTHCHECK or a probe expects.
int RunHealth(const std::string& server, const ClientOptions& options,
              const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.size() > 1) {
    return UsageError(
        absl::InvalidArgumentError(absl::StrCat("health: unexpected argument ", Quote(args[1]))),
        err);
  }
  if (!args.empty() && absl::StartsWith(args[0], "-")) {
    return UsageError(
        absl::InvalidArgumentError(absl::StrCat("health: unknown option ", Quote(args[0]))), err);
  }
  const std::string service = args.empty() ? "" : args[0];
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(server, options);
  constexpr int kNoAnswer = 2;
  if (!client.ok()) {
    CallError("health", client.status(), err);
    return kNoAnswer;
  }
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> status =
      (*client)->CheckHealth(service);
  if (absl::IsNotFound(status.status())) {
    // gRPC's health service answers NOT_FOUND for a name it has no status for.
    out << "SERVICE_UNKNOWN\n";
    err << "eventbus: health: the server has no health status for " << Quote(service) << "\n";
    return 1;
  }
  if (!status.ok()) {
    CallError("health", status.status(), err);
    return kNoAnswer;
  }
  out << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status) << "\n";
  return *status == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

// The token in `path`: its contents without surrounding blanks and newlines. The error names
// the file, never its contents.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token_file \"", path, "\": cannot read: ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  std::string token(absl::StripAsciiWhitespace(text.str()));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--token_file \"", path, "\": empty"));
  }
  if (absl::StrContains(token, '\n') || absl::StrContains(token, ' ')) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token_file \"", path, "\": holds more than one word (expected the token)"));
  }
  return token;
}

// Prints a List answer that comes in pages, each page as it arrives: as a table (a header, then
// rows whose columns widen as later pages need, never narrow) or as JSON, byte for byte what
// ToJson prints for all the pages merged into one answer.
class PagePrinter {
 public:
  // `field`: the answer's repeated field ("subscriptions", "events"); `none`: the table's text
  // when there is no entry at all.
  PagePrinter(std::ostream& out, OutputFormat format, absl::string_view field,
              absl::string_view none)
      : out_(out), format_(format), field_(field), none_(none) {}

  // Prints one page's entries: `header` and `rows` for the table, `items` for JSON.
  void Page(const std::vector<std::string>& header, std::vector<std::vector<std::string>> rows,
            const std::vector<const google::protobuf::Message*>& items) {
    if (format_ == OutputFormat::kJson) {
      for (const google::protobuf::Message* item : items) {
        out_ << (entries_++ == 0 ? absl::StrCat("{\n \"", field_, "\": [\n") : ",\n");
        // The item nested two levels deep: each of its lines indented by two more spaces.
        std::string json = ToJson(*item);
        json.pop_back();  // its newline
        out_ << "  " << absl::StrReplaceAll(json, {{"\n", "\n  "}});
      }
      return;
    }
    if (rows.empty()) return;
    entries_ += rows.size();
    if (header != header_) {
      header_ = header;
      rows.insert(rows.begin(), header);
    }
    out_ << RenderTable(rows, &widths_);
    out_.flush();
  }

  // Ends the output: JSON's closing brackets (and "stale" when set), or the table's `none` text.
  void Finish(bool stale) {
    if (format_ == OutputFormat::kTable) {
      if (entries_ == 0) out_ << none_;
      return;
    }
    out_ << (entries_ == 0 ? "{" : "\n ]")
         << (stale ? absl::StrCat(entries_ == 0 ? "" : ",", "\n \"stale\": true") : "") << "\n}\n";
  }

 private:
  std::ostream& out_;
  const OutputFormat format_;
  const std::string field_;
  const std::string none_;
  size_t entries_ = 0;
  std::vector<std::string> header_;
  std::vector<size_t> widths_;
};

// The header and rows of a table of subscriptions, with an OWNER column when `owners`.
std::vector<std::string> SubscriptionsHeader(bool owners) {
  std::vector<std::string> header = {"ID", "EVENT", "SOCKET"};
  if (owners) header.push_back("OWNER");
  header.insert(header.end(), {"EXPIRES", "TTL", "TARGETS"});
  return header;
}

std::vector<std::vector<std::string>> SubscriptionRows(
    const google::protobuf::RepeatedPtrField<v1::Subscription>& subs, bool owners) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::Subscription& sub : subs) {
    std::vector<std::string> row = {sub.id(), sub.event(), sub.socket()};
    if (owners) row.push_back(sub.owner().empty() ? "-" : sub.owner());
    row.insert(row.end(), {sub.has_expire_time() ? FormatTime(sub.expire_time()) : "never",
                           sub.has_ttl() ? FormatTtl(sub.ttl()) : "-", TargetsText(sub)});
    rows.push_back(std::move(row));
  }
  return rows;
}

bool AnyOwner(const v1::ListSubscriptionsResponse& response) {
  for (const v1::Subscription& sub : response.subscriptions()) {
    if (!sub.owner().empty()) return true;
  }
  return false;
}

std::vector<std::vector<std::string>> EventRows(const v1::ListEventsResponse& response) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::EventInfo& e : response.events()) {
    rows.push_back({e.event(), absl::StrCat(e.subscribers())});
  }
  return rows;
}

void WarnIfStale(bool stale, std::ostream& err) {
  if (stale) err << "warning: the server's store is unreachable; this list may be out of date\n";
}

// The raw text of member `key` of the JSON object `text` (valid JSON), top level only.
std::optional<absl::string_view> RawMember(absl::string_view text, absl::string_view key) {
  size_t i = text.find('{');
  if (i == absl::string_view::npos) return std::nullopt;
  ++i;
  auto skip_blanks = [&] {
    while (i < text.size() && absl::ascii_isspace(static_cast<unsigned char>(text[i]))) ++i;
  };
  for (;;) {
    skip_blanks();
    if (i >= text.size() || text[i] != '"') return std::nullopt;
    const size_t key_end = jsonrpc::SkipJsonValue(text, i);
    absl::StatusOr<google::protobuf::Value> name = ParseJsonValue(text.substr(i, key_end - i));
    i = key_end;
    skip_blanks();
    ++i;  // ':'
    skip_blanks();
    const size_t value_end = jsonrpc::SkipJsonValue(text, i);
    if (name.ok() && name->string_value() == key) return text.substr(i, value_end - i);
    i = value_end;
    skip_blanks();
    if (i >= text.size() || text[i] != ',') return std::nullopt;
    ++i;
  }
}

}  // namespace

absl::StatusOr<v1::RaiseRequest> ParseStreamLine(absl::string_view line,
                                                 const v1::RaiseRequest& defaults) {
  absl::StatusOr<google::protobuf::Value> parsed = ParseJsonValue(line);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON: ", parsed.status().message()));
  }
  if (!parsed->has_struct_value()) {
    return absl::InvalidArgumentError(
        "expected a JSON object such as {\"event\":\"E\",\"params\":{\"ip\":\"10.0.0.1\"}}");
  }
  v1::RaiseRequest request = defaults;
  bool has_event = false;
  for (const auto& [key, value] : parsed->struct_value().fields()) {
    if (key == "event") {
      if (!value.has_string_value()) return absl::InvalidArgumentError("\"event\": not a string");
      request.set_event(value.string_value());
      has_event = true;
    } else if (key == "params") {
      if (!value.has_struct_value() && !value.has_list_value()) {
        return absl::InvalidArgumentError("\"params\": not a JSON object or array");
      }
      // Sent as JSON text, as `raise --json` sends it: numbers of any size and keys in their
      // given order reach the subscribers exactly as typed.
      std::optional<absl::string_view> raw = RawMember(line, "params");
      if (!raw.has_value()) return absl::InvalidArgumentError("\"params\": cannot be read");
      request.set_json(std::string(*raw));
    } else if (key == "sync" || key == "all") {
      if (!value.has_bool_value()) {
        return absl::InvalidArgumentError(absl::StrCat("\"", key, "\": not true or false"));
      }
      if (key == "sync") {
        request.set_sync(value.bool_value());
      } else {
        request.set_all_deliveries(value.bool_value());
      }
    } else if (key == "timeout_ms") {
      const double ms = value.number_value();
      if (!value.has_number_value() || ms < 1 || ms > 4294967295.0 ||
          ms != static_cast<double>(static_cast<uint64_t>(ms))) {
        return absl::InvalidArgumentError(
            "\"timeout_ms\": expected an integer from 1 to 4294967295");
      }
      request.set_timeout_ms(static_cast<uint32_t>(ms));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown key \"", key, "\" (expected event, params, sync, timeout_ms, all)"));
    }
  }
  if (!has_event) return absl::InvalidArgumentError("missing \"event\"");
  return request;
}

std::string FormatStreamResult(size_t line, const v1::RaiseStreamResult& result) {
  if (result.has_error()) {
    absl::string_view message = result.error().message();
    // "event [K]: " names the event's place in its message; the line number says it here.
    if (absl::StartsWith(message, "event [")) {
      size_t colon = message.find("]: ");
      if (colon != absl::string_view::npos) message.remove_prefix(colon + 3);
    }
    return absl::StrCat(
        "line ", line, ": error ",
        absl::StatusCodeToString(static_cast<absl::StatusCode>(result.error().code())), ": ",
        message, "\n");
  }
  const v1::RaiseResponse& r = result.response();
  if (r.subscribers() == 0) return absl::StrCat("line ", line, ": no subscribers\n");
  std::string text =
      absl::StrCat("line ", line, ": ", r.subscribers(),
                   r.subscribers() == 1 ? " subscriber: " : " subscribers: ", r.queued(),
                   " QUEUED, ", r.ok(), " OK, ", r.failed(), " failed");
  for (const v1::Delivery& d : r.deliveries()) {
    if (d.status() == v1::DELIVERY_STATUS_OK || d.status() == v1::DELIVERY_STATUS_QUEUED) continue;
    absl::StrAppend(&text, "; first failure: ", d.socket(), " ", StatusName(d.status()), " ",
                    OutcomeText(d));
    break;
  }
  absl::StrAppend(&text, "\n");
  return text;
}

namespace {

// `raise-stream`: reads one JSON event per line from `in`, sends them in messages of up to
// `batch` events (fewer when the input pauses), prints one line per input line in order.
int RunRaiseStream(Client& client, const std::vector<std::string>& args, bool deadline_given,
                   std::istream& in, std::ostream& out, std::ostream& err) {
  absl::StatusOr<SplitResult> split =
      SplitArgs("raise-stream", args, {"timeout", "output", "batch"}, {"sync", "async", "all"});
  if (!split.ok()) return UsageError(split.status(), err);
  v1::RaiseRequest defaults;
  OutputFormat output = OutputFormat::kTable;
  uint32_t batch_size = 64;
  for (const auto& [name, value] : split->options) {
    if (name == "sync" || name == "async") {
      defaults.set_sync(name == "sync");
    } else if (name == "all") {
      defaults.set_all_deliveries(true);
    } else if (name == "timeout") {
      absl::StatusOr<uint32_t> ms = ParseUint32("raise-stream", "--timeout", value);
      if (!ms.ok()) return UsageError(ms.status(), err);
      if (*ms == 0) {
        return UsageError(
            absl::InvalidArgumentError("raise-stream: --timeout must be at least 1 ms"), err);
      }
      defaults.set_timeout_ms(*ms);
    } else if (name == "output") {
      absl::StatusOr<OutputFormat> format = ParseOutput("raise-stream", value);
      if (!format.ok()) return UsageError(format.status(), err);
      output = *format;
    } else if (name == "batch") {
      absl::StatusOr<uint32_t> n = ParseUint32("raise-stream", "--batch", value);
      if (!n.ok()) return UsageError(n.status(), err);
      if (*n == 0 || *n > 10000) {
        return UsageError(absl::InvalidArgumentError(
                              absl::StrCat("raise-stream: --batch ", *n, " is outside 1..10000")),
                          err);
      }
      batch_size = *n;
    }
  }
  if (!split->positional.empty()) {
    return UsageError(absl::InvalidArgumentError(absl::StrCat(
                          "raise-stream: unexpected argument ", Quote(split->positional[0]),
                          " (events come from standard input, one JSON object per line)")),
                      err);
  }

  // What the reader must print for one message: each input line in order, either an error found
  // here or the next result of the message's answer.
  struct Line {
    size_t number;
    std::optional<absl::Status> error;
  };
  std::mutex mu;
  std::deque<std::vector<Line>> sent;  // guarded by mu
  std::unique_ptr<RaiseStream> stream =
      client.OpenRaiseStream(deadline_given ? client.options().deadline : absl::InfiniteDuration());

  // std::cin is tied to std::cout (each read flushes it): the reading thread must not touch the
  // output the other thread writes.
  in.tie(nullptr);
  std::thread writer([&] {
    std::vector<Line> lines;
    v1::RaiseStreamRequest message;
    auto flush = [&]() -> bool {
      if (lines.empty()) return true;
      {
        std::lock_guard<std::mutex> lock(mu);
        sent.push_back(std::move(lines));
      }
      lines.clear();
      const bool ok = stream->Write(message);
      message.Clear();
      return ok;
    };
    std::string text;
    size_t number = 0;
    while (std::getline(in, text)) {
      ++number;
      if (absl::StripAsciiWhitespace(text).empty()) continue;
      absl::StatusOr<v1::RaiseRequest> request = ParseStreamLine(text, defaults);
      if (request.ok()) {
        *message.add_events() = *std::move(request);
        lines.push_back({number, std::nullopt});
      } else {
        lines.push_back({number, request.status()});
      }
      // A full message goes at once, and so does a partial one when no more input is ready
      // (an interactive or slow producer sees its answers without waiting for a full batch).
      if (static_cast<uint32_t>(message.events_size()) >= batch_size ||
          in.rdbuf()->in_avail() <= 0) {
        if (!flush()) return;
      }
    }
    if (flush()) stream->WritesDone();
  });

  size_t failed_lines = 0;
  auto print = [&](size_t number, const v1::RaiseStreamResult& result) {
    if (result.has_error()) ++failed_lines;
    if (output == OutputFormat::kTable) {
      out << FormatStreamResult(number, result);
      return;
    }
    google::protobuf::util::JsonPrintOptions options;
    std::string json;
    if (result.has_error()) {
      json = absl::StrCat(
          "{\"line\":", number, ",\"error\":{\"code\":\"",
          absl::StatusCodeToString(static_cast<absl::StatusCode>(result.error().code())),
          "\",\"message\":");
      std::string message;
      google::protobuf::Value text;
      text.set_string_value(result.error().message());
      (void)google::protobuf::util::MessageToJsonString(text, &message, options);
      absl::StrAppend(&json, message, "}}");
    } else {
      std::string response;
      (void)google::protobuf::util::MessageToJsonString(result.response(), &response, options);
      json = absl::StrCat("{\"line\":", number, ",\"response\":", response, "}");
    }
    out << json << "\n";
  };
  v1::RaiseStreamResponse response;
  size_t answered = 0;
  bool broken = false;
  while (stream->Read(&response)) {
    std::vector<Line> lines;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (sent.empty()) {
        broken = true;
        break;
      }
      lines = std::move(sent.front());
      sent.pop_front();
    }
    int next = 0;
    for (const Line& line : lines) {
      v1::RaiseStreamResult result;
      if (line.error.has_value()) {
        result.mutable_error()->set_code(static_cast<int32_t>(line.error->code()));
        result.mutable_error()->set_message(std::string(line.error->message()));
      } else if (next < response.results_size()) {
        result = response.results(next++);
      } else {
        broken = true;
        break;
      }
      print(line.number, result);
      ++answered;
    }
    out.flush();
  }
  if (broken) stream->Cancel();
  writer.join();
  absl::Status status = stream->Finish();
  if (broken && status.ok()) {
    status = absl::InternalError("the server's answers do not match the messages sent");
  }
  if (!status.ok()) {
    size_t unanswered = 0;
    for (const auto& lines : sent) unanswered += lines.size();
    CallError("raise-stream", status, err);
    if (unanswered > 0) {
      err << "eventbus: raise-stream: " << unanswered << " line(s) sent were not answered\n";
    }
    return 1;
  }
  return failed_lines == 0 ? 0 : 1;
}

}  // namespace

absl::StatusOr<google::protobuf::Value> ParseJsonValue(absl::string_view text) {
  google::protobuf::Value value;
  auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(text.data(), text.size()), &value);
  if (!status.ok()) {
    // protobuf's message spans lines (it draws a caret under the input); keep the first.
    std::string message(status.message().data(), status.message().size());
    message = message.substr(0, message.find('\n'));
    return absl::InvalidArgumentError(message.empty() ? "invalid JSON" : message);
  }
  return value;
}

absl::StatusOr<RaiseCommand> ParseRaiseCommand(const std::vector<std::string>& args) {
  absl::StatusOr<SplitResult> split =
      SplitArgs("raise", args, {"timeout", "output", "json"}, {"sync", "async", "all"});
  if (!split.ok()) return split.status();
  RaiseCommand command;
  v1::RaiseRequest& request = command.request;
  std::optional<std::string> json;
  for (const auto& [name, value] : split->options) {
    if (name == "sync" || name == "async") {
      request.set_sync(name == "sync");
    } else if (name == "all") {
      request.set_all_deliveries(true);
    } else if (name == "timeout") {
      absl::StatusOr<uint32_t> ms = ParseUint32("raise", "--timeout", value);
      if (!ms.ok()) return ms.status();
      if (*ms == 0) return absl::InvalidArgumentError("raise: --timeout must be at least 1 ms");
      request.set_timeout_ms(*ms);
    } else if (name == "output") {
      absl::StatusOr<OutputFormat> output = ParseOutput("raise", value);
      if (!output.ok()) return output.status();
      command.output = *output;
    } else if (name == "json") {
      json = value;
    }
  }
  const std::vector<std::string>& words = split->positional;
  if (words.empty()) return absl::InvalidArgumentError("raise: missing EVENT");
  request.set_event(words[0]);
  if (json.has_value()) {
    if (words.size() > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("raise: --json cannot be combined with ARGS (", Quote(words[1]), ")"));
    }
    request.set_json(*json);
    return command;
  }

  std::optional<std::string> first_named, first_positional;
  for (size_t i = 1; i < words.size(); ++i) {
    const std::string& arg = words[i];
    size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      bool typed = eq > 0 && arg[eq - 1] == ':';
      absl::string_view name = absl::string_view(arg).substr(0, typed ? eq - 1 : eq);
      if (name.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("raise: argument ", Quote(arg), " has an empty name"));
      }
      if (IsParamName(name)) {
        if (!first_named) first_named = arg;
        v1::Param* param = request.mutable_named()->add_params();
        param->set_name(std::string(name));
        absl::string_view value = absl::string_view(arg).substr(eq + 1);
        if (!typed) {
          param->mutable_value()->set_string_value(std::string(value));
          continue;
        }
        absl::StatusOr<google::protobuf::Value> parsed = ParseJsonValue(value);
        if (!parsed.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "raise: argument ", Quote(arg), ": invalid JSON value: ", parsed.status().message()));
        }
        // Sent as JSON text (Param.json), not as the parsed Value: integers of any size and
        // object keys in their given order reach the subscriber exactly as typed.
        param->set_json(std::string(value));
        continue;
      }
    }
    if (!first_positional) first_positional = arg;
    absl::StatusOr<google::protobuf::Value> parsed = ParseJsonValue(arg);
    google::protobuf::Value* value = request.mutable_positional()->add_values();
    if (parsed.ok()) {
      if (absl::Status exact = CheckIntegersAreExact(arg); !exact.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("raise: argument ", Quote(arg), ": ", exact.message()));
      }
      *value = *std::move(parsed);
    } else {
      value->set_string_value(arg);
    }
  }
  if (first_named && first_positional) {
    return absl::InvalidArgumentError(absl::StrCat("raise: cannot mix named (", Quote(*first_named),
                                                   ") and positional (", Quote(*first_positional),
                                                   ") params; use --json for anything else"));
  }
  return command;
}

absl::StatusOr<v1::RaiseRequest> ParseRaiseArgs(const std::vector<std::string>& args) {
  absl::StatusOr<RaiseCommand> command = ParseRaiseCommand(args);
  if (!command.ok()) return command.status();
  return std::move(command->request);
}

absl::StatusOr<SubscribeCommand> ParseSubscribeArgs(const std::vector<std::string>& args) {
  absl::StatusOr<SplitResult> split =
      SplitArgs("subscribe", args, {"expire", "event_param", "output"}, {});
  if (!split.ok()) return split.status();
  SubscribeCommand command;
  for (const auto& [name, value] : split->options) {
    if (name == "expire") {
      absl::StatusOr<uint32_t> seconds = ParseUint32("subscribe", "--expire", value);
      if (!seconds.ok()) return seconds.status();
      command.request.set_expire_seconds(*seconds);
    } else if (name == "event_param") {
      command.request.set_event_param(value);
    } else if (name == "output") {
      absl::StatusOr<OutputFormat> output = ParseOutput("subscribe", value);
      if (!output.ok()) return output.status();
      command.output = *output;
    }
  }
  if (split->positional.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("subscribe: expected EVENT SOCKET, got ",
                                                   split->positional.size(), " argument(s)"));
  }
  command.request.set_event(split->positional[0]);
  command.request.set_socket(split->positional[1]);
  return command;
}

absl::StatusOr<v1::UnsubscribeRequest> ParseUnsubscribeArgs(const std::vector<std::string>& args) {
  absl::StatusOr<SplitResult> split = SplitArgs("unsubscribe", args, {}, {});
  if (!split.ok()) return split.status();
  v1::UnsubscribeRequest request;
  const std::vector<std::string>& words = split->positional;
  if (words.size() == 1) {
    request.set_id(words[0]);
  } else if (words.size() == 2) {
    request.set_event(words[0]);
    request.set_socket(words[1]);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unsubscribe: expected ID or EVENT SOCKET, got ",
                                                   words.size(), " argument(s)"));
  }
  return request;
}

std::string StatusName(v1::DeliveryStatus status) {
  absl::string_view name = v1::DeliveryStatus_Name(status);
  absl::ConsumePrefix(&name, "DELIVERY_STATUS_");
  return name.empty() ? absl::StrCat(static_cast<int>(status)) : std::string(name);
}

std::string StateName(v1::ConnectionState state) {
  absl::string_view name = v1::ConnectionState_Name(state);
  absl::ConsumePrefix(&name, "CONNECTION_STATE_");
  return name.empty() ? absl::StrCat(static_cast<int>(state)) : std::string(name);
}

std::string FormatRaiseTable(const v1::RaiseResponse& response) {
  if (response.subscribers() == 0 && response.deliveries().empty()) return "no subscribers\n";
  std::vector<std::vector<std::string>> rows;
  for (const v1::Delivery& d : response.deliveries()) {
    rows.push_back(
        {d.socket(), StatusName(d.status()), FormatLatency(d.latency()), OutcomeText(d)});
    for (const v1::Attempt& a : d.attempts()) {
      rows.push_back({absl::StrCat("  ", a.member()), StatusName(a.status()),
                      FormatLatency(a.latency()), OutcomeText(a)});
    }
  }
  std::string out = RenderTable(rows);
  // A compact async answer leaves its QUEUED deliveries out: the counts say what they were.
  if (static_cast<uint32_t>(response.deliveries_size()) < response.subscribers()) {
    absl::StrAppend(
        &out, response.subscribers(),
        response.subscribers() == 1 ? " subscriber: " : " subscribers: ", response.queued(),
        " QUEUED, ", response.ok(), " OK, ", response.failed(), " failed\n");
  }
  return out;
}

std::string FormatSubscription(const v1::Subscription& sub, bool created) {
  std::vector<std::vector<std::string>> rows = {
      {"id", sub.id()},
      {"event", sub.event()},
      {"socket", sub.socket()},
      {"created",
       absl::StrCat(FormatTime(sub.create_time()),
                    created ? " (new subscription)" : " (existing subscription, refreshed)")},
      {"expires", sub.has_expire_time() ? absl::StrCat(FormatTime(sub.expire_time()), " (in ",
                                                       FormatTtl(sub.ttl()), ")")
                                        : "never"},
  };
  if (sub.has_event_param()) {
    rows.push_back({"event_param", sub.event_param().empty() ? "(off)" : sub.event_param()});
  }
  // Only with authentication on does a subscription have an owner.
  if (!sub.owner().empty()) rows.push_back({"owner", sub.owner()});
  if (!sub.targets().empty()) rows.push_back({"targets", TargetsText(sub)});
  return RenderTable(rows);
}

std::string FormatSubscriptionsTable(const v1::ListSubscriptionsResponse& response) {
  if (response.subscriptions().empty()) return "no subscriptions\n";
  // An OWNER column only when some subscription has one (authentication on): without
  // authentication the table stays as it always was.
  bool owners = AnyOwner(response);
  std::vector<std::vector<std::string>> rows = {SubscriptionsHeader(owners)};
  for (auto& row : SubscriptionRows(response.subscriptions(), owners)) {
    rows.push_back(std::move(row));
  }
  return RenderTable(rows);
}

std::string FormatEventsTable(const v1::ListEventsResponse& response) {
  if (response.events().empty()) return "no events\n";
  std::vector<std::vector<std::string>> rows = {{"EVENT", "SUBSCRIBERS"}};
  for (auto& row : EventRows(response)) rows.push_back(std::move(row));
  return RenderTable(rows);
}

int RunCli(const std::vector<std::string>& args, const std::string& default_server,
           std::ostream& out, std::ostream& err, const std::string& env_token, std::istream* in) {
  std::string server = default_server.empty() ? kDefaultServer : default_server;
  ClientOptions options;
  bool deadline_given = false;
  std::string token_file;
  size_t i = 0;
  for (; i < args.size() && absl::StartsWith(args[i], "-"); ++i) {
    const std::string& arg = args[i];
    if (arg == "-h" || arg == "--help") {
      out << kUsage;
      return 0;
    }
    if (arg == "--version") {
      out << base::VersionText("eventbus");
      return 0;
    }
    size_t eq = arg.find('=');
    std::string name = arg.substr(0, eq);
    std::string value;
    if (name == "--tls") {
      if (eq != std::string::npos) {
        return UsageError(absl::InvalidArgumentError("--tls takes no value"), err);
      }
      options.tls = true;
      continue;
    }
    if (name != "--server" && name != "--timeout_ms" && name != "--tls_ca" &&
        name != "--tls_cert" && name != "--tls_key" && name != "--tls_server_name" &&
        name != "--token_file") {
      return UsageError(absl::InvalidArgumentError(absl::StrCat("unknown flag ", name)), err);
    }
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return UsageError(absl::InvalidArgumentError(absl::StrCat(name, " needs a value")), err);
    }
    if (name == "--server") {
      server = value;
    } else if (name == "--tls_ca") {
      options.tls_ca_file = value;
    } else if (name == "--tls_cert") {
      options.tls_cert_file = value;
    } else if (name == "--tls_key") {
      options.tls_key_file = value;
    } else if (name == "--tls_server_name") {
      options.tls_server_name = value;
    } else if (name == "--token_file") {
      token_file = value;
    } else {
      absl::StatusOr<uint32_t> ms = ParseUint32("eventbus", "--timeout_ms", value);
      if (!ms.ok()) return UsageError(ms.status(), err);
      if (*ms == 0) {
        return UsageError(absl::InvalidArgumentError("--timeout_ms must be at least 1"), err);
      }
      options.deadline = absl::Milliseconds(*ms);
      deadline_given = true;
    }
  }
  if (i == args.size()) return UsageError(absl::InvalidArgumentError("missing COMMAND"), err);
  // The token comes from a file or the environment, never from an argument (which `ps` shows).
  if (!token_file.empty()) {
    absl::StatusOr<std::string> token = ReadTokenFile(token_file);
    if (!token.ok()) {
      err << "eventbus: " << token.status().message() << "\n";
      return 2;
    }
    options.token = *std::move(token);
  } else {
    options.token = std::string(absl::StripAsciiWhitespace(env_token));
  }
  if (!options.token.empty() && !options.UsesTls()) {
    err << "eventbus: a bearer token (" << (token_file.empty() ? "$EVENTBUS_TOKEN" : "--token_file")
        << ") is sent only over TLS: add --tls or --tls_ca FILE\n";
    return 2;
  }
  const std::string& command = args[i];
  std::vector<std::string> rest(args.begin() + i + 1, args.end());
  if (command == "help") {
    out << kUsage;
    return 0;
  }
  if (command == "health") return RunHealth(server, options, rest, out, err);
  if (command == "raise-stream") {
    // Connecting is lazy: nothing touches the network before the arguments are checked.
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(server, options);
    if (!client.ok()) return CallError(command, client.status(), err);
    return RunRaiseStream(**client, rest, deadline_given, in != nullptr ? *in : std::cin, out, err);
  }
  if (command != "subscribe" && command != "unsubscribe" && command != "raise" &&
      command != "list" && command != "events") {
    return UsageError(absl::InvalidArgumentError(absl::StrCat("unknown command ", Quote(command))),
                      err);
  }

  // Parse before connecting, so usage errors never wait on the network.
  absl::StatusOr<SubscribeCommand> subscribe;
  absl::StatusOr<v1::UnsubscribeRequest> unsubscribe;
  absl::StatusOr<RaiseCommand> raise;
  v1::ListSubscriptionsRequest list;
  v1::ListEventsRequest events;
  OutputFormat output = OutputFormat::kTable;
  absl::Status parsed;
  if (command == "subscribe") {
    subscribe = ParseSubscribeArgs(rest);
    parsed = subscribe.status();
    if (subscribe.ok()) output = subscribe->output;
  } else if (command == "unsubscribe") {
    unsubscribe = ParseUnsubscribeArgs(rest);
    parsed = unsubscribe.status();
  } else if (command == "raise") {
    raise = ParseRaiseCommand(rest);
    parsed = raise.status();
    if (raise.ok()) output = raise->output;
  } else {
    absl::StatusOr<SplitResult> split = SplitArgs(command, rest, {"output", "page_size"}, {});
    parsed = split.status();
    if (split.ok()) {
      for (const auto& [name, value] : split->options) {
        if (name == "page_size") {
          absl::StatusOr<uint32_t> size = ParseUint32(command, "--page_size", value);
          if (!size.ok()) return UsageError(size.status(), err);
          if (*size == 0 || *size > 10000) {
            return UsageError(absl::InvalidArgumentError(absl::StrCat(
                                  command, ": --page_size ", *size, " is outside 1..10000")),
                              err);
          }
          list.set_page_size(static_cast<int32_t>(*size));
          events.set_page_size(static_cast<int32_t>(*size));
          continue;
        }
        absl::StatusOr<OutputFormat> format = ParseOutput(command, value);
        if (!format.ok()) return UsageError(format.status(), err);
        output = *format;
      }
      size_t max_words = command == "list" ? 1 : 0;
      if (split->positional.size() > max_words) {
        parsed = absl::InvalidArgumentError(
            absl::StrCat(command, ": unexpected argument ", Quote(split->positional[max_words])));
      } else if (!split->positional.empty()) {
        list.set_event(split->positional[0]);
      }
    }
  }
  if (!parsed.ok()) return UsageError(parsed, err);

  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(server, options);
  if (!client.ok()) return CallError(command, client.status(), err);

  if (command == "subscribe") {
    absl::StatusOr<v1::SubscribeResponse> response = (*client)->Subscribe(subscribe->request);
    if (!response.ok()) return CallError(command, response.status(), err);
    out << (output == OutputFormat::kJson
                ? ToJson(*response)
                : FormatSubscription(response->subscription(), response->created()));
  } else if (command == "unsubscribe") {
    absl::StatusOr<v1::UnsubscribeResponse> response = (*client)->Unsubscribe(*unsubscribe);
    if (!response.ok()) return CallError(command, response.status(), err);
    out << "removed " << response->removed() << "\n";
  } else if (command == "raise") {
    absl::StatusOr<v1::RaiseResponse> response = (*client)->Raise(raise->request);
    if (!response.ok()) return CallError(command, response.status(), err);
    out << (output == OutputFormat::kJson ? ToJson(*response) : FormatRaiseTable(*response));
  } else if (command == "list") {
    // Page by page, each printed as it arrives: memory holds one page, whatever the server holds.
    PagePrinter printer(out, output, "subscriptions", "no subscriptions\n");
    bool stale = false, owners = false;
    absl::Status listed =
        (*client)->ListAllSubscriptions(list, [&](const v1::ListSubscriptionsResponse& page) {
          stale |= page.stale();
          // The OWNER column appears (with a new header) from the first page that has an owner.
          owners |= AnyOwner(page);
          std::vector<const google::protobuf::Message*> items;
          for (const auto& item : page.subscriptions()) items.push_back(&item);
          printer.Page(SubscriptionsHeader(owners), SubscriptionRows(page.subscriptions(), owners),
                       items);
          return absl::OkStatus();
        });
    if (!listed.ok()) return CallError(command, listed, err);
    printer.Finish(stale);
    WarnIfStale(stale, err);
  } else {
    PagePrinter printer(out, output, "events", "no events\n");
    bool stale = false;
    absl::Status listed = (*client)->ListAllEvents(events, [&](const v1::ListEventsResponse& page) {
      stale |= page.stale();
      std::vector<const google::protobuf::Message*> items;
      for (const auto& item : page.events()) items.push_back(&item);
      printer.Page({"EVENT", "SUBSCRIBERS"}, EventRows(page), items);
      return absl::OkStatus();
    });
    if (!listed.ok()) return CallError(command, listed, err);
    printer.Finish(stale);
    WarnIfStale(stale, err);
  }
  return 0;
}

}  // namespace eventbus::client
