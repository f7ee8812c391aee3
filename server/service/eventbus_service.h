// The eventbus.v1.EventBusService implementation: thin callback-API glue that validates and
// converts requests (convert.h), hands Subscribe/Unsubscribe to the SubscriptionManager and Raise
// to the Dispatcher, and finishes each call from whichever thread completes it. Never blocks. A
// sync Raise whose caller cancels, disconnects or passes its deadline is abandoned
// (Dispatcher::Cancel).
#ifndef EVENTBUS_SERVER_SERVICE_EVENTBUS_SERVICE_H_
#define EVENTBUS_SERVER_SERVICE_EVENTBUS_SERVICE_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "eventbus/v1/eventbus.grpc.pb.h"
#include "eventbus/v1/eventbus.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/auth/caller.h"
#include "server/base/clock.h"
#include "server/delivery/dispatcher.h"
#include "server/jsonrpc/encoder.h"
#include "server/net/writer_pool.h"
#include "server/registry/registry.h"
#include "server/service/store_loader.h"
#include "server/store/subscription_manager.h"

namespace eventbus::service {

struct ServiceOptions {
  // Raise defaults when the request leaves them unset.
  bool default_sync = false;
  absl::Duration default_timeout = absl::Milliseconds(1000);
  // A Raise timeout must lie in [1 ms, max_timeout].
  absl::Duration max_timeout = absl::Hours(1);
  // Sync Raise answers this long before the caller's deadline (at most a quarter of what is left),
  // so that the caller sees per-target statuses instead of DEADLINE_EXCEEDED.
  absl::Duration deadline_margin = absl::Milliseconds(100);
  size_t max_params_bytes = 65536;
  size_t max_event_name_bytes = 128;
  // True when the API authenticates callers (server/auth/): auth::CallerOf() then returns the
  // recorded caller, and ownership rules apply. False: everyone is auth::Caller::Anonymous().
  bool auth_enabled = false;
};

// Thread-safe; every method returns at once and finishes its reactor later, on a store thread or
// an event-loop thread. `registry`, `manager`, `dispatcher`, `pool`, `clock` and `loader` must
// outlive it. Until `loader` (when given) has loaded the store, every call answers its
// UNAVAILABLE Ready() status: the registry is empty or partial before.
//
// Ownership (SPEC §10): Subscribe and Unsubscribe hand the caller (auth::CallerOf) to the manager
// as a registry::Actor (its name; admin when it has the admin role), which decides. The Lists show
// a caller with the reader or admin role everything, anyone else only the subscriptions it owns.
// With auth_enabled false every caller is the anonymous admin: no owner, no restriction.
//
// Raise and RaiseStream are registered raw (bytes in, bytes out) and parse their requests
// themselves: gRPC 1.51's callback API answers a request that protobuf cannot parse (a string that
// is not valid UTF-8, params nested beyond protobuf's recursion limit) with UNIMPLEMENTED and an
// empty message, while EventBus owes the caller INVALID_ARGUMENT saying what is wrong. RaiseStream
// parses each event of a message on its own, so one such event gets its own error result and the
// others of its message are still raised.
//
// RaiseStream (eventbus.proto) validates each event exactly as Raise does (PrepareRaise) and
// gives it the answer Raise would. The async events of a message go to the dispatcher together
// (AddToBatch, Dispatcher::Batch: one post per writer loop and one answer for all of them, not one
// per event); a sync event is raised on its own (StartRaise), after the async events before it
// have been handed over. It reads the next message only when (a) fewer than
// kStreamMaxUnqueuedEvents async events read so far are not yet queued at their targets (the
// dispatcher has not answered them), (b) fewer than kStreamMaxSyncEvents sync events await their
// outcome, and (c) fewer than kStreamMaxUnwritten answered messages wait to be written. So a
// stream holds a bounded number of messages (each of at most kStreamMaxEventsPerMessage events),
// and a sender that outpaces the writer loops, or never reads its answers, is held back by gRPC's
// flow control; a target whose queue is full answers QUEUE_FULL. (a) reads ahead rather than
// waiting for each message to be queued before the next: waiting costs a round trip between the
// gRPC thread and the loops per message, which measured 6.6x the CPU per event with one event
// per message (eventbus_bench, README "Benchmarks"). Events go to the dispatcher in
// stream order, and the writer pool queues each target's messages in submission order, so each
// target receives a stream's events in order. A caller that cancels, disconnects or passes its
// deadline ends the stream: its sync events are abandoned (Dispatcher::Cancel), and the stream
// finishes once every event it started has answered.
//
// Composed by hand rather than over CallbackService: a raw bidi method has the same parameters as
// the typed one it replaces, so it cannot be layered over it.
using EventBusServiceBase = eventbus::v1::EventBusService::WithCallbackMethod_Subscribe<
    eventbus::v1::EventBusService::WithCallbackMethod_Unsubscribe<
        eventbus::v1::EventBusService::WithRawCallbackMethod_Raise<
            eventbus::v1::EventBusService::WithRawCallbackMethod_RaiseStream<
                eventbus::v1::EventBusService::WithCallbackMethod_ListSubscriptions<
                    eventbus::v1::EventBusService::WithCallbackMethod_ListEvents<
                        eventbus::v1::EventBusService::Service>>>>>>;

// A Raise request validated and resolved, ready for the dispatcher.
struct PreparedRaise {
  jsonrpc::Params params;
  delivery::RaiseOptions options;
};

class EventBusServiceImpl final : public EventBusServiceBase {
 public:
  // RaiseStream's bounds (see above).
  static constexpr size_t kStreamMaxUnqueuedEvents = 512;
  static constexpr size_t kStreamMaxSyncEvents = 64;
  static constexpr size_t kStreamMaxUnwritten = 16;
  static constexpr size_t kStreamMaxEventsPerMessage = 10000;

  EventBusServiceImpl(registry::Registry* registry, store::SubscriptionManager* manager,
                      delivery::Dispatcher* dispatcher, const net::WriterPool* pool,
                      const base::Clock* clock, ServiceOptions options,
                      const StoreLoader* loader = nullptr);

  grpc::ServerUnaryReactor* Subscribe(grpc::CallbackServerContext* context,
                                      const eventbus::v1::SubscribeRequest* request,
                                      eventbus::v1::SubscribeResponse* response) override;
  grpc::ServerUnaryReactor* Unsubscribe(grpc::CallbackServerContext* context,
                                        const eventbus::v1::UnsubscribeRequest* request,
                                        eventbus::v1::UnsubscribeResponse* response) override;
  grpc::ServerUnaryReactor* Raise(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* RaiseStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ListSubscriptions(
      grpc::CallbackServerContext* context, const eventbus::v1::ListSubscriptionsRequest* request,
      eventbus::v1::ListSubscriptionsResponse* response) override;
  grpc::ServerUnaryReactor* ListEvents(grpc::CallbackServerContext* context,
                                       const eventbus::v1::ListEventsRequest* request,
                                       eventbus::v1::ListEventsResponse* response) override;

  // Resolves the Raise options of `request` given the caller's deadline (InfiniteFuture when
  // none) at `now`: INVALID_ARGUMENT for a timeout outside [1 ms, max_timeout], DEADLINE_EXCEEDED
  // when the deadline has already passed. A sync timeout is shortened to end before the deadline.
  absl::StatusOr<delivery::RaiseOptions> ResolveRaiseOptions(
      const eventbus::v1::RaiseRequest& request, absl::Time deadline, absl::Time now) const;

  // Validates `request` as every Raise is validated (event name, params, timeout) and resolves
  // its options against the caller's `deadline` (InfiniteFuture when none): the one check that
  // Raise and each event of RaiseStream go through. INVALID_ARGUMENT or DEADLINE_EXCEEDED saying
  // what is wrong.
  absl::StatusOr<PreparedRaise> PrepareRaise(const eventbus::v1::RaiseRequest& request,
                                             absl::Time deadline) const;
  // Hands a prepared Raise of `request` to the dispatcher with the event's current subscribers;
  // `done` runs as Dispatcher::Raise says (inline when nobody is subscribed).
  delivery::Dispatcher::RaiseHandle StartRaise(const eventbus::v1::RaiseRequest& request,
                                               const PreparedRaise& prepared,
                                               delivery::Dispatcher::Done done);
  // Adds a prepared async Raise of `request` to `batch`, with the event's current subscribers.
  void AddToBatch(const eventbus::v1::RaiseRequest& request, const PreparedRaise& prepared,
                  delivery::Dispatcher::Batch* batch);
  // OK once the store has loaded; UNAVAILABLE naming the store and its last error before.
  absl::Status Ready() const { return loader_ == nullptr ? absl::OkStatus() : loader_->Ready(); }
  delivery::Dispatcher* dispatcher() const { return dispatcher_; }

 private:
  void FillSubscription(const registry::Subscription& sub, absl::Time now,
                        eventbus::v1::Subscription* out) const;
  // "peer=ADDRESS", and " caller=NAME" when calls are authenticated: who asked, for the logs of
  // changes to subscriptions.
  std::string CallerFields(const grpc::CallbackServerContext& context,
                           const auth::Caller& caller) const;
  registry::Registry* registry_;
  store::SubscriptionManager* manager_;
  delivery::Dispatcher* dispatcher_;
  const net::WriterPool* pool_;
  const base::Clock* clock_;
  const ServiceOptions options_;
  const StoreLoader* const loader_;
};

}  // namespace eventbus::service

#endif  // EVENTBUS_SERVER_SERVICE_EVENTBUS_SERVICE_H_
