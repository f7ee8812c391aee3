#include "server/store/memory_store.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"

namespace eventbus::store {
namespace {

absl::Status Unavailable() { return absl::UnavailableError("store memory: unavailable (test)"); }

}  // namespace

absl::Status MemoryStore::Start(Listener* listener) {
  eventbus::MutexLock listener_lock(&listener_mu_);
  listener_ = listener;
  if (listener_ != nullptr) listener_->OnReload(Contents());
  return absl::OkStatus();
}

void MemoryStore::Stop() {
  eventbus::MutexLock listener_lock(&listener_mu_);
  listener_ = nullptr;
}

void MemoryStore::Put(registry::SubscriptionPtr sub, Done done) {
  absl::Status status;
  {
    eventbus::MutexLock lock(&mu_);
    if (!available_) {
      status = Unavailable();
    } else if (sub != nullptr) {
      // The stored pointer is the key: a replacement goes in whole, not into the old slot.
      auto it = subs_.find(absl::string_view(sub->id));
      if (it != subs_.end()) subs_.erase(it);
      subs_.insert(std::move(sub));
    }
  }
  done(std::move(status));
}

void MemoryStore::Delete(registry::SubscriptionPtr sub, Done done) {
  absl::Status status;
  {
    eventbus::MutexLock lock(&mu_);
    if (!available_) {
      status = Unavailable();
    } else if (sub != nullptr) {
      subs_.erase(absl::string_view(sub->id));
    }
  }
  done(std::move(status));
}

bool MemoryStore::healthy() const {
  eventbus::MutexLock lock(&mu_);
  return available_;
}

void MemoryStore::SetAvailable(bool available) {
  eventbus::MutexLock listener_lock(&listener_mu_);
  {
    eventbus::MutexLock lock(&mu_);
    if (available_ == available) return;
    available_ = available;
  }
  if (listener_ != nullptr) listener_->OnHealth(available);
}

std::vector<registry::SubscriptionPtr> MemoryStore::Contents() const {
  std::vector<registry::SubscriptionPtr> out;
  {
    eventbus::MutexLock lock(&mu_);
    out.reserve(subs_.size());
    out.assign(subs_.begin(), subs_.end());
  }
  std::sort(out.begin(), out.end(),
            [](const registry::SubscriptionPtr& a, const registry::SubscriptionPtr& b) {
              return a->id < b->id;
            });
  return out;
}

size_t MemoryStore::size() const {
  eventbus::MutexLock lock(&mu_);
  return subs_.size();
}

}  // namespace eventbus::store
