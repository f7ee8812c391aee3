#include "server/service/server.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpc/grpc.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "server/auth/tls_files.h"
#include "server/base/log.h"
#include "server/base/mutex.h"
#include "server/base/version.h"

namespace eventbus::service {
namespace {

absl::Status ValidateConfig(const ServerConfig& config) {
  if (config.listen.empty()) return absl::InvalidArgumentError("listen: empty address");
  if (config.timeout <= absl::ZeroDuration() || config.timeout > absl::Hours(1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "timeout_ms: ", config.timeout / absl::Milliseconds(1), " is outside 1..3600000"));
  }
  if (config.pool.num_loops < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("loops: ", config.pool.num_loops, " is negative (0 means one per core)"));
  }
  if (config.pool.max_queue_messages == 0 || config.pool.max_queue_bytes == 0) {
    return absl::InvalidArgumentError("queue_max_messages and queue_max_bytes must be positive");
  }
  if (config.pool.connect_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("connect_timeout_ms must be positive");
  }
  if (config.pool.min_backoff <= absl::ZeroDuration() ||
      config.pool.max_backoff < config.pool.min_backoff) {
    return absl::InvalidArgumentError(
        "reconnect backoff: need 0 < reconnect_min_backoff_ms <= reconnect_max_backoff_ms");
  }
  if (config.pool.idle_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "idle_timeout_s: ", absl::ToInt64Seconds(config.pool.idle_timeout), " must be positive"));
  }
  if (config.failover_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("failover_timeout_ms: ", absl::ToInt64Milliseconds(config.failover_timeout),
                     " is negative"));
  }
  if (config.pool.max_reply_bytes == 0) {
    return absl::InvalidArgumentError("max_reply_bytes must be positive");
  }
  if (config.limits.max_event_name_bytes == 0) {
    return absl::InvalidArgumentError("max_event_name_bytes must be positive");
  }
  if (config.limits.max_socket_bytes == 0) {
    return absl::InvalidArgumentError("max_socket_bytes must be positive");
  }
  if (config.max_params_bytes == 0) {
    return absl::InvalidArgumentError("max_params_bytes must be positive");
  }
  if (config.failure_log.interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("failure_log_interval_s must be positive");
  }
  if (config.store_health_poll <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("store_health_poll must be positive");
  }
  if (config.store_retry_min_backoff <= absl::ZeroDuration() ||
      config.store_retry_max_backoff < config.store_retry_min_backoff) {
    return absl::InvalidArgumentError(
        "store retry backoff: need 0 < store_retry_min_backoff <= store_retry_max_backoff");
  }
  if (config.client_idle_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("client_idle_timeout_ms must not be negative (0 = never)");
  }
  for (const auto& [name, value] :
       {std::pair<const char*, absl::Duration>{"client_handshake_timeout_ms",
                                               config.client_handshake_timeout},
        {"client_keepalive_time_ms", config.client_keepalive_time},
        {"client_keepalive_timeout_ms", config.client_keepalive_timeout}}) {
    if (value <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": ", value / absl::Milliseconds(1), " must be positive"));
    }
  }
  return absl::OkStatus();
}

// A duration as a gRPC integer channel argument in ms (which is an int).
int ChannelArgMs(absl::Duration duration) {
  return static_cast<int>(
      std::min<int64_t>(absl::ToInt64Milliseconds(duration), std::numeric_limits<int>::max()));
}

// EventBus's own listening ports, which the destination policy denies on this host: a Subscribe
// must not turn EventBus against its own API (SPEC §10). 0 = not (yet) known.
std::vector<policy::OwnPort> OwnPorts(int grpc_port, int metrics_port) {
  std::vector<policy::OwnPort> ports;
  if (grpc_port > 0 && grpc_port <= 65535) {
    ports.push_back({static_cast<uint16_t>(grpc_port), "gRPC (--listen)"});
  }
  if (metrics_port > 0 && metrics_port <= 65535) {
    ports.push_back({static_cast<uint16_t>(metrics_port), "metrics (--metrics_listen)"});
  }
  return ports;
}

// The port of a "host:port" listening address; 0 when it has none (or says 0).
int PortOf(const std::string& listen) {
  size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port)) return 0;
  return port;
}

// "host:port" with the bound port in place of the configured one (which may be 0).
std::string DialAddress(const std::string& listen, int port) {
  size_t colon = listen.rfind(':');
  std::string host = colon == std::string::npos ? listen : listen.substr(0, colon);
  return absl::StrCat(host, ":", port);
}

// The server credentials of `config`: insecure without TLS; TLS (client certificates required
// when tls_client_ca is set) with, when calls are authenticated, the Authenticator as their auth
// metadata processor. INVALID_ARGUMENT naming the flag and file for a bad setting.
absl::Status MakeCredentials(const ServerConfig& config,
                             std::shared_ptr<grpc::ServerCredentials>* credentials,
                             std::shared_ptr<auth::Authenticator>* authenticator) {
  absl::StatusOr<auth::ServerTlsPem> pem =
      auth::LoadServerTls({config.tls_cert, config.tls_key, config.tls_client_ca});
  if (!pem.ok()) return pem.status();
  if (config.tls_cert.empty()) {
    if (!config.auth_tokens_file.empty()) {
      // gRPC's insecure transport cannot run an auth metadata processor, and a token sent in the
      // clear can be read by anyone on the path and replayed.
      return absl::InvalidArgumentError(absl::StrCat(
          "--auth_tokens_file \"", config.auth_tokens_file,
          "\" needs --tls_cert and --tls_key: bearer tokens over plaintext could be read on the "
          "way and replayed"));
    }
    *credentials = grpc::InsecureServerCredentials();
    return absl::OkStatus();
  }
  grpc::SslServerCredentialsOptions ssl(
      pem->client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                             : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_root_certs = pem->client_ca;
  ssl.pem_key_cert_pairs.push_back({pem->private_key, pem->cert_chain});
  std::shared_ptr<grpc::ServerCredentials> ssl_credentials = grpc::SslServerCredentials(ssl);
  if (!config.auth_tokens_file.empty() || !config.tls_client_ca.empty()) {
    auth::AuthenticatorOptions options;
    options.tokens_file = config.auth_tokens_file;
    options.client_certificates = !config.tls_client_ca.empty();
    options.poll_interval = config.auth_reload_poll;
    absl::StatusOr<std::shared_ptr<auth::Authenticator>> created =
        auth::Authenticator::Create(std::move(options));
    if (!created.ok()) return created.status();
    *authenticator = *std::move(created);
    ssl_credentials->SetAuthMetadataProcessor(*authenticator);
  }
  *credentials = std::move(ssl_credentials);
  return absl::OkStatus();
}

}  // namespace

EventBusServer::EventBusServer(const ServerConfig& config) : config_(config) {}

EventBusServer::~EventBusServer() {
  Shutdown(absl::ZeroDuration());
  // Scrapes go on until metrics_ is destroyed, after what they read.
  if (metrics_ != nullptr) metrics_->Detach();
}

absl::StatusOr<std::unique_ptr<EventBusServer>> EventBusServer::Start(const ServerConfig& config) {
  if (absl::Status valid = ValidateConfig(config); !valid.ok()) return valid;
  // TLS files and credentials first: a wrong file fails start-up before anything starts.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  std::shared_ptr<auth::Authenticator> authenticator;
  if (absl::Status made = MakeCredentials(config, &credentials, &authenticator); !made.ok()) {
    return made;
  }
  std::unique_ptr<EventBusServer> server = absl::WrapUnique(new EventBusServer(config));
  server->authenticator_ = std::move(authenticator);
  base::RealClock* clock = base::RealClock::Get();

  net::PoolOptions pool_options = config.pool;
  if (pool_options.observer != nullptr) server->pool_observers_.Add(pool_options.observer);
  // Metrics: served first, so a taken port fails start-up before anything else starts.
  if (!config.metrics_listen.empty()) {
    server->metrics_ = std::make_unique<metrics::Metrics>(config.metrics);
    if (absl::Status served = server->metrics_->Serve(config.metrics_listen); !served.ok()) {
      return absl::Status(served.code(), absl::StrCat("metrics_listen \"", config.metrics_listen,
                                                      "\": ", served.message()));
    }
    server->pool_observers_.Add(server->metrics_.get());
  }
  pool_options.observer = &server->pool_observers_;
  // The destination policy, with the own ports known now; the gRPC port is set again once bound
  // (--listen may say port 0), before the first call can arrive.
  server->destination_policy_ = std::make_unique<policy::DestinationPolicy>(
      config.destination_policy, policy::HostAddresses());
  const int metrics_port = server->metrics_ != nullptr ? server->metrics_->port() : 0;
  server->destination_policy_->SetOwnPorts(OwnPorts(PortOf(config.listen), metrics_port));
  pool_options.destination_policy = server->destination_policy_.get();
  // The failure log: a target's failures, recoveries and connection changes, rate-limited.
  server->failure_log_ = std::make_unique<net::TargetFailureLog>(clock, config.failure_log);
  server->failure_log_->StartTicking(absl::Seconds(1));
  server->pool_observers_.Add(server->failure_log_.get());

  absl::StatusOr<std::unique_ptr<net::WriterPool>> pool = net::WriterPool::Create(pool_options);
  if (!pool.ok()) return pool.status();
  server->pool_ = *std::move(pool);
  server->registry_ = std::make_unique<registry::Registry>();

  absl::StatusOr<std::unique_ptr<store::SubscriptionStore>> store =
      store::OpenStore(config.store, config.data_dir, config.store_tls);
  if (!store.ok()) return store.status();
  server->store_ = *std::move(store);
  if (server->metrics_ != nullptr) {
    server->store_ = server->metrics_->InstrumentStore(std::move(server->store_));
    server->metrics_->Attach(server->pool_.get(), server->registry_.get(), server->store_.get());
  }
  server->manager_ = std::make_unique<store::SubscriptionManager>(
      server->registry_.get(), server->store_.get(), clock, config.limits);
  // Subscribe checks each target against the destination policy, names on the pool's resolver.
  server->manager_->set_destination_check(
      [pool = server->pool_.get()](const uri::TcpTarget& target,
                                   absl::AnyInvocable<void(absl::Status)> done) {
        pool->CheckDestination(target, std::move(done));
      });
  StoreLoader::Options loader_options;
  loader_options.backoff.initial = config.store_retry_min_backoff;
  loader_options.backoff.max = config.store_retry_max_backoff;
  loader_options.retry = server->store_->remote();
  server->loader_ = std::make_unique<StoreLoader>(
      config.store, [manager = server->manager_.get()] { return manager->Start(); }, clock,
      loader_options);
  // The first attempt, before the port opens (see server.h): final for a local store.
  server->loader_->Step();
  if (server->loader_->state() == StoreLoader::State::kFailed) {
    return server->loader_->last_error();
  }

  delivery::DispatcherOptions dispatcher_options;
  dispatcher_options.event_param = config.event_param;
  dispatcher_options.failover_timeout = config.failover_timeout;
  dispatcher_options.observer = server->metrics_.get();
  server->dispatcher_ =
      std::make_unique<delivery::Dispatcher>(server->pool_.get(), clock, dispatcher_options);

  ServiceOptions service_options;
  service_options.default_sync = config.sync_mode;
  service_options.default_timeout = config.timeout;
  service_options.max_params_bytes = config.max_params_bytes;
  service_options.max_event_name_bytes = config.limits.max_event_name_bytes;
  service_options.auth_enabled = server->authenticator_ != nullptr;
  server->service_ = std::make_unique<EventBusServiceImpl>(
      server->registry_.get(), server->manager_.get(), server->dispatcher_.get(),
      server->pool_.get(), clock, service_options, server->loader_.get());

  // EventBus accepts the connections itself (net::Listener: gRPC 1.51's own listener stops for
  // good at the first EMFILE, and has no connection cap) and hands them to gRPC through an
  // external-connection acceptor, which builds the same transport, credentials included, as a
  // listening port would. Bound after the first attempt at loading the store.
  net::ListenerOptions listener_options;
  listener_options.max_connections = config.max_client_connections;
  listener_options.fd_headroom = config.client_fd_headroom;
  absl::StatusOr<std::unique_ptr<net::Listener>> listener =
      net::Listener::Bind(config.listen, listener_options);
  if (!listener.ok()) return listener.status();
  server->listener_ = *std::move(listener);
  server->destination_policy_->SetOwnPorts(OwnPorts(server->listener_->port(), metrics_port));
  EB_LOG(kInfo, "destination policy",
         "entries=", base::LogValue(server->destination_policy_->Describe()));

  // Both are process-wide switches read by the next ServerBuilder.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  server->acceptor_ = builder.experimental().AddExternalConnectionAcceptor(
      grpc::ServerBuilder::experimental_type::ExternalConnectionType::FROM_FD, credentials);
  // Connections that never finish the handshake, stay idle, or whose peer is gone are closed.
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             ChannelArgMs(config.client_handshake_timeout));
  if (config.client_idle_timeout > absl::ZeroDuration()) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                               ChannelArgMs(config.client_idle_timeout));
  }
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             ChannelArgMs(config.client_keepalive_time));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             ChannelArgMs(config.client_keepalive_timeout));
  // Ping connections without calls too (an idle half-open one is the kind that leaks), with no
  // cap on pings between data frames (gRPC's default of 2 would stop the keepalive pings).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Clients' own keepalive pings are welcome every 10 s, with or without calls (gRPC's default
  // answers a ping without calls more often than every 2 h with GOAWAY "too_many_pings").
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  // First: it records the caller and removes the token before anything else sees the call.
  if (server->authenticator_ != nullptr) {
    creators.push_back(server->authenticator_->NewRecordCallerInterceptorFactory());
  }
  if (server->metrics_ != nullptr) creators.push_back(server->metrics_->NewRpcInterceptorFactory());
  if (!creators.empty()) builder.experimental().SetInterceptorCreators(std::move(creators));
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr) {
    return absl::InternalError(
        absl::StrCat("listen \"", config.listen, "\": gRPC server did not start"));
  }
  server->port_ = server->listener_->port();
  server->address_ = DialAddress(config.listen, server->port_);
  int port = server->port_;
  // The server has started (the acceptor drops connections handed to it before that).
  grpc::experimental::ExternalConnectionAcceptor* acceptor = server->acceptor_.get();
  server->listener_->Start([acceptor](int listen_fd, int fd) {
    grpc::experimental::ExternalConnectionAcceptor::NewConnectionParameters params;
    params.listener_fd = listen_fd;
    params.fd = fd;
    acceptor->HandleNewConnection(&params);
  });

  // The statuses of server.h; the store thread moves the last two once the store has loaded.
  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  const bool loaded = server->loader_->loaded();
  const bool store_healthy = loaded && server->store_->healthy();
  {
    eventbus::MutexLock lock(&server->mu_);
    server->store_healthy_ = store_healthy;
  }
  health->SetServingStatus(kLivenessHealthService, true);
  health->SetServingStatus(kReadinessHealthService, loaded);
  health->SetServingStatus(kStoreHealthService, store_healthy);
  server->store_thread_ = std::thread([s = server.get()] { s->StoreThread(); });

  EB_LOG(kInfo, "eventbusd serving", "version=", base::LogValue(base::VersionString()),
         " listen=", base::LogValue(server->address_), " port=", port,
         " store=", base::LogValue(config.store), " store_loaded=", loaded ? "true" : "false",
         " loops=", server->pool_->num_loops(), " sync_mode=", config.sync_mode ? "true" : "false",
         " timeout_ms=", config.timeout / absl::Milliseconds(1),
         " max_client_connections=", config.max_client_connections,
         " metrics_listen=", base::LogValue(config.metrics_listen),
         " tls=", config.tls_cert.empty() ? "off" : "on",
         " client_certificates=", config.tls_client_ca.empty() ? "off" : "required",
         " auth=", server->authenticator_ != nullptr ? "on" : "off");
  return server;
}

absl::Status EventBusServer::ReloadAuth() {
  if (authenticator_ == nullptr) return absl::OkStatus();
  return authenticator_->Reload("SIGHUP");
}

void EventBusServer::StoreThread() {
  // Loading: attempts as the loader schedules them, until it loads or Shutdown begins. An attempt
  // in progress delays Shutdown by at most its own length (etcd: call_timeout per endpoint).
  while (!loader_->loaded()) {
    absl::Time next = loader_->Step();
    if (loader_->loaded()) break;
    eventbus::MutexLock lock(&mu_);
    // The loader's clock is the real clock here (Start), so its instants are wall-clock time.
    if (mu_.AwaitWithDeadline(&stopping_, next)) return;
  }
  {
    eventbus::MutexLock lock(&mu_);
    if (stopping_) return;
    store_healthy_ = store_->healthy();
    grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
    health->SetServingStatus(kStoreHealthService, store_healthy_);
    health->SetServingStatus(kReadinessHealthService, true);
  }
  HealthLoop();
}

void EventBusServer::HealthLoop() {
  eventbus::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(&stopping_, config_.store_health_poll)) {
    bool healthy = store_->healthy();
    if (healthy == store_healthy_) continue;
    store_healthy_ = healthy;
    // SetServingStatus takes gRPC's own lock only; it never calls back into us.
    server_->GetHealthCheckService()->SetServingStatus(kStoreHealthService, healthy);
    if (healthy) {
      EB_LOG(kInfo, "store reachable again", "store=", store_->kind());
    } else {
      EB_LOG(kWarning, "store unreachable; lists may be stale", "store=", store_->kind());
    }
  }
}

void EventBusServer::Shutdown(absl::Duration grace) {
  {
    eventbus::MutexLock lock(&mu_);
    if (stopping_) {
      mu_.Await(&stopped_);
      return;
    }
    stopping_ = true;
  }
  if (store_thread_.joinable()) store_thread_.join();
  if (authenticator_ != nullptr) authenticator_->Stop();
  absl::Time deadline = absl::Now() + grace;
  if (server_ != nullptr) {
    EB_LOG(kInfo, "shutting down", "grace_ms=", grace / absl::Milliseconds(1));
    // Every service reports NOT_SERVING from here on.
    server_->GetHealthCheckService()->Shutdown();
    // No new connections from here on (the kernel refuses them), and none handed to gRPC after
    // it shut down (its acceptor would neither serve nor close one).
    listener_->Stop();
    // grpc::Server::Shutdown stops accepting, waits for in-flight calls until the deadline, then
    // cancels them, and returns only once each call has finished. A sync Raise finishes when its
    // deliveries have outcomes, which pool_->Shutdown() forces; so it runs aside while this thread
    // drains the pool and, at the deadline, stops it.
    eventbus::Notification server_down;
    std::thread shutdown_thread([this, deadline, &server_down] {
      server_->Shutdown(absl::ToChronoTime(deadline));
      server_down.Notify();
    });
    server_down.WaitForNotificationWithDeadline(deadline);
    bool drained = pool_->Drain(deadline);
    if (!drained) EB_LOG(kWarning, "grace period over; failing undelivered messages");
    pool_->Shutdown();
    shutdown_thread.join();
  } else if (pool_ != nullptr) {
    if (listener_ != nullptr) listener_->Stop();
    pool_->Shutdown();
  }
  if (manager_ != nullptr) manager_->Stop();
  if (server_ != nullptr) EB_LOG(kInfo, "stopped");
  eventbus::MutexLock lock(&mu_);
  stopped_ = true;
}

void EventBusServer::Wait() {
  eventbus::MutexLock lock(&mu_);
  mu_.Await(&stopped_);
}

}  // namespace eventbus::service
