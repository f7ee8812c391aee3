// A single-threaded reactor (after redis' ae.c): epoll for fds, a timer heap, and Post() as the one
// road into the loop from other threads (after envoy's Dispatcher::post: a locked queue, an eventfd
// wakeup only when the queue was empty, callbacks run outside the lock).
#ifndef EVENTBUS_SERVER_NET_EVENT_LOOP_H_
#define EVENTBUS_SERVER_NET_EVENT_LOOP_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/base/fd.h"

namespace eventbus::net {

// Receives readiness events for one fd. Loop thread only.
class IoHandler {
 public:
  virtual ~IoHandler() = default;
  // `events` is the EPOLL* mask reported by epoll_wait.
  virtual void OnIo(uint32_t events) = 0;
};

// Post() and Stop() are thread-safe; everything else is loop thread only.
class EventLoop {
 public:
  using Callback = absl::AnyInvocable<void()>;
  using TimerId = uint64_t;

  // Creates the epoll instance and the wakeup eventfd. Fails only if the kernel refuses them.
  static absl::StatusOr<std::unique_ptr<EventLoop>> Create();
  ~EventLoop();

  // Runs the loop on the calling thread until Stop(). Callbacks posted before Stop() still run.
  void Run();
  // Asks Run() to return after the current iteration. Thread-safe.
  void Stop();
  // Queues `cb` to run on the loop thread. Wakes the loop only when the queue was empty.
  // Thread-safe. Callbacks run in posting order.
  void Post(Callback cb);
  // True on the thread currently inside Run().
  bool InLoopThread() const;

  // Registers `fd` for `events` (EPOLLIN/EPOLLOUT/...); the handler must outlive the registration.
  void Add(int fd, uint32_t events, IoHandler* handler);
  void Modify(int fd, uint32_t events, IoHandler* handler);
  void Remove(int fd);

  // Runs `cb` once at `when` (or right away in the next iteration if it is past). Precision: ~1 ms.
  TimerId RunAt(absl::Time when, Callback cb);
  TimerId RunAfter(absl::Duration delay, Callback cb);
  // Cancels a pending timer; a no-op if it already ran or was cancelled.
  void Cancel(TimerId id);

  // Runs `cb` after every event and timer of the current iteration: used to destroy objects
  // (connections) without freeing them under a running callback.
  void RunAtEndOfIteration(Callback cb);

 private:
  EventLoop(base::UniqueFd epoll_fd, base::UniqueFd wake_fd);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_EVENT_LOOP_H_
