// EventBusServer wires the whole process together: writer pool, registry, store, subscription
// manager, dispatcher and the gRPC server (EventBusService, reflection, grpc.health.v1), whose
// connections come from net::Listener (EventBus accepts them itself, see listener.h). Used by
// server/main.cc and, in-process, by tests (listen on port 0, read port()).
//
// Start-up and health. Start() makes a first attempt at loading the store (StoreLoader) before
// the port opens, so a healthy store serves from the first call. A local store (memory, sqlite)
// that fails it fails Start(): retrying does not mend a corrupt or unwritable file. A remote
// store (etcd) that fails it does not: the port opens anyway and the store thread retries with
// backoff (100 ms doubling to 5 s, +-20%) until it loads, or until Shutdown(). Meanwhile every
// EventBus call answers UNAVAILABLE `store "URL": not loaded yet: <last error>`; health and
// reflection work. grpc.health.v1 then reports, one status per name:
//
//   ""                             liveness: SERVING from the moment the port opens
//   eventbus.v1.EventBusService    readiness: SERVING once the store has loaded; it does not drop
//                                  when the store becomes unreachable later (Raise keeps serving
//                                  the subscriptions already loaded, so readiness must not take
//                                  every replica out of the Service at once)
//   eventbus.store                 SERVING while the store is loaded and reachable (polled every
//                                  store_health_poll)
//
// and NOT_SERVING for all three from Shutdown() on. The store thread does both jobs in turn:
// loading, then copying the store's reachability into "eventbus.store".
#ifndef EVENTBUS_SERVER_SERVICE_SERVER_H_
#define EVENTBUS_SERVER_SERVICE_SERVER_H_

#include <cstddef>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "server/auth/authenticator.h"
#include "server/base/clock.h"
#include "server/base/mutex.h"
#include "server/delivery/dispatcher.h"
#include "server/metrics/metrics.h"
#include "server/net/failure_log.h"
#include "server/net/listener.h"
#include "server/net/pool_observer.h"
#include "server/net/writer_pool.h"
#include "server/policy/destination_policy.h"
#include "server/registry/registry.h"
#include "server/service/eventbus_service.h"
#include "server/service/store_loader.h"
#include "server/store/subscription_manager.h"
#include "server/store/subscription_store.h"

namespace eventbus::service {

// Every setting of the server, with the documented defaults (server/main.cc maps flags onto it).
struct ServerConfig {
  // gRPC listening address; port 0 picks a free port (see EventBusServer::port()).
  std::string listen = "127.0.0.1:50051";
  // Store url: "memory", "sqlite[:PATH]", "etcd://HOST:PORT[,...][/PREFIX]".
  std::string store = "sqlite";
  // TLS to etcd (--store_ca, --store_cert, --store_key): file paths; all empty = plaintext.
  store::StoreTlsFiles store_tls;
  // Where "sqlite" keeps subscriptions.db.
  std::string data_dir = "/var/lib/eventbus";
  // Raise defaults.
  absl::Duration timeout = absl::Milliseconds(1000);
  bool sync_mode = false;
  // Server-wide event_param key ("" = off).
  std::string event_param;
  // FAILOVER skips a failed member for this long.
  absl::Duration failover_timeout = absl::Seconds(30);
  size_t max_params_bytes = 65536;
  // Event loops, queue bounds, connect/reconnect/idle timing, reply size.
  net::PoolOptions pool;
  // Name/socket/member/count limits and the default expiry.
  store::SubscriptionLimits limits;
  // The failure log's summary interval and line caps (net/failure_log.h).
  net::FailureLogOptions failure_log;
  // How often the store's health is copied to the "eventbus.store" health status.
  absl::Duration store_health_poll = absl::Milliseconds(500);
  // Retries of a remote store that could not be loaded at start-up (see the top of this file).
  absl::Duration store_retry_min_backoff = absl::Milliseconds(100);
  absl::Duration store_retry_max_backoff = absl::Seconds(5);

  // gRPC client connections. Beyond max_client_connections open ones (0 = no cap), or with fewer
  // than client_fd_headroom descriptors left under the soft limit (0 = no check), a new
  // connection is closed at once (the client sees UNAVAILABLE). main.cc derives both from the
  // descriptor limit (net/fd_budget.h).
  size_t max_client_connections = 0;
  size_t client_fd_headroom = 0;
  // A connection with no call for this long is closed (GOAWAY); zero means never.
  absl::Duration client_idle_timeout = absl::Minutes(5);
  // A connection must finish its handshake (the client's HTTP/2 preface and SETTINGS) this soon.
  absl::Duration client_handshake_timeout = absl::Seconds(10);
  // The server pings every connection quiet for keepalive_time and closes it when the ping is not
  // answered within keepalive_timeout (dead peers, half-open connections).
  absl::Duration client_keepalive_time = absl::Minutes(1);
  absl::Duration client_keepalive_timeout = absl::Seconds(20);

  // Prometheus metrics: "HOST:PORT" serves GET /metrics there; "" = off. Label caps.
  std::string metrics_listen;
  metrics::MetricsOptions metrics;

  // The destination policy (SPEC §10; --allow_targets, --deny_targets): the operator's entries
  // and whether the built-in ones apply. The server adds its own listening ports (gRPC, metrics)
  // on this host to the defaults and hands the policy to the pool (pool.destination_policy is
  // replaced) and to Subscribe.
  policy::PolicyConfig destination_policy;
  // API TLS (SPEC §10): PEM files of the server's certificate chain and key; both "" = plaintext
  // (the default, as OpenSIPS's clients expect). tls_client_ca: the CA client certificates must
  // chain to; set = every client must present one (mTLS).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  // Bearer tokens and certificate identities with their roles (server/auth/credentials.h); needs
  // TLS. With tls_client_ca and no tokens file, every verified client certificate is an admin.
  std::string auth_tokens_file;
  // How often the tokens file is checked for a change; zero = only on ReloadAuth().
  absl::Duration auth_reload_poll = absl::Seconds(1);
};

// The running server. Thread-safe: Shutdown() and Wait() may be called from any thread.
class EventBusServer {
 public:
  // The health service names (see the top of this file).
  static constexpr char kLivenessHealthService[] = "";
  static constexpr char kReadinessHealthService[] = "eventbus.v1.EventBusService";
  static constexpr char kStoreHealthService[] = "eventbus.store";

  // Builds every component and starts serving. INVALID_ARGUMENT for a bad setting or store url,
  // a local store's own error when it cannot start, UNAVAILABLE when the address cannot be bound.
  // A remote store that cannot be reached is no error: it goes on loading in the background.
  static absl::StatusOr<std::unique_ptr<EventBusServer>> Start(const ServerConfig& config);

  // Shutdown(absl::ZeroDuration()) if not done yet.
  ~EventBusServer();

  // Reports NOT_SERVING, stops accepting connections and calls and lets in-flight ones finish,
  // drains queued deliveries, all within `grace`; then fails what is left (CONNECTION_LOST), stops
  // the pool and the store. Blocking; idempotent.
  void Shutdown(absl::Duration grace);
  // Blocks until Shutdown() has completed.
  void Wait();

  // Client connections accepted and refused (net::Listener's counters).
  net::ListenerStats client_connection_stats() const { return listener_->stats(); }

  // The bound port (useful with port 0) and "host:port" to dial.
  int port() const { return port_; }
  const std::string& address() const { return address_; }
  // The port /metrics is served on; 0 when metrics are off.
  int metrics_port() const { return metrics_ != nullptr ? metrics_->port() : 0; }

  // Reads the tokens file again (SIGHUP): see auth::Authenticator::Reload. OK when there is none.
  absl::Status ReloadAuth();
  // True when calls are authenticated (a tokens file or client certificates).
  bool auth_enabled() const { return authenticator_ != nullptr; }

  // True once the store has loaded (the server is ready).
  bool store_loaded() const { return loader_->loaded(); }

  registry::Registry* registry() { return registry_.get(); }
  store::SubscriptionManager* manager() { return manager_.get(); }
  net::WriterPool* pool() { return pool_.get(); }

 private:
  explicit EventBusServer(const ServerConfig& config);
  // The store thread: retries loading the store until it loads (or Shutdown), then runs
  // HealthLoop.
  void StoreThread();
  // Copies the store's reachability into the "eventbus.store" status until Shutdown.
  void HealthLoop();

  const ServerConfig config_;
  int port_ = 0;
  // Authenticates every call when TLS is on with a tokens file or client certificates; else null.
  // Shared with the server's credentials, which hold it as their auth metadata processor.
  std::shared_ptr<auth::Authenticator> authenticator_;
  std::string address_;

  // Declared in construction order; destroyed in reverse.
  // Metrics (null when off) and the pool's observers: both outlive the pool.
  std::unique_ptr<metrics::Metrics> metrics_;
  // Everything that watches the pool (PoolOptions has one observer: this list); before pool_, so
  // they outlive it.
  net::PoolObserverList pool_observers_;
  // Logs target failures and recoveries (net/failure_log.h).
  std::unique_ptr<net::TargetFailureLog> failure_log_;
  // Asked by the pool at every connect and by every Subscribe: outlives both.
  std::unique_ptr<policy::DestinationPolicy> destination_policy_;
  std::unique_ptr<net::WriterPool> pool_;
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<store::SubscriptionStore> store_;
  std::unique_ptr<store::SubscriptionManager> manager_;
  std::unique_ptr<StoreLoader> loader_;
  std::unique_ptr<delivery::Dispatcher> dispatcher_;
  std::unique_ptr<EventBusServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  // Hands the connections accepted by listener_ to server_.
  std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor_;
  std::unique_ptr<net::Listener> listener_;
  std::thread store_thread_;

  eventbus::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  // Last store health reported, to log changes once.
  bool store_healthy_ ABSL_GUARDED_BY(mu_) = true;
};

}  // namespace eventbus::service

#endif  // EVENTBUS_SERVER_SERVICE_SERVER_H_
