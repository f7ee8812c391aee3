// The distributed store (SPEC §8): subscriptions shared by every replica through etcd v3, spoken
// over plain gRPC with a wire-compatible subset of etcd's protos (proto/etcd). Each subscription
// is one key, PREFIX/subscriptions/ID, holding its JSON (store_codec.h); one that expires holds its
// own lease, so etcd deletes it. Every replica watches the prefix and hears the others' changes.
#ifndef EVENTBUS_SERVER_STORE_ETCD_STORE_H_
#define EVENTBUS_SERVER_STORE_ETCD_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/store/subscription_store.h"

namespace eventbus::store {

struct EtcdStoreOptions {
  // "host:port" of each etcd member, tried in turn: a call that cannot reach one moves to the next.
  std::vector<std::string> endpoints;
  // Keys live under PREFIX/subscriptions/. A trailing '/' is ignored.
  std::string prefix = "/eventbus";
  // Deadline of each write (lease grant + put, or delete) and of each resynchronising read.
  absl::Duration call_timeout = absl::Seconds(2);
  // How long Start keeps trying to reach etcd. Zero: one round over the endpoints, each with
  // call_timeout (for a caller that retries Start itself, as the server's store loader does).
  absl::Duration start_timeout = absl::Seconds(5);
  // Cap of the reconnect backoff (it starts at 100 ms and doubles, with jitter).
  absl::Duration max_backoff = absl::Seconds(2);
  // A put whose key and value (plus a small envelope) exceed this is refused INVALID_ARGUMENT
  // without being sent. etcd's --max-request-bytes, 1.5 MiB by default; set it to the cluster's.
  size_t max_request_bytes = 1536 * 1024;

  // TLS to etcd; nullopt: plaintext. PEM text, checked by whoever fills it in (OpenStore).
  struct Tls {
    // Roots that verify the members' certificates; empty: the system's roots.
    std::string ca_pem;
    // A client certificate and its key (etcd --client-cert-auth): both, or neither.
    std::string cert_pem;
    std::string key_pem;
  };
  std::optional<Tls> tls;
};

// Owned by whoever opened it (OpenStore). Thread-safe. Listener calls run on the watch thread
// (OnReload also on the thread calling Start, OnHealth also on gRPC callback threads), serialised.
// `done` callbacks run on gRPC callback threads, or inline (when the store is not running, or a
// call fails at once). Put and Delete may be called from any thread but not from inside a
// listener call (the listener lock is held there, and a done that runs inline would need it).
//
// Consistency: etcd orders every change. A replica applies the watch's events in that order, and
// skips events that are not newer than what it already applied for that key (its own writes,
// acknowledged before their event arrives), so a late event never undoes a newer local change.
// An own write whose event arrives before its acknowledgement is delivered as well (OnUpsert or
// OnRemove with the same content the caller is about to apply). When the watch breaks or falls
// behind a compaction, the store reads the whole prefix again (OnReload) and watches on from the
// revision of that read, so no change is missed.
class EtcdStore final : public SubscriptionStore {
 public:
  explicit EtcdStore(EtcdStoreOptions options);
  ~EtcdStore() override;

  // Reads every subscription under the prefix into listener->OnReload and starts the watch
  // thread. UNAVAILABLE, naming the endpoints, when etcd cannot be reached within start_timeout.
  absl::Status Start(Listener* listener) override;
  // Stops the watch and waits for calls in flight (each bounded by call_timeout). Idempotent.
  // Call it without holding a lock the listener takes.
  void Stop() override;

  // Grants a lease of ceil(seconds until expiry) when `sub` expires, puts the key with it, then
  // revokes the lease the key held just before (a refresh; etcd reports it with the put).
  // done(UNAVAILABLE) with `store etcd (127.0.0.1:2379): <reason>` when etcd cannot be reached or
  // does not answer within call_timeout; done(INVALID_ARGUMENT) naming the subscription when it is
  // too large for etcd (max_request_bytes, or etcd's own refusal).
  //
  // A failure never removes what was stored before: the outcome of a put that timed out is
  // unknown (it may have landed), so no lease is revoked after a failure. Either the old key and
  // lease are untouched, or the new ones are in place; an unused new lease expires by its TTL.
  void Put(registry::SubscriptionPtr sub, Done done) override;
  // Deletes the key, then revokes the lease it held. Same UNAVAILABLE errors as Put.
  void Delete(registry::SubscriptionPtr sub, Done done) override;

  // False while etcd cannot be reached (a failed call, or the watch cannot reconnect).
  bool healthy() const override;
  absl::string_view kind() const override { return "etcd"; }
  bool remote() const override { return true; }

  // For tests: drops the current watch and watches again from `revision` without reading the
  // prefix first, as a watcher that fell behind would; a compacted `revision` makes the store
  // resynchronise (OnReload).
  void RewatchFromForTesting(int64_t revision);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eventbus::store

#endif  // EVENTBUS_SERVER_STORE_ETCD_STORE_H_
