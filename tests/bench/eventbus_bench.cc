// eventbus_bench: drives a real EventBus server through gRPC and counts what loopback sinks
// receive. Prints figures; it never fails on a slow machine (it is not a test).
//
//   eventbus_bench                      # starts an in-process server (memory store)
//   eventbus_bench --server=HOST:PORT   # or measures a running eventbusd
//
// Figures: async events/s delivered with 1, 10 and 100 subscribers and Raise calls/s; sync Raise
// calls/s and p50/p99 latency with 1, 10 and 100 targets answering at once, next to the plain
// JSON-RPC round trip of the same sink measured in the same run.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "server/base/mutex.h"
#include "server/service/server.h"
#include "tests/bench/sink.h"

ABSL_FLAG(std::string, server, "", "Address of a running eventbusd; empty starts one in-process");
ABSL_FLAG(double, seconds, 3, "How long each throughput phase runs");
ABSL_FLAG(int, window, 64, "Raise calls in flight at once in throughput phases");
ABSL_FLAG(int, latency_calls, 2000, "Sequential sync Raises per latency phase");
ABSL_FLAG(int, loops, 0, "In-process server: event loops (0 = cores)");

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

// Keeps `window` Raise calls in flight until `duration` has passed; returns completed calls.
struct WindowResult {
  uint64_t calls = 0;
  uint64_t failed = 0;
  absl::Duration elapsed;
};

WindowResult RunWindow(client::Client& client, const RaiseRequest& request, int window,
                       absl::Duration duration) {
  struct Driver {
    client::Client* client;
    const RaiseRequest* request;
    absl::Time end;
    eventbus::Mutex mu;
    int in_flight ABSL_GUARDED_BY(mu) = 0;
    std::atomic<uint64_t> calls{0}, failed{0};

    void Issue() {
      struct Call {
        grpc::ClientContext ctx;
        RaiseResponse resp;
      };
      auto* call = new Call;
      call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
      client->stub()->async()->Raise(&call->ctx, request, &call->resp,
                                     [this, call](grpc::Status s) {
                                       if (!s.ok()) failed.fetch_add(1);
                                       calls.fetch_add(1);
                                       delete call;
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
  d.client = &client;
  d.request = &request;
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
  return {d.calls.load(), d.failed.load(), absl::Now() - start};
}

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

int Main() {
  std::unique_ptr<service::EventBusServer> server;
  std::string address = absl::GetFlag(FLAGS_server);
  if (address.empty()) {
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
  std::printf("eventbus_bench: server %s (%s), %u cores, window %d, %.1fs per phase\n",
              address.c_str(), server ? "in-process" : "external",
              std::thread::hardware_concurrency(), window, absl::ToDoubleSeconds(phase));

  // Raise calls/s with nobody to deliver to: the gRPC and registry path alone.
  {
    WindowResult r = RunWindow(**client, Event("BENCH_NOBODY", false), window, phase);
    std::printf("raise, 0 subscribers:   %9.0f Raise calls/s\n",
                r.calls / absl::ToDoubleSeconds(r.elapsed));
  }

  for (int n : {1, 10, 100}) {
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
    const absl::Time give_up = wait_start + absl::Seconds(30);
    uint64_t got = 0;
    while (absl::Now() < give_up) {
      got = 0;
      for (auto& s : sinks) got += s->messages();
      if (got >= expected) break;
      absl::SleepFor(absl::Milliseconds(5));
    }
    const absl::Duration all = r.elapsed + (absl::Now() - wait_start);
    std::printf(
        "async, %3d subscribers: %9.0f Raise calls/s  %10.0f events/s delivered  (%llu/%llu "
        "received%s)\n",
        n, r.calls / absl::ToDoubleSeconds(r.elapsed), got / absl::ToDoubleSeconds(all),
        static_cast<unsigned long long>(got), static_cast<unsigned long long>(expected),
        r.failed ? ", some calls failed" : "");
  }

  for (int n : {1, 10, 100}) {
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
  if (server) server->Shutdown(absl::Seconds(2));
  return 0;
}

}  // namespace
}  // namespace eventbus::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return eventbus::bench::Main();
}
