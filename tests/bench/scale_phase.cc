#include "tests/bench/scale_phase.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "server/base/mutex.h"
#include "server/registry/subscription.h"
#include "server/store/sqlite_store.h"
#include "server/uri/socket_uri.h"
#include "tests/testing/eventbusd.h"

ABSL_FLAG(int64_t, scale_max, 1000000,
          "scale phase: the largest number of subscriptions (sizes 10k, 100k, 1M up to this)");
ABSL_FLAG(std::string, scale_stores, "memory,sqlite", "scale phase: the stores to measure");
ABSL_FLAG(int64_t, scale_per_event, 100, "scale phase: subscriptions per event name");
ABSL_FLAG(int64_t, scale_probe, 10000,
          "scale phase: the Subscribe rate at a size is that of the last this many Subscribes");
ABSL_FLAG(std::string, scale_seed, "subscribe",
          "scale phase, sqlite: how the rows before the probe get there: 'subscribe' (gRPC "
          "Subscribes, --window in flight) or 'direct' (written into the file while the server "
          "is stopped, for when Subscribe is too slow to reach 1M in reasonable time)");
ABSL_FLAG(std::string, scale_dir, "/tmp", "scale phase: where the SQLite file and logs go");
ABSL_FLAG(int64_t, scale_stage_timeout_s, 900,
          "scale phase: a fill to the next size stops after this long (and says so)");
ABSL_FLAG(std::string, eventbusd, EVENTBUSD_PATH, "scale phase: the eventbusd binary to run");

namespace eventbus::bench {
namespace {

constexpr char kReadiness[] = "eventbus.v1.EventBusService";

// Subscription i: `per_event` subscriptions per event name, every socket distinct. Ports stay
// below the ephemeral range, so none is the server's own port (the destination policy refuses
// those).
std::string EventName(size_t i, size_t per_event) { return absl::StrCat("scale.e", i / per_event); }
std::string SocketText(size_t i) {
  return absl::StrCat("tcp:127.0.0.1:", 1024 + i % 30000, "/m", i / 30000);
}

// Resident and peak resident memory of a process, in bytes (from /proc/PID/status).
struct Rss {
  double rss = 0, peak = 0;
};
Rss ReadRss(pid_t pid) {
  Rss out;
  std::ifstream f(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(f, line)) {
    for (auto [name, field] : {std::pair{"VmRSS:", &out.rss}, std::pair{"VmHWM:", &out.peak}}) {
      absl::string_view rest = line;
      if (!absl::ConsumePrefix(&rest, name)) continue;
      rest = absl::StripAsciiWhitespace(absl::StripSuffix(absl::StripAsciiWhitespace(rest), "kB"));
      double kib = 0;
      if (absl::SimpleAtod(rest, &kib)) *field = kib * 1024;
    }
  }
  return out;
}
double MiB(double bytes) { return bytes / (1024.0 * 1024.0); }

// Subscribes [from, to) with `window` calls in flight; the rate is measured over the last `probe`.
struct FillResult {
  uint64_t ok = 0, failed = 0;
  std::string first_error;
  absl::Duration elapsed;
  // Subscribes/s over the last min(probe, completed) completions.
  double probe_rate = 0;
  uint64_t probe_calls = 0;
  bool timed_out = false;
};

class Filler {
 public:
  Filler(v1::EventBusService::Stub* stub, size_t from, size_t to, size_t per_event,
         absl::Time deadline, size_t probe)
      : stub_(stub), next_(from), end_(to), per_event_(per_event), deadline_(deadline) {
    const size_t total = to - from;
    mark_at_ = total > probe ? total - probe : 0;
  }

  FillResult Run(int window) {
    start_ = absl::Now();
    std::vector<size_t> first;
    {
      eventbus::MutexLock lock(&mu_);
      mark_time_ = start_;
      end_time_ = start_;
      while (in_flight_ < window && next_ < end_) {
        first.push_back(next_++);
        ++in_flight_;
      }
    }
    for (size_t i : first) Issue(i);
    eventbus::MutexLock lock(&mu_);
    mu_.Await([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ == 0; });
    FillResult r;
    r.ok = ok_;
    r.failed = failed_;
    r.first_error = first_error_;
    r.elapsed = end_time_ - start_;
    r.timed_out = next_ < end_;
    const uint64_t completed = ok_ + failed_;
    const absl::Time mark = completed > mark_at_ ? mark_time_ : start_;
    r.probe_calls = completed > mark_at_ ? completed - mark_at_ : completed;
    const double seconds = absl::ToDoubleSeconds(end_time_ - mark);
    r.probe_rate = seconds > 0 ? r.probe_calls / seconds : 0;
    return r;
  }

 private:
  struct Call {
    grpc::ClientContext ctx;
    v1::SubscribeRequest request;
    v1::SubscribeResponse response;
  };

  void Issue(size_t i) {
    auto* call = new Call;
    call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    call->request.set_event(EventName(i, per_event_));
    call->request.set_socket(SocketText(i));
    call->request.set_expire_seconds(0);
    stub_->async()->Subscribe(&call->ctx, &call->request, &call->response,
                              [this, call](grpc::Status status) { Done(call, status); });
  }

  void Done(Call* call, const grpc::Status& status) {
    delete call;
    size_t next = 0;
    bool more = false;
    {
      eventbus::MutexLock lock(&mu_);
      if (status.ok()) {
        ++ok_;
      } else {
        ++failed_;
        if (first_error_.empty()) first_error_ = status.error_message();
      }
      const absl::Time now = absl::Now();
      if (ok_ + failed_ == mark_at_) mark_time_ = now;
      end_time_ = now;
      more = next_ < end_ && now < deadline_;
      if (more) {
        next = next_++;
      } else {
        --in_flight_;
      }
    }
    if (more) Issue(next);
  }

  v1::EventBusService::Stub* const stub_;
  eventbus::Mutex mu_;
  size_t next_ ABSL_GUARDED_BY(mu_);
  const size_t end_;
  const size_t per_event_;
  const absl::Time deadline_;
  size_t mark_at_ = 0;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t ok_ ABSL_GUARDED_BY(mu_) = 0, failed_ ABSL_GUARDED_BY(mu_) = 0;
  std::string first_error_ ABSL_GUARDED_BY(mu_);
  absl::Time start_, mark_time_ ABSL_GUARDED_BY(mu_), end_time_ ABSL_GUARDED_BY(mu_);
};

// Ignores what the store loads: the seeding only writes.
class NullListener final : public store::SubscriptionStore::Listener {
 public:
  void OnReload(std::vector<registry::SubscriptionPtr>) override {}
  void OnUpsert(registry::SubscriptionPtr) override {}
  void OnRemove(const std::string&) override {}
  void OnHealth(bool) override {}
};

// Writes subscriptions [from, to) into the SQLite file at `path` (the server must be stopped), as
// Subscribe would have made them, in batches of group commits.
absl::Status SeedDirect(const std::string& path, size_t from, size_t to, size_t per_event) {
  store::SqliteStoreOptions options;
  options.path = path;
  store::SqliteStore sqlite(options);
  NullListener listener;
  if (absl::Status status = sqlite.Start(&listener); !status.ok()) return status;
  const absl::Time stamp = absl::FromUnixMicros(absl::ToUnixMicros(absl::Now()));
  constexpr size_t kBatch = 20000;
  absl::Status result;
  for (size_t begin = from; begin < to && result.ok(); begin += kBatch) {
    const size_t end = std::min(to, begin + kBatch);
    eventbus::Mutex mu;
    size_t pending = end - begin;
    for (size_t i = begin; i < end; ++i) {
      auto sub = std::make_shared<registry::Subscription>();
      sub->id = registry::NewSubscriptionId();
      sub->event = EventName(i, per_event);
      const std::string socket = SocketText(i);
      absl::StatusOr<uri::SocketUri> target = uri::ParseSocket(socket);
      if (!target.ok()) return target.status();
      sub->socket = target->ToString();
      sub->target = *std::move(target);
      sub->create_time = stamp;
      sqlite.Put(std::move(sub), [&](absl::Status status) {
        eventbus::MutexLock lock(&mu);
        if (!status.ok() && result.ok()) result = status;
        --pending;
      });
    }
    eventbus::MutexLock lock(&mu);
    mu.Await([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return pending == 0; });
  }
  sqlite.Stop();
  return result;
}

struct PageResult {
  uint64_t subscriptions = 0, pages = 0;
  absl::Duration elapsed;
  absl::Status status;
};

PageResult PageThrough(client::Client& client, int page_size) {
  PageResult r;
  v1::ListSubscriptionsRequest request;
  request.set_page_size(page_size);
  const absl::Time start = absl::Now();
  r.status = client.ListAllSubscriptions(request, [&r](const v1::ListSubscriptionsResponse& page) {
    r.subscriptions += page.subscriptions_size();
    ++r.pages;
    return absl::OkStatus();
  });
  r.elapsed = absl::Now() - start;
  return r;
}

// One eventbusd and a client to it.
struct Server {
  testing::Eventbusd daemon;
  std::unique_ptr<client::Client> client;
  // From spawning the process to its port accepting connections (a local store loads first).
  absl::Duration startup;
};

absl::StatusOr<Server> StartServer(const std::string& store, const std::string& log_path,
                                   size_t max_subscriptions, size_t per_event) {
  testing::EventbusdOptions options;
  options.binary = absl::GetFlag(FLAGS_eventbusd);
  options.log_path = log_path;
  options.store = store;
  options.ready_timeout = absl::Minutes(10);
  options.extra_args = {
      "--log_level=warning",
      absl::StrCat("--max_subscriptions=", max_subscriptions),
      absl::StrCat("--max_subscriptions_per_event=", std::max<size_t>(per_event, 10000)),
      "--default_expire_s=0",
  };
  Server server;
  const absl::Time start = absl::Now();
  absl::StatusOr<testing::Eventbusd> daemon = testing::StartEventbusd(options);
  if (!daemon.ok()) return daemon.status();
  server.startup = absl::Now() - start;
  server.daemon = *std::move(daemon);
  client::ClientOptions client_options;
  client_options.deadline = absl::Seconds(120);
  absl::StatusOr<std::unique_ptr<client::Client>> client =
      client::Client::Connect(server.daemon.address, client_options);
  if (!client.ok()) return client.status();
  server.client = *std::move(client);
  // For a local store the port opens after the load; readiness says so too.
  auto ready = server.client->CheckHealth(kReadiness);
  if (!ready.ok()) return ready.status();
  if (*ready != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(absl::StrCat("eventbusd at ", server.daemon.address,
                                               " is not ready after its port opened"));
  }
  return server;
}

std::vector<size_t> Sizes(size_t max) {
  std::vector<size_t> sizes;
  for (size_t n : {size_t{10000}, size_t{100000}, size_t{1000000}}) {
    if (n <= max) sizes.push_back(n);
  }
  if (sizes.empty() || sizes.back() != max) sizes.push_back(max);
  return sizes;
}

void Fail(absl::string_view what, const absl::Status& status) {
  std::printf("scale: %s: %s\n", std::string(what).c_str(), status.ToString().c_str());
}

void RunStore(const std::string& kind, int window, const ScaleBaseline& baseline) {
  const size_t max = static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_scale_max)));
  const size_t per_event =
      static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_scale_per_event)));
  const size_t probe = static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_scale_probe)));
  const bool direct = kind == "sqlite" && absl::GetFlag(FLAGS_scale_seed) == "direct";
  const std::string dir = absl::GetFlag(FLAGS_scale_dir);
  const std::string db_path = absl::StrCat(dir, "/eventbus_scale_", ::getpid(), ".db");
  const std::string log_path = absl::StrCat(dir, "/eventbus_scale_", ::getpid(), "_", kind, ".log");
  const std::string store = kind == "sqlite" ? absl::StrCat("sqlite:", db_path) : kind;
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink(absl::StrCat(db_path, suffix).c_str());
  const size_t limit = max + probe + 1;

  absl::StatusOr<Server> server = StartServer(store, log_path, limit, per_event);
  if (!server.ok()) return Fail(absl::StrCat(kind, ": start"), server.status());
  const Rss empty = ReadRss(server->daemon.process->pid());
  std::printf("scale, %-6s: empty server RSS %.1f MiB; %zu subscriptions per event; log %s\n",
              kind.c_str(), MiB(empty.rss), per_event, log_path.c_str());

  size_t have = 0;
  for (size_t size : Sizes(max)) {
    const size_t probe_from = size > probe ? size - probe : 0;
    if (direct && probe_from > have) {
      // The server lets go of the file; the rows go straight in; a restart loads them.
      server->daemon.process->Stop(absl::Minutes(1)).IgnoreError();
      const absl::Time t0 = absl::Now();
      if (absl::Status s = SeedDirect(db_path, have, probe_from, per_event); !s.ok()) {
        return Fail(absl::StrCat(kind, ": seed"), s);
      }
      std::printf("scale, %-6s: wrote %zu rows straight into the file in %.1f s\n", kind.c_str(),
                  probe_from - have, absl::ToDoubleSeconds(absl::Now() - t0));
      have = probe_from;
      server = StartServer(store, log_path, limit, per_event);
      if (!server.ok()) return Fail(absl::StrCat(kind, ": restart"), server.status());
    }
    const absl::Time deadline =
        absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_scale_stage_timeout_s));
    Filler filler(server->client->stub(), have, size, per_event, deadline, probe);
    FillResult fill = filler.Run(window);
    have += fill.ok + fill.failed;
    const Rss rss = ReadRss(server->daemon.process->pid());
    std::printf(
        "scale, %-6s %8zu subs: Subscribe %7.0f/s over the last %llu (%d in flight) = %.2fx "
        "baseline calls/s; fill %.1f s%s; RSS %.1f MiB (peak %.1f), %.0f B per subscription over "
        "the empty server\n",
        kind.c_str(), have, fill.probe_rate, static_cast<unsigned long long>(fill.probe_calls),
        window, fill.probe_rate / baseline.calls_per_second, absl::ToDoubleSeconds(fill.elapsed),
        fill.timed_out ? " (STOPPED at the stage timeout)" : "", MiB(rss.rss), MiB(rss.peak),
        have > 0 ? (rss.rss - empty.rss) / have : 0.0);
    if (fill.failed > 0) {
      std::printf("scale, %-6s: %llu Subscribes failed, the first: %s\n", kind.c_str(),
                  static_cast<unsigned long long>(fill.failed), fill.first_error.c_str());
    }

    if (kind == "sqlite") {
      server->daemon.process->Stop(absl::Minutes(1)).IgnoreError();
      server = StartServer(store, log_path, limit, per_event);
      if (!server.ok()) return Fail(absl::StrCat(kind, ": restart"), server.status());
      const Rss loaded = ReadRss(server->daemon.process->pid());
      std::printf(
          "scale, %-6s %8zu subs: restart ready in %.2f s (spawn to port open, load included); "
          "RSS %.1f MiB (peak %.1f while loading)\n",
          kind.c_str(), have, absl::ToDoubleSeconds(server->startup), MiB(loaded.rss),
          MiB(loaded.peak));
    }

    for (int page_size : {0, 10000}) {
      PageResult page = PageThrough(*server->client, page_size);
      const double per_page_us =
          page.pages > 0 ? absl::ToDoubleMicroseconds(page.elapsed) / page.pages : 0;
      std::printf(
          "scale, %-6s %8zu subs: page through all, page_size %5s: %.2f s, %llu pages, %.0f "
          "us/page = %.1fx a trivial call%s%s\n",
          kind.c_str(), have, page_size == 0 ? "1000 (CLI)" : "10000",
          absl::ToDoubleSeconds(page.elapsed), static_cast<unsigned long long>(page.pages),
          per_page_us, per_page_us / baseline.sequential_p50_us,
          page.subscriptions == have ? ""
                                     : absl::StrCat(" (listed ", page.subscriptions, ")").c_str(),
          page.status.ok() ? "" : absl::StrCat(" FAILED: ", page.status.ToString()).c_str());
    }
    const Rss after = ReadRss(server->daemon.process->pid());
    std::printf("scale, %-6s %8zu subs: RSS after paging %.1f MiB (peak %.1f)\n", kind.c_str(),
                have, MiB(after.rss), MiB(after.peak));
    std::fflush(stdout);
    if (fill.timed_out) break;
  }
  server->daemon.process->Stop(absl::Minutes(1)).IgnoreError();
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink(absl::StrCat(db_path, suffix).c_str());
}

}  // namespace

void RunScalePhase(int window, const ScaleBaseline& baseline) {
  for (absl::string_view kind : absl::StrSplit(absl::GetFlag(FLAGS_scale_stores), ',')) {
    if (kind.empty()) continue;
    RunStore(std::string(kind), window, baseline);
  }
}

}  // namespace eventbus::bench
