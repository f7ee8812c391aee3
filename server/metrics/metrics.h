// Prometheus metrics (SPEC §9): counts what the dispatcher, the writer pool, the store and the gRPC
// server report through their seams (delivery::DeliveryObserver, net::PoolObserver, a store
// wrapper, a gRPC interceptor), reads gauges (queues, connections, subscriptions, store health)
// at scrape time, and serves them on --metrics_listen. The only code that uses prometheus-cpp;
// sits above delivery/ and store/, below service/, which wires it in.
#ifndef EVENTBUS_SERVER_METRICS_METRICS_H_
#define EVENTBUS_SERVER_METRICS_METRICS_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/delivery/delivery_observer.h"
#include "server/net/outcome.h"
#include "server/net/pool_observer.h"
#include "server/net/writer_pool.h"
#include "server/registry/registry.h"
#include "server/store/subscription_store.h"

namespace grpc::experimental {
class ServerInterceptorFactoryInterface;
}  // namespace grpc::experimental

namespace eventbus::metrics {

struct MetricsOptions {
  // Distinct event names given their own `event` label value; later ones share event="other".
  size_t max_events = 100;
  // The same for `target` ("host:port") label values: target="other" beyond.
  size_t max_targets = 100;
};

// Thread-safe: the observer methods are called from loop, gRPC and store threads at once, scrapes
// come from the HTTP server's threads.
class Metrics final : public net::PoolObserver, public delivery::DeliveryObserver {
 public:
  explicit Metrics(MetricsOptions options);
  // Stops serving first (no scrape runs after it returns).
  ~Metrics() override;
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Serves GET /metrics on `address` ("HOST:PORT", numeric host; port 0 picks one, see port())
  // until destroyed. INVALID_ARGUMENT for an address without a port, UNAVAILABLE when it cannot
  // be bound (e.g. the port is taken); the message says why, the caller names the setting.
  absl::Status Serve(const std::string& address);
  // The port /metrics is served on; 0 when not serving.
  int port() const;

  // Gives the scrape-time gauges what they read (any may be null). Detach() before any of them is
  // destroyed; a scrape then reports the counters only.
  void Attach(const net::WriterPool* pool, const registry::Registry* registry,
              const store::SubscriptionStore* store);
  void Detach();

  // Every metric in the Prometheus text format, as GET /metrics returns it.
  std::string Scrape() const;

  // Wraps `store` so that Start, Put and Delete are counted and timed. The wrapper uses this
  // object: it must not outlive it.
  std::unique_ptr<store::SubscriptionStore> InstrumentStore(
      std::unique_ptr<store::SubscriptionStore> store);

  // A gRPC server interceptor factory (ServerBuilder::experimental().SetInterceptorCreators) that
  // counts every call by service, method and status code, and times it. Its interceptors use this
  // object: the gRPC server must be destroyed first.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewRpcInterceptorFactory();

  // net::PoolObserver.
  void OnComplete(const std::string& target_key, const net::Outcome& outcome, bool expired,
                  absl::Duration latency) override;
  void OnWritten(const std::string& target_key, size_t count) override;
  void OnStateChange(const std::string& target_key, net::ConnState from, net::ConnState to,
                     absl::string_view detail) override;
  void OnDestinationDenied(const std::string& target_key, net::DenialStage stage,
                           absl::string_view detail) override;

  // delivery::DeliveryObserver.
  EventScope* OnRaise(const std::string& event, bool sync, size_t deliveries) override;
  void OnOutcome(EventScope* scope, net::DeliveryCode code, absl::Duration latency) override;
  void OnOutcomes(EventScope* scope, net::DeliveryCode code, absl::Duration latency,
                  size_t count) override;

  // The implementation (metrics.cc), named here for its helpers.
  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace eventbus::metrics

#endif  // EVENTBUS_SERVER_METRICS_METRICS_H_
