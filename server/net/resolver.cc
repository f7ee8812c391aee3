#include "server/net/resolver.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

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

struct Resolver::State {
  struct Job {
    std::string host;
    uint16_t port;
    EventLoop* loop;
    absl::AnyInvocable<void(ResolveResult)> done;
  };

  // std:: primitives: see the note on post_mu in event_loop.cc (TSan visibility).
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Job> jobs;  // guarded by mu
  bool closed = false;   // guarded by mu

  static void Work(std::shared_ptr<State> self) {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(self->mu);
        self->cv.wait(lock, [&] { return self->closed || !self->jobs.empty(); });
        if (self->closed) return;
        job = std::move(self->jobs.front());
        self->jobs.pop_front();
      }
      ResolveResult result = ResolveBlocking(job.host, job.port);
      std::lock_guard<std::mutex> lock(self->mu);
      if (self->closed) return;
      // Posting under `mu` is what lets Close() guarantee that no result reaches a loop after it.
      job.loop->Post([done = std::move(job.done), result = std::move(result)]() mutable {
        done(std::move(result));
      });
    }
  }
};

Resolver::Resolver(int num_threads) : state_(std::make_shared<State>()) {
  for (int i = 0; i < num_threads; ++i) std::thread(&State::Work, state_).detach();
}

Resolver::~Resolver() { Close(); }

void Resolver::Resolve(std::string host, uint16_t port, EventLoop* loop,
                       absl::AnyInvocable<void(ResolveResult)> done) {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (state_->closed) return;
  state_->jobs.push_back(State::Job{std::move(host), port, loop, std::move(done)});
  state_->cv.notify_one();
}

void Resolver::Close() {
  std::deque<State::Job> dropped;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->closed = true;
    dropped.swap(state_->jobs);
    state_->cv.notify_all();
  }
}

}  // namespace eventbus::net
