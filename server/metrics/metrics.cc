#include "server/metrics/metrics.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
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
constexpr size_t kNumCodes = static_cast<size_t>(DeliveryCode::kQueueFull) + 1;
constexpr DeliveryCode kFinalCodes[] = {
    DeliveryCode::kOk,
    DeliveryCode::kRpcError,
    DeliveryCode::kTimeout,
    DeliveryCode::kConnectFailed,
    DeliveryCode::kResolveFailed,
    DeliveryCode::kConnectionLost,
    DeliveryCode::kBadReply,
    DeliveryCode::kQueueFull,
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

// Label values beyond the first `max` distinct ones share one set of children, labelled "other",
// so that no caller can grow the number of series without bound. Thread-safe.
template <typename Children>
class Capped {
 public:
  using Make = std::function<std::unique_ptr<Children>(const std::string& label)>;
  Capped(size_t max, Make make) : max_(max), make_(std::move(make)) {}

  // The children of `value`, made on first use: its own while fewer than `max` values have been
  // named, otherwise those of "other".
  Children* Get(absl::string_view value) {
    eventbus::MutexLock lock(&mu_);
    auto it = named_.find(value);
    if (it != named_.end()) return it->second.get();
    if (named_.size() < max_) {
      std::string label(value);
      std::unique_ptr<Children> made = make_(label);
      return named_.emplace(std::move(label), std::move(made)).first->second.get();
    }
    if (other_ == nullptr) other_ = make_(kOther);
    return other_.get();
  }

  // The label value `value` is reported under (naming it when there is room).
  std::string Label(absl::string_view value) {
    eventbus::MutexLock lock(&mu_);
    if (named_.contains(value)) return std::string(value);
    if (named_.size() < max_) {
      std::string label(value);
      std::unique_ptr<Children> made = make_(label);
      named_.emplace(label, std::move(made));
      return label;
    }
    return kOther;
  }

  // Calls `f` for every set of children ("other" included).
  template <typename F>
  void ForEach(F f) {
    eventbus::MutexLock lock(&mu_);
    for (const auto& [label, children] : named_) f(*children);
    if (other_ != nullptr) f(*other_);
  }

 private:
  const size_t max_;
  const Make make_;
  eventbus::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Children>> named_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Children> other_ ABSL_GUARDED_BY(mu_);
};

// The counters of one event in one mode: what a Raise looks up once.
struct ModeScope final : delivery::DeliveryObserver::EventScope {
  bool sync = false;
  Counter* raises = nullptr;
  Counter* accepted = nullptr;
  std::array<Counter*, kNumCodes> completed{};  // kQueued stays null
};

struct EventChildren {
  ModeScope modes[2];  // async, sync
};

// Per target ("host:port", capped).
struct TargetChildren {
  Counter* delivered = nullptr;
  Counter* failed = nullptr;
  Counter* expired = nullptr;
  Counter* connects = nullptr;
  Counter* reconnects = nullptr;
  Counter* connect_failures = nullptr;
  Counter* disconnects = nullptr;
  // Connections lost and not yet re-established: the next connect is a reconnect.
  std::atomic<int64_t> lost{0};
};

// Per gRPC method ("/package.Service/Method", capped); code counters made on first use.
struct RpcChildren {
  std::map<std::string, std::string> labels;  // grpc_service, grpc_method
  std::array<std::atomic<Counter*>, kNumGrpcCodes> handled{};
  Histogram* duration = nullptr;
};

prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = prometheus::MetricType::Gauge;
  return family;
}

void AddGauge(prometheus::MetricFamily* family,
              std::vector<std::pair<std::string, std::string>> labels, double value) {
  prometheus::ClientMetric metric;
  for (auto& [name, label_value] : labels) metric.label.push_back({name, label_value});
  metric.gauge.value = value;
  family->metric.push_back(std::move(metric));
}

}  // namespace

struct Metrics::Impl {
  explicit Impl(MetricsOptions options);

  // The gauges read at scrape time.
  class Collector final : public prometheus::Collectable {
   public:
    explicit Collector(Impl* impl) : impl_(impl) {}
    std::vector<prometheus::MetricFamily> Collect() const override { return impl_->Collect(); }

   private:
    Impl* impl_;
  };

  std::vector<prometheus::MetricFamily> Collect();
  void RecordRpc(RpcChildren* rpc, int code, absl::Duration duration);
  void RecordStore(const char* operation, const absl::Status& status, absl::Duration duration);

  const MetricsOptions options;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::shared_ptr<Collector> collector = std::make_shared<Collector>(this);

  prometheus::Family<Counter>& raises;
  prometheus::Family<Counter>& accepted;
  prometheus::Family<Counter>& completed;
  prometheus::Family<Histogram>& delivery_duration;
  // [sync][delivered]
  Histogram* delivery_histograms[2][2];

  prometheus::Family<Counter>& target_messages;
  prometheus::Family<Counter>& target_connects;
  prometheus::Family<Counter>& target_reconnects;
  prometheus::Family<Counter>& target_connect_failures;
  prometheus::Family<Counter>& target_disconnects;

  prometheus::Family<Counter>& rpc_handled;
  prometheus::Family<Histogram>& rpc_duration;

  prometheus::Family<Counter>& store_operations;
  prometheus::Family<Histogram>& store_duration;

  Capped<EventChildren> events;
  Capped<TargetChildren> targets;
  Capped<RpcChildren> rpcs;

  eventbus::Mutex sources_mu;
  const net::WriterPool* pool ABSL_GUARDED_BY(sources_mu) = nullptr;
  const registry::Registry* subscriptions ABSL_GUARDED_BY(sources_mu) = nullptr;
  const store::SubscriptionStore* store ABSL_GUARDED_BY(sources_mu) = nullptr;

  // Destroyed first (declared last): no scrape runs while the rest goes away.
  std::unique_ptr<prometheus::Exposer> exposer;
};

Metrics::Impl::Impl(MetricsOptions opts)
    : options(opts),
      raises(prometheus::BuildCounter()
                 .Name("eventbus_raises_total")
                 .Help("Raise calls that fanned out (zero subscribers included), by event and mode")
                 .Register(*registry)),
      accepted(prometheus::BuildCounter()
                   .Name("eventbus_deliveries_accepted_total")
                   .Help("Deliveries a Raise took on: one per live subscription it went to")
                   .Register(*registry)),
      completed(
          prometheus::BuildCounter()
              .Name("eventbus_deliveries_completed_total")
              .Help("Deliveries with a final outcome, by event, mode and status (async OK: "
                    "written; async TIMEOUT/CONNECT_FAILED/RESOLVE_FAILED: expired unwritten)")
              .Register(*registry)),
      delivery_duration(prometheus::BuildHistogram()
                            .Name("eventbus_delivery_duration_seconds")
                            .Help("Time from a Raise to each delivery's final outcome, by mode "
                                  "and result (delivered = OK)")
                            .Register(*registry)),
      target_messages(prometheus::BuildCounter()
                          .Name("eventbus_target_messages_total")
                          .Help("Messages completed per target: delivered (written notifications, "
                                "OK replies), expired (deadline before completely written), failed "
                                "(everything else, RPC_ERROR included)")
                          .Register(*registry)),
      target_connects(prometheus::BuildCounter()
                          .Name("eventbus_target_connects_total")
                          .Help("Connections established to a target")
                          .Register(*registry)),
      target_reconnects(prometheus::BuildCounter()
                            .Name("eventbus_target_reconnects_total")
                            .Help("Connections re-established to a target after one was lost")
                            .Register(*registry)),
      target_connect_failures(prometheus::BuildCounter()
                                  .Name("eventbus_target_connect_failures_total")
                                  .Help("Connect or resolve attempts to a target that failed")
                                  .Register(*registry)),
      target_disconnects(prometheus::BuildCounter()
                             .Name("eventbus_target_disconnects_total")
                             .Help("Established connections to a target that were lost")
                             .Register(*registry)),
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
      events(opts.max_events,
             [this](const std::string& event) {
               auto children = std::make_unique<EventChildren>();
               for (bool sync : {false, true}) {
                 ModeScope& m = children->modes[sync];
                 const std::string mode = sync ? "sync" : "async";
                 m.sync = sync;
                 m.raises = &raises.Add({{"event", event}, {"mode", mode}});
                 m.accepted = &accepted.Add({{"event", event}, {"mode", mode}});
                 for (DeliveryCode code : kFinalCodes) {
                   m.completed[static_cast<size_t>(code)] =
                       &completed.Add({{"event", event},
                                       {"mode", mode},
                                       {"status", std::string(net::DeliveryCodeName(code))}});
                 }
               }
               return children;
             }),
      targets(
          opts.max_targets,
          [this](const std::string& target) {
            auto children = std::make_unique<TargetChildren>();
            children->delivered =
                &target_messages.Add({{"target", target}, {"result", "delivered"}});
            children->failed = &target_messages.Add({{"target", target}, {"result", "failed"}});
            children->expired = &target_messages.Add({{"target", target}, {"result", "expired"}});
            children->connects = &target_connects.Add({{"target", target}});
            children->reconnects = &target_reconnects.Add({{"target", target}});
            children->connect_failures = &target_connect_failures.Add({{"target", target}});
            children->disconnects = &target_disconnects.Add({{"target", target}});
            return children;
          }),
      // A server has a handful of methods; the cap only matters if a client could name more.
      rpcs(64, [this](const std::string& method) {
        auto children = std::make_unique<RpcChildren>();
        // "/eventbus.v1.EventBusService/Raise" -> service and method.
        absl::string_view full = method;
        if (absl::ConsumePrefix(&full, "/") && full.find('/') != absl::string_view::npos) {
          size_t slash = full.find('/');
          children->labels = {{"grpc_service", std::string(full.substr(0, slash))},
                              {"grpc_method", std::string(full.substr(slash + 1))}};
        } else {
          children->labels = {{"grpc_service", kOther}, {"grpc_method", std::string(full)}};
        }
        children->duration = &rpc_duration.Add(children->labels, CallBuckets());
        return children;
      }) {
  for (bool sync : {false, true}) {
    for (bool delivered : {false, true}) {
      delivery_histograms[sync][delivered] = &delivery_duration.Add(
          {{"mode", sync ? "sync" : "async"}, {"result", delivered ? "delivered" : "failed"}},
          DeliveryBuckets());
    }
  }
  for (const char* op : {"start", "put", "delete"}) {
    store_duration.Add({{"operation", op}}, CallBuckets());
    for (const char* result : {"ok", "error"}) {
      store_operations.Add({{"operation", op}, {"result", result}});
    }
  }
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

std::vector<prometheus::MetricFamily> Metrics::Impl::Collect() {
  std::vector<prometheus::MetricFamily> out;

  // In flight = accepted - completed. Completions are read first: each was accepted before it
  // completed, so a Raise running meanwhile can only make the figure high, never negative.
  double completed_sum = 0, accepted_sum = 0;
  events.ForEach([&](EventChildren& e) {
    for (const ModeScope& m : e.modes) {
      for (Counter* c : m.completed) {
        if (c != nullptr) completed_sum += c->Value();
      }
    }
  });
  events.ForEach([&](EventChildren& e) {
    for (const ModeScope& m : e.modes) accepted_sum += m.accepted->Value();
  });
  out.push_back(GaugeFamily("eventbus_deliveries_in_flight",
                            "Deliveries accepted without a final outcome yet (queued, being "
                            "written or awaiting a reply)"));
  AddGauge(&out.back(), {}, std::max(0.0, accepted_sum - completed_sum));

  eventbus::MutexLock lock(&sources_mu);
  if (pool != nullptr) {
    std::vector<net::TargetStats> stats = pool->AllStats();
    std::map<std::string, double> queued_by_target;
    std::map<net::ConnState, double> by_state;
    for (net::ConnState s :
         {net::ConnState::kIdle, net::ConnState::kResolving, net::ConnState::kConnecting,
          net::ConnState::kConnected, net::ConnState::kBackoff}) {
      by_state[s] = 0;
    }
    double queued = 0, outstanding = 0;
    for (const net::TargetStats& t : stats) {
      queued_by_target[targets.Label(t.key)] += t.queued_messages;
      queued += t.queued_messages;
      outstanding += t.outstanding_requests;
      by_state[t.state] += 1;
    }
    out.push_back(GaugeFamily("eventbus_target_queued_messages",
                              "Messages queued for a target, not yet completely written"));
    for (const auto& [target, n] : queued_by_target) AddGauge(&out.back(), {{"target", target}}, n);
    out.push_back(GaugeFamily("eventbus_queued_messages",
                              "Messages queued for all targets, not yet completely written"));
    AddGauge(&out.back(), {}, queued);
    out.push_back(GaugeFamily("eventbus_outstanding_requests",
                              "Sync requests written and awaiting their reply, all targets"));
    AddGauge(&out.back(), {}, outstanding);
    out.push_back(GaugeFamily("eventbus_target_connections",
                              "Target connections by state (idle, resolving, connecting, "
                              "connected, backoff)"));
    for (const auto& [state, n] : by_state) {
      AddGauge(&out.back(), {{"state", absl::AsciiStrToLower(net::ConnStateName(state))}}, n);
    }
  }
  if (subscriptions != nullptr) {
    std::map<std::string, double> by_event;
    for (const registry::EventCount& e : subscriptions->Events()) {
      by_event[events.Label(e.event)] += static_cast<double>(e.subscribers);
    }
    out.push_back(GaugeFamily("eventbus_subscriptions", "Subscriptions in the registry"));
    AddGauge(&out.back(), {}, static_cast<double>(subscriptions->size()));
    out.push_back(GaugeFamily("eventbus_event_subscriptions", "Subscriptions per event"));
    for (const auto& [event, n] : by_event) AddGauge(&out.back(), {{"event", event}}, n);
  }
  if (store != nullptr) {
    out.push_back(GaugeFamily("eventbus_store_healthy",
                              "1 while the subscription store is reachable, else 0"));
    AddGauge(&out.back(), {{"store", std::string(store->kind())}}, store->healthy() ? 1 : 0);
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
    return new RpcInterceptor(impl_, impl_->rpcs.Get(method == nullptr ? "" : method));
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

Metrics::~Metrics() { impl_->exposer.reset(); }

absl::Status Metrics::Serve(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError("expected HOST:PORT with a port in 0..65535");
  }
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
    t->delivered->Increment();
  } else if (expired) {
    t->expired->Increment();
  } else {
    t->failed->Increment();
  }
}

void Metrics::OnStateChange(const std::string& target_key, net::ConnState from, net::ConnState to,
                            absl::string_view detail) {
  TargetChildren* t = impl_->targets.Get(target_key);
  if (to == net::ConnState::kConnected) {
    t->connects->Increment();
    // A connection closed for idleness goes away without a state change, so only a loss
    // (connected -> anything else) makes the next connect a reconnect.
    int64_t lost = t->lost.load(std::memory_order_relaxed);
    while (lost > 0 && !t->lost.compare_exchange_weak(lost, lost - 1)) {
    }
    if (lost > 0) t->reconnects->Increment();
  } else if (from == net::ConnState::kConnected) {
    t->disconnects->Increment();
    t->lost.fetch_add(1, std::memory_order_relaxed);
  }
  if (to == net::ConnState::kBackoff) t->connect_failures->Increment();
}

delivery::DeliveryObserver::EventScope* Metrics::OnRaise(const std::string& event, bool sync,
                                                         size_t deliveries) {
  ModeScope* scope = &impl_->events.Get(event)->modes[sync];
  scope->raises->Increment();
  if (deliveries > 0) scope->accepted->Increment(static_cast<double>(deliveries));
  return scope;
}

void Metrics::OnOutcome(EventScope* scope, DeliveryCode code, absl::Duration latency) {
  auto* s = static_cast<ModeScope*>(scope);
  Counter* counter = s->completed[static_cast<size_t>(code)];
  if (counter == nullptr) counter = s->completed[static_cast<size_t>(DeliveryCode::kTimeout)];
  counter->Increment();
  impl_->delivery_histograms[s->sync][code == DeliveryCode::kOk]->Observe(Seconds(latency));
}

}  // namespace eventbus::metrics
