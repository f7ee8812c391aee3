#include "server/net/event_loop.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/base/log.h"

namespace eventbus::net {
namespace {

constexpr int kMaxEventsPerWait = 256;

// epoll_event.data carries the fd in the low half and a registration generation in the high half,
// so that an event still pending for a closed fd is never delivered to a newer handler that got
// the same fd number within the same iteration.
uint64_t PackEventData(int fd, uint32_t generation) {
  return (static_cast<uint64_t>(generation) << 32) | static_cast<uint32_t>(fd);
}

[[noreturn]] void Die(absl::string_view what) {
  base::LogLine(base::LogLevel::kError, absl::StrCat("event loop: ", what, ": ", strerror(errno)));
  std::abort();
}

}  // namespace

struct EventLoop::Impl {
  struct Registration {
    IoHandler* handler;
    uint32_t generation;
  };
  struct TimerEntry {
    absl::Time when;
    TimerId id;
  };
  // std::push_heap builds a max-heap; "greater" puts the earliest (when, id) on top.
  struct Later {
    bool operator()(const TimerEntry& a, const TimerEntry& b) const {
      return a.when != b.when ? a.when > b.when : a.id > b.id;
    }
  };

  base::UniqueFd epoll_fd;
  base::UniqueFd wake_fd;
  std::atomic<bool> stop{false};
  std::atomic<std::thread::id> loop_thread{};

  // std::mutex rather than absl::Mutex in server/net: Debian's abseil is not built with TSan
  // annotations, so ThreadSanitizer could not see the happens-before an absl::Mutex gives.
  std::mutex post_mu;
  std::vector<Callback> posted;  // guarded by post_mu

  // Loop thread only.
  absl::flat_hash_map<int, Registration> registrations;
  uint32_t next_generation = 1;
  std::vector<TimerEntry> timer_heap;
  absl::flat_hash_map<TimerId, Callback> timers;  // absent = cancelled or ran (lazy cancel)
  TimerId next_timer_id = 1;
  std::vector<Callback> end_of_iteration;

  void Wake() {
    uint64_t one = 1;
    // EAGAIN means the counter is saturated: the loop is already due to wake up.
    while (::write(wake_fd.get(), &one, sizeof(one)) < 0 && errno == EINTR) {
    }
  }

  void DrainWakeFd() {
    uint64_t value;
    while (::read(wake_fd.get(), &value, sizeof(value)) < 0 && errno == EINTR) {
    }
  }

  // Runs what was posted so far; callbacks posted meanwhile wait for the next iteration (their
  // Post() saw an empty queue and wrote the eventfd again).
  void RunPosted() {
    std::vector<Callback> batch;
    {
      std::lock_guard<std::mutex> lock(post_mu);
      batch.swap(posted);
    }
    for (Callback& cb : batch) cb();
  }

  // Milliseconds until the earliest live timer, rounded up so that no timer fires early;
  // -1 when there is none.
  int NextTimeoutMs() {
    while (!timer_heap.empty() && !timers.contains(timer_heap.front().id)) {
      std::pop_heap(timer_heap.begin(), timer_heap.end(), Later());
      timer_heap.pop_back();
    }
    if (timer_heap.empty()) return -1;
    absl::Duration left = timer_heap.front().when - absl::Now();
    if (left <= absl::ZeroDuration()) return 0;
    int64_t ms = absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1)));
    return static_cast<int>(std::min<int64_t>(ms, 1 << 30));
  }

  void RunDueTimers() {
    if (timer_heap.empty()) return;
    absl::Time now = absl::Now();
    // A timer added by a running callback, even one already due, waits for the next iteration.
    const TimerId first_new = next_timer_id;
    std::vector<TimerEntry> deferred;
    // One at a time, so that a callback can still cancel a timer that is due in this same pass.
    while (!timer_heap.empty() && timer_heap.front().when <= now) {
      TimerEntry entry = timer_heap.front();
      std::pop_heap(timer_heap.begin(), timer_heap.end(), Later());
      timer_heap.pop_back();
      if (entry.id >= first_new) {
        deferred.push_back(entry);
        continue;
      }
      auto it = timers.find(entry.id);
      if (it == timers.end()) continue;
      Callback cb = std::move(it->second);
      timers.erase(it);
      cb();
    }
    for (const TimerEntry& entry : deferred) {
      timer_heap.push_back(entry);
      std::push_heap(timer_heap.begin(), timer_heap.end(), Later());
    }
  }

  void RunEndOfIteration() {
    while (!end_of_iteration.empty()) {
      std::vector<Callback> batch;
      batch.swap(end_of_iteration);
      for (Callback& cb : batch) cb();
    }
  }

  // Cancelled timers stay in the heap until they come due; rebuild it when they dominate.
  void MaybeCompactHeap() {
    if (timer_heap.size() < 64 || timer_heap.size() < 4 * timers.size()) return;
    timer_heap.erase(std::remove_if(timer_heap.begin(), timer_heap.end(),
                                    [this](const TimerEntry& e) { return !timers.contains(e.id); }),
                     timer_heap.end());
    std::make_heap(timer_heap.begin(), timer_heap.end(), Later());
  }

  void Control(int op, int fd, uint32_t events, uint32_t generation) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = PackEventData(fd, generation);
    if (::epoll_ctl(epoll_fd.get(), op, fd, &ev) != 0) {
      // Only a broken invariant (unknown fd, double add) gets here.
      Die(absl::StrCat("epoll_ctl(op=", op, ", fd=", fd, ")"));
    }
  }
};

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create() {
  base::UniqueFd epoll_fd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_fd.valid()) {
    return absl::InternalError(absl::StrCat("event loop: epoll_create1: ", strerror(errno)));
  }
  base::UniqueFd wake_fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_fd.valid()) {
    return absl::InternalError(absl::StrCat("event loop: eventfd: ", strerror(errno)));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = PackEventData(wake_fd.get(), 0);
  if (::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, wake_fd.get(), &ev) != 0) {
    return absl::InternalError(absl::StrCat("event loop: epoll_ctl(eventfd): ", strerror(errno)));
  }
  return std::unique_ptr<EventLoop>(new EventLoop(std::move(epoll_fd), std::move(wake_fd)));
}

EventLoop::EventLoop(base::UniqueFd epoll_fd, base::UniqueFd wake_fd)
    : impl_(std::make_unique<Impl>()) {
  impl_->epoll_fd = std::move(epoll_fd);
  impl_->wake_fd = std::move(wake_fd);
}

EventLoop::~EventLoop() = default;

void EventLoop::Run() {
  Impl& s = *impl_;
  s.loop_thread.store(std::this_thread::get_id());
  epoll_event events[kMaxEventsPerWait];
  while (!s.stop.load(std::memory_order_acquire)) {
    int n = ::epoll_wait(s.epoll_fd.get(), events, kMaxEventsPerWait, s.NextTimeoutMs());
    if (n < 0) {
      if (errno == EINTR) continue;
      Die("epoll_wait");
    }
    bool woken = false;
    for (int i = 0; i < n; ++i) {
      int fd = static_cast<int>(events[i].data.u64 & 0xffffffffu);
      uint32_t generation = static_cast<uint32_t>(events[i].data.u64 >> 32);
      if (fd == s.wake_fd.get() && generation == 0) {
        woken = true;
        continue;
      }
      auto it = s.registrations.find(fd);
      // Removed (or replaced) by an earlier handler of this same batch.
      if (it == s.registrations.end() || it->second.generation != generation) continue;
      it->second.handler->OnIo(events[i].events);
    }
    if (woken) {
      s.DrainWakeFd();
      s.RunPosted();
    }
    s.RunDueTimers();
    s.RunEndOfIteration();
    s.MaybeCompactHeap();
  }
  // Callbacks posted before Stop() still run, including any they post themselves.
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(s.post_mu);
      if (s.posted.empty()) break;
    }
    s.RunPosted();
    s.RunEndOfIteration();
  }
  s.loop_thread.store(std::thread::id());
}

void EventLoop::Stop() {
  impl_->stop.store(true, std::memory_order_release);
  impl_->Wake();
}

void EventLoop::Post(Callback cb) {
  bool was_empty;
  {
    std::lock_guard<std::mutex> lock(impl_->post_mu);
    was_empty = impl_->posted.empty();
    impl_->posted.push_back(std::move(cb));
  }
  // A non-empty queue already has a wakeup on its way.
  if (was_empty) impl_->Wake();
}

bool EventLoop::InLoopThread() const {
  return impl_->loop_thread.load() == std::this_thread::get_id();
}

void EventLoop::Add(int fd, uint32_t events, IoHandler* handler) {
  uint32_t generation = impl_->next_generation++;
  if (generation == 0) generation = impl_->next_generation++;  // 0 names the wakeup fd
  impl_->registrations[fd] = Impl::Registration{handler, generation};
  impl_->Control(EPOLL_CTL_ADD, fd, events, generation);
}

void EventLoop::Modify(int fd, uint32_t events, IoHandler* handler) {
  auto it = impl_->registrations.find(fd);
  if (it == impl_->registrations.end()) Die(absl::StrCat("Modify of unregistered fd ", fd));
  it->second.handler = handler;
  impl_->Control(EPOLL_CTL_MOD, fd, events, it->second.generation);
}

void EventLoop::Remove(int fd) {
  auto it = impl_->registrations.find(fd);
  if (it == impl_->registrations.end()) return;
  impl_->registrations.erase(it);
  epoll_event ev{};
  // The fd may already be closed by its owner; nothing to undo then.
  ::epoll_ctl(impl_->epoll_fd.get(), EPOLL_CTL_DEL, fd, &ev);
}

EventLoop::TimerId EventLoop::RunAt(absl::Time when, Callback cb) {
  TimerId id = impl_->next_timer_id++;
  impl_->timers.emplace(id, std::move(cb));
  impl_->timer_heap.push_back(Impl::TimerEntry{when, id});
  std::push_heap(impl_->timer_heap.begin(), impl_->timer_heap.end(), Impl::Later());
  return id;
}

EventLoop::TimerId EventLoop::RunAfter(absl::Duration delay, Callback cb) {
  return RunAt(absl::Now() + delay, std::move(cb));
}

void EventLoop::Cancel(TimerId id) { impl_->timers.erase(id); }

void EventLoop::RunAtEndOfIteration(Callback cb) {
  impl_->end_of_iteration.push_back(std::move(cb));
}

}  // namespace eventbus::net
