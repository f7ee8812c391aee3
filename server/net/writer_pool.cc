#include "server/net/writer_pool.h"

#include <pthread.h>
#include <sys/resource.h>

#include <algorithm>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/base/log.h"
#include "server/net/connection.h"
#include "server/net/destination_check.h"
#include "server/net/event_loop.h"
#include "server/net/fd_budget.h"
#include "server/net/resolver.h"
#include "server/net/tls_transport.h"

namespace eventbus::net {
namespace {

// Most resolver threads: one per distinct name being looked up (see resolver.h).
constexpr int kMaxResolverThreads = 32;
constexpr absl::Duration kDrainPollInterval = absl::Milliseconds(5);
constexpr absl::string_view kShuttingDown = "shutting down";
// Without a usable RLIMIT_NOFILE, the cap on target connections.
constexpr size_t kFallbackMaxTargetConnections = 1 << 16;

std::atomic<uint64_t> next_cancel_id{1};

// PoolOptions::max_target_connections = 0: the target share of the soft fd limit, derived where
// the client share is (net/fd_budget.h).
size_t DefaultMaxTargetConnections() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    return kFallbackMaxTargetConnections;
  }
  return DeriveFdBudget(limit.rlim_cur).target_connections;
}

// Completes a notification Submit refused without posting it (kOverloaded), on its thread: its
// loop is busy for `busy_for` more.
void RefuseNow(Request& request, absl::Duration busy_for, PoolObserver* observer, absl::Time now) {
  Outcome outcome;
  outcome.code = DeliveryCode::kOverloaded;
  outcome.detail = absl::StrCat("not queued: the writer loop is busy for another ",
                                absl::FormatDuration(busy_for), ", with ",
                                absl::FormatDuration(request.deadline - now), " left");
  if (observer != nullptr) {
    observer->OnComplete(request.target.Key(), outcome, /*expired=*/false, absl::ZeroDuration());
  }
  if (request.done) request.done(std::move(outcome));
}

Outcome ShuttingDown() {
  Outcome outcome;
  outcome.code = DeliveryCode::kConnectionLost;
  outcome.detail = std::string(kShuttingDown);
  return outcome;
}

void FailNow(Request& request) {
  if (request.done) request.done(ShuttingDown());
}

// The loop that owns the connection to `target`: by scheme, host and port, as TcpTarget::Key()
// names it, without building the key.
size_t LoopOf(const uri::TcpTarget& target, size_t loops) {
  return absl::HashOf(target.tls, target.host, target.port) % loops;
}

}  // namespace

CancelToken::CancelToken() : id_(next_cancel_id.fetch_add(1, std::memory_order_relaxed)) {}

absl::string_view ConnStateName(ConnState state) {
  switch (state) {
    case ConnState::kIdle:
      return "IDLE";
    case ConnState::kResolving:
      return "RESOLVING";
    case ConnState::kConnecting:
      return "CONNECTING";
    case ConnState::kConnected:
      return "CONNECTED";
    case ConnState::kBackoff:
      return "BACKOFF";
  }
  return "UNKNOWN";
}

absl::string_view DenialStageName(DenialStage stage) {
  return stage == DenialStage::kSubscribe ? "subscribe" : "connect";
}

struct WriterPool::Impl {
  // Shared by the loops of one Submit(): the last loop to finish enqueueing runs all_enqueued.
  struct Batch {
    explicit Batch(int loops, absl::AnyInvocable<void()> cb)
        : remaining(loops), all_enqueued(std::move(cb)) {}
    std::atomic<int> remaining;
    absl::AnyInvocable<void()> all_enqueued;
  };

  PoolOptions options;
  StatsRegistry stats;
  std::atomic<int64_t> pending{0};
  std::atomic<size_t> connection_count{0};
  std::unique_ptr<Resolver> resolver;
  // Shared by every loop's tls: connections; outlives the contexts (declared before them).
  std::unique_ptr<TlsClientContext> tls;
  std::vector<std::unique_ptr<EventLoop>> loops;
  // Declared after `loops`: contexts (and their connections) go first.
  std::vector<std::unique_ptr<LoopContext>> contexts;
  std::vector<std::thread> threads;

  // Submit holds it shared while posting, Shutdown exclusively while flipping `shut_down`: every
  // Post happens before Stop(), so no batch is left unrun in a stopped loop.
  // std::shared_mutex: see the note on post_mu in event_loop.cc (TSan visibility).
  std::shared_mutex mu;
  bool shut_down = false;  // guarded by mu

  // Under the shared lock: posts make_work(i) to each loop i in `touched`, counts `messages` as
  // pending, and has `all_enqueued` (taken) run once every posted work has run. False after
  // Shutdown: nothing made, posted or taken.
  bool PostToLoops(const std::vector<bool>& touched, int64_t messages,
                   absl::FunctionRef<absl::AnyInvocable<void(LoopContext*)>(size_t)> make_work,
                   absl::AnyInvocable<void()>& all_enqueued) {
    std::shared_lock<std::shared_mutex> lock(mu);
    if (shut_down) return false;
    const int count = static_cast<int>(std::count(touched.begin(), touched.end(), true));
    pending.fetch_add(messages, std::memory_order_acq_rel);
    auto batch = std::make_shared<Batch>(count, std::move(all_enqueued));
    // One Post per loop touched: waking a loop costs more than enqueueing a whole batch.
    for (size_t i = 0; i < touched.size(); ++i) {
      if (!touched[i]) continue;
      LoopContext* ctx = contexts[i].get();
      loops[i]->Post([ctx, w = make_work(i), batch]() mutable {
        w(ctx);
        if (batch->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1 && batch->all_enqueued) {
          batch->all_enqueued();
        }
      });
    }
    return true;
  }

  // Asks every loop but `except` to close its idle connections: at most one such request pending
  // per loop.
  void ReapIdleExcept(int except) {
    std::shared_lock<std::shared_mutex> lock(mu);
    if (shut_down) return;
    for (size_t i = 0; i < contexts.size(); ++i) {
      if (static_cast<int>(i) == except) continue;
      LoopContext* ctx = contexts[i].get();
      if (ctx->reap_posted.exchange(true, std::memory_order_acq_rel)) continue;
      loops[i]->Post([ctx] {
        ctx->reap_posted.store(false, std::memory_order_release);
        ctx->ReapIdle();
      });
    }
  }
};

absl::StatusOr<std::unique_ptr<WriterPool>> WriterPool::Create(const PoolOptions& options) {
  auto pool = std::unique_ptr<WriterPool>(new WriterPool());
  pool->impl_ = std::make_unique<Impl>();
  Impl& s = *pool->impl_;
  s.options = options;
  if (s.options.max_target_connections == 0) {
    s.options.max_target_connections = DefaultMaxTargetConnections();
  }
  int n = options.num_loops;
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  ResolverOptions resolver_options;
  resolver_options.timeout = options.resolve_timeout;
  resolver_options.max_threads = kMaxResolverThreads;
  resolver_options.lookup = options.resolve_lookup;
  s.resolver = std::make_unique<Resolver>(std::move(resolver_options));
  // After the resolver: a failed Create still runs Shutdown(), which closes it.
  absl::StatusOr<std::unique_ptr<TlsClientContext>> tls = TlsClientContext::Create(options.tls);
  if (!tls.ok()) return tls.status();
  s.tls = *std::move(tls);
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
    if (!loop.ok()) {
      return absl::Status(loop.status().code(),
                          absl::StrCat("writer pool: loop ", i, ": ", loop.status().message()));
    }
    s.loops.push_back(*std::move(loop));
    s.contexts.push_back(std::make_unique<LoopContext>(s.loops.back().get(), &s.options,
                                                       s.resolver.get(), s.tls.get(), &s.stats,
                                                       &s.pending, &s.connection_count));
  }
  for (int i = 0; i < n && n > 1; ++i) {
    Impl* impl = pool->impl_.get();
    s.contexts[i]->reap_elsewhere = [impl, i] { impl->ReapIdleExcept(i); };
  }
  for (int i = 0; i < n; ++i) {
    EventLoop* loop = s.loops[i].get();
    s.threads.emplace_back([loop, i] {
      std::string name = absl::StrCat("eb-loop-", i);
      pthread_setname_np(pthread_self(), name.c_str());
      loop->Run();
    });
  }
  return pool;
}

WriterPool::~WriterPool() {
  if (impl_ != nullptr) Shutdown();
}

void WriterPool::Submit(std::vector<Request> requests, absl::AnyInvocable<void()> all_enqueued) {
  Impl& s = *impl_;
  const size_t n = s.loops.size();
  // When the batches were posted: admission counts how long they wait for their loops.
  const absl::Time posted_at =
      (s.options.clock != nullptr ? s.options.clock : base::RealClock::Get())->Now();
  // Notifications due before their loop is done with the flush it is busy with: a batch posted
  // now is only taken after that flush, so the loop would refuse them (net/admission.h). Refused
  // here, the loop that is behind does not pay for it. Before anything is posted (no loop may
  // answer the batch before these are known) and outside the lock (a callback may Submit again).
  std::vector<std::vector<LoopContext::Item>> groups(n);
  size_t posted = 0;
  for (Request& r : requests) {
    const size_t loop = LoopOf(r.target, n);
    const int64_t busy_ns = s.contexts[loop]->busy_until_ns.load(std::memory_order_relaxed);
    if (!r.expect_reply && busy_ns != 0 && absl::FromUnixNanos(busy_ns) > r.deadline) {
      RefuseNow(r, absl::FromUnixNanos(busy_ns) - posted_at, s.options.observer, posted_at);
      continue;
    }
    std::string key = r.target.Key();
    groups[loop].push_back(LoopContext::Item{std::move(key), std::move(r)});
    ++posted;
  }
  if (posted == 0) {
    if (all_enqueued) all_enqueued();
    return;
  }
  std::vector<bool> touched(n);
  for (size_t i = 0; i < n; ++i) touched[i] = !groups[i].empty();
  auto make_work = [&](size_t i) -> absl::AnyInvocable<void(LoopContext*)> {
    return [items = std::move(groups[i]), posted_at](LoopContext* ctx) mutable {
      ctx->EnqueueBatch(items, posted_at);
    };
  };
  if (!s.PostToLoops(touched, static_cast<int64_t>(posted), make_work, all_enqueued)) {
    // Shut down: nothing was posted. Outside the lock: a callback may Submit again.
    for (auto& group : groups) {
      for (LoopContext::Item& item : group) FailNow(item.request);
    }
    if (all_enqueued) all_enqueued();
  }
}

void WriterPool::Submit(Fanout fanout, absl::AnyInvocable<void()> all_enqueued) {
  Impl& s = *impl_;
  const size_t n = s.loops.size();
  const absl::Time posted_at =
      (s.options.clock != nullptr ? s.options.clock : base::RealClock::Get())->Now();
  auto shared = std::make_shared<const Fanout>(std::move(fanout));
  FanoutReceiver& receiver = *shared->receiver;
  std::vector<std::unique_ptr<FanoutShare>> shares(n);
  std::vector<uint32_t> refused;  // indexes into targets, ascending
  size_t posted = 0;
  // As in Submit above: notifications due before their loop is done with its flush are refused
  // here, on this thread.
  for (uint32_t i = 0; i < shared->targets.size(); ++i) {
    const Fanout::Target& t = shared->targets[i];
    const size_t loop = LoopOf(*t.target, n);
    const int64_t busy_ns = s.contexts[loop]->busy_until_ns.load(std::memory_order_relaxed);
    if (!shared->expect_reply && busy_ns != 0 && absl::FromUnixNanos(busy_ns) > shared->deadline) {
      Request r;
      r.target = *t.target;
      r.deadline = shared->deadline;
      r.done = [&receiver, slot = t.slot](Outcome o) { receiver.OnOutcome(slot, std::move(o)); };
      RefuseNow(r, absl::FromUnixNanos(busy_ns) - posted_at, s.options.observer, posted_at);
      refused.push_back(i);
      continue;
    }
    if (shares[loop] == nullptr) shares[loop] = std::make_unique<FanoutShare>(shared);
    shares[loop]->entries.push_back(i);
    ++posted;
  }
  if (posted == 0) {
    if (all_enqueued) all_enqueued();
    return;
  }
  std::vector<bool> touched(n);
  for (size_t i = 0; i < n; ++i) touched[i] = shares[i] != nullptr;
  auto make_work = [&](size_t i) -> absl::AnyInvocable<void(LoopContext*)> {
    return [share = std::move(shares[i]), posted_at](LoopContext* ctx) mutable {
      ctx->EnqueueFanout(std::move(share), posted_at);
    };
  };
  if (!s.PostToLoops(touched, static_cast<int64_t>(posted), make_work, all_enqueued)) {
    // Shut down: the targets not refused above fail (nothing was posted).
    size_t next_refused = 0;
    for (uint32_t i = 0; i < shared->targets.size(); ++i) {
      if (next_refused < refused.size() && refused[next_refused] == i) {
        ++next_refused;
        continue;
      }
      receiver.OnOutcome(shared->targets[i].slot, ShuttingDown());
    }
    if (all_enqueued) all_enqueued();
  }
}

void WriterPool::Cancel(const std::shared_ptr<CancelToken>& token,
                        const std::vector<std::string>& keys) {
  if (token == nullptr) return;
  // Before the posts: a request of this token that reaches its loop after them fails at once.
  token->cancelled_.store(true, std::memory_order_release);
  Impl& s = *impl_;
  std::shared_lock<std::shared_mutex> lock(s.mu);
  if (s.shut_down) return;
  // Every loop: the keys name connections, whichever loop owns them (Cancel is rare).
  std::vector<std::string> unique;
  absl::flat_hash_set<absl::string_view> seen;
  for (const std::string& key : keys) {
    if (seen.insert(key).second) unique.push_back(key);
  }
  for (size_t i = 0; i < s.loops.size(); ++i) {
    LoopContext* ctx = s.contexts[i].get();
    s.loops[i]->Post([ctx, id = token->id(), unique] { ctx->Cancel(id, unique); });
  }
}

void WriterPool::CheckDestination(const uri::TcpTarget& target,
                                  absl::AnyInvocable<void(absl::Status)> done) {
  Impl& s = *impl_;
  const policy::DestinationPolicy* policy = s.options.destination_policy;
  PoolObserver* observer = s.options.observer;
  std::string key = target.Key();
  if (policy == nullptr) {
    done(absl::OkStatus());
    return;
  }
  if (std::optional<SocketAddress> literal = ParseIpLiteral(target.host, target.port)) {
    done(CheckAddressesAtSubscribe(policy, observer, key, /*is_name=*/false, {*literal}));
    return;
  }
  // Runs `done` exactly once: with the verdict, or, when the resolver drops the callback (it was
  // closed by Shutdown), with UNAVAILABLE from the destructor, so the Subscribe still finishes.
  class Once {
   public:
    explicit Once(absl::AnyInvocable<void(absl::Status)> done) : done_(std::move(done)) {}
    Once(Once&& other) noexcept : done_(std::move(other.done_)) { other.done_ = nullptr; }
    Once& operator=(Once&&) = delete;
    ~Once() {
      if (done_) done_(absl::UnavailableError("destination check: shutting down"));
    }
    void operator()(absl::Status status) {
      auto done = std::move(done_);
      done_ = nullptr;
      done(std::move(status));
    }

   private:
    absl::AnyInvocable<void(absl::Status)> done_;
  };
  const size_t loop = std::hash<std::string>()(key) % s.loops.size();
  {
    std::shared_lock<std::shared_mutex> lock(s.mu);
    if (s.shut_down) {
      lock.unlock();
      done(absl::UnavailableError("destination check: shutting down"));
      return;
    }
  }
  s.resolver->Resolve(
      target.host, target.port, s.loops[loop].get(),
      [policy, observer, key, once = Once(std::move(done))](ResolveResult result) mutable {
        // A name that does not resolve now is accepted: it may well resolve later (a peer not
        // deployed yet), and whatever it resolves to then is checked before each connect.
        if (!result.ok()) {
          once(absl::OkStatus());
          return;
        }
        once(CheckAddressesAtSubscribe(policy, observer, key, /*is_name=*/true, *result));
      });
}

bool WriterPool::Drain(absl::Time deadline) {
  Impl& s = *impl_;
  for (;;) {
    if (s.pending.load(std::memory_order_acquire) == 0) return true;
    absl::Time now = absl::Now();
    if (now >= deadline) return false;
    absl::SleepFor(std::min(kDrainPollInterval, deadline - now));
  }
}

void WriterPool::Shutdown() {
  Impl& s = *impl_;
  {
    std::lock_guard<std::shared_mutex> lock(s.mu);
    if (s.shut_down) return;
    s.shut_down = true;
  }
  // No resolver result may reach a loop from here on.
  s.resolver->Close();
  for (auto& loop : s.loops) loop->Stop();
  for (auto& thread : s.threads) thread.join();
  s.threads.clear();
  // The loops are stopped and joined: their connections are now safe to touch from here.
  for (auto& ctx : s.contexts) ctx->FailAllAndClear(kShuttingDown);
}

std::optional<TargetStats> WriterPool::Stats(const std::string& key) const {
  return impl_->stats.Get(key);
}

std::vector<TargetStats> WriterPool::AllStats() const { return impl_->stats.All(); }

int WriterPool::num_loops() const { return static_cast<int>(impl_->loops.size()); }

size_t WriterPool::max_target_connections() const { return impl_->options.max_target_connections; }

}  // namespace eventbus::net
