#include "server/store/etcd_store.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "etcd/mvccpb/kv.pb.h"
#include "server/base/log.h"
#include "server/base/mutex.h"
#include "server/store/store_codec.h"

namespace eventbus::store {
namespace {

constexpr absl::Duration kInitialBackoff = absl::Milliseconds(100);
// What a put request adds to its key and value on the way into etcd's raft log (protobuf tags and
// lengths, the lease, the request header), rounded up.
constexpr size_t kRequestOverheadBytes = 64;

// Returns the smallest key greater than every key starting with `prefix` (etcd's range_end for a
// prefix): the last byte below 0xff incremented, what follows it dropped.
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    unsigned char last = static_cast<unsigned char>(prefix.back());
    if (last < 0xff) {
      prefix.back() = static_cast<char>(last + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');  // "\0" means "to the end of the keyspace"
}

// etcd leases have whole-second TTLs; rounding up means etcd never removes a subscription early
// (the manager removes it locally at the exact instant anyway).
int64_t LeaseTtlSeconds(absl::Time expire, absl::Time now) {
  int64_t seconds = absl::ToInt64Seconds(absl::Ceil(expire - now, absl::Seconds(1)));
  return std::max<int64_t>(seconds, 1);
}

// One etcd member: its own channel (and so its own connection) and stubs.
struct Endpoint {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::unique_ptr<etcdserverpb::Watch::Stub> watch;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease;
};

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(
    const std::optional<EtcdStoreOptions::Tls>& tls) {
  if (!tls.has_value()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = tls->ca_pem;
  ssl.pem_private_key = tls->key_pem;
  ssl.pem_cert_chain = tls->cert_pem;
  return grpc::SslCredentials(ssl);
}

std::unique_ptr<Endpoint> MakeEndpoint(std::string address,
                                       const std::optional<EtcdStoreOptions::Tls>& tls) {
  grpc::ChannelArguments args;
  // Each store gets its own connections: two stores in one process (tests, two "replicas") must
  // not share a subchannel.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // After etcd comes back, reconnect within about a second (gRPC's default backoff grows to 120 s
  // and calls fail fast meanwhile).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Detect a silently dead member under an idle watch. etcd refuses pings more often than every
  // 5 s (--grpc-keepalive-min-time), and by default gRPC stops pinging an idle stream after two.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // A full Range of a large registry exceeds gRPC's 4 MiB default.
  args.SetMaxReceiveMessageSize(256 << 20);

  auto endpoint = std::make_unique<Endpoint>();
  endpoint->address = std::move(address);
  endpoint->channel = grpc::CreateCustomChannel(endpoint->address, ChannelCredentials(tls), args);
  endpoint->kv = etcdserverpb::KV::NewStub(endpoint->channel);
  endpoint->watch = etcdserverpb::Watch::NewStub(endpoint->channel);
  endpoint->lease = etcdserverpb::Lease::NewStub(endpoint->channel);
  return endpoint;
}

// Starts one asynchronous unary call on `endpoint`.
template <typename Request, typename Response>
using AsyncMethod = void (*)(Endpoint& endpoint, grpc::ClientContext* context,
                             const Request* request, Response* response,
                             std::function<void(grpc::Status)> done);

void AsyncPut(Endpoint& e, grpc::ClientContext* c, const etcdserverpb::PutRequest* q,
              etcdserverpb::PutResponse* r, std::function<void(grpc::Status)> done) {
  e.kv->async()->Put(c, q, r, std::move(done));
}
void AsyncDeleteRange(Endpoint& e, grpc::ClientContext* c,
                      const etcdserverpb::DeleteRangeRequest* q,
                      etcdserverpb::DeleteRangeResponse* r,
                      std::function<void(grpc::Status)> done) {
  e.kv->async()->DeleteRange(c, q, r, std::move(done));
}
void AsyncLeaseGrant(Endpoint& e, grpc::ClientContext* c, const etcdserverpb::LeaseGrantRequest* q,
                     etcdserverpb::LeaseGrantResponse* r, std::function<void(grpc::Status)> done) {
  e.lease->async()->LeaseGrant(c, q, r, std::move(done));
}
void AsyncLeaseRevoke(Endpoint& e, grpc::ClientContext* c,
                      const etcdserverpb::LeaseRevokeRequest* q,
                      etcdserverpb::LeaseRevokeResponse* r,
                      std::function<void(grpc::Status)> done) {
  e.lease->async()->LeaseRevoke(c, q, r, std::move(done));
}

}  // namespace

class EtcdStore::Impl {
 public:
  explicit Impl(EtcdStoreOptions options);

  absl::Status Start(Listener* listener);
  void Stop();
  void Write(bool put, registry::SubscriptionPtr sub, Done done);
  bool healthy() const { return healthy_.load(); }
  void RewatchFrom(int64_t revision);

 private:
  // What this replica last applied for one key: the revision of the change.
  struct KeyState {
    int64_t revision = 0;
  };

  // The whole prefix at one revision.
  struct Snapshot {
    int64_t revision = 0;
    std::vector<registry::SubscriptionPtr> subs;
    absl::flat_hash_map<std::string, KeyState> keys;
  };

  // One Put or Delete, from the first call to done.
  struct WriteOp {
    bool put = true;
    registry::SubscriptionPtr sub;
    Done done;
    std::string key;
    // The encoded subscription (put only), checked against max_request_bytes before anything is
    // sent.
    std::string value;
    absl::Time deadline;
    // The lease granted for this write (0: none).
    int64_t new_lease = 0;
  };

  enum class WatchEnd { kStopped, kRewatch, kResync, kBroken };

  std::string Describe(const Endpoint& endpoint) const {
    return absl::StrCat("store etcd (", endpoint.address, ")");
  }
  Endpoint& Current(size_t* index) {
    *index = current_.load();
    return *endpoints_[*index % endpoints_.size()];
  }
  // Moves to the next endpoint unless another thread already moved away from `index`.
  void Rotate(size_t index) { current_.compare_exchange_strong(index, index + 1); }

  // Reads the whole prefix from the current endpoint (sync; watch and Start threads only).
  absl::StatusOr<Snapshot> Read(absl::Time deadline, bool wait_for_ready);
  // Delivers `snapshot` to the listener and makes it the base for skipping stale events.
  void ApplySnapshot(Snapshot snapshot);

  void WatchLoop(int64_t revision);
  // Watches from *revision + 1 until the stream ends, applying events and advancing *revision.
  WatchEnd WatchOnce(int64_t* revision, int64_t* rewatch_from);
  void ApplyWatchResponse(const etcdserverpb::WatchResponse& response, int64_t* revision);
  // Waits for `delay` (with jitter) unless Stop comes first; returns false when stopping.
  bool Backoff(absl::Duration delay);

  void GrantLease(std::shared_ptr<WriteOp> op);
  void PutKey(std::shared_ptr<WriteOp> op);
  void DeleteKey(std::shared_ptr<WriteOp> op);
  void RevokeLease(int64_t lease);
  // The error for a put etcd refused as too large.
  absl::Status TooLarge(const WriteOp& op, absl::string_view why) const;
  void Finish(std::shared_ptr<WriteOp> op, absl::Status status);
  // Records this replica's own acknowledged change, so its watch event is recognised as applied.
  void RecordAck(const std::string& id, int64_t revision);
  void SetHealthy(bool healthy, absl::string_view why);

  // Bookkeeping for Stop: every asynchronous chain (a write, a revoke) is counted while in flight.
  bool BeginCall();
  void EndCall();
  // And every gRPC call a chain makes, until gRPC has released what it holds for it (the
  // chain's done runs inside the call's callback, before gRPC lets go of the call).
  class RpcInFlight {
   public:
    explicit RpcInFlight(Impl* impl) : impl_(impl) {
      eventbus::MutexLock lock(&impl_->mu_);
      ++impl_->rpcs_in_flight_;
    }
    ~RpcInFlight() {
      eventbus::MutexLock lock(&impl_->mu_);
      --impl_->rpcs_in_flight_;
    }
    RpcInFlight(const RpcInFlight&) = delete;
    RpcInFlight& operator=(const RpcInFlight&) = delete;

   private:
    Impl* const impl_;
  };

  template <typename Request, typename Response>
  void Unary(AsyncMethod<Request, Response> method, std::shared_ptr<const Request> request,
             absl::Time deadline, size_t attempt,
             std::function<void(const absl::Status&, const Response&)> done);

  const EtcdStoreOptions options_;
  const std::string key_prefix_;  // PREFIX/subscriptions/
  const std::string range_end_;
  const std::string name_;  // "store etcd (a:1,b:2)"
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::atomic<size_t> current_{0};
  // Written only under apply_mu_, together with the OnHealth call; read anywhere.
  std::atomic<bool> healthy_{true};

  eventbus::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int rpcs_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::ClientContext* active_watch_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::optional<int64_t> rewatch_from_ ABSL_GUARDED_BY(mu_);
  std::thread watch_thread_;

  // Held across every listener call, so calls never overlap, and by RecordAck, so an event the
  // watch decided to deliver is delivered before the caller's done applies a newer change.
  eventbus::Mutex apply_mu_;
  Listener* listener_ ABSL_GUARDED_BY(apply_mu_) = nullptr;
  // Short-held; never across a listener call, so Write (which may come from any thread) only
  // needs this one.
  eventbus::Mutex keys_mu_ ABSL_ACQUIRED_AFTER(apply_mu_);
  absl::flat_hash_map<std::string, KeyState> keys_ ABSL_GUARDED_BY(keys_mu_);
  // The newest revision delivered to the listener (by the watch or a snapshot).
  int64_t applied_revision_ ABSL_GUARDED_BY(keys_mu_) = 0;
};

namespace {

std::string NormalisePrefix(std::string prefix) {
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  return prefix;
}

std::string StripScheme(std::string endpoint) {
  if (absl::StartsWith(endpoint, "http://")) endpoint.erase(0, 7);
  if (absl::StartsWith(endpoint, "https://")) endpoint.erase(0, 8);
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  return endpoint;
}

}  // namespace

EtcdStore::Impl::Impl(EtcdStoreOptions options)
    : options_(std::move(options)),
      key_prefix_(absl::StrCat(NormalisePrefix(options_.prefix), "/subscriptions/")),
      range_end_(PrefixEnd(key_prefix_)),
      name_(absl::StrCat("store etcd (", absl::StrJoin(options_.endpoints, ","), ")")) {
  for (const std::string& address : options_.endpoints) {
    endpoints_.push_back(MakeEndpoint(StripScheme(address), options_.tls));
  }
}

absl::Status EtcdStore::Impl::Start(Listener* listener) {
  if (endpoints_.empty()) return absl::InvalidArgumentError("store etcd: no endpoint");
  {
    eventbus::MutexLock lock(&mu_);
    if (started_) return absl::FailedPreconditionError(absl::StrCat(name_, ": already started"));
  }
  {
    eventbus::MutexLock lock(&apply_mu_);
    listener_ = listener;
  }
  // Try every endpoint in turn, with backoff, until one answers or start_timeout passes.
  const absl::Time give_up = absl::Now() + options_.start_timeout;
  absl::Duration backoff = kInitialBackoff;
  absl::Status last;
  for (;;) {
    for (size_t i = 0; i < endpoints_.size(); ++i) {
      absl::Time deadline = absl::Now() + options_.call_timeout;
      if (options_.start_timeout > absl::ZeroDuration()) deadline = std::min(give_up, deadline);
      absl::StatusOr<Snapshot> snapshot = Read(deadline, /*wait_for_ready=*/false);
      if (snapshot.ok()) {
        int64_t revision = snapshot->revision;
        EB_LOG(kInfo, "etcd: loaded subscriptions", "store=", base::LogValue(name_),
               " count=", snapshot->subs.size(), " revision=", revision);
        ApplySnapshot(*std::move(snapshot));
        {
          eventbus::MutexLock lock(&mu_);
          started_ = true;
        }
        watch_thread_ = std::thread([this, revision] { WatchLoop(revision); });
        return absl::OkStatus();
      }
      last = snapshot.status();
    }
    if (absl::Now() + backoff >= give_up) break;
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  // `last` names the endpoint that failed last (every one was tried).
  if (options_.start_timeout <= absl::ZeroDuration()) return absl::UnavailableError(last.message());
  return absl::UnavailableError(absl::StrCat(last.message(), " (gave up after ",
                                             absl::FormatDuration(options_.start_timeout), ")"));
}

void EtcdStore::Impl::Stop() {
  {
    eventbus::MutexLock lock(&mu_);
    if (!started_ || stopping_) return;
    stopping_ = true;
    if (active_watch_ != nullptr) active_watch_->TryCancel();
  }
  watch_thread_.join();
  eventbus::MutexLock lock(&mu_);
  mu_.Await([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return in_flight_ == 0 && rpcs_in_flight_ == 0;
  });
}

bool EtcdStore::Impl::BeginCall() {
  eventbus::MutexLock lock(&mu_);
  if (!started_ || stopping_) return false;
  ++in_flight_;
  return true;
}

void EtcdStore::Impl::EndCall() {
  eventbus::MutexLock lock(&mu_);
  --in_flight_;
}

void EtcdStore::Impl::SetHealthy(bool healthy, absl::string_view why) {
  // healthy_ only changes under apply_mu_, so an equal value needs no lock (the common case: a
  // successful call while healthy).
  if (healthy_.load() == healthy) return;
  eventbus::MutexLock lock(&apply_mu_);
  if (healthy_.load() == healthy) return;
  healthy_.store(healthy);
  if (healthy) {
    EB_LOG(kInfo, "etcd: reachable again", "store=", base::LogValue(name_));
  } else {
    EB_LOG(kWarning, "etcd: unreachable", "store=", base::LogValue(name_),
           " error=", base::LogValue(why));
  }
  if (listener_ != nullptr) listener_->OnHealth(healthy);
}

absl::StatusOr<EtcdStore::Impl::Snapshot> EtcdStore::Impl::Read(absl::Time deadline,
                                                                bool wait_for_ready) {
  size_t index = 0;
  Endpoint& endpoint = Current(&index);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  context.set_wait_for_ready(wait_for_ready);
  etcdserverpb::RangeRequest request;
  request.set_key(key_prefix_);
  request.set_range_end(range_end_);
  etcdserverpb::RangeResponse response;
  grpc::Status status = endpoint.kv->Range(&context, request, &response);
  if (!status.ok()) {
    Rotate(index);
    return absl::UnavailableError(
        absl::StrCat(Describe(endpoint), ": read ", key_prefix_, ": ", status.error_message()));
  }
  Snapshot snapshot;
  snapshot.revision = response.header().revision();
  snapshot.subs.reserve(response.kvs_size());
  for (const mvccpb::KeyValue& kv : response.kvs()) {
    std::string id = kv.key().substr(key_prefix_.size());
    snapshot.keys[id] = KeyState{kv.mod_revision()};
    absl::StatusOr<registry::SubscriptionPtr> sub = DecodeSubscriptionJson(kv.value());
    if (!sub.ok() || (*sub)->id != id) {
      EB_LOG(kWarning, "etcd: skipping a stored subscription", "store=", base::LogValue(name_),
             " key=", base::LogValue(kv.key()),
             " error=", base::LogValue(sub.ok() ? "id differs from key" : sub.status().message()));
      continue;
    }
    snapshot.subs.push_back(*std::move(sub));
  }
  return snapshot;
}

void EtcdStore::Impl::ApplySnapshot(Snapshot snapshot) {
  eventbus::MutexLock lock(&apply_mu_);
  {
    // Acknowledgements recorded before this snapshot are forgotten: OnReload resets the listener
    // to the snapshot's revision, so every later event must be applied again, own ones included.
    eventbus::MutexLock keys_lock(&keys_mu_);
    keys_ = std::move(snapshot.keys);
    applied_revision_ = snapshot.revision;
  }
  listener_->OnReload(std::move(snapshot.subs));
}

void EtcdStore::Impl::RewatchFrom(int64_t revision) {
  eventbus::MutexLock lock(&mu_);
  rewatch_from_ = revision;
  if (active_watch_ != nullptr) active_watch_->TryCancel();
}

bool EtcdStore::Impl::Backoff(absl::Duration delay) {
  static thread_local absl::BitGen gen;
  // Jitter in [delay/2, delay]: replicas that lost etcd together do not return in lockstep.
  absl::Duration wait = delay / 2 + absl::Uniform(gen, 0.0, 0.5) * delay;
  eventbus::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(&stopping_, wait);
  return !stopping_;
}

void EtcdStore::Impl::WatchLoop(int64_t revision) {
  absl::Duration backoff = kInitialBackoff;
  bool resync = false;
  for (;;) {
    if (resync) {
      absl::StatusOr<Snapshot> snapshot =
          Read(absl::Now() + options_.call_timeout, /*wait_for_ready=*/false);
      if (!snapshot.ok()) {
        SetHealthy(false, snapshot.status().message());
        if (!Backoff(backoff)) return;
        backoff = std::min(backoff * 2, options_.max_backoff);
        continue;
      }
      revision = snapshot->revision;
      EB_LOG(kInfo, "etcd: resynchronised", "store=", base::LogValue(name_),
             " count=", snapshot->subs.size(), " revision=", revision);
      ApplySnapshot(*std::move(snapshot));
      SetHealthy(true, "");
      resync = false;
    }
    int64_t rewatch_from = 0;
    bool broken_at_once = false;
    switch (WatchOnce(&revision, &rewatch_from)) {
      case WatchEnd::kStopped:
        return;
      case WatchEnd::kRewatch:
        revision = rewatch_from - 1;
        continue;
      case WatchEnd::kResync:
        resync = true;
        backoff = kInitialBackoff;
        continue;
      case WatchEnd::kBroken:
        resync = true;
        broken_at_once = true;
        break;
    }
    if (broken_at_once) {
      // Pause before the resync read so a member that accepts connections but fails every watch
      // is not hammered; the read itself reports health.
      if (!Backoff(backoff)) return;
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  }
}

EtcdStore::Impl::WatchEnd EtcdStore::Impl::WatchOnce(int64_t* revision, int64_t* rewatch_from) {
  size_t index = 0;
  Endpoint& endpoint = Current(&index);
  grpc::ClientContext context;
  {
    eventbus::MutexLock lock(&mu_);
    if (stopping_) return WatchEnd::kStopped;
    if (rewatch_from_.has_value()) {
      *rewatch_from = *rewatch_from_;
      rewatch_from_.reset();
      return WatchEnd::kRewatch;
    }
    // Stop and RewatchFrom cancel through this pointer (a cancel before the call starts applies
    // when it starts).
    active_watch_ = &context;
  }
  std::unique_ptr<grpc::ClientReaderWriter<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>>
      stream = endpoint.watch->Watch(&context);
  etcdserverpb::WatchRequest request;
  etcdserverpb::WatchCreateRequest* create = request.mutable_create_request();
  create->set_key(key_prefix_);
  create->set_range_end(range_end_);
  create->set_start_revision(*revision + 1);
  create->set_progress_notify(true);

  WatchEnd end = WatchEnd::kBroken;
  bool created = false;
  if (stream->Write(request)) {
    etcdserverpb::WatchResponse response;
    while (stream->Read(&response)) {
      if (response.compact_revision() != 0) {
        // The history from *revision + 1 is gone: only a fresh read can restore the state.
        EB_LOG(kWarning, "etcd: watch fell behind a compaction, resynchronising",
               "store=", base::LogValue(name_), " revision=", *revision,
               " compact_revision=", response.compact_revision());
        end = WatchEnd::kResync;
        break;
      }
      if (response.canceled()) {
        EB_LOG(kWarning, "etcd: watch canceled, resynchronising", "store=", base::LogValue(name_),
               " reason=", base::LogValue(response.cancel_reason()));
        end = WatchEnd::kResync;
        break;
      }
      if (response.created()) {
        created = true;
        SetHealthy(true, "");
        continue;
      }
      ApplyWatchResponse(response, revision);
    }
  }
  context.TryCancel();
  grpc::Status status = stream->Finish();
  eventbus::MutexLock lock(&mu_);
  active_watch_ = nullptr;
  if (stopping_) return WatchEnd::kStopped;
  if (rewatch_from_.has_value()) {
    *rewatch_from = *rewatch_from_;
    rewatch_from_.reset();
    return WatchEnd::kRewatch;
  }
  if (end == WatchEnd::kBroken) {
    EB_LOG(kWarning, "etcd: watch stream ended", "store=", base::LogValue(Describe(endpoint)),
           " code=", static_cast<int>(status.error_code()),
           " error=", base::LogValue(status.error_message()));
    Rotate(index);
    if (created) return WatchEnd::kResync;  // it worked until now: resync at once
  }
  return end;
}

void EtcdStore::Impl::ApplyWatchResponse(const etcdserverpb::WatchResponse& response,
                                         int64_t* revision) {
  eventbus::MutexLock lock(&apply_mu_);
  if (response.events().empty()) {
    // A progress notification: every change up to header.revision has been sent.
    *revision = std::max(*revision, response.header().revision());
    eventbus::MutexLock keys_lock(&keys_mu_);
    applied_revision_ = std::max(applied_revision_, *revision);
    return;
  }
  // Delivered as one batch (the registry applies it as one write), in etcd's order.
  std::vector<Listener::Change> changes;
  changes.reserve(response.events_size());
  for (const mvccpb::Event& event : response.events()) {
    const mvccpb::KeyValue& kv = event.kv();
    const int64_t event_revision = kv.mod_revision();
    *revision = std::max(*revision, event_revision);
    if (!absl::StartsWith(kv.key(), key_prefix_)) continue;
    std::string id = kv.key().substr(key_prefix_.size());
    bool deliver = false;
    {
      eventbus::MutexLock keys_lock(&keys_mu_);
      auto it = keys_.find(id);
      // Not newer than what this replica applied for the key: its own acknowledged write, or a
      // change older than one it made since. Applying it would undo the newer state.
      deliver = it == keys_.end() || it->second.revision < event_revision;
      if (event.type() == mvccpb::Event::PUT) {
        if (deliver) keys_[id] = KeyState{event_revision};
      } else if (it != keys_.end() && it->second.revision <= event_revision) {
        keys_.erase(it);
      }
      applied_revision_ = std::max(applied_revision_, event_revision);
    }
    if (!deliver) continue;
    if (event.type() == mvccpb::Event::DELETE) {
      changes.push_back({nullptr, std::move(id)});
      continue;
    }
    absl::StatusOr<registry::SubscriptionPtr> sub = DecodeSubscriptionJson(kv.value());
    if (!sub.ok() || (*sub)->id != id) {
      EB_LOG(kWarning, "etcd: ignoring an undecodable subscription",
             "store=", base::LogValue(name_), " key=", base::LogValue(kv.key()),
             " error=", base::LogValue(sub.ok() ? "id differs from key" : sub.status().message()));
      continue;
    }
    changes.push_back({*std::move(sub), ""});
  }
  if (!changes.empty()) listener_->OnChanges(std::move(changes));
}

void EtcdStore::Impl::RecordAck(const std::string& id, int64_t revision) {
  // Waits for a delivery in progress: it may carry an older change to this key.
  eventbus::MutexLock lock(&apply_mu_);
  eventbus::MutexLock keys_lock(&keys_mu_);
  // The watch already passed this revision: it applied the event itself (or a snapshot newer than
  // it), and there is nothing left to skip.
  if (revision <= applied_revision_) return;
  KeyState& state = keys_[id];
  if (state.revision < revision) state = KeyState{revision};
}

template <typename Request, typename Response>
void EtcdStore::Impl::Unary(AsyncMethod<Request, Response> method,
                            std::shared_ptr<const Request> request, absl::Time deadline,
                            size_t attempt,
                            std::function<void(const absl::Status&, const Response&)> done) {
  // Everything gRPC holds for one call. gRPC releases it on its own thread after the callback
  // returns; `rpc` is declared first, so it is destroyed last, after the ClientContext has let go
  // of the channel: Stop waits for it before the endpoints go.
  struct Call {
    explicit Call(Impl* impl) : rpc(impl) {}
    RpcInFlight rpc;
    grpc::ClientContext context;
    std::shared_ptr<const Request> request;
    Response response;
    std::function<void(const absl::Status&, const Response&)> done;
  };
  size_t index = 0;
  Endpoint& endpoint = Current(&index);
  auto call = std::make_shared<Call>(this);
  call->context.set_deadline(absl::ToChronoTime(deadline));
  call->request = std::move(request);
  call->done = std::move(done);
  Call* raw = call.get();
  method(endpoint, &raw->context, raw->request.get(), &raw->response,
         [this, method, deadline, attempt, call = std::move(call), index,
          &endpoint](grpc::Status status) {
           const auto& done = call->done;
           if (status.ok()) {
             SetHealthy(true, "");
             done(absl::OkStatus(), call->response);
             return;
           }
           const bool unreachable = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                                    status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
           if (unreachable) Rotate(index);
           // Another member may answer: try each once while the deadline allows.
           if (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
               attempt + 1 < endpoints_.size() && absl::Now() < deadline) {
             Unary(method, call->request, deadline, attempt + 1, done);
             return;
           }
           if (unreachable) SetHealthy(false, status.error_message());
           std::string message = absl::StrCat(Describe(endpoint), ": ", status.error_message());
           // etcd's own "etcdserver: request is too large" (INVALID_ARGUMENT, above
           // --max-request-bytes) and gRPC's "received message larger than max"
           // (RESOURCE_EXHAUSTED, above that plus 512 KiB) refuse the request before it is applied,
           // and would refuse it again: that is the caller's error, not an outage.
           if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
               absl::StrContains(status.error_message(), "too large")) {
             done(absl::InvalidArgumentError(message), call->response);
             return;
           }
           // The rest, UNAVAILABLE: etcd could not be reached, or did not answer in time. After a
           // DEADLINE_EXCEEDED (or a connection lost after sending) the write may have been
           // applied.
           done(absl::UnavailableError(std::move(message)), call->response);
         });
}

void EtcdStore::Impl::Write(bool put, registry::SubscriptionPtr sub, Done done) {
  if (!BeginCall()) {
    done(absl::UnavailableError(absl::StrCat(name_, ": store not running")));
    return;
  }
  auto op = std::make_shared<WriteOp>();
  op->put = put;
  op->key = absl::StrCat(key_prefix_, absl::string_view(sub->id));
  op->deadline = absl::Now() + options_.call_timeout;
  op->sub = std::move(sub);
  op->done = std::move(done);
  if (put) {
    op->value = EncodeSubscriptionJson(*op->sub);
    // etcd refuses a request above its --max-request-bytes, and would do so on every retry: refuse
    // it here, before a lease is granted, as the client's error rather than an outage. The key,
    // the value and the lease field plus etcd's raft envelope come to a few dozen bytes more than
    // key and value alone.
    const size_t request_bytes = op->key.size() + op->value.size() + kRequestOverheadBytes;
    if (request_bytes > options_.max_request_bytes) {
      return Finish(op, TooLarge(*op, absl::StrCat("exceeds the limit of ",
                                                   options_.max_request_bytes, " bytes")));
    }
  }
  if (!put) {
    DeleteKey(std::move(op));
  } else if (op->sub->Expires()) {
    GrantLease(std::move(op));
  } else {
    PutKey(std::move(op));
  }
}

void EtcdStore::Impl::GrantLease(std::shared_ptr<WriteOp> op) {
  auto request = std::make_shared<etcdserverpb::LeaseGrantRequest>();
  request->set_ttl(LeaseTtlSeconds(op->sub->expire_time, absl::Now()));
  Unary<etcdserverpb::LeaseGrantRequest, etcdserverpb::LeaseGrantResponse>(
      &AsyncLeaseGrant, std::move(request), op->deadline, 0,
      [this, op](const absl::Status& status, const etcdserverpb::LeaseGrantResponse& response) {
        if (!status.ok()) return Finish(op, status);
        // A failed or timed-out grant touched no key: the old one stays as it was (a lease that
        // was granted after all, unknown to us, expires by its TTL).
        if (!response.error().empty()) {
          return Finish(
              op, absl::UnavailableError(absl::StrCat(name_, ": lease grant: ", response.error())));
        }
        op->new_lease = response.id();
        PutKey(op);
      });
}

void EtcdStore::Impl::PutKey(std::shared_ptr<WriteOp> op) {
  auto request = std::make_shared<etcdserverpb::PutRequest>();
  request->set_key(op->key);
  request->set_value(op->value);
  request->set_lease(op->new_lease);
  // etcd answers with the key as it was just before this put: the lease it leaves is exactly the
  // one to revoke (a lease this replica remembered could be stale).
  request->set_prev_kv(true);
  Unary<etcdserverpb::PutRequest, etcdserverpb::PutResponse>(
      &AsyncPut, std::move(request), op->deadline, 0,
      [this, op](const absl::Status& status, const etcdserverpb::PutResponse& response) {
        if (!status.ok()) {
          // Nothing is revoked here, neither lease. After a timeout or a lost connection the put
          // may have landed, attached to the new lease: revoking that lease would delete the
          // subscription (the acknowledged one, refreshed) on every replica. If the put did not
          // land, the key still holds its old lease and content, as acknowledged before, and the
          // unused new lease simply expires by its TTL. If it did, every replica's watch applies
          // it. Either way etcd keeps a subscription the client was told exists.
          if (op->new_lease != 0) {
            EB_LOG(kWarning, "etcd: put failed; its lease is left to expire",
                   "store=", base::LogValue(name_), " key=", base::LogValue(op->key),
                   " lease=", op->new_lease, " error=", base::LogValue(status.message()));
          }
          if (status.code() == absl::StatusCode::kInvalidArgument) {
            return Finish(op, TooLarge(*op, absl::StrCat("refused by etcd: ", status.message())));
          }
          return Finish(op, status);
        }
        RecordAck(op->sub->id, response.header().revision());
        // A refresh: the key left its old lease, whose expiry must no longer delete it. Only that
        // lease's key (this one) ever used it, and the key no longer does.
        const int64_t old_lease = response.has_prev_kv() ? response.prev_kv().lease() : 0;
        if (old_lease != 0 && old_lease != op->new_lease) RevokeLease(old_lease);
        Finish(op, absl::OkStatus());
      });
}

absl::Status EtcdStore::Impl::TooLarge(const WriteOp& op, absl::string_view why) const {
  return absl::InvalidArgumentError(absl::StrCat(
      name_, ": subscription \"", absl::string_view(op.sub->id),
      "\" is too large to store: ", op.key.size() + op.value.size(), " bytes of key and value ",
      why, " (etcd's --max-request-bytes, 1.5 MiB by default); shorten its event_param"));
}

void EtcdStore::Impl::DeleteKey(std::shared_ptr<WriteOp> op) {
  auto request = std::make_shared<etcdserverpb::DeleteRangeRequest>();
  request->set_key(op->key);
  // The deleted key's lease, to revoke: what etcd held, not what this replica remembered.
  request->set_prev_kv(true);
  Unary<etcdserverpb::DeleteRangeRequest, etcdserverpb::DeleteRangeResponse>(
      &AsyncDeleteRange, std::move(request), op->deadline, 0,
      [this, op](const absl::Status& status, const etcdserverpb::DeleteRangeResponse& response) {
        // A failed delete revokes nothing: the key may still be there, and its lease with it.
        if (!status.ok()) return Finish(op, status);
        // Deleting nothing makes no revision: there is no event to recognise.
        if (response.deleted() > 0) RecordAck(op->sub->id, response.header().revision());
        for (const mvccpb::KeyValue& kv : response.prev_kvs()) {
          if (kv.lease() != 0) RevokeLease(kv.lease());
        }
        Finish(op, absl::OkStatus());
      });
}

void EtcdStore::Impl::RevokeLease(int64_t lease) {
  if (!BeginCall()) return;
  auto request = std::make_shared<etcdserverpb::LeaseRevokeRequest>();
  request->set_id(lease);
  // Best effort: a lease that cannot be revoked expires by itself, and NOT_FOUND means it did.
  Unary<etcdserverpb::LeaseRevokeRequest, etcdserverpb::LeaseRevokeResponse>(
      &AsyncLeaseRevoke, std::move(request), absl::Now() + options_.call_timeout, 0,
      [this](const absl::Status&, const etcdserverpb::LeaseRevokeResponse&) { EndCall(); });
}

void EtcdStore::Impl::Finish(std::shared_ptr<WriteOp> op, absl::Status status) {
  Done done = std::move(op->done);
  done(std::move(status));
  EndCall();
}

EtcdStore::EtcdStore(EtcdStoreOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

EtcdStore::~EtcdStore() { impl_->Stop(); }

absl::Status EtcdStore::Start(Listener* listener) { return impl_->Start(listener); }
void EtcdStore::Stop() { impl_->Stop(); }
void EtcdStore::Put(registry::SubscriptionPtr sub, Done done) {
  impl_->Write(/*put=*/true, std::move(sub), std::move(done));
}
void EtcdStore::Delete(registry::SubscriptionPtr sub, Done done) {
  impl_->Write(/*put=*/false, std::move(sub), std::move(done));
}
bool EtcdStore::healthy() const { return impl_->healthy(); }
void EtcdStore::RewatchFromForTesting(int64_t revision) { impl_->RewatchFrom(revision); }

}  // namespace eventbus::store
