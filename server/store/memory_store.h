// The in-memory SubscriptionStore (SPEC §8): for tests and throwaway runs; everything is lost at
// exit. Writes complete inline. A test hook makes it unavailable, so callers' UNAVAILABLE paths
// can be exercised without etcd.
#ifndef EVENTBUS_SERVER_STORE_MEMORY_STORE_H_
#define EVENTBUS_SERVER_STORE_MEMORY_STORE_H_

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"
#include "server/base/mutex.h"
#include "server/store/subscription_store.h"

namespace eventbus::store {

// Owned by whoever opened it. Thread-safe. `done` runs inline on the calling thread, never under a
// lock of the store's; listener calls are serialised.
class MemoryStore final : public SubscriptionStore {
 public:
  MemoryStore() = default;
  ~MemoryStore() override = default;

  // Calls listener->OnReload with the current contents (empty unless written before Start).
  absl::Status Start(Listener* listener) override;
  // No listener call after it returns. Idempotent.
  void Stop() override;

  // done(OK) at once; UNAVAILABLE while SetAvailable(false).
  void Put(registry::SubscriptionPtr sub, Done done) override;
  void Delete(registry::SubscriptionPtr sub, Done done) override;

  bool healthy() const override;
  absl::string_view kind() const override { return "memory"; }

  // Test hook: while unavailable, Put and Delete answer UNAVAILABLE and healthy() is false. A
  // change of state is reported to the listener's OnHealth.
  void SetAvailable(bool available);

  // The stored subscriptions, sorted by id (for tests).
  std::vector<registry::SubscriptionPtr> Contents() const;
  size_t size() const;

 private:
  // Hashes and compares a subscription by its id, and looks one up by an id alone: the set's
  // slot is the pointer (16 bytes), with no copy of the id (a heap block at 16 characters).
  struct ById {
    using is_transparent = void;
    static absl::string_view IdOf(absl::string_view id) { return id; }
    static absl::string_view IdOf(const registry::SubscriptionPtr& sub) { return sub->id; }
    template <typename T>
    size_t operator()(const T& key) const {
      return absl::Hash<absl::string_view>{}(IdOf(key));
    }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return IdOf(a) == IdOf(b);
    }
  };

  mutable eventbus::Mutex mu_;
  absl::flat_hash_set<registry::SubscriptionPtr, ById, ById> subs_ ABSL_GUARDED_BY(mu_);
  bool available_ ABSL_GUARDED_BY(mu_) = true;

  // Held while calling the listener, so calls never overlap and none follows Stop.
  eventbus::Mutex listener_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  Listener* listener_ ABSL_GUARDED_BY(listener_mu_) = nullptr;
};

}  // namespace eventbus::store

#endif  // EVENTBUS_SERVER_STORE_MEMORY_STORE_H_
