// eventbusd: flags (each also settable as EVENTBUS_<FLAG> in the environment), wiring into
// service::ServerConfig, and signals. No logic lives here; see server/service/server.h.
#include <pthread.h>
#include <signal.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/base/log.h"
#include "server/base/version.h"
#include "server/net/fd_budget.h"
#include "server/policy/destination_policy.h"
#include "server/registry/subscription.h"
#include "server/service/server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC listening address HOST:PORT (port 0 picks a free port, logged at start-up)");
ABSL_FLAG(std::string, store, "sqlite",
          "Subscription store: memory | sqlite | sqlite:PATH | "
          "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]");
ABSL_FLAG(
    std::string, store_ca, "",
    "etcd over TLS: PEM CA bundle that verifies etcd's certificates (empty with "
    "--store_cert: the system's roots). Any --store_ca/--store_cert/--store_key turns TLS on");
ABSL_FLAG(std::string, store_cert, "",
          "etcd over TLS: PEM client certificate (etcd --client-cert-auth); with --store_key");
ABSL_FLAG(std::string, store_key, "", "etcd over TLS: PEM private key of --store_cert");
ABSL_FLAG(std::string, data_dir, "/var/lib/eventbus",
          "Directory of the sqlite store's subscriptions.db");
ABSL_FLAG(int64_t, timeout_ms, 1000,
          "Default Raise timeout in ms (sync: connect + write + reply; async: time to be written)");
ABSL_FLAG(bool, sync_mode, false, "Default Raise mode: wait for each target's JSON-RPC reply");
ABSL_FLAG(std::string, event_param, "",
          "Params key that carries the event name (\"\" = off); a subscription may override it");
ABSL_FLAG(int32_t, loops, 0, "Event-loop threads of the writer pool (0 = number of cores)");
ABSL_FLAG(int64_t, queue_max_messages, 10000, "Per-target queue bound, in messages");
ABSL_FLAG(int64_t, queue_max_bytes, 16777216, "Per-target queue bound, in bytes");
ABSL_FLAG(int64_t, connect_timeout_ms, 2000, "TCP connect timeout in ms");
ABSL_FLAG(std::string, target_ca_file, "",
          "PEM file of the CA certificates that verify tls: subscribers (default: the system "
          "store)");
ABSL_FLAG(std::string, target_cert, "",
          "PEM client certificate (chain) presented to tls: subscribers that ask for one (mTLS); "
          "with --target_key");
ABSL_FLAG(std::string, target_key, "", "PEM private key of --target_cert");
ABSL_FLAG(int64_t, resolve_timeout_ms, 2000,
          "DNS lookup timeout in ms (RESOLVE_FAILED when a target's name is not resolved in time)");
ABSL_FLAG(int64_t, reconnect_min_backoff_ms, 50,
          "First reconnect delay in ms (doubles per failure)");
ABSL_FLAG(int64_t, reconnect_max_backoff_ms, 5000, "Longest reconnect delay in ms");
ABSL_FLAG(int64_t, max_reply_bytes, 1048576,
          "Largest JSON-RPC reply accepted; a larger one closes the connection");
ABSL_FLAG(int64_t, idle_timeout_s, 300,
          "A target connection with nothing queued or outstanding for this long is closed");
ABSL_FLAG(int64_t, max_target_connections, 0,
          "Most subscriber (target) connections at once; 0 = derived from RLIMIT_NOFILE");
ABSL_FLAG(int64_t, default_expire_s, 3600,
          "Subscription lifetime in seconds when Subscribe gives none (0 = never expires)");
ABSL_FLAG(int64_t, max_event_name_bytes, 128, "Longest event name");
ABSL_FLAG(int64_t, max_socket_bytes, 1024, "Longest subscriber socket text");
ABSL_FLAG(int64_t, max_virtual_members, 16, "Most members of one virtual: socket");
ABSL_FLAG(int64_t, max_params_bytes, 65536, "Largest Raise params, as JSON text");
ABSL_FLAG(int64_t, max_subscriptions, 100000, "Most subscriptions in total");
ABSL_FLAG(int64_t, max_subscriptions_per_event, 10000, "Most subscriptions of one event");
ABSL_FLAG(int64_t, failover_timeout_ms, 30000,
          "A virtual FAILOVER member that failed is skipped for this long");
ABSL_FLAG(int64_t, shutdown_grace_ms, 5000,
          "On SIGTERM/SIGINT: time to finish in-flight calls and drain queued deliveries");
ABSL_FLAG(int64_t, max_client_connections, 0,
          "Most open gRPC client connections; more are closed at once (0 = derived from the "
          "descriptor limit, see README)");
ABSL_FLAG(int64_t, client_idle_timeout_ms, 300000,
          "A gRPC client connection with no call for this long is closed (0 = never)");
ABSL_FLAG(int64_t, client_handshake_timeout_ms, 10000,
          "A gRPC client connection must send its HTTP/2 preface and SETTINGS this soon");
ABSL_FLAG(int64_t, client_keepalive_time_ms, 60000,
          "A gRPC client connection quiet for this long is pinged");
ABSL_FLAG(int64_t, client_keepalive_timeout_ms, 20000,
          "A gRPC client connection whose ping is not answered this soon is closed");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT (numeric host, e.g. 127.0.0.1:9464) serving Prometheus metrics at /metrics; "
          "\"\" = off");
ABSL_FLAG(int64_t, metrics_max_events, 100,
          "Distinct event names given their own metric label; later ones share event=\"other\"");
ABSL_FLAG(int64_t, metrics_max_targets, 100,
          "Distinct targets (host:port) given their own metric label; later ones share "
          "target=\"other\"");
ABSL_FLAG(std::string, allow_targets, "",
          "Destination policy: comma-separated CIDR[:PORT|:LO-HI] entries ([IPv6/LEN]:PORT, * for "
          "any address); when set, EventBus connects only to destinations they match (\"\" = "
          "every destination that is not denied)");
ABSL_FLAG(std::string, deny_targets, "",
          "Destination policy: entries (as --allow_targets) EventBus never connects to, added to "
          "the defaults (169.254.0.0/16, fe80::/10, fd00:ec2::254, its own ports on this host); "
          "\"nodefaults\" among them drops the defaults, \"none\" alone denies nothing");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the API's TLS (with --tls_key); \"\" = plaintext");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificates; set = every client must present a certificate signed by one "
          "(mTLS); without --auth_tokens_file each such client is an admin");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "Credentials with roles, one per line: NAME ROLE[,ROLE...] token:SECRET | sha256:HEX | "
          "cert:IDENTITY (needs --tls_cert); reloaded on SIGHUP and when it changes");
ABSL_FLAG(int64_t, auth_tokens_poll_ms, 1000,
          "How often --auth_tokens_file is checked for a change (0 = only on SIGHUP)");
ABSL_FLAG(std::string, log_level, "info", "Lowest log level written: debug, info, warning, error");
ABSL_FLAG(std::string, log_format, "logfmt",
          "Log line format: logfmt (key=value) or json (one object per line)");
ABSL_FLAG(int64_t, failure_log_interval_s, 60,
          "A failing target gets at most one summary log line per this many seconds; also the "
          "window of the caps on failure and connection log lines");

namespace {

// True for the flags defined above (not abseil's own): they are listed by --help and each may
// also be set by EVENTBUS_<NAME IN UPPER CASE>.
bool IsEventbusFlagFile(absl::string_view path) { return absl::EndsWith(path, "server/main.cc"); }

// Exit codes: 0 after a clean shutdown; 2 for a setting that parses but is invalid, which no retry
// can fix (a malformed store url, a negative limit); 1 for a flag or EVENTBUS_* value that does
// not parse (abseil's own convention for the command line, kept for the environment) and for
// any other start-up failure (a local store that cannot be opened, an address in use).
constexpr int kExitStartFailed = 1;
constexpr int kExitBadConfig = 2;

// Logs why eventbusd cannot start, in the --log_format chosen (once known), and exits with `code`.
[[noreturn]] void Fail(const std::string& message, int code = kExitBadConfig) {
  eventbus::base::LogLine(eventbus::base::LogLevel::kError, "eventbusd cannot start",
                          absl::StrCat("error=", eventbus::base::LogValue(message)));
  std::exit(code);
}

// Sets the log format from EVENTBUS_LOG_FORMAT or --log_format before anything else is parsed,
// so that errors in the other flags are already written in it. An invalid value is reported once
// the flags are parsed.
void ApplyLogFormatEarly(int argc, char** argv) {
  std::string text;
  if (const char* env = std::getenv("EVENTBUS_LOG_FORMAT"); env != nullptr) text = env;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    absl::ConsumePrefix(&arg, "-");
    absl::ConsumePrefix(&arg, "-");
    if (absl::ConsumePrefix(&arg, "log_format=")) {
      text = std::string(arg);
    } else if (arg == "log_format" && i + 1 < argc) {
      text = argv[i + 1];
    }
  }
  eventbus::base::LogFormat format;
  if (eventbus::base::ParseLogFormat(text, &format)) eventbus::base::SetLogFormat(format);
}

// abseil's own help and parsing flags, left to absl::ParseCommandLine.
bool IsAbseilParseFlag(absl::string_view name) {
  for (absl::string_view builtin :
       {"help", "helpfull", "helpshort", "helppackage", "helpon", "helpmatch", "version",
        "only_check_args", "flagfile", "fromenv", "tryfromenv", "undefok"}) {
    if (name == builtin) return true;
  }
  return false;
}

// Checks the command line the way absl::ParseCommandLine will read it (--name=value, --name
// value, --bool, --nobool), so that an unknown flag or a bad value is reported by Fail() in the
// log format rather than by abseil's own message. Returns "" when it is fine.
std::string CheckCommandLine(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;  // a positional argument: reported later
    absl::ConsumePrefix(&arg, "-");
    absl::ConsumePrefix(&arg, "-");
    size_t eq = arg.find('=');
    absl::string_view name = arg.substr(0, eq);
    if (IsAbseilParseFlag(name)) continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && eq == absl::string_view::npos && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) continue;
    }
    if (flag == nullptr) return absl::StrCat("unknown flag --", name, "; see --help");
    std::string value;
    if (eq != absl::string_view::npos) {
      value = std::string(arg.substr(eq + 1));
    } else if (flag->IsOfType<bool>()) {
      continue;
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return absl::StrCat("--", name, ": missing value");
    }
    // Setting it here is harmless: ParseCommandLine sets the same value again.
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::StrCat("--", name, "=", value, ": ", error);
    }
  }
  return "";
}

// Applies EVENTBUS_* environment variables; the command line, parsed afterwards, wins.
void ApplyEnvironment() {
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!IsEventbusFlagFile(flag->Filename())) continue;
    std::string variable = absl::StrCat("EVENTBUS_", absl::AsciiStrToUpper(name));
    const char* value = std::getenv(variable.c_str());
    if (value == nullptr) continue;
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      Fail(absl::StrCat("environment variable ", variable, "=\"", value, "\": ", error),
           kExitStartFailed);
    }
  }
}

size_t NonNegative(const char* name, int64_t value) {
  if (value < 0) Fail(absl::StrCat("--", name, "=", value, ": must not be negative"));
  return static_cast<size_t>(value);
}

// `value` of flag `name`, or `derived` when it is 0.
size_t OrDerived(const char* name, int64_t value, size_t derived) {
  return value == 0 ? derived : NonNegative(name, value);
}

eventbus::service::ServerConfig ConfigFromFlags(const eventbus::net::FdBudget& fds) {
  eventbus::service::ServerConfig config;
  config.listen = absl::GetFlag(FLAGS_listen);
  config.store = absl::GetFlag(FLAGS_store);
  config.store_tls.ca = absl::GetFlag(FLAGS_store_ca);
  config.store_tls.cert = absl::GetFlag(FLAGS_store_cert);
  config.store_tls.key = absl::GetFlag(FLAGS_store_key);
  config.data_dir = absl::GetFlag(FLAGS_data_dir);
  config.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  config.sync_mode = absl::GetFlag(FLAGS_sync_mode);
  config.event_param = absl::GetFlag(FLAGS_event_param);
  if (absl::Status valid = eventbus::registry::ValidateEventParam(config.event_param);
      !valid.ok()) {
    Fail(absl::StrCat("--event_param: ", valid.message()));
  }
  config.failover_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_failover_timeout_ms));
  config.max_params_bytes = NonNegative("max_params_bytes", absl::GetFlag(FLAGS_max_params_bytes));
  config.failure_log.interval = absl::Seconds(absl::GetFlag(FLAGS_failure_log_interval_s));

  config.pool.num_loops = absl::GetFlag(FLAGS_loops);
  config.pool.max_queue_messages =
      NonNegative("queue_max_messages", absl::GetFlag(FLAGS_queue_max_messages));
  config.pool.max_queue_bytes =
      NonNegative("queue_max_bytes", absl::GetFlag(FLAGS_queue_max_bytes));
  config.pool.connect_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_connect_timeout_ms));
  config.pool.resolve_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_resolve_timeout_ms));
  config.pool.tls.ca_file = absl::GetFlag(FLAGS_target_ca_file);
  config.pool.tls.cert_file = absl::GetFlag(FLAGS_target_cert);
  config.pool.tls.key_file = absl::GetFlag(FLAGS_target_key);
  config.pool.min_backoff = absl::Milliseconds(absl::GetFlag(FLAGS_reconnect_min_backoff_ms));
  config.pool.max_backoff = absl::Milliseconds(absl::GetFlag(FLAGS_reconnect_max_backoff_ms));
  config.pool.max_reply_bytes =
      NonNegative("max_reply_bytes", absl::GetFlag(FLAGS_max_reply_bytes));
  config.pool.idle_timeout = absl::Seconds(absl::GetFlag(FLAGS_idle_timeout_s));
  config.pool.max_target_connections =
      OrDerived("max_target_connections", absl::GetFlag(FLAGS_max_target_connections),
                fds.target_connections);

  config.limits.max_event_name_bytes =
      NonNegative("max_event_name_bytes", absl::GetFlag(FLAGS_max_event_name_bytes));
  config.limits.max_socket_bytes =
      NonNegative("max_socket_bytes", absl::GetFlag(FLAGS_max_socket_bytes));
  config.limits.max_virtual_members =
      NonNegative("max_virtual_members", absl::GetFlag(FLAGS_max_virtual_members));
  config.limits.max_subscriptions =
      NonNegative("max_subscriptions", absl::GetFlag(FLAGS_max_subscriptions));
  config.limits.max_subscriptions_per_event =
      NonNegative("max_subscriptions_per_event", absl::GetFlag(FLAGS_max_subscriptions_per_event));
  config.limits.default_expire =
      absl::Seconds(NonNegative("default_expire_s", absl::GetFlag(FLAGS_default_expire_s)));

  config.max_client_connections =
      OrDerived("max_client_connections", absl::GetFlag(FLAGS_max_client_connections),
                fds.client_connections);
  config.client_fd_headroom = fds.fd_headroom;
  config.client_idle_timeout = absl::Milliseconds(
      NonNegative("client_idle_timeout_ms", absl::GetFlag(FLAGS_client_idle_timeout_ms)));
  config.client_handshake_timeout =
      absl::Milliseconds(absl::GetFlag(FLAGS_client_handshake_timeout_ms));
  config.client_keepalive_time = absl::Milliseconds(absl::GetFlag(FLAGS_client_keepalive_time_ms));
  config.client_keepalive_timeout =
      absl::Milliseconds(absl::GetFlag(FLAGS_client_keepalive_timeout_ms));
  config.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  config.metrics.max_events =
      NonNegative("metrics_max_events", absl::GetFlag(FLAGS_metrics_max_events));
  config.metrics.max_targets =
      NonNegative("metrics_max_targets", absl::GetFlag(FLAGS_metrics_max_targets));
  absl::StatusOr<eventbus::policy::PolicyConfig> destinations = eventbus::policy::ParsePolicyFlags(
      absl::GetFlag(FLAGS_allow_targets), absl::GetFlag(FLAGS_deny_targets));
  if (!destinations.ok()) Fail(std::string(destinations.status().message()));
  config.destination_policy = *std::move(destinations);
  config.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  config.tls_key = absl::GetFlag(FLAGS_tls_key);
  config.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  config.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  config.auth_reload_poll = absl::Milliseconds(
      NonNegative("auth_tokens_poll_ms", absl::GetFlag(FLAGS_auth_tokens_poll_ms)));
  return config;
}

}  // namespace

int main(int argc, char** argv) {
  // Block the shutdown signals before any thread starts, so every thread inherits the mask and
  // only sigwait() below receives them (this also works as PID 1 in a container, where default
  // dispositions are ignored).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  // SIGHUP reloads the tokens file (--auth_tokens_file); it never stops the process.
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A subscriber that closes its end must cost an EPIPE, never the process.
  signal(SIGPIPE, SIG_IGN);
  // Debian's abseil is built with absl::Mutex's deadlock detection on: every lock of gRPC's
  // mutexes then updates a global lock graph (GraphCycles, seen in callgrind profiles). Off, a
  // trivial gRPC call and a Raise with nobody to deliver to both run about 10% faster
  // (eventbus_bench, which does the same). Lock order is checked by the TSan suite instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  absl::SetProgramUsageMessage(
      "EventBus server: stores subscriptions and fans raised events out as JSON-RPC 2.0 over TCP.\n"
      "Every flag may also be set as EVENTBUS_<FLAG> (e.g. EVENTBUS_LISTEN); the command line "
      "wins.\nUsage: eventbusd [--flag=value ...] | eventbusd --version");
  // --help lists this file's flags (absl's default looks for a file named after the binary).
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = IsEventbusFlagFile;
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  usage_config.version_string = [] { return eventbus::base::VersionText("eventbusd"); };
  absl::SetFlagsUsageConfig(usage_config);
  // --version before anything else: it needs no valid configuration.
  for (int i = 1; i < argc; ++i) {
    if (absl::string_view(argv[i]) == "--version") {
      std::fputs(eventbus::base::VersionText("eventbusd").c_str(), stdout);
      return 0;
    }
  }
  ApplyLogFormatEarly(argc, argv);
  ApplyEnvironment();
  if (std::string error = CheckCommandLine(argc, argv); !error.empty()) {
    Fail(error, kExitStartFailed);
  }
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    Fail(absl::StrCat("unexpected argument \"", rest[1], "\"; see --help"), kExitStartFailed);
  }

  eventbus::base::LogLevel level;
  if (!eventbus::base::ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    Fail(absl::StrCat("--log_level=", absl::GetFlag(FLAGS_log_level),
                      ": expected debug, info, warning or error"));
  }
  eventbus::base::SetLogLevel(level);
  eventbus::base::LogFormat format;
  if (!eventbus::base::ParseLogFormat(absl::GetFlag(FLAGS_log_format), &format)) {
    Fail(absl::StrCat("--log_format=", absl::GetFlag(FLAGS_log_format),
                      ": expected logfmt or json"));
  }
  eventbus::base::SetLogFormat(format);
  if (absl::GetFlag(FLAGS_failure_log_interval_s) <= 0) {
    Fail(absl::StrCat("--failure_log_interval_s=", absl::GetFlag(FLAGS_failure_log_interval_s),
                      ": must be positive"));
  }
  absl::Duration grace =
      absl::Milliseconds(NonNegative("shutdown_grace_ms", absl::GetFlag(FLAGS_shutdown_grace_ms)));

  // Connections cost descriptors: take every one the hard limit allows, and share them out
  // (net/fd_budget.h) so that neither clients nor targets can exhaust them.
  uint64_t previous_soft = 0;
  absl::StatusOr<eventbus::net::FdLimit> fd_limit = eventbus::net::RaiseFdLimit(&previous_soft);
  if (!fd_limit.ok()) Fail(fd_limit.status().ToString(), kExitStartFailed);
  eventbus::net::FdBudget fds = eventbus::net::DeriveFdBudget(fd_limit->soft);
  EB_LOG(kInfo, "file descriptor limit", "soft=", fd_limit->soft, " hard=", fd_limit->hard,
         " previous_soft=", previous_soft, " reserve=", fds.reserve,
         " derived_max_client_connections=", fds.client_connections,
         " derived_max_target_connections=", fds.target_connections);

  auto server = eventbus::service::EventBusServer::Start(ConfigFromFlags(fds));
  if (!server.ok()) {
    Fail(server.status().ToString(),
         absl::IsInvalidArgument(server.status()) ? kExitBadConfig : kExitStartFailed);
  }

  int signal_number = 0;
  for (;;) {
    sigwait(&signals, &signal_number);
    if (signal_number != SIGHUP) break;
    // Reloading logs its own outcome; a bad file keeps the credentials in use.
    EB_LOG(kInfo, "signal received", "signal=SIGHUP");
    (void)(*server)->ReloadAuth();
  }
  EB_LOG(kInfo, "signal received", "signal=", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Shutdown(grace);
  return 0;
}
