// Admission of messages on one writer loop (issue 11, part 6): before an async notification is
// queued, the loop that owns its target predicts when it would be written and refuses it up front
// (DeliveryCode::kOverloaded) when that is after its deadline, instead of accepting it and letting
// it expire unwritten. Internal to server/net: LoopContext (connection.h) keeps one per loop.
#ifndef EVENTBUS_SERVER_NET_ADMISSION_H_
#define EVENTBUS_SERVER_NET_ADMISSION_H_

#include <cstddef>
#include <string>

#include "absl/time/time.h"

namespace eventbus::net {

// What the loop spends, as measured on its own recent work (or assumed before it has any).
struct FlushCosts {
  // Flushing a connection not connected yet: socket, connect, epoll registration and, when the
  // handshake completed inside connect() (loopback), the first write.
  absl::Duration connect = absl::Microseconds(100);
  // Flushing a connected connection: one coalesced write of everything queued for it.
  absl::Duration write = absl::Microseconds(10);
  // Taking one message of a posted batch: admitting (or refusing) and queueing it.
  absl::Duration enqueue = absl::Microseconds(2);
};

// The loop's plan for its next flush. Messages are enqueued while the loop runs its posted
// batches, and the connections they touch are flushed one after the other when the batches are
// done (LoopContext::FlushPending), so that all the messages a connection got in the meantime share
// one write. A message is written once every connection ahead of its own on the flush list is
// flushed, so, if the flush started now:
//
//   written at ~= now + connects ahead x cost per connect + writes ahead x cost per write
//                 + its own connection's cost
//
// `now` already includes how long its batch waited to be run (Post to run). A message for a
// connection already on the list rides along in that connection's write: it costs nothing more.
// Admission accepts a notification only if that time is within its deadline. The flush starts
// later than `now` when more batches run first; the plan keeps the latest start that keeps every
// accepted message on time, and the loop flushes early, before a batch whose enqueueing would pass
// it (ShouldFlushBefore). So what was accepted is written in time as long as the costs hold.
//
// Times come from the caller (the pool's clock), so the rule is exact under a fake clock.
// Loop thread only.
class FlushPlan {
 public:
  // `initial`: the costs assumed until the loop has measured its own.
  explicit FlushPlan(FlushCosts initial = {});

  // How long after the flush starts a connection not on the list yet would be flushed, if it were
  // added now (`connect`: it is not connected yet). Changes nothing.
  absl::Duration Offset(bool connect) const;
  // Adds that connection to the end of the list; returns its offset (as Offset()).
  absl::Duration Add(bool connect);
  // Records that a message accepted with `deadline` is written `offset` after the flush starts.
  void Promise(absl::Time deadline, absl::Duration offset);
  // True when enqueueing `messages` more before flushing, from `now`, would start the flush too
  // late for a message already accepted.
  bool ShouldFlushBefore(absl::Time now, size_t messages) const;
  // The flush ran: nothing is planned or promised any more.
  void Clear();

  // Teach the costs what one connection's flush, or one message's enqueueing, took (a moving
  // average, 1/8 per sample, as TCP's smoothed RTT).
  void LearnConnect(absl::Duration took);
  void LearnWrite(absl::Duration took);
  void LearnEnqueue(absl::Duration took);

  const FlushCosts& costs() const { return costs_; }
  // Connections planned (to connect, to write) since the last Clear.
  size_t planned_connects() const { return planned_connects_; }
  size_t planned_writes() const { return planned_writes_; }
  // The flush work planned: how long the flush should take.
  absl::Duration work() const { return work_; }
  // The latest flush start that keeps every accepted message on time; InfiniteFuture if none.
  absl::Time latest_start() const { return latest_start_; }

  // "4921 connections to flush first, 4900 to connect"
  std::string DescribeAhead() const;

 private:
  FlushCosts costs_;
  absl::Duration work_;
  absl::Time latest_start_ = absl::InfiniteFuture();
  size_t planned_connects_ = 0;
  size_t planned_writes_ = 0;
};

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_ADMISSION_H_
