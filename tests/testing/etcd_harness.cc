#include "tests/testing/etcd_harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "server/base/fd.h"
#include "tests/testing/ports.h"

namespace eventbus::testing {
namespace {

constexpr absl::Duration kHttpTimeout = absl::Seconds(5);
constexpr char kMemberName[] = "eventbus-test";

struct HttpResponse {
  int status = 0;
  std::string body;
};

// Decodes a "Transfer-Encoding: chunked" body.
absl::StatusOr<std::string> Dechunk(absl::string_view raw) {
  std::string body;
  for (;;) {
    size_t eol = raw.find("\r\n");
    if (eol == absl::string_view::npos) return absl::InternalError("http: truncated chunk size");
    absl::string_view size_text = raw.substr(0, eol);
    size_text = size_text.substr(0, size_text.find(';'));
    uint64_t size = 0;
    if (!absl::SimpleHexAtoi(size_text, &size)) {
      return absl::InternalError(absl::StrCat("http: bad chunk size \"", size_text, "\""));
    }
    raw.remove_prefix(eol + 2);
    if (size == 0) return body;
    if (raw.size() < size + 2) return absl::InternalError("http: truncated chunk");
    body.append(raw.data(), size);
    raw.remove_prefix(size + 2);
  }
}

// One blocking HTTP/1.1 exchange with 127.0.0.1:port (Connection: close, bounded by timeouts).
absl::StatusOr<HttpResponse> Http(uint16_t port, absl::string_view method, absl::string_view path,
                                  absl::string_view body) {
  base::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::InternalError(absl::StrCat("http: socket: ", strerror(errno)));
  timeval tv{};
  tv.tv_sec = absl::ToInt64Seconds(kHttpTimeout);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError(
        absl::StrCat("http: connect 127.0.0.1:", port, ": ", strerror(errno)));
  }
  std::string request =
      absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: 127.0.0.1:", port,
                   "\r\nContent-Type: application/json\r\nContent-Length: ", body.size(),
                   "\r\nConnection: close\r\n\r\n", body);
  for (size_t sent = 0; sent < request.size();) {
    ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError(absl::StrCat("http: send: ", strerror(errno)));
    sent += static_cast<size_t>(n);
  }
  std::string raw;
  char buffer[16384];
  for (;;) {
    ssize_t n = ::recv(fd.get(), buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::UnavailableError(absl::StrCat("http: recv: ", strerror(errno)));
    if (n == 0) break;
    raw.append(buffer, static_cast<size_t>(n));
  }
  size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos) return absl::UnavailableError("http: truncated response");
  std::vector<absl::string_view> lines =
      absl::StrSplit(absl::string_view(raw).substr(0, head_end), "\r\n");
  std::vector<absl::string_view> status_line = absl::StrSplit(lines[0], ' ');
  HttpResponse response;
  if (status_line.size() < 2 || !absl::SimpleAtoi(status_line[1], &response.status)) {
    return absl::UnavailableError(absl::StrCat("http: bad status line \"", lines[0], "\""));
  }
  bool chunked = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    if (absl::StartsWithIgnoreCase(lines[i], "transfer-encoding:") &&
        absl::StrContains(absl::AsciiStrToLower(lines[i]), "chunked")) {
      chunked = true;
    }
  }
  absl::string_view payload = absl::string_view(raw).substr(head_end + 4);
  if (chunked) {
    absl::StatusOr<std::string> body_or = Dechunk(payload);
    if (!body_or.ok()) return body_or.status();
    response.body = *std::move(body_or);
  } else {
    response.body = std::string(payload);
  }
  return response;
}

// Returns the value of the first member `name` found at or after `from` in the gateway's JSON:
// the text of a string (the gateway prints int64 as strings) or of a bare literal. Good enough for
// etcd's fixed response shapes; not a JSON parser.
std::optional<std::string> JsonMember(absl::string_view json, absl::string_view name,
                                      size_t from = 0) {
  std::string needle = absl::StrCat("\"", name, "\":");
  size_t at = json.find(needle, from);
  if (at == absl::string_view::npos) return std::nullopt;
  absl::string_view rest = absl::StripLeadingAsciiWhitespace(json.substr(at + needle.size()));
  if (!rest.empty() && rest[0] == '"') {
    size_t end = rest.find('"', 1);
    if (end == absl::string_view::npos) return std::nullopt;
    return std::string(rest.substr(1, end - 1));
  }
  size_t end = rest.find_first_of(",}]");
  return std::string(absl::StripAsciiWhitespace(rest.substr(0, end)));
}

absl::StatusOr<int64_t> JsonInt(absl::string_view json, absl::string_view name, size_t from = 0) {
  std::optional<std::string> text = JsonMember(json, name, from);
  int64_t value = 0;
  if (!text.has_value() || !absl::SimpleAtoi(*text, &value)) {
    return absl::InternalError(absl::StrCat("etcd: no integer \"", name, "\" in ", json));
  }
  return value;
}

std::string LogTail(const std::string& log) {
  constexpr size_t kTail = 4000;
  return log.size() <= kTail ? log : log.substr(log.size() - kTail);
}

}  // namespace

bool EtcdHarness::Available() { return ::access(kEtcdBinary, X_OK) == 0; }

absl::StatusOr<std::unique_ptr<EtcdHarness>> EtcdHarness::Start(absl::Duration ready_timeout) {
  return StartWith(std::nullopt, ready_timeout);
}

absl::StatusOr<std::unique_ptr<EtcdHarness>> EtcdHarness::StartTls(EtcdTlsFiles tls,
                                                                   absl::Duration ready_timeout) {
  return StartWith(std::move(tls), ready_timeout);
}

absl::StatusOr<std::unique_ptr<EtcdHarness>> EtcdHarness::StartWith(std::optional<EtcdTlsFiles> tls,
                                                                    absl::Duration ready_timeout) {
  char dir_template[] = "/tmp/eventbus-etcd-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) {
    return absl::InternalError(absl::StrCat("etcd harness: mkdtemp: ", strerror(errno)));
  }
  absl::Status last;
  // PickUnusedPort keeps each port reserved (bound with SO_REUSEADDR, never listening) for the
  // life of this process, and etcd binds it explicitly with SO_REUSEADDR as Go does, so no other
  // test, process or outgoing connection can be handed it. A listener that binds it without
  // SO_REUSEADDR could still take it first: then pick again.
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto harness = std::unique_ptr<EtcdHarness>(
        new EtcdHarness(dir_template, PickUnusedPort(), PickUnusedPort()));
    if (tls.has_value()) {
      harness->tls_ = tls;
      harness->http_port_ = PickUnusedPort();
    }
    last = harness->Launch(ready_timeout);
    if (last.ok()) return harness;
    if (!absl::StrContains(last.message(), "address already in use")) break;
    // The failed harness removed the directory; make a fresh one.
    std::strcpy(dir_template, "/tmp/eventbus-etcd-XXXXXX");
    if (::mkdtemp(dir_template) == nullptr) break;
  }
  return last;
}

absl::StatusOr<std::unique_ptr<EtcdHarness>> EtcdHarness::StartOnPort(
    uint16_t client_port, absl::Duration ready_timeout) {
  char dir_template[] = "/tmp/eventbus-etcd-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) {
    return absl::InternalError(absl::StrCat("etcd harness: mkdtemp: ", strerror(errno)));
  }
  auto harness =
      std::unique_ptr<EtcdHarness>(new EtcdHarness(dir_template, client_port, PickUnusedPort()));
  absl::Status launched = harness->Launch(ready_timeout);
  if (!launched.ok()) return launched;
  return harness;
}

EtcdHarness::~EtcdHarness() {
  if (process_ != nullptr) Kill().IgnoreError();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string EtcdHarness::endpoint() const { return absl::StrCat("127.0.0.1:", client_port_); }

absl::Status EtcdHarness::Launch(absl::Duration ready_timeout) {
  const std::string client_url =
      absl::StrCat(tls_.has_value() ? "https" : "http", "://127.0.0.1:", client_port_);
  std::string listen_urls = client_url;
  if (tls_.has_value()) absl::StrAppend(&listen_urls, ",http://127.0.0.1:", http_port_);
  const std::string peer_url = absl::StrCat("http://127.0.0.1:", peer_port_);
  ProcessOptions options;
  options.argv = {kEtcdBinary, "--name", kMemberName, "--data-dir", absl::StrCat(dir_, "/data"),
                  "--listen-client-urls", listen_urls, "--advertise-client-urls", client_url,
                  "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                  "--initial-cluster", absl::StrCat(kMemberName, "=", peer_url),
                  "--initial-cluster-state", "new", "--initial-cluster-token",
                  absl::StrCat("eventbus-test-", ::getpid()),
                  // A single member elects itself after one election timeout: keep it short.
                  "--heartbeat-interval", "25", "--election-timeout", "250", "--logger", "zap",
                  "--log-outputs", "stderr"};
  if (tls_.has_value()) {
    options.argv.insert(options.argv.end(), {"--cert-file", tls_->server_cert, "--key-file",
                                             tls_->server_key, "--trusted-ca-file", tls_->ca_cert});
    if (tls_->client_cert_auth) options.argv.push_back("--client-cert-auth");
  }
  options.log_path = absl::StrCat(dir_, "/etcd.log");
  absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(std::move(options));
  if (!process.ok()) return process.status();
  process_ = *std::move(process);

  const absl::Time deadline = absl::Now() + ready_timeout;
  absl::Status last = absl::UnavailableError("not polled");
  while (absl::Now() < deadline) {
    absl::StatusOr<ExitStatus> exit = process_->Wait(absl::Milliseconds(20));
    if (exit.ok()) {
      std::string log = process_->ReadLog();
      process_.reset();
      return absl::UnavailableError(absl::StrCat("etcd harness: etcd exited (", exit->ToString(),
                                                 ") before serving; log:\n", LogTail(log)));
    }
    absl::StatusOr<HttpResponse> health = Http(http_port_, "GET", "/health", "");
    if (health.ok() && health->status == 200 &&
        absl::StrContains(health->body, "\"health\":\"true\"")) {
      return absl::OkStatus();
    }
    last = health.ok() ? absl::UnavailableError(health->body) : health.status();
  }
  std::string log = process_->ReadLog();
  process_->Kill().IgnoreError();
  process_.reset();
  return absl::DeadlineExceededError(absl::StrCat("etcd harness: etcd not ready within ",
                                                  absl::FormatDuration(ready_timeout), " (",
                                                  last.message(), "); log:\n", LogTail(log)));
}

absl::Status EtcdHarness::Stop() {
  if (process_ == nullptr) return absl::OkStatus();
  absl::StatusOr<ExitStatus> exit = process_->Stop(absl::Seconds(10));
  process_.reset();
  return exit.status();
}

absl::Status EtcdHarness::Kill() {
  if (process_ == nullptr) return absl::OkStatus();
  absl::StatusOr<ExitStatus> exit = process_->Kill();
  process_.reset();
  return exit.status();
}

absl::Status EtcdHarness::Restart(absl::Duration ready_timeout) {
  if (absl::Status status = Stop(); !status.ok()) return status;
  return Launch(ready_timeout);
}

std::string EtcdHarness::Log() const {
  if (process_ != nullptr) return process_->ReadLog();
  // Not running: read the file directly.
  std::string path = absl::StrCat(dir_, "/etcd.log");
  FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return std::string();
  std::string log;
  char buffer[8192];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) log.append(buffer, n);
  std::fclose(file);
  return log;
}

absl::StatusOr<std::string> EtcdHarness::Post(const std::string& path, const std::string& body) {
  absl::StatusOr<HttpResponse> response = Http(http_port_, "POST", path, body);
  if (!response.ok()) return response.status();
  if (response->status != 200) {
    return absl::InternalError(
        absl::StrCat("etcd ", path, ": HTTP ", response->status, ": ", response->body));
  }
  return std::move(response->body);
}

absl::StatusOr<int64_t> EtcdHarness::CurrentRevision() {
  // Any read answers with the store's revision in its header; "AA==" is the key "\0".
  absl::StatusOr<std::string> body = Post("/v3/kv/range", R"({"key":"AA=="})");
  if (!body.ok()) return body.status();
  return JsonInt(*body, "revision");
}

absl::Status EtcdHarness::Compact(int64_t revision) {
  return Post("/v3/kv/compaction",
              absl::StrCat(R"({"revision":")", revision, R"(","physical":true})"))
      .status();
}

absl::StatusOr<std::optional<EtcdHarness::KeyValue>> EtcdHarness::Get(const std::string& key) {
  absl::StatusOr<std::string> body =
      Post("/v3/kv/range", absl::StrCat(R"({"key":")", absl::Base64Escape(key), R"("})"));
  if (!body.ok()) return body.status();
  size_t kvs = body->find("\"kvs\":");
  if (kvs == std::string::npos) return std::optional<KeyValue>();
  KeyValue kv;
  std::optional<std::string> value = JsonMember(*body, "value", kvs);
  if (value.has_value() && !absl::Base64Unescape(*value, &kv.value)) {
    return absl::InternalError(absl::StrCat("etcd: bad base64 value in ", *body));
  }
  absl::StatusOr<int64_t> mod_revision = JsonInt(*body, "mod_revision", kvs);
  if (!mod_revision.ok()) return mod_revision.status();
  kv.mod_revision = *mod_revision;
  // The gateway leaves out zero values: no "lease" means no lease.
  if (JsonMember(*body, "lease", kvs).has_value()) {
    absl::StatusOr<int64_t> lease = JsonInt(*body, "lease", kvs);
    if (!lease.ok()) return lease.status();
    kv.lease = *lease;
  }
  return std::optional<KeyValue>(std::move(kv));
}

absl::Status EtcdHarness::Put(const std::string& key, const std::string& value) {
  return Post("/v3/kv/put", absl::StrCat(R"({"key":")", absl::Base64Escape(key), R"(","value":")",
                                         absl::Base64Escape(value), R"("})"))
      .status();
}

absl::StatusOr<int64_t> EtcdHarness::LeaseTtl(int64_t lease) {
  absl::StatusOr<std::string> body =
      Post("/v3/kv/lease/timetolive", absl::StrCat(R"({"ID":")", lease, R"("})"));
  if (!body.ok()) return body.status();
  return JsonInt(*body, "TTL");
}

}  // namespace eventbus::testing
