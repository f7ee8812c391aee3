#include "server/net/resolver.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/base/log.h"

namespace eventbus::net {
namespace {

std::string AddressText(const sockaddr* addr) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (addr->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
    return absl::StrCat(buf, ":", ntohs(in->sin_port));
  }
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
  ::inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof(buf));
  return absl::StrCat("[", buf, "]:", ntohs(in6->sin6_port));
}

}  // namespace

std::optional<SocketAddress> ParseIpLiteral(absl::string_view host, uint16_t port) {
  std::string text(host);
  SocketAddress out;
  auto* in = reinterpret_cast<sockaddr_in*>(&out.storage);
  if (::inet_pton(AF_INET, text.c_str(), &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    out.length = sizeof(sockaddr_in);
    out.text = AddressText(reinterpret_cast<sockaddr*>(in));
    return out;
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
  if (::inet_pton(AF_INET6, text.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    out.length = sizeof(sockaddr_in6);
    out.text = AddressText(reinterpret_cast<sockaddr*>(in6));
    return out;
  }
  return std::nullopt;
}

ResolveResult ResolveBlocking(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  addrinfo* list = nullptr;
  int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &list);
  if (rc != 0) {
    std::string reason = rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc);
    return absl::NotFoundError(absl::StrCat("resolve \"", host, "\": ", reason));
  }
  std::vector<SocketAddress> out;
  for (addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
    SocketAddress addr;
    memcpy(&addr.storage, ai->ai_addr, ai->ai_addrlen);
    addr.length = ai->ai_addrlen;
    if (ai->ai_family == AF_INET) {
      reinterpret_cast<sockaddr_in*>(&addr.storage)->sin_port = htons(port);
    } else {
      reinterpret_cast<sockaddr_in6*>(&addr.storage)->sin6_port = htons(port);
    }
    addr.text = AddressText(reinterpret_cast<sockaddr*>(&addr.storage));
    out.push_back(std::move(addr));
  }
  ::freeaddrinfo(list);
  if (out.empty()) {
    return absl::NotFoundError(absl::StrCat("resolve \"", host, "\": no IPv4/IPv6 address"));
  }
  return out;
}

namespace {

// `addr` with its port set to `port` (and its text to match).
SocketAddress WithPort(const SocketAddress& addr, uint16_t port) {
  SocketAddress out = addr;
  if (out.storage.ss_family == AF_INET) {
    reinterpret_cast<sockaddr_in*>(&out.storage)->sin_port = htons(port);
  } else {
    reinterpret_cast<sockaddr_in6*>(&out.storage)->sin6_port = htons(port);
  }
  out.text = AddressText(reinterpret_cast<const sockaddr*>(&out.storage));
  return out;
}

ResolveResult ForPort(const ResolveResult& result, uint16_t port) {
  // A fresh Status per waiter: a copy would share its heap rep (and reference count) with the
  // resolver thread's, across threads.
  if (!result.ok()) return absl::Status(result.status().code(), result.status().message());
  std::vector<SocketAddress> out;
  out.reserve(result->size());
  for (const SocketAddress& addr : *result) out.push_back(WithPort(addr, port));
  return out;
}

}  // namespace

struct Resolver::State {
  // One Resolve() call waiting for its name.
  struct Waiter {
    uint64_t id;
    uint16_t port;
    EventLoop* loop;
    absl::AnyInvocable<void(ResolveResult)> done;
    // The timeout timer on `loop`; read and written on that loop thread only.
    std::shared_ptr<EventLoop::TimerId> timer;
  };
  // The one lookup of a name, queued for a thread or running on one.
  struct Lookup {
    std::vector<Waiter> waiters;
    bool running = false;
  };

  explicit State(ResolverOptions o) : options(std::move(o)) {
    if (!options.lookup) {
      options.lookup = [](const std::string& host) { return ResolveBlocking(host, 0); };
    }
    if (options.max_threads < 1) options.max_threads = 1;
  }

  ResolverOptions options;

  // std:: primitives: see the note on post_mu in event_loop.cc (TSan visibility).
  // Lock order: mu, then an EventLoop's post lock (results are posted under mu, which is what
  // lets Close() guarantee that no result reaches a loop after it).
  std::mutex mu;
  std::condition_variable cv;
  // Every name with a lookup queued or running. A waiter is in here until whoever takes it out
  // (the thread with the result, or its timeout) completes it: that is what makes `done` run once.
  absl::flat_hash_map<std::string, Lookup> lookups;  // guarded by mu
  std::deque<std::string> queue;                     // names waiting for a thread; guarded by mu
  int threads = 0;                                   // guarded by mu
  int idle = 0;                                      // threads waiting for work; guarded by mu
  uint64_t next_id = 1;                              // guarded by mu
  bool closed = false;                               // guarded by mu

  // Starts a thread if the queue holds more names than idle threads can take. Under mu.
  void MaybeStartThread(const std::shared_ptr<State>& self) {
    if (static_cast<int>(queue.size()) <= idle || threads >= options.max_threads) return;
    auto* arg = new std::shared_ptr<State>(self);
    pthread_t thread;
    int rc = ::pthread_create(&thread, nullptr, &State::ThreadMain, arg);
    if (rc != 0) {
      // The names stay queued for the running threads; their requests time out meanwhile.
      delete arg;
      EB_LOG(kWarning, "cannot start a resolver thread", "error=", base::LogValue(strerror(rc)),
             " threads=", threads);
      return;
    }
    ::pthread_detach(thread);
    ++threads;
  }

  static void* ThreadMain(void* arg) {
    std::shared_ptr<State> self = std::move(*static_cast<std::shared_ptr<State>*>(arg));
    delete static_cast<std::shared_ptr<State>*>(arg);
    ::pthread_setname_np(::pthread_self(), "eb-resolve");
    self->Work();
    return nullptr;
  }

  void Work() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      ++idle;
      bool woken = cv.wait_for(lock, absl::ToChronoNanoseconds(options.idle_thread_exit),
                               [&] { return closed || !queue.empty(); });
      --idle;
      if (closed || !woken) break;
      std::string host = std::move(queue.front());
      queue.pop_front();
      // A queued name is always in `lookups`: whoever drops the entry drops it from the queue.
      lookups[host].running = true;
      lock.unlock();
      const ResolveResult result = options.lookup(host);
      lock.lock();
      if (closed) break;
      auto it = lookups.find(host);
      std::vector<Waiter> waiters = std::move(it->second.waiters);
      lookups.erase(it);
      for (Waiter& w : waiters) {
        w.loop->Post([loop = w.loop, timer = std::move(w.timer), done = std::move(w.done),
                      result = ForPort(result, w.port)]() mutable {
          if (*timer != 0) loop->Cancel(*timer);
          done(std::move(result));
        });
      }
    }
    --threads;
  }

  // The timer of waiter `id` of `host` fired (on its loop thread).
  void OnTimeout(const std::string& host, uint64_t id) {
    absl::AnyInvocable<void(ResolveResult)> done;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (closed) return;
      auto it = lookups.find(host);
      // Not found: the result was taken (and posted) first; it completes the request.
      if (it == lookups.end()) return;
      std::vector<Waiter>& waiters = it->second.waiters;
      auto w = std::find_if(waiters.begin(), waiters.end(),
                            [id](const Waiter& waiter) { return waiter.id == id; });
      if (w == waiters.end()) return;
      done = std::move(w->done);
      waiters.erase(w);
      // Nobody wants a lookup that has not started yet. A running one stays, for requests to
      // join until it returns.
      if (waiters.empty() && !it->second.running) {
        auto queued = std::find(queue.begin(), queue.end(), host);
        if (queued != queue.end()) queue.erase(queued);
        lookups.erase(it);
      }
    }
    done(absl::DeadlineExceededError(absl::StrCat("resolve \"", host, "\": timed out after ",
                                                  absl::ToInt64Milliseconds(options.timeout),
                                                  " ms")));
  }
};

Resolver::Resolver(ResolverOptions options) : state_(std::make_shared<State>(std::move(options))) {}

Resolver::~Resolver() { Close(); }

void Resolver::Resolve(std::string host, uint16_t port, EventLoop* loop,
                       absl::AnyInvocable<void(ResolveResult)> done) {
  State& s = *state_;
  const absl::Time deadline = absl::Now() + s.options.timeout;
  auto timer = std::make_shared<EventLoop::TimerId>(0);
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.closed) return;
  const uint64_t id = s.next_id++;
  // Armed under mu, before the waiter can be answered: the result, posted under mu too, then
  // runs after the timer exists and can cancel it (loop callbacks run in posting order).
  auto arm = [state = state_, loop, timer, host, id, deadline] {
    *timer = loop->RunAt(deadline, [state, host, id] { state->OnTimeout(host, id); });
  };
  if (loop->InLoopThread()) {
    arm();
  } else {
    loop->Post(std::move(arm));
  }
  State::Lookup& lookup = s.lookups[host];
  lookup.waiters.push_back(State::Waiter{id, port, loop, std::move(done), std::move(timer)});
  if (lookup.waiters.size() == 1 && !lookup.running) {
    s.queue.push_back(std::move(host));
    s.MaybeStartThread(state_);
    s.cv.notify_one();
  }
}

void Resolver::Close() {
  absl::flat_hash_map<std::string, State::Lookup> dropped;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->closed = true;
    dropped.swap(state_->lookups);
    state_->queue.clear();
    state_->cv.notify_all();
  }
  // `dropped` (and the callbacks in it) is destroyed here, outside the lock.
}

}  // namespace eventbus::net
