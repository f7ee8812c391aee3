// eventbus_bench: drives a real EventBus server through gRPC and counts what loopback sinks
// receive. Prints figures; it never fails on a slow machine (it is not a test).
//
//   eventbus_bench                      # starts an in-process server (memory store)
//   eventbus_bench --server=HOST:PORT   # or measures a running eventbusd
//
// Figures, each beside its ratio to a baseline measured in the same run: a trivial unary gRPC call
// (a second in-process server whose ListEvents answers at once) for Raise calls/s and CPU per
// call; async events/s delivered and CPU per delivered message with 1, 10, 100, 1k and 10k
// targets (the 1k and 10k sinks run in a child process, and their first Raise is a cold burst to
// new connections); the time of one Raise to 1k and 10k subscriptions with distinct methods on
// one target; sync Raise calls/s and p50/p99 latency with 1, 10 and 100 targets, next to the plain
// JSON-RPC round trip of the same sink.
//
// CPU is the benchmark process's (getrusage): the server and the benchmark's own gRPC client;
// the sinks of the 1k/10k phases are in the child and not counted. "loops" is the share of the
// writer pool's threads (eb-loop-N). With --spawn_server the server is a real eventbusd of its own
// (memory store), and "server" is that process's CPU alone: issue 11's "server CPU per delivered
// message"; the CPU/msg and CPU/call figures are then the client's and the sinks' only.
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "server/base/log.h"
#include "server/base/mutex.h"
#include "server/service/server.h"
#include "tests/bench/scale_phase.h"
#include "tests/bench/sink.h"
#include "tests/bench/sink_process.h"
#include "tests/bench/stream_phase.h"
#include "tests/testing/eventbusd.h"

ABSL_FLAG(std::string, server, "", "Address of a running eventbusd; empty starts one in-process");
ABSL_FLAG(double, seconds, 3, "How long each throughput phase runs");
ABSL_FLAG(int, window, 64, "Raise calls in flight at once in throughput phases");
ABSL_FLAG(int, latency_calls, 2000, "Sequential sync Raises per latency phase");
ABSL_FLAG(int, loops, 0, "In-process server: event loops (0 = cores)");
ABSL_FLAG(std::vector<std::string>, async_subscribers, std::vector<std::string>({"1", "10", "100"}),
          "The async phase's subscriber counts, one run each (e.g. 100 alone, to profile it)");
ABSL_FLAG(bool, spawn_server, false,
          "Run the server as a real eventbusd child process (memory store, the in-process "
          "server's limits) and print its own CPU per delivered message ('server N ns')");
ABSL_DECLARE_FLAG(std::string, eventbusd);
ABSL_FLAG(bool, large, true, "Run the 1k/10k target and distinct-method phases");
ABSL_FLAG(std::string, phases, "nobody,async,targets,methods,sync,stream",
          "Phases to run after the baseline (e.g. targets alone, to profile it); 'scale' "
          "(subscription scale, see scale_phase.h and its --scale_* flags) runs only when named");
ABSL_FLAG(int, method_raises, 20, "Sequential Raises per distinct-method phase");
ABSL_FLAG(int, target_sync_calls, 20,
          "Sequential sync Raises to all 1k/10k targets per targets phase (latency)");
ABSL_FLAG(int, stream_batch, 64, "RaiseStream phase: events per message in its batched runs");
ABSL_FLAG(std::string, log_level, "warning",
          "In-process server: log level (info logs every Subscribe)");

namespace eventbus::bench {
namespace {

using v1::RaiseRequest;
using v1::RaiseResponse;

struct Percentiles {
  double p50_us = 0, p99_us = 0;
};

Percentiles Summarize(std::vector<double> us) {
  if (us.empty()) return {};
  std::sort(us.begin(), us.end());
  auto at = [&](double q) {
    return us[std::min(us.size() - 1, static_cast<size_t>(q * us.size()))];
  };
  return {at(0.50), at(0.99)};
}

// CPU time of this process, of the writer pool's threads (named eb-loop-N, in this process or in
// the spawned server), and of the spawned eventbusd as a whole (zero without --spawn_server).
struct Cpu {
  absl::Duration process;
  absl::Duration loops;
  absl::Duration server;
};

// The spawned eventbusd's pid, 0 when the server is in this process or external.
pid_t server_pid = 0;

// utime + stime of a /proc/.../stat line whose comm satisfies `want` (else zero).
template <typename Want>
absl::Duration StatCpu(const std::string& path, Want want) {
  std::ifstream f(path);
  std::string line;
  if (!std::getline(f, line)) return absl::ZeroDuration();
  const size_t open = line.find('('), close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos) return absl::ZeroDuration();
  if (!want(absl::string_view(line).substr(open + 1, close - open - 1))) {
    return absl::ZeroDuration();
  }
  // After "comm)": state is field 3; utime and stime are fields 14 and 15.
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int k = 3; k <= 15 && rest >> field; ++k) {
    if (k == 14) utime = std::stoull(field);
    if (k == 15) stime = std::stoull(field);
  }
  return absl::Seconds((utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK)));
}

Cpu CpuNow() {
  Cpu cpu;
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  cpu.process = absl::DurationFromTimeval(ru.ru_utime) + absl::DurationFromTimeval(ru.ru_stime);
  const std::string proc = server_pid != 0 ? absl::StrCat("/proc/", server_pid) : "/proc/self";
  if (server_pid != 0) {
    cpu.server = StatCpu(absl::StrCat(proc, "/stat"), [](absl::string_view) { return true; });
  }
  DIR* dir = ::opendir(absl::StrCat(proc, "/task").c_str());
  if (dir == nullptr) return cpu;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    cpu.loops += StatCpu(absl::StrCat(proc, "/task/", e->d_name, "/stat"),
                         [](absl::string_view comm) { return absl::StartsWith(comm, "eb-loop-"); });
  }
  ::closedir(dir);
  return cpu;
}

Cpu operator-(const Cpu& a, const Cpu& b) {
  return {a.process - b.process, a.loops - b.loops, a.server - b.server};
}
Cpu operator+(const Cpu& a, const Cpu& b) {
  return {a.process + b.process, a.loops + b.loops, a.server + b.server};
}

// Nanoseconds of `cpu` per `n` things.
double NsPer(absl::Duration cpu, uint64_t n) {
  return n == 0 ? 0 : absl::ToDoubleNanoseconds(cpu) / static_cast<double>(n);
}

// " server N ns" with --spawn_server: the eventbusd process's CPU per delivered message.
std::string ServerCpu(const Cpu& cpu, uint64_t n) {
  if (server_pid == 0) return "";
  return absl::StrFormat(" server %4.0f ns", NsPer(cpu.server, n));
}

// Issues one unary call with `ctx`; `done` runs with its status.
using Caller = std::function<void(grpc::ClientContext* ctx, std::function<void(grpc::Status)>)>;

// Keeps `window` calls in flight until `duration` has passed; returns completed calls.
struct WindowResult {
  uint64_t calls = 0;
  uint64_t failed = 0;
  absl::Duration elapsed;
  Cpu cpu;
};

WindowResult RunCalls(const Caller& caller, int window, absl::Duration duration) {
  struct Driver {
    const Caller* caller;
    absl::Time end;
    eventbus::Mutex mu;
    int in_flight ABSL_GUARDED_BY(mu) = 0;
    std::atomic<uint64_t> calls{0}, failed{0};

    void Issue() {
      auto* ctx = new grpc::ClientContext;
      ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
      (*caller)(ctx, [this, ctx](grpc::Status s) {
        if (!s.ok()) failed.fetch_add(1);
        calls.fetch_add(1);
        delete ctx;
        if (absl::Now() < end) {
          Issue();
          return;
        }
        eventbus::MutexLock lock(&mu);
        --in_flight;
      });
    }
  };
  Driver d;
  d.caller = &caller;
  const Cpu cpu0 = CpuNow();
  absl::Time start = absl::Now();
  d.end = start + duration;
  {
    eventbus::MutexLock lock(&d.mu);
    d.in_flight = window;
  }
  for (int i = 0; i < window; ++i) d.Issue();
  {
    eventbus::MutexLock lock(&d.mu);
    auto drained = [&d]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(d.mu) { return d.in_flight == 0; };
    d.mu.Await(drained);
  }
  return {d.calls.load(), d.failed.load(), absl::Now() - start, CpuNow() - cpu0};
}

// Raise calls through the generated async stub; each call keeps its own response.
Caller RaiseCaller(client::Client& client, const RaiseRequest& request) {
  return [stub = client.stub(), &request](grpc::ClientContext* ctx,
                                          std::function<void(grpc::Status)> done) {
    auto* resp = new RaiseResponse;
    stub->async()->Raise(ctx, &request, resp, [resp, done = std::move(done)](grpc::Status s) {
      delete resp;
      done(std::move(s));
    });
  };
}

WindowResult RunWindow(client::Client& client, const RaiseRequest& request, int window,
                       absl::Duration duration) {
  return RunCalls(RaiseCaller(client, request), window, duration);
}

// The baseline: a gRPC server in the same process whose ListEvents answers an empty response at
// once, and nothing else. What a unary call costs with no work behind it.
class TrivialService final : public v1::EventBusService::CallbackService {
 public:
  grpc::ServerUnaryReactor* ListEvents(grpc::CallbackServerContext* ctx,
                                       const v1::ListEventsRequest*,
                                       v1::ListEventsResponse*) override {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

// Plain JSON-RPC round trips to a sink over one TCP connection, one at a time.
Percentiles PlainRoundTrip(uint16_t port, int calls) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return {};
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  std::vector<double> us;
  char buf[4096];
  for (int i = 1; i <= calls; ++i) {
    std::string req =
        absl::StrCat(R"({"id":)", i, R"(,"jsonrpc":"2.0","method":"BENCH","params":{"n":1}})");
    absl::Time t0 = absl::Now();
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) break;
    // The sink answers with one small object per request.
    int depth = 0;
    bool done = false;
    while (!done) {
      ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      for (ssize_t k = 0; k < n; ++k) {
        if (buf[k] == '{') ++depth;
        if (buf[k] == '}' && --depth == 0) done = true;
      }
    }
    us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
  }
  ::close(fd);
  return Summarize(std::move(us));
}

void Subscribe(client::Client& client, const std::string& event, const std::string& socket) {
  v1::SubscribeRequest req;
  req.set_event(event);
  req.set_socket(socket);
  req.set_expire_seconds(0);
  auto resp = client.Subscribe(req);
  if (!resp.ok()) {
    std::fprintf(stderr, "subscribe failed: %s\n", std::string(resp.status().message()).c_str());
    std::exit(1);
  }
}

RaiseRequest Event(const std::string& name, bool sync) {
  RaiseRequest req;
  req.set_event(name);
  auto* p = req.mutable_named()->add_params();
  p->set_name("ip");
  p->mutable_value()->set_string_value("192.168.2.11");
  p = req.mutable_named()->add_params();
  p->set_name("count");
  p->mutable_value()->set_number_value(3);
  if (sync) {
    req.set_sync(true);
    req.set_timeout_ms(5000);
  }
  return req;
}

// Sequential calls: p50 of their latency in microseconds.
template <typename Call>
Percentiles Sequential(int calls, Call call) {
  std::vector<double> us;
  for (int i = 0; i < calls; ++i) {
    absl::Time t0 = absl::Now();
    call();
    us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
  }
  return Summarize(std::move(us));
}

// Sums the delivered, expired and failed counters of every target the pool knows.
struct PoolTotals {
  uint64_t delivered = 0, expired = 0, failed = 0;
};
PoolTotals Totals(service::EventBusServer* server) {
  PoolTotals t;
  if (server == nullptr) return t;
  for (const net::TargetStats& s : server->pool()->AllStats()) {
    t.delivered += s.delivered;
    t.expired += s.expired;
    t.failed += s.failed;
  }
  return t;
}

// Async fan-out to `n` targets whose sinks run in the child: first one Raise to the new targets
// (a cold burst: every connection is opened by it), then `window` Raises in flight for `phase`.
void TargetsPhase(int n, SinkProcess& sinks, client::Client& client,
                  service::EventBusServer* server, int window, absl::Duration phase,
                  double base_ns_per_call, double base_p50_us) {
  const std::string event = absl::StrCat("BENCH_TARGETS_", n);
  std::vector<uint16_t> ports = sinks.Open(n);
  for (uint16_t port : ports) Subscribe(client, event, absl::StrCat("tcp:127.0.0.1:", port));
  const uint64_t got0 = sinks.Messages();
  const PoolTotals t0 = Totals(server);
  RaiseRequest req = Event(event, false);

  // The burst, at the server's default timeout.
  const absl::Time burst_start = absl::Now();
  auto resp = client.Raise(req);
  const absl::Duration answer = absl::Now() - burst_start;
  std::map<std::string, int> statuses;
  if (resp.ok()) {
    // The compact answer counts the QUEUED ones and lists the rest.
    if (resp->queued() > 0) statuses["QUEUED"] = static_cast<int>(resp->queued());
    for (const auto& d : resp->deliveries()) ++statuses[v1::DeliveryStatus_Name(d.status())];
  } else {
    statuses[std::string(resp.status().message())] = 1;
  }
  // Settled when every target has an outcome (delivered, expired or failed), or after 10 s. Those
  // refused in the answer (OVERLOADED) are settled already: a target refused before it had a
  // connection has no counters in the pool.
  const uint64_t refused = static_cast<uint64_t>(statuses["DELIVERY_STATUS_OVERLOADED"]);
  PoolTotals t;
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (absl::Now() < give_up) {
    PoolTotals now = Totals(server);
    t = {now.delivered - t0.delivered, now.expired - t0.expired, now.failed - t0.failed};
    if (server == nullptr ||
        refused + t.delivered + t.expired + t.failed >= static_cast<uint64_t>(n)) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  const absl::Duration settled = absl::Now() - burst_start;
  std::string answered;
  for (const auto& [name, count] : statuses) {
    if (count == 0) continue;
    absl::StrAppend(&answered, answered.empty() ? "" : ", ", count, " ",
                    absl::StripPrefix(name, "DELIVERY_STATUS_"));
  }
  if (server == nullptr) {
    // The outcomes are the server's counters, which only an in-process server shows.
    std::printf(
        "burst, %5d new targets: answered in %.1f ms (%s); settling not measured (the "
        "server is not in this process)\n",
        n, absl::ToDoubleMilliseconds(answer), answered.c_str());
  } else {
    std::printf(
        "burst, %5d new targets: answered in %.1f ms (%s); settled in %.0f ms: %llu delivered, "
        "%llu expired, %llu failed\n",
        n, absl::ToDoubleMilliseconds(answer), answered.c_str(),
        absl::ToDoubleMilliseconds(settled), static_cast<unsigned long long>(t.delivered),
        static_cast<unsigned long long>(t.expired), static_cast<unsigned long long>(t.failed));
  }

  // Throughput on the connections the burst opened. Deliveries refused up front (OVERLOADED) are
  // counted from the answers; those refused on a connection are in its `failed` counter too.
  const uint64_t got1 = sinks.Messages();
  const PoolTotals t1 = Totals(server);
  std::atomic<uint64_t> refused_calls{0};
  Caller counting = [stub = client.stub(), &req, &refused_calls](
                        grpc::ClientContext* ctx, std::function<void(grpc::Status)> done) {
    auto* resp = new RaiseResponse;
    stub->async()->Raise(ctx, &req, resp,
                         [resp, &refused_calls, done = std::move(done)](grpc::Status s) {
                           uint64_t refused = 0;
                           for (const auto& d : resp->deliveries()) {
                             refused += d.status() == v1::DELIVERY_STATUS_OVERLOADED;
                           }
                           refused_calls.fetch_add(refused);
                           delete resp;
                           done(std::move(s));
                         });
  };
  WindowResult r = RunCalls(counting, window, phase);
  const uint64_t expected = r.calls * n;
  const absl::Time wait_start = absl::Now();
  const Cpu cpu0 = CpuNow();
  uint64_t got = 0;
  while (absl::Now() < wait_start + absl::Seconds(30)) {
    got = sinks.Messages() - got1;
    PoolTotals now = Totals(server);
    // `failed` counts the refusals on existing connections too: the larger of the two is a bound.
    const uint64_t lost =
        now.expired - t1.expired + std::max(now.failed - t1.failed, refused_calls.load());
    if (got + lost >= expected) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  const absl::Duration all = r.elapsed + (absl::Now() - wait_start);
  const Cpu cpu = r.cpu + (CpuNow() - cpu0);
  const PoolTotals t2 = Totals(server);
  const double ns = NsPer(cpu.process, got);
  std::printf(
      "async, %5d targets:   %7.0f Raise calls/s  %10.0f events/s delivered  CPU/msg %6.0f ns "
      "(loops %4.0f ns%s) = %.3fx a trivial call  (%llu/%llu received, %llu refused OVERLOADED, "
      "%llu expired, %llu failed%s)\n",
      n, r.calls / absl::ToDoubleSeconds(r.elapsed), got / absl::ToDoubleSeconds(all), ns,
      NsPer(cpu.loops, got), ServerCpu(cpu, got).c_str(), ns / base_ns_per_call,
      static_cast<unsigned long long>(got), static_cast<unsigned long long>(expected),
      static_cast<unsigned long long>(refused_calls.load()),
      static_cast<unsigned long long>(t2.expired - t1.expired),
      static_cast<unsigned long long>(t2.failed - t1.failed),
      r.failed ? ", some calls failed" : "");
  (void)got0;

  // Sync latency on the same connections: one Raise to all n at a time, each answered when every
  // sink has replied (the sinks answer at once), at the server's default timeout.
  RaiseRequest sync_req = Event(event, true);
  int not_ok = 0;
  const Cpu sync_cpu0 = CpuNow();
  const int sync_calls = absl::GetFlag(FLAGS_target_sync_calls);
  Percentiles lat = Sequential(sync_calls, [&] {
    auto sync_resp = client.Raise(sync_req);
    if (!sync_resp.ok()) {
      not_ok += n;
      return;
    }
    for (const auto& d : sync_resp->deliveries()) not_ok += d.status() != v1::DELIVERY_STATUS_OK;
  });
  std::printf(
      "sync,  %5d targets:   p50 %8.1f ms  p99 %8.1f ms = %.0fx / %.0fx a trivial call's p50  "
      "(%d deliveries not OK)%s\n",
      n, lat.p50_us / 1000, lat.p99_us / 1000, lat.p50_us / base_p50_us, lat.p99_us / base_p50_us,
      not_ok, ServerCpu(CpuNow() - sync_cpu0, static_cast<uint64_t>(sync_calls) * n).c_str());

  v1::UnsubscribeRequest unsub;
  for (uint16_t port : ports) {
    unsub.set_event(event);
    unsub.set_socket(absl::StrCat("tcp:127.0.0.1:", port));
    (void)client.Unsubscribe(unsub);
  }
  sinks.CloseAll();
}

// `n` subscriptions with distinct methods on one event, all to one sink: sequential async Raises.
void DistinctMethodsPhase(int n, client::Client& client, int raises, double base_p50_us) {
  Sink sink(/*reply=*/false);
  const std::string event = absl::StrCat("BENCH_METHODS_", n);
  for (int i = 0; i < n; ++i) Subscribe(client, event, absl::StrCat(sink.socket(), "/m", i));
  RaiseRequest req = Event(event, false);
  req.set_timeout_ms(30000);
  int not_ok = 0;
  Percentiles lat = Sequential(raises, [&] { not_ok += !client.Raise(req).ok(); });
  const uint64_t expected = static_cast<uint64_t>(raises) * n;
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (sink.messages() < expected && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  std::printf(
      "raise, %5d distinct methods on one target: p50 %8.2f ms per Raise = %7.1fx a trivial "
      "call  (%llu/%llu received%s)\n",
      n, lat.p50_us / 1000, lat.p50_us / base_p50_us,
      static_cast<unsigned long long>(sink.messages()), static_cast<unsigned long long>(expected),
      not_ok ? ", some calls failed" : "");
}

int Main() {
  // Forked before any thread exists.
  std::unique_ptr<SinkProcess> sink_process;
  if (absl::GetFlag(FLAGS_large)) sink_process = std::make_unique<SinkProcess>();
  std::unique_ptr<service::EventBusServer> server;
  std::string address = absl::GetFlag(FLAGS_server);
  std::optional<testing::Eventbusd> daemon;
  if (address.empty() && absl::GetFlag(FLAGS_spawn_server)) {
    testing::EventbusdOptions daemon_options;
    daemon_options.binary = absl::GetFlag(FLAGS_eventbusd);
    daemon_options.log_path = "/tmp/eventbus_bench_eventbusd.log";
    daemon_options.ready_timeout = absl::Minutes(2);  // room for a valgrind wrapper
    daemon_options.extra_args = {
        absl::StrCat("--log_level=", absl::GetFlag(FLAGS_log_level)),
        absl::StrCat("--loops=", absl::GetFlag(FLAGS_loops)),
        "--queue_max_messages=1000000",
        absl::StrCat("--queue_max_bytes=", size_t{1} << 30),
        "--max_subscriptions_per_event=100000",
        "--default_expire_s=0",
    };
    absl::StatusOr<testing::Eventbusd> started = testing::StartEventbusd(daemon_options);
    if (!started.ok()) {
      std::fprintf(stderr, "eventbusd: %s\n", std::string(started.status().message()).c_str());
      return 1;
    }
    daemon = *std::move(started);
    address = daemon->address;
    server_pid = daemon->process->pid();
  }
  if (address.empty()) {
    base::LogLevel level;
    if (!base::ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
      std::fprintf(stderr, "--log_level: \"%s\" is not debug, info, warning or error\n",
                   absl::GetFlag(FLAGS_log_level).c_str());
      return 1;
    }
    base::SetLogLevel(level);
    service::ServerConfig config;
    config.listen = "127.0.0.1:0";
    config.store = "memory";
    config.pool.num_loops = absl::GetFlag(FLAGS_loops);
    config.pool.max_queue_messages = 1000000;
    config.pool.max_queue_bytes = size_t{1} << 30;
    config.limits.max_subscriptions_per_event = 100000;
    auto started = service::EventBusServer::Start(config);
    if (!started.ok()) {
      std::fprintf(stderr, "server: %s\n", std::string(started.status().message()).c_str());
      return 1;
    }
    server = std::move(*started);
    address = server->address();
  }
  client::ClientOptions options;
  options.deadline = absl::Seconds(30);
  auto client = client::Client::Connect(address, options);
  if (!client.ok()) {
    std::fprintf(stderr, "connect: %s\n", std::string(client.status().message()).c_str());
    return 1;
  }
  const absl::Duration phase = absl::Seconds(absl::GetFlag(FLAGS_seconds));
  const int window = absl::GetFlag(FLAGS_window);
  std::printf(
      "eventbus_bench: server %s (%s), %u cores, window %d, %.1fs per phase\n", address.c_str(),
      server
          ? "in-process"
          : (daemon ? "spawned eventbusd, log in /tmp/eventbus_bench_eventbusd.log" : "external"),
      std::thread::hardware_concurrency(), window, absl::ToDoubleSeconds(phase));

  // The baseline: a trivial unary call to a do-nothing server in this process.
  TrivialService trivial_service;
  int trivial_port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &trivial_port);
  builder.RegisterService(&trivial_service);
  std::unique_ptr<grpc::Server> trivial_server = builder.BuildAndStart();
  auto trivial = client::Client::Connect(absl::StrCat("127.0.0.1:", trivial_port), options);
  if (trivial_server == nullptr || !trivial.ok()) {
    std::fprintf(stderr, "trivial baseline server did not start\n");
    return 1;
  }
  v1::ListEventsRequest list_events;
  Caller trivial_call = [stub = (*trivial)->stub(), &list_events](
                            grpc::ClientContext* ctx, std::function<void(grpc::Status)> done) {
    auto* resp = new v1::ListEventsResponse;
    stub->async()->ListEvents(ctx, &list_events, resp,
                              [resp, done = std::move(done)](grpc::Status s) {
                                delete resp;
                                done(std::move(s));
                              });
  };
  WindowResult base = RunCalls(trivial_call, window, phase);
  const double base_rate = base.calls / absl::ToDoubleSeconds(base.elapsed);
  const double base_ns = NsPer(base.cpu.process, base.calls);
  Percentiles base_lat = Sequential(absl::GetFlag(FLAGS_latency_calls),
                                    [&] { (void)(*trivial)->ListEvents(list_events); });
  std::printf(
      "baseline, trivial unary: %9.0f calls/s  CPU/call %6.0f ns  sequential p50 %5.0f us  "
      "(client and server in this process)\n",
      base_rate, base_ns, base_lat.p50_us);

  const std::string phases = absl::StrCat(",", absl::GetFlag(FLAGS_phases), ",");
  auto runs = [&phases](const char* name) {
    return phases.find(absl::StrCat(",", name, ",")) != std::string::npos;
  };
  // Raise calls/s with nobody to deliver to: the gRPC and registry path alone.
  if (runs("nobody")) {
    WindowResult r = RunWindow(**client, Event("BENCH_NOBODY", false), window, phase);
    const double rate = r.calls / absl::ToDoubleSeconds(r.elapsed);
    const double ns = NsPer(r.cpu.process, r.calls);
    std::printf(
        "raise, 0 subscribers:   %9.0f Raise calls/s = %.2fx baseline  CPU/call %6.0f ns = %.2fx "
        "baseline%s\n",
        rate, rate / base_rate, ns, ns / base_ns, ServerCpu(r.cpu, r.calls).c_str());
  }

  for (const std::string& count : absl::GetFlag(FLAGS_async_subscribers)) {
    if (!runs("async")) break;
    int n = 0;
    if (!absl::SimpleAtoi(count, &n) || n < 1) {
      std::fprintf(stderr, "--async_subscribers: \"%s\" is not a positive number\n", count.c_str());
      return 1;
    }
    std::vector<std::unique_ptr<Sink>> sinks;
    const std::string event = absl::StrCat("BENCH_ASYNC_", n);
    for (int i = 0; i < n; ++i) {
      sinks.push_back(std::make_unique<Sink>(/*reply=*/false));
      Subscribe(**client, event, sinks.back()->socket());
    }
    WindowResult r = RunWindow(**client, Event(event, false), window, phase);
    // Deliveries count when the sinks have them, so wait (bounded) for the tail to arrive.
    const uint64_t expected = r.calls * n;
    const absl::Time wait_start = absl::Now();
    const Cpu cpu0 = CpuNow();
    const absl::Time give_up = wait_start + absl::Seconds(30);
    uint64_t got = 0;
    while (absl::Now() < give_up) {
      got = 0;
      for (auto& s : sinks) got += s->messages();
      if (got >= expected) break;
      absl::SleepFor(absl::Milliseconds(5));
    }
    const absl::Duration all = r.elapsed + (absl::Now() - wait_start);
    const Cpu cpu = r.cpu + (CpuNow() - cpu0);
    // Here the sinks' threads are in this process too: their CPU is in the figure.
    const double ns = NsPer(cpu.process, got);
    std::printf(
        "async, %3d subscribers: %9.0f Raise calls/s  %10.0f events/s delivered  CPU/msg %6.0f ns "
        "(loops %4.0f ns%s) = %.3fx a trivial call  (%llu/%llu received%s)\n",
        n, r.calls / absl::ToDoubleSeconds(r.elapsed), got / absl::ToDoubleSeconds(all), ns,
        NsPer(cpu.loops, got), ServerCpu(cpu, got).c_str(), ns / base_ns,
        static_cast<unsigned long long>(got), static_cast<unsigned long long>(expected),
        r.failed ? ", some calls failed" : "");
  }

  if (sink_process != nullptr) {
    for (int n : {1000, 10000}) {
      if (!runs("targets")) break;
      TargetsPhase(n, *sink_process, **client, server.get(), window, phase, base_ns,
                   base_lat.p50_us);
    }
    for (int n : {1000, 10000}) {
      if (!runs("methods")) break;
      DistinctMethodsPhase(n, **client, absl::GetFlag(FLAGS_method_raises), base_lat.p50_us);
    }
  }

  for (int n : {1, 10, 100}) {
    if (!runs("sync")) break;
    std::vector<std::unique_ptr<Sink>> sinks;
    const std::string event = absl::StrCat("BENCH_SYNC_", n);
    for (int i = 0; i < n; ++i) {
      sinks.push_back(std::make_unique<Sink>(/*reply=*/true));
      Subscribe(**client, event, sinks.back()->socket());
    }
    RaiseRequest req = Event(event, true);
    // Latency: one call at a time.
    std::vector<double> us;
    int not_ok = 0;
    const int calls = absl::GetFlag(FLAGS_latency_calls);
    for (int i = 0; i < calls; ++i) {
      absl::Time t0 = absl::Now();
      auto resp = (*client)->Raise(req);
      us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
      if (!resp.ok()) {
        ++not_ok;
        continue;
      }
      for (const auto& d : resp->deliveries()) not_ok += d.status() != v1::DELIVERY_STATUS_OK;
    }
    Percentiles lat = Summarize(us);
    Percentiles plain = PlainRoundTrip(sinks.front()->port(), calls);
    WindowResult r = RunWindow(**client, req, window, phase);
    std::printf(
        "sync,  %3d targets:     %9.0f Raise calls/s  p50 %7.0f us  p99 %7.0f us  | plain "
        "round trip p50 %5.0f us  p99 %5.0f us%s\n",
        n, r.calls / absl::ToDoubleSeconds(r.elapsed), lat.p50_us, lat.p99_us, plain.p50_us,
        plain.p99_us, not_ok ? "  (some deliveries not OK)" : "");
  }
  if (runs("stream")) {
    StreamPhaseOptions stream_options{phase, absl::GetFlag(FLAGS_stream_batch)};
    if (server_pid != 0) stream_options.server_cpu = [] { return CpuNow().server; };
    RunStreamPhase(**client, stream_options);
  }
  if (runs("scale")) RunScalePhase(window, ScaleBaseline{base_rate, base_lat.p50_us});
  trivial_server->Shutdown();
  if (server) server->Shutdown(absl::Seconds(2));
  return 0;
}

}  // namespace
}  // namespace eventbus::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // As eventbusd does (server/main.cc): Debian's abseil checks lock order on every absl::Mutex
  // lock unless told not to, which slows gRPC's own mutexes, the baseline's included.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return eventbus::bench::Main();
}
