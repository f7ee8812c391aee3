#include "server/metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <exception>
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "grpcpp/support/server_interceptor.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/base/mutex.h"

namespace eventbus::metrics {
namespace {

using net::DeliveryCode;
using prometheus::Counter;
using prometheus::Histogram;

// The label value of everything beyond a label's cap.
constexpr char kOther[] = "other";

// Every DeliveryCode, indexed by its value; kQueued is never a final outcome.
constexpr size_t kNumCodes = static_cast<size_t>(DeliveryCode::kOverloaded) + 1;
constexpr DeliveryCode kFinalCodes[] = {
    DeliveryCode::kOk,
    DeliveryCode::kRpcError,
    DeliveryCode::kTimeout,
    DeliveryCode::kConnectFailed,
    DeliveryCode::kResolveFailed,
    DeliveryCode::kConnectionLost,
    DeliveryCode::kBadReply,
    DeliveryCode::kQueueFull,
    DeliveryCode::kDestinationDenied,
    DeliveryCode::kTlsFailed,
    DeliveryCode::kOverloaded,
};

// gRPC status code names, indexed by grpc::StatusCode.
constexpr const char* kGrpcCodes[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};
constexpr size_t kNumGrpcCodes = sizeof(kGrpcCodes) / sizeof(kGrpcCodes[0]);

// Delivery latency: from a Raise to each outcome. Loopback writes take microseconds, sync
// replies milliseconds, timeouts up to the Raise timeout (1 s by default, at most 1 h).
const Histogram::BucketBoundaries& DeliveryBuckets() {
  static const Histogram::BucketBoundaries* b = new Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
      0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
  return *b;
}
// gRPC calls and store operations: a unary call costs ~16 µs, a store write a disk sync or an
// etcd round trip.
const Histogram::BucketBoundaries& CallBuckets() {
  static const Histogram::BucketBoundaries* b = new Histogram::BucketBoundaries{
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
  return *b;
}

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

// A counter bumped on loop threads: one relaxed atomic add (prometheus::Counter runs a
// compare-and-swap loop on a double), read at scrape time.
class FastCounter {
 public:
  void Add(uint64_t n = 1) { n_.fetch_add(n, std::memory_order_relaxed); }
  double Value() const { return static_cast<double>(n_.load(std::memory_order_relaxed)); }

 private:
  std::atomic<uint64_t> n_{0};
};

// A histogram observed on loop threads without a lock (prometheus::Histogram takes a mutex per
// observation): one relaxed add per bucket, count and sum.
class FastHistogram {
 public:
  explicit FastHistogram(const Histogram::BucketBoundaries* bounds)
      : bounds_(bounds), buckets_(bounds->size() + 1) {}

  // `count` observations of `d`.
  void Observe(absl::Duration d, uint64_t count = 1) {
    const double seconds = Seconds(d);
    const size_t i = static_cast<size_t>(
        std::lower_bound(bounds_->begin(), bounds_->end(), seconds) - bounds_->begin());
    buckets_[i].fetch_add(count, std::memory_order_relaxed);
    sum_ns_.fetch_add(absl::ToInt64Nanoseconds(d) * static_cast<int64_t>(count),
                      std::memory_order_relaxed);
  }

  // The histogram as a Prometheus sample (cumulative buckets, +Inf last).
  prometheus::ClientMetric ToMetric() const {
    prometheus::ClientMetric m;
    uint64_t cumulative = 0;
    for (size_t i = 0; i < buckets_.size(); ++i) {
      cumulative += buckets_[i].load(std::memory_order_relaxed);
      prometheus::ClientMetric::Bucket b;
      b.cumulative_count = cumulative;
      b.upper_bound = i < bounds_->size() ? (*bounds_)[i] : std::numeric_limits<double>::infinity();
      m.histogram.bucket.push_back(b);
    }
    m.histogram.sample_count = cumulative;
    m.histogram.sample_sum = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
    return m;
  }

 private:
  const Histogram::BucketBoundaries* bounds_;
  std::vector<std::atomic<uint64_t>> buckets_;  // bucket i: (bounds[i-1], bounds[i]]
  std::atomic<int64_t> sum_ns_{0};
};

// Label values beyond the first `max` distinct ones share one set of children, labelled "other",
// so that no caller can grow the number of series without bound. Children are built from their
// label value and live as long as this. Thread-safe.
template <typename Children>
class Capped {
 public:
  explicit Capped(size_t max) : max_(max) {}

  // The children of `value`, made on first use: its own while fewer than `max` values have been
  // named, otherwise those of "other".
  Children* Get(absl::string_view value) {
    eventbus::MutexLock lock(&mu_);
    auto it = named_.find(value);
    if (it != named_.end()) return it->second.get();
    if (named_.size() < max_) {
      std::string label(value);
      auto made = std::make_unique<Children>(label);
      return named_.emplace(std::move(label), std::move(made)).first->second.get();
    }
    if (other_ == nullptr) other_ = std::make_unique<Children>(kOther);
    return other_.get();
  }

  // The label value `value` is reported under (naming it when there is room).
  std::string Label(absl::string_view value) { return Get(value)->label; }

  // Calls `f` for every set of children ("other" included).
  template <typename F>
  void ForEach(F f) {
    eventbus::MutexLock lock(&mu_);
    for (const auto& [label, children] : named_) f(*children);
    if (other_ != nullptr) f(*other_);
  }

 private:
  const size_t max_;
  eventbus::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Children>> named_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Children> other_ ABSL_GUARDED_BY(mu_);
};

// The counters of one event in one mode: what a Raise looks up once.
struct ModeScope final : delivery::DeliveryObserver::EventScope {
  bool sync = false;
  FastCounter raises;
  FastCounter accepted;
  std::array<FastCounter, kNumCodes> completed;  // kQueued stays 0
};

struct EventChildren {
  explicit EventChildren(std::string l) : label(std::move(l)) { modes[1].sync = true; }
  const std::string label;
  ModeScope modes[2];  // async, sync
};

// Per target ("host:port", capped).
struct TargetChildren {
  explicit TargetChildren(std::string l) : label(std::move(l)) {}
  const std::string label;
  FastCounter delivered, failed, expired;
  FastCounter connects, reconnects, connect_failures, disconnects;
  // Connections lost and not yet re-established: the next connect is a reconnect.
  std::atomic<int64_t> lost{0};
};

// Per gRPC method ("/package.Service/Method", capped); code counters made on first use.
struct RpcChildren {
  explicit RpcChildren(std::string l) : label(std::move(l)) {}
  const std::string label;
  std::map<std::string, std::string> labels;  // grpc_service, grpc_method
  std::array<std::atomic<Counter*>, kNumGrpcCodes> handled{};
  Histogram* duration = nullptr;
};

using LabelSet = std::vector<std::pair<std::string, std::string>>;

// Builds one family from samples added in any order; samples with the same labels add up (an
// event literally named "other" and the "other" bucket become one series).
class FamilyBuilder {
 public:
  FamilyBuilder(std::string name, std::string help, prometheus::MetricType type)
      : name_(std::move(name)), help_(std::move(help)), type_(type) {}

  void Add(LabelSet labels, double value) { values_[std::move(labels)] += value; }

  // Appends the family to `out` unless it has no sample.
  void AppendTo(std::vector<prometheus::MetricFamily>* out) const {
    if (values_.empty()) return;
    prometheus::MetricFamily family;
    family.name = name_;
    family.help = help_;
    family.type = type_;
    for (const auto& [labels, value] : values_) {
      prometheus::ClientMetric metric;
      for (const auto& [n, v] : labels) metric.label.push_back({n, v});
      if (type_ == prometheus::MetricType::Counter) {
        metric.counter.value = value;
      } else {
        metric.gauge.value = value;
      }
      family.metric.push_back(std::move(metric));
    }
    out->push_back(std::move(family));
  }

 private:
  std::string name_, help_;
  prometheus::MetricType type_;
  std::map<LabelSet, double> values_;
};

FamilyBuilder Gauge(std::string name, std::string help) {
  return FamilyBuilder(std::move(name), std::move(help), prometheus::MetricType::Gauge);
}
FamilyBuilder CounterFamily(std::string name, std::string help) {
  return FamilyBuilder(std::move(name), std::move(help), prometheus::MetricType::Counter);
}

}  // namespace

struct Metrics::Impl {
  explicit Impl(MetricsOptions options);

  // The hot-path counters and the gauges, read at scrape time.
  class Collector final : public prometheus::Collectable {
   public:
    explicit Collector(Impl* impl) : impl_(impl) {}
    std::vector<prometheus::MetricFamily> Collect() const override { return impl_->Collect(); }

   private:
    Impl* impl_;
  };

  std::vector<prometheus::MetricFamily> Collect();
  void CollectDeliveries(std::vector<prometheus::MetricFamily>* out);
  void CollectTargets(std::vector<prometheus::MetricFamily>* out);
  // The children of gRPC method `method` ("/package.Service/Method"), set up on first use.
  RpcChildren* Rpc(absl::string_view method);
  void RecordRpc(RpcChildren* rpc, int code, absl::Duration duration);
  void RecordStore(const char* operation, const absl::Status& status, absl::Duration duration);

  const MetricsOptions options;
  // gRPC calls and store operations (a few per call: prometheus-cpp's own metric types).
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::shared_ptr<Collector> collector = std::make_shared<Collector>(this);
  prometheus::Family<Counter>& rpc_handled;
  prometheus::Family<Histogram>& rpc_duration;
  prometheus::Family<Counter>& store_operations;
  prometheus::Family<Histogram>& store_duration;

  // Per delivery and per target message (loop threads): lock-free, collected by `collector`.
  Capped<EventChildren> events;
  Capped<TargetChildren> targets;
  Capped<RpcChildren> rpcs;
  // Destinations refused by the destination policy, by net::DenialStage (subscribe, connect).
  FastCounter destination_denied[2];
  // [sync][delivered]
  std::unique_ptr<FastHistogram> delivery_histograms[2][2];
  // Serialises the first-use set-up of an RpcChildren (its labels and histogram).
  eventbus::Mutex rpc_setup_mu;

  eventbus::Mutex sources_mu;
  const net::WriterPool* pool ABSL_GUARDED_BY(sources_mu) = nullptr;
  const registry::Registry* subscriptions ABSL_GUARDED_BY(sources_mu) = nullptr;
  const store::SubscriptionStore* store ABSL_GUARDED_BY(sources_mu) = nullptr;

  // Destroyed first (declared last): no scrape runs while the rest goes away.
  std::unique_ptr<prometheus::Exposer> exposer;
  // The numeric host the exposer listens on, as a connect() can reach it (Metrics::~Metrics).
  std::string wake_host;
};

Metrics::Impl::Impl(MetricsOptions opts)
    : options(opts),
      rpc_handled(prometheus::BuildCounter()
                      .Name("eventbus_grpc_server_handled_total")
                      .Help("gRPC calls completed, by service, method and status code")
                      .Register(*registry)),
      rpc_duration(prometheus::BuildHistogram()
                       .Name("eventbus_grpc_server_handling_seconds")
                       .Help("Time from a gRPC call's arrival to its status, by service and method")
                       .Register(*registry)),
      store_operations(prometheus::BuildCounter()
                           .Name("eventbus_store_operations_total")
                           .Help("Subscription store operations, by operation and result")
                           .Register(*registry)),
      store_duration(prometheus::BuildHistogram()
                         .Name("eventbus_store_operation_duration_seconds")
                         .Help("Subscription store operation latency, by operation")
                         .Register(*registry)),
      events(opts.max_events),
      targets(opts.max_targets),
      // A server has a handful of methods; the cap only matters if a client could name more.
      rpcs(64) {
  for (bool sync : {false, true}) {
    for (bool delivered : {false, true}) {
      delivery_histograms[sync][delivered] = std::make_unique<FastHistogram>(&DeliveryBuckets());
    }
  }
  for (const char* op : {"start", "put", "delete"}) {
    store_duration.Add({{"operation", op}}, CallBuckets());
    for (const char* result : {"ok", "error"}) {
      store_operations.Add({{"operation", op}, {"result", result}});
    }
  }
}

RpcChildren* Metrics::Impl::Rpc(absl::string_view method) {
  RpcChildren* rpc = rpcs.Get(method);
  eventbus::MutexLock lock(&rpc_setup_mu);
  if (rpc->duration == nullptr) {
    absl::string_view full = rpc->label;
    if (absl::ConsumePrefix(&full, "/") && full.find('/') != absl::string_view::npos) {
      const size_t slash = full.find('/');
      rpc->labels = {{"grpc_service", std::string(full.substr(0, slash))},
                     {"grpc_method", std::string(full.substr(slash + 1))}};
    } else {
      rpc->labels = {{"grpc_service", kOther}, {"grpc_method", std::string(full)}};
    }
    rpc->duration = &rpc_duration.Add(rpc->labels, CallBuckets());
  }
  return rpc;
}

void Metrics::Impl::RecordRpc(RpcChildren* rpc, int code, absl::Duration duration) {
  if (code < 0 || static_cast<size_t>(code) >= kNumGrpcCodes) code = 2;  // UNKNOWN
  Counter* counter = rpc->handled[code].load(std::memory_order_acquire);
  if (counter == nullptr) {
    std::map<std::string, std::string> labels = rpc->labels;
    labels["grpc_code"] = kGrpcCodes[code];
    // Family::Add returns the same child for the same labels, so a race makes no duplicate.
    counter = &rpc_handled.Add(labels);
    rpc->handled[code].store(counter, std::memory_order_release);
  }
  counter->Increment();
  rpc->duration->Observe(Seconds(duration));
}

void Metrics::Impl::RecordStore(const char* operation, const absl::Status& status,
                                absl::Duration duration) {
  store_operations.Add({{"operation", operation}, {"result", status.ok() ? "ok" : "error"}})
      .Increment();
  store_duration.Add({{"operation", operation}}, CallBuckets()).Observe(Seconds(duration));
}

void Metrics::Impl::CollectDeliveries(std::vector<prometheus::MetricFamily>* out) {
  FamilyBuilder raises =
      CounterFamily("eventbus_raises_total",
                    "Raise calls that fanned out (zero subscribers included), by event "
                    "and mode");
  FamilyBuilder accepted =
      CounterFamily("eventbus_deliveries_accepted_total",
                    "Deliveries a Raise took on: one per live subscription it went to");
  FamilyBuilder completed = CounterFamily(
      "eventbus_deliveries_completed_total",
      "Deliveries with a final outcome, by event, mode and status (async OK: written; async "
      "TIMEOUT/CONNECT_FAILED/RESOLVE_FAILED: expired unwritten)");
  // In flight = accepted - completed. Completions are read first: each was accepted before it
  // completed, so a Raise running meanwhile can only make the figure high, never negative.
  double completed_sum = 0, accepted_sum = 0;
  events.ForEach([&](EventChildren& e) {
    for (const ModeScope& m : e.modes) {
      const std::string mode = m.sync ? "sync" : "async";
      for (DeliveryCode code : kFinalCodes) {
        const double n = m.completed[static_cast<size_t>(code)].Value();
        completed_sum += n;
        completed.Add({{"event", e.label},
                       {"mode", mode},
                       {"status", std::string(net::DeliveryCodeName(code))}},
                      n);
      }
    }
  });
  events.ForEach([&](EventChildren& e) {
    for (const ModeScope& m : e.modes) {
      const std::string mode = m.sync ? "sync" : "async";
      accepted_sum += m.accepted.Value();
      accepted.Add({{"event", e.label}, {"mode", mode}}, m.accepted.Value());
      raises.Add({{"event", e.label}, {"mode", mode}}, m.raises.Value());
    }
  });
  raises.AppendTo(out);
  accepted.AppendTo(out);
  completed.AppendTo(out);
  FamilyBuilder in_flight = Gauge("eventbus_deliveries_in_flight",
                                  "Deliveries accepted without a final outcome yet (queued, being "
                                  "written or awaiting a reply)");
  in_flight.Add({}, std::max(0.0, accepted_sum - completed_sum));
  in_flight.AppendTo(out);

  prometheus::MetricFamily duration;
  duration.name = "eventbus_delivery_duration_seconds";
  duration.help =
      "Time from a Raise to each delivery's final outcome, by mode and result "
      "(delivered = OK)";
  duration.type = prometheus::MetricType::Histogram;
  for (bool sync : {false, true}) {
    for (bool delivered : {false, true}) {
      prometheus::ClientMetric m = delivery_histograms[sync][delivered]->ToMetric();
      m.label = {{"mode", sync ? "sync" : "async"}, {"result", delivered ? "delivered" : "failed"}};
      duration.metric.push_back(std::move(m));
    }
  }
  out->push_back(std::move(duration));
}

void Metrics::Impl::CollectTargets(std::vector<prometheus::MetricFamily>* out) {
  FamilyBuilder messages = CounterFamily(
      "eventbus_target_messages_total",
      "Messages completed per target: delivered (written notifications, OK replies), expired "
      "(deadline before completely written), failed (everything else, RPC_ERROR included)");
  FamilyBuilder connects =
      CounterFamily("eventbus_target_connects_total", "Connections established to a target");
  FamilyBuilder reconnects =
      CounterFamily("eventbus_target_reconnects_total",
                    "Connections re-established to a target after one was lost");
  FamilyBuilder connect_failures =
      CounterFamily("eventbus_target_connect_failures_total",
                    "Connect or resolve attempts to a target that failed");
  FamilyBuilder disconnects = CounterFamily("eventbus_target_disconnects_total",
                                            "Established connections to a target that were lost");
  targets.ForEach([&](TargetChildren& t) {
    messages.Add({{"result", "delivered"}, {"target", t.label}}, t.delivered.Value());
    messages.Add({{"result", "expired"}, {"target", t.label}}, t.expired.Value());
    messages.Add({{"result", "failed"}, {"target", t.label}}, t.failed.Value());
    connects.Add({{"target", t.label}}, t.connects.Value());
    reconnects.Add({{"target", t.label}}, t.reconnects.Value());
    connect_failures.Add({{"target", t.label}}, t.connect_failures.Value());
    disconnects.Add({{"target", t.label}}, t.disconnects.Value());
  });
  for (const FamilyBuilder* f :
       {&messages, &connects, &reconnects, &connect_failures, &disconnects}) {
    f->AppendTo(out);
  }
  FamilyBuilder denied = CounterFamily(
      "eventbus_destination_denied_total",
      "Destinations refused by the destination policy: stage=subscribe, a Subscribe's target "
      "(the Subscribe is refused); stage=connect, an address about to be connected to (skipped)");
  for (net::DenialStage stage : {net::DenialStage::kSubscribe, net::DenialStage::kConnect}) {
    denied.Add({{"stage", std::string(net::DenialStageName(stage))}},
               destination_denied[static_cast<size_t>(stage)].Value());
  }
  denied.AppendTo(out);
}

std::vector<prometheus::MetricFamily> Metrics::Impl::Collect() {
  std::vector<prometheus::MetricFamily> out;
  CollectDeliveries(&out);

  eventbus::MutexLock lock(&sources_mu);
  if (pool != nullptr) {
    // Before CollectTargets, so that the targets named here have their counters listed too.
    FamilyBuilder queued_by_target = Gauge("eventbus_target_queued_messages",
                                           "Messages queued for a target, not yet completely "
                                           "written");
    FamilyBuilder by_state = Gauge("eventbus_target_connections",
                                   "Target connections by state (idle, resolving, connecting, "
                                   "connected, backoff)");
    for (net::ConnState s :
         {net::ConnState::kIdle, net::ConnState::kResolving, net::ConnState::kConnecting,
          net::ConnState::kConnected, net::ConnState::kBackoff}) {
      by_state.Add({{"state", absl::AsciiStrToLower(net::ConnStateName(s))}}, 0);
    }
    double queued = 0, outstanding = 0;
    for (const net::TargetStats& t : pool->AllStats()) {
      queued_by_target.Add({{"target", targets.Label(t.key)}}, t.queued_messages);
      queued += t.queued_messages;
      outstanding += t.outstanding_requests;
      by_state.Add({{"state", absl::AsciiStrToLower(net::ConnStateName(t.state))}}, 1);
    }
    queued_by_target.AppendTo(&out);
    FamilyBuilder total = Gauge("eventbus_queued_messages",
                                "Messages queued for all targets, not yet completely written");
    total.Add({}, queued);
    total.AppendTo(&out);
    FamilyBuilder awaiting = Gauge("eventbus_outstanding_requests",
                                   "Sync requests written and awaiting their reply, all targets");
    awaiting.Add({}, outstanding);
    awaiting.AppendTo(&out);
    by_state.AppendTo(&out);
  }
  CollectTargets(&out);
  if (subscriptions != nullptr) {
    FamilyBuilder total = Gauge("eventbus_subscriptions", "Subscriptions in the registry");
    total.Add({}, static_cast<double>(subscriptions->size()));
    total.AppendTo(&out);
    FamilyBuilder by_event = Gauge("eventbus_event_subscriptions", "Subscriptions per event");
    for (const registry::EventCount& e : subscriptions->Events()) {
      by_event.Add({{"event", events.Label(e.event)}}, static_cast<double>(e.subscribers));
    }
    by_event.AppendTo(&out);
  }
  if (store != nullptr) {
    FamilyBuilder healthy =
        Gauge("eventbus_store_healthy", "1 while the subscription store is reachable, else 0");
    healthy.Add({{"store", std::string(store->kind())}}, store->healthy() ? 1 : 0);
    healthy.AppendTo(&out);
  }
  return out;
}

namespace {

// Counts and times one gRPC call: created when the call arrives, records at its status.
class RpcInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcInterceptor(Metrics::Impl* impl, RpcChildren* rpc)
      : impl_(impl), rpc_(rpc), start_(absl::Now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      impl_->RecordRpc(rpc_, static_cast<int>(methods->GetSendStatus().error_code()),
                       absl::Now() - start_);
    }
    methods->Proceed();
  }

 private:
  Metrics::Impl* impl_;
  RpcChildren* rpc_;
  absl::Time start_;
};

class RpcInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcInterceptorFactory(Metrics::Impl* impl) : impl_(impl) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    const char* method = info->method();
    return new RpcInterceptor(impl_, impl_->Rpc(method == nullptr ? "" : method));
  }

 private:
  Metrics::Impl* impl_;
};

// Forwards to the real store, counting and timing Start, Put and Delete.
class InstrumentedStore final : public store::SubscriptionStore {
 public:
  InstrumentedStore(std::unique_ptr<store::SubscriptionStore> inner, Metrics::Impl* impl)
      : inner_(std::move(inner)), impl_(impl) {}

  absl::Status Start(Listener* listener) override {
    const absl::Time start = absl::Now();
    absl::Status status = inner_->Start(listener);
    impl_->RecordStore("start", status, absl::Now() - start);
    return status;
  }
  void Stop() override { inner_->Stop(); }
  void Put(registry::SubscriptionPtr sub, Done done) override {
    inner_->Put(std::move(sub), Timed("put", std::move(done)));
  }
  void Delete(registry::SubscriptionPtr sub, Done done) override {
    inner_->Delete(std::move(sub), Timed("delete", std::move(done)));
  }
  bool healthy() const override { return inner_->healthy(); }
  absl::string_view kind() const override { return inner_->kind(); }

 private:
  Done Timed(const char* operation, Done done) {
    return [impl = impl_, operation, start = absl::Now(),
            done = std::move(done)](absl::Status status) mutable {
      impl->RecordStore(operation, status, absl::Now() - start);
      done(std::move(status));
    };
  }

  std::unique_ptr<store::SubscriptionStore> inner_;
  Metrics::Impl* impl_;
};

}  // namespace

Metrics::Metrics(MetricsOptions options) : impl_(std::make_unique<Impl>(options)) {}

namespace {

// Connects to `host`:`port` and closes at once (no error is reported: the port may be closed).
void Poke(const std::string& host, int port) {
  sockaddr_storage storage{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof(*v4);
  } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof(*v6);
  } else {
    return;
  }
  const int fd = ::socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return;
  (void)::connect(fd, reinterpret_cast<sockaddr*>(&storage), len);
  ::close(fd);
}

}  // namespace

Metrics::~Metrics() {
  if (impl_->exposer == nullptr) return;
  // civetweb's listening thread looks at its stop flag only between polls of up to 2 s, so
  // stopping the Exposer alone takes up to 2 s (eventbusd's SIGTERM would wait for it). A
  // connection to the port ends the poll: poke it until the stop has finished.
  const std::vector<int> ports = impl_->exposer->GetListeningPorts();
  std::atomic<bool> stopped{false};
  std::thread stopper([this, &stopped] {
    impl_->exposer.reset();
    stopped.store(true, std::memory_order_release);
  });
  while (!stopped.load(std::memory_order_acquire)) {
    for (int port : ports) Poke(impl_->wake_host, port);
    absl::SleepFor(absl::Milliseconds(10));
  }
  stopper.join();
}

absl::Status Metrics::Serve(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError("expected HOST:PORT with a port in 0..65535");
  }
  // Where the destructor can reach the listener: loopback for a wildcard address.
  std::string host(absl::StripSuffix(absl::StripPrefix(address.substr(0, colon), "["), "]"));
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  impl_->wake_host = host;
  try {
    // The Exposer throws (civetweb's CivetException) when it cannot listen.
    impl_->exposer = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve /metrics: ", e.what()));
  }
  impl_->exposer->RegisterCollectable(impl_->registry);
  impl_->exposer->RegisterCollectable(impl_->collector);
  return absl::OkStatus();
}

int Metrics::port() const {
  if (impl_->exposer == nullptr) return 0;
  std::vector<int> ports = impl_->exposer->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void Metrics::Attach(const net::WriterPool* pool, const registry::Registry* registry,
                     const store::SubscriptionStore* store) {
  eventbus::MutexLock lock(&impl_->sources_mu);
  impl_->pool = pool;
  impl_->subscriptions = registry;
  impl_->store = store;
}

void Metrics::Detach() { Attach(nullptr, nullptr, nullptr); }

std::string Metrics::Scrape() const {
  std::vector<prometheus::MetricFamily> families = impl_->registry->Collect();
  for (prometheus::MetricFamily& f : impl_->collector->Collect()) families.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(families);
}

std::unique_ptr<store::SubscriptionStore> Metrics::InstrumentStore(
    std::unique_ptr<store::SubscriptionStore> store) {
  return std::make_unique<InstrumentedStore>(std::move(store), impl_.get());
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
Metrics::NewRpcInterceptorFactory() {
  return std::make_unique<RpcInterceptorFactory>(impl_.get());
}

void Metrics::OnComplete(const std::string& target_key, const net::Outcome& outcome, bool expired,
                         absl::Duration latency) {
  TargetChildren* t = impl_->targets.Get(target_key);
  // The same split as the ListSubscriptions counters (net/connection.cc): RPC_ERROR is a failure.
  if (outcome.code == DeliveryCode::kOk) {
    t->delivered.Add();
  } else if (expired) {
    t->expired.Add();
  } else {
    t->failed.Add();
  }
}

void Metrics::OnWritten(const std::string& target_key, size_t count) {
  impl_->targets.Get(target_key)->delivered.Add(count);
}

void Metrics::OnStateChange(const std::string& target_key, net::ConnState from, net::ConnState to,
                            absl::string_view detail) {
  TargetChildren* t = impl_->targets.Get(target_key);
  if (to == net::ConnState::kConnected) {
    t->connects.Add();
    // A connection closed for idleness goes away without a state change, so only a loss
    // (connected -> anything else) makes the next connect a reconnect.
    int64_t lost = t->lost.load(std::memory_order_relaxed);
    while (lost > 0 && !t->lost.compare_exchange_weak(lost, lost - 1)) {
    }
    if (lost > 0) t->reconnects.Add();
  } else if (from == net::ConnState::kConnected) {
    t->disconnects.Add();
    t->lost.fetch_add(1, std::memory_order_relaxed);
  }
  if (to == net::ConnState::kBackoff) t->connect_failures.Add();
}

void Metrics::OnDestinationDenied(const std::string& target_key, net::DenialStage stage,
                                  absl::string_view detail) {
  impl_->destination_denied[static_cast<size_t>(stage)].Add();
}

delivery::DeliveryObserver::EventScope* Metrics::OnRaise(const std::string& event, bool sync,
                                                         size_t deliveries) {
  ModeScope* scope = &impl_->events.Get(event)->modes[sync];
  scope->raises.Add();
  scope->accepted.Add(deliveries);
  return scope;
}

void Metrics::OnOutcome(EventScope* scope, DeliveryCode code, absl::Duration latency) {
  auto* s = static_cast<ModeScope*>(scope);
  s->completed[static_cast<size_t>(code)].Add();
  impl_->delivery_histograms[s->sync][code == DeliveryCode::kOk]->Observe(latency);
}

void Metrics::OnOutcomes(EventScope* scope, DeliveryCode code, absl::Duration latency,
                         size_t count) {
  auto* s = static_cast<ModeScope*>(scope);
  s->completed[static_cast<size_t>(code)].Add(count);
  impl_->delivery_histograms[s->sync][code == DeliveryCode::kOk]->Observe(latency, count);
}

}  // namespace eventbus::metrics
