// Where subscriptions are kept (SPEC §8): the SubscriptionStore interface and its factory.
// Backends: memory (tests, throwaway runs), sqlite (embedded default, survives restarts) and etcd
// (shared by replicas). SubscriptionManager (subscription_manager.h) is the only caller.
#ifndef EVENTBUS_SERVER_STORE_SUBSCRIPTION_STORE_H_
#define EVENTBUS_SERVER_STORE_SUBSCRIPTION_STORE_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/registry/subscription.h"

namespace eventbus::store {

// Thread-safe. Writes are asynchronous so no gRPC thread blocks on disk or network: `done` runs
// once the change is durable (or failed), on any thread, possibly inline.
class SubscriptionStore {
 public:
  // Receives the store's state. Calls never overlap (the store serialises them).
  class Listener {
   public:
    virtual ~Listener() = default;
    // The complete set of subscriptions: at Start, and after a resync (etcd watch lost).
    virtual void OnReload(std::vector<registry::SubscriptionPtr> all) = 0;
    // A subscription created or refreshed elsewhere (another replica).
    virtual void OnUpsert(registry::SubscriptionPtr sub) = 0;
    // A subscription removed elsewhere (another replica, or an etcd lease expired).
    virtual void OnRemove(const std::string& id) = 0;
    // One change of a batch: `upsert` set for a subscription created or refreshed, else the id
    // removed.
    struct Change {
      registry::SubscriptionPtr upsert;
      std::string remove_id;
    };
    // Changes that arrived together (one etcd watch response), in order: a listener may apply
    // them as one. By default, one OnUpsert or OnRemove each.
    virtual void OnChanges(std::vector<Change> changes) {
      for (Change& change : changes) {
        if (change.upsert != nullptr) {
          OnUpsert(std::move(change.upsert));
        } else {
          OnRemove(change.remove_id);
        }
      }
    }
    // The store became reachable (true) or unreachable (false).
    virtual void OnHealth(bool healthy) = 0;
  };

  using Done = absl::AnyInvocable<void(absl::Status)>;

  virtual ~SubscriptionStore() = default;

  // Loads every stored subscription into listener->OnReload and starts following changes.
  // Blocking; called at start-up, and again after it failed when remote() (nothing else calls
  // the store meanwhile). Errors name the store and the problem
  // (`sqlite "/var/lib/eventbus/subscriptions.db": file is not a database`).
  virtual absl::Status Start(Listener* listener) = 0;
  // Stops background work; no listener call after it returns.
  virtual void Stop() = 0;

  // Creates or replaces `sub` (same id). UNAVAILABLE when the store cannot be reached.
  virtual void Put(registry::SubscriptionPtr sub, Done done) = 0;
  // Removes `sub` (by id). Removing what is not there is OK.
  virtual void Delete(registry::SubscriptionPtr sub, Done done) = 0;

  // False while the store cannot be reached.
  virtual bool healthy() const = 0;
  // "memory", "sqlite", "etcd".
  virtual absl::string_view kind() const = 0;
  // True when the store is another service (etcd), which may come up after EventBus or be down
  // for a while: a failed Start is then worth retrying. False for local stores, whose start-up
  // failures (a corrupt or unwritable file) a retry does not fix.
  virtual bool remote() const { return false; }
};

// Opens the store named by `url`:
//   "memory"                                  in-memory, lost at exit
//   "sqlite" | "sqlite:PATH"                  SQLite file (default: DATA_DIR/subscriptions.db)
//   "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]" etcd v3, keys under PREFIX (default /eventbus)
// `tls` (etcd only) turns on TLS to etcd: any file set means TLS; `ca` empty uses the system's
// roots; `cert` and `key` (a client certificate) come together.
// INVALID_ARGUMENT for an unknown scheme, a malformed url, TLS files for a store that is not
// etcd, or a TLS file that cannot be read or is wrong (naming the flag and the file).
struct StoreTlsFiles {
  std::string ca;    // --store_ca
  std::string cert;  // --store_cert
  std::string key;   // --store_key
  bool empty() const { return ca.empty() && cert.empty() && key.empty(); }
};
absl::StatusOr<std::unique_ptr<SubscriptionStore>> OpenStore(absl::string_view url,
                                                             absl::string_view data_dir,
                                                             const StoreTlsFiles& tls = {});

}  // namespace eventbus::store

#endif  // EVENTBUS_SERVER_STORE_SUBSCRIPTION_STORE_H_
