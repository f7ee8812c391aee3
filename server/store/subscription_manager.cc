#include "server/store/subscription_manager.h"

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/base/log.h"

namespace eventbus::store {
namespace {

using registry::Subscription;
using registry::SubscriptionPtr;

// Longest prefix of a client's text quoted in an error message.
constexpr size_t kMaxQuoted = 64;

std::string Quote(absl::string_view text) {
  if (text.size() <= kMaxQuoted) return absl::CHexEscape(text);
  return absl::StrCat(absl::CHexEscape(text.substr(0, kMaxQuoted)), "...");
}

absl::Time ExpireTime(absl::Time now, const std::optional<uint32_t>& seconds,
                      absl::Duration default_expire) {
  if (!seconds.has_value()) {
    if (default_expire <= absl::ZeroDuration() || default_expire == absl::InfiniteDuration()) {
      return absl::InfiniteFuture();
    }
    return now + default_expire;
  }
  if (*seconds == 0) return absl::InfiniteFuture();
  return now + absl::Seconds(*seconds);
}

// PERMISSION_DENIED: `sub` is not the caller's to `action` (refresh, remove). Names the
// subscription but not its owner: who else uses EventBus is not this caller's business.
absl::Status NotYours(const Subscription& sub, absl::string_view operation,
                      absl::string_view action) {
  return absl::PermissionDeniedError(absl::StrCat(
      operation, ": subscription ", absl::string_view(sub.id), " (event \"", Quote(sub.event),
      "\", socket \"", Quote(sub.socket), "\") belongs to another caller",
      sub.owner.empty() ? " (it was made without authentication and has no owner)" : "",
      "; only its owner or an admin may ", action, " it"));
}

}  // namespace

SubscriptionManager::SubscriptionManager(registry::Registry* registry, SubscriptionStore* store,
                                         const base::Clock* clock, SubscriptionLimits limits)
    : registry_(registry), store_(store), clock_(clock), limits_(std::move(limits)) {}

SubscriptionManager::~SubscriptionManager() { Stop(); }

absl::Status SubscriptionManager::Start() {
  {
    eventbus::MutexLock lock(&mu_);
    if (started_ || stopping_) {
      return absl::FailedPreconditionError("subscription manager: started twice or after Stop");
    }
  }
  absl::Status status = store_->Start(this);
  if (!status.ok()) return status;
  store_healthy_.store(store_->healthy());
  eventbus::MutexLock lock(&mu_);
  started_ = true;
  expiry_thread_ = std::thread([this] { ExpiryThread(); });
  return absl::OkStatus();
}

void SubscriptionManager::Stop() {
  bool was_started;
  {
    eventbus::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    was_started = started_;
    expiry_cv_.SignalAll();
  }
  if (expiry_thread_.joinable()) expiry_thread_.join();
  if (was_started) store_->Stop();
}

absl::StatusOr<uri::SocketUri> SubscriptionManager::ParseSocketWithinLimit(
    const std::string& socket) const {
  // Checked before parsing: a parse error would quote all of an oversized socket.
  if (socket.size() > limits_.max_socket_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("socket \"", Quote(socket), "\": longer than ",
                                                   limits_.max_socket_bytes, " bytes"));
  }
  return uri::ParseSocket(socket);
}

void SubscriptionManager::Subscribe(
    registry::Actor actor, SubscribeRequest request,
    absl::AnyInvocable<void(absl::StatusOr<SubscribeResult>)> done) {
  absl::Status valid = registry::ValidateEventName(request.event, limits_.max_event_name_bytes);
  if (valid.ok() && request.event_param.has_value()) {
    valid = registry::ValidateEventParam(*request.event_param);
  }
  if (!valid.ok()) {
    done(std::move(valid));
    return;
  }
  absl::StatusOr<uri::SocketUri> target = ParseSocketWithinLimit(request.socket);
  if (!target.ok()) {
    done(target.status());
    return;
  }
  if (target->is_virtual && target->targets.size() > limits_.max_virtual_members) {
    done(absl::InvalidArgumentError(
        absl::StrCat("socket \"", Quote(request.socket), "\": ", target->targets.size(),
                     " virtual members, more than ", limits_.max_virtual_members)));
    return;
  }
  Key key(request.event, target->ToString());
  const std::string text = request.socket;
  const uri::SocketUri checked = *target;
  // The destination policy first (it may wait for DNS), and only then the key's turn: a slow
  // lookup holds no other Subscribe of the same key.
  CheckDestinations(
      text, checked,
      [this, key, actor = std::move(actor), request = std::move(request),
       target = *std::move(target), done = std::move(done)](absl::Status allowed) mutable {
        if (!allowed.ok()) {
          done(std::move(allowed));
          return;
        }
        RunKeyed(key, [this, key, actor = std::move(actor), request = std::move(request),
                       target = std::move(target), done = std::move(done)]() mutable {
          SubscribeKeyed(key, actor, std::move(request), std::move(target), std::move(done));
        });
      });
}

void SubscriptionManager::CheckDestinations(const std::string& text, const uri::SocketUri& target,
                                            absl::AnyInvocable<void(absl::Status)> done) const {
  if (!destination_check_ || target.targets.empty()) {
    done(absl::OkStatus());
    return;
  }
  // The members are checked at once; the last verdict in decides, reporting the first refusal in
  // member order so the answer does not depend on which lookup finished first.
  struct Join {
    eventbus::Mutex mu;
    size_t remaining ABSL_GUARDED_BY(mu) = 0;
    std::vector<absl::Status> verdicts ABSL_GUARDED_BY(mu);
    absl::AnyInvocable<void(absl::Status)> done;  // run by the last verdict only
  };
  auto join = std::make_shared<Join>();
  {
    eventbus::MutexLock lock(&join->mu);
    join->remaining = target.targets.size();
    join->verdicts.resize(target.targets.size());
  }
  join->done = std::move(done);
  std::string prefix = absl::StrCat("socket \"", Quote(text), "\": ");
  std::vector<std::string> members;
  for (const uri::TcpTarget& member : target.targets) {
    members.push_back(target.is_virtual ? absl::StrCat("member ", members.size() + 1, " \"",
                                                       member.ToString(), "\": ")
                                        : "");
  }
  for (size_t i = 0; i < target.targets.size(); ++i) {
    destination_check_(target.targets[i], [join, i, prefix, members](absl::Status verdict) {
      absl::Status refusal;
      {
        eventbus::MutexLock lock(&join->mu);
        join->verdicts[i] = std::move(verdict);
        if (--join->remaining > 0) return;
        for (size_t m = 0; m < join->verdicts.size() && refusal.ok(); ++m) {
          const absl::Status& v = join->verdicts[m];
          if (!v.ok())
            refusal = absl::Status(v.code(), absl::StrCat(prefix, members[m], v.message()));
        }
      }
      // The last verdict: no other callback touches `join` any more.
      join->done(std::move(refusal));
    });
  }
}

void SubscriptionManager::SubscribeKeyed(
    const Key& key, const registry::Actor& actor, SubscribeRequest request, uri::SocketUri target,
    absl::AnyInvocable<void(absl::StatusOr<SubscribeResult>)> done) {
  absl::Time now = clock_->Now();
  // Stores keep whole microseconds (store_codec.h): times handed out must be the ones a restart
  // (sqlite) or another replica (etcd) reads back, so they carry no finer digits.
  const absl::Time stamp = absl::FromUnixMicros(absl::ToUnixMicros(now));
  SubscriptionPtr existing = registry_->FindByKey(key.first, key.second);
  if (existing != nullptr && !existing->LiveAt(now)) {
    // Expired a moment ago and not collected yet: this is a new subscription. The old one is
    // deleted from the store behind this work (whoever removed it from the registry does it).
    if (registry_->Remove(existing->id) != nullptr) DeleteExpired(existing);
    existing = nullptr;
  }
  // Checked here, with the key held: this is the subscription the write below replaces.
  if (existing != nullptr && !registry::MayChange(actor, *existing)) {
    done(NotYours(*existing, "subscribe", "refresh"));
    FinishKey(key);
    return;
  }
  const bool created = existing == nullptr;
  auto sub = std::make_shared<Subscription>();
  if (created) {
    absl::Status reserved = Reserve(key.first);
    if (!reserved.ok()) {
      done(std::move(reserved));
      FinishKey(key);
      return;
    }
    sub->id = registry::NewSubscriptionId();
    sub->create_time = stamp;
    sub->event_param = std::move(request.event_param);
    sub->owner = actor.name;
  } else {
    sub->id = existing->id;
    sub->create_time = existing->create_time;
    // An admin refreshing someone else's subscription does not take it over.
    sub->owner = existing->owner;
    sub->event_param =
        request.event_param.has_value() ? std::move(request.event_param) : existing->event_param;
  }
  sub->event = key.first;
  sub->socket = key.second;
  sub->target = std::move(target);
  sub->expire_time = ExpireTime(stamp, request.expire_seconds, limits_.default_expire);

  SubscriptionPtr stored = sub;
  store_->Put(std::move(stored), [this, key, sub = SubscriptionPtr(std::move(sub)), created,
                                  done = std::move(done)](absl::Status status) mutable {
    // The registry changes only once the store has the subscription: what Raise sees is durable.
    if (status.ok()) {
      registry_->Upsert(sub);
      WakeExpiry(sub->expire_time);
    }
    if (created) Unreserve(sub->event);
    if (status.ok()) {
      done(SubscribeResult{std::move(sub), created});
    } else {
      done(std::move(status));
    }
    FinishKey(key);
  });
}

void SubscriptionManager::Unsubscribe(
    registry::Actor actor, std::string id, std::string event, std::string socket,
    absl::AnyInvocable<void(absl::StatusOr<UnsubscribeResult>)> done) {
  if (!id.empty()) {
    SubscriptionPtr sub = registry_->FindById(id);
    if (sub == nullptr) {
      done(UnsubscribeResult{});
      return;
    }
    Key key(sub->event, sub->socket);
    RunKeyed(key, [this, key, actor = std::move(actor), id = std::move(id),
                   done = std::move(done)]() mutable {
      // Looked up again: it may have gone while this waited for its key.
      UnsubscribeKeyed(key, actor, registry_->FindById(id), std::move(done));
    });
    return;
  }
  if (event.empty() || socket.empty()) {
    done(absl::InvalidArgumentError("unsubscribe: give an id, or an event and a socket"));
    return;
  }
  absl::StatusOr<uri::SocketUri> target = ParseSocketWithinLimit(socket);
  if (!target.ok()) {
    done(target.status());
    return;
  }
  Key key(std::move(event), target->ToString());
  RunKeyed(key, [this, key, actor = std::move(actor), done = std::move(done)]() mutable {
    UnsubscribeKeyed(key, actor, registry_->FindByKey(key.first, key.second), std::move(done));
  });
}

void SubscriptionManager::UnsubscribeKeyed(
    const Key& key, const registry::Actor& actor, SubscriptionPtr sub,
    absl::AnyInvocable<void(absl::StatusOr<UnsubscribeResult>)> done) {
  if (sub == nullptr) {
    done(UnsubscribeResult{});
    FinishKey(key);
    return;
  }
  if (!registry::MayChange(actor, *sub)) {
    done(NotYours(*sub, "unsubscribe", "remove"));
    FinishKey(key);
    return;
  }
  SubscriptionPtr doomed = sub;
  store_->Delete(std::move(doomed), [this, key, sub = std::move(sub),
                                     done = std::move(done)](absl::Status status) mutable {
    if (status.ok()) {
      registry_->Remove(sub->id);
      done(UnsubscribeResult{1, std::move(sub)});
    } else {
      done(std::move(status));
    }
    FinishKey(key);
  });
}

void SubscriptionManager::RunKeyed(const Key& key, absl::AnyInvocable<void()> work) {
  {
    eventbus::MutexLock lock(&mu_);
    auto [it, inserted] = keyed_.try_emplace(key);
    if (!inserted) {
      it->second.push_back(std::move(work));
      return;
    }
  }
  work();
}

void SubscriptionManager::FinishKey(const Key& key) {
  absl::AnyInvocable<void()> next;
  {
    eventbus::MutexLock lock(&mu_);
    auto it = keyed_.find(key);
    if (it == keyed_.end()) return;
    if (it->second.empty()) {
      keyed_.erase(it);
      return;
    }
    next = std::move(it->second.front());
    it->second.pop_front();
  }
  // The key stays claimed: `next` now owns it and calls FinishKey in turn.
  next();
}

absl::Status SubscriptionManager::Reserve(const std::string& event) {
  eventbus::MutexLock lock(&mu_);
  if (registry_->size() + pending_creates_ >= limits_.max_subscriptions) {
    return absl::ResourceExhaustedError(absl::StrCat("subscribe \"", event,
                                                     "\": max_subscriptions limit (",
                                                     limits_.max_subscriptions, ") reached"));
  }
  auto it = pending_creates_by_event_.find(event);
  size_t pending_for_event = it == pending_creates_by_event_.end() ? 0 : it->second;
  if (registry_->CountForEvent(event) + pending_for_event >= limits_.max_subscriptions_per_event) {
    return absl::ResourceExhaustedError(
        absl::StrCat("subscribe \"", event, "\": max_subscriptions_per_event limit (",
                     limits_.max_subscriptions_per_event, ") reached"));
  }
  ++pending_creates_;
  ++pending_creates_by_event_[event];
  return absl::OkStatus();
}

void SubscriptionManager::Unreserve(const std::string& event) {
  eventbus::MutexLock lock(&mu_);
  --pending_creates_;
  auto it = pending_creates_by_event_.find(event);
  if (it != pending_creates_by_event_.end() && --it->second == 0) {
    pending_creates_by_event_.erase(it);
  }
}

void SubscriptionManager::ExpireDue(absl::Time now) {
  std::vector<SubscriptionPtr> expired = registry_->RemoveExpired(now);
  {
    eventbus::MutexLock lock(&mu_);
    for (SubscriptionPtr& sub : reload_expired_) expired.push_back(std::move(sub));
    reload_expired_.clear();
  }
  for (SubscriptionPtr& sub : expired) DeleteExpired(std::move(sub));
}

void SubscriptionManager::DeleteExpired(SubscriptionPtr sub) {
  Key key(sub->event, sub->socket);
  RunKeyed(key, [this, key, sub = std::move(sub)]() mutable {
    // A refresh that was in flight when it expired has put it back (same id, new expiry): the
    // store holds the refreshed one, which must stay.
    if (registry_->FindById(sub->id) != nullptr) {
      FinishKey(key);
      return;
    }
    SubscriptionPtr doomed = sub;
    store_->Delete(std::move(doomed), [this, key, sub = std::move(sub)](absl::Status status) {
      if (!status.ok()) {
        EB_LOG(kWarning, "expired subscription not deleted from the store",
               "id=", absl::string_view(sub->id), " event=", base::LogValue(sub->event),
               " store=", store_->kind(), " error=", base::LogValue(status.ToString()));
      }
      FinishKey(key);
    });
  });
}

void SubscriptionManager::ExpiryThread() {
  eventbus::MutexLock lock(&mu_);
  while (!stopping_) {
    const uint64_t generation = expiry_generation_;
    // While working, any new expiry may be earlier than what this pass sees.
    expiry_wait_until_ = absl::InfiniteFuture();
    mu_.Unlock();
    ExpireDue(clock_->Now());
    const absl::Time next = registry_->NextExpiry();
    mu_.Lock();
    expiry_wait_until_ = next;
    // The wait is a duration from the clock's now, so a fake clock never makes it spin; with the
    // real clock it ends at the expiry instant (a spurious early wake-up waits again).
    while (!stopping_ && generation == expiry_generation_) {
      absl::Duration left = next - clock_->Now();
      if (left <= absl::ZeroDuration()) break;
      expiry_cv_.WaitWithTimeout(&mu_, left);
    }
  }
}

void SubscriptionManager::WakeExpiry(absl::Time expiry) {
  eventbus::MutexLock lock(&mu_);
  if (expiry >= expiry_wait_until_) return;
  ++expiry_generation_;
  expiry_cv_.Signal();
}

void SubscriptionManager::OnReload(std::vector<SubscriptionPtr> all) {
  absl::Time now = clock_->Now();
  std::vector<SubscriptionPtr> live;
  std::vector<SubscriptionPtr> expired;
  live.reserve(all.size());
  for (SubscriptionPtr& sub : all) {
    if (sub == nullptr) continue;
    (sub->LiveAt(now) ? live : expired).push_back(std::move(sub));
  }
  registry_->ReplaceAll(std::move(live));
  {
    eventbus::MutexLock lock(&mu_);
    for (SubscriptionPtr& sub : expired) reload_expired_.push_back(std::move(sub));
  }
  WakeExpiry(absl::InfinitePast());
}

void SubscriptionManager::OnUpsert(SubscriptionPtr sub) {
  if (sub == nullptr) return;
  absl::Time expiry = sub->expire_time;
  registry_->Upsert(std::move(sub));
  WakeExpiry(expiry);
}

void SubscriptionManager::OnRemove(const std::string& id) { registry_->Remove(id); }

void SubscriptionManager::OnChanges(std::vector<Change> changes) {
  std::vector<registry::Registry::Change> batch;
  batch.reserve(changes.size());
  absl::Time earliest = absl::InfiniteFuture();
  for (Change& change : changes) {
    if (change.upsert != nullptr) earliest = std::min(earliest, change.upsert->expire_time);
    batch.push_back({std::move(change.upsert), std::move(change.remove_id)});
  }
  registry_->Apply(std::move(batch));
  WakeExpiry(earliest);
}

void SubscriptionManager::OnHealth(bool healthy) {
  bool was = store_healthy_.exchange(healthy);
  if (was == healthy) return;
  if (healthy) {
    EB_LOG(kInfo, "subscription store reachable", "store=", store_->kind());
  } else {
    EB_LOG(kWarning, "subscription store unreachable; lists may be stale",
           "store=", store_->kind());
  }
}

}  // namespace eventbus::store
