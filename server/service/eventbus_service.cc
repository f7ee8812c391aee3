#include "server/service/eventbus_service.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/io/coded_stream.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/slice.h"
#include "server/auth/caller.h"
#include "server/base/log.h"
#include "server/service/convert.h"
#include "server/service/page_token.h"

namespace eventbus::service {
namespace {

namespace v1 = ::eventbus::v1;

// The caller's deadline; InfiniteFuture when it set none.
absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  std::chrono::system_clock::time_point deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// A subscription's expiry for the log: an RFC 3339 instant, or "never".
std::string ExpiryText(absl::Time expire_time) {
  if (expire_time == absl::InfiniteFuture()) return "never";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", expire_time, absl::UTCTimeZone());
}

// Who the subscription manager checks a change against: the caller's name, and whether it holds
// the admin role (with authentication off, the anonymous caller holds every role).
registry::Actor ActorOf(const auth::Caller& caller) {
  return registry::Actor{caller.name, caller.Has(auth::kAdmin)};
}

// Limits `page` to what `caller` may see: everything for a reader or an admin; anyone else sees
// only its own subscriptions (filtered first, then paged). False when it may see nothing (a
// caller without a name owns nothing).
bool LimitToVisible(const auth::Caller& caller, registry::PageRequest* page) {
  if (caller.Has(auth::kReader) || caller.Has(auth::kAdmin)) return true;
  if (caller.anonymous()) return false;
  page->filter = [name = caller.name](const registry::Subscription& sub) {
    return sub.owner == name;
  };
  return true;
}

// Where a page of subscriptions stops, whatever its page_size: half of gRPC's default 4 MiB
// limit on a message a client receives.
constexpr size_t kMaxPageBytes = size_t{2} << 20;

// The page `page_size` and `page_token` ask for, of `kind` and the event filter `event`.
// INVALID_ARGUMENT naming the field for a negative size, a token that does not parse, or one
// issued for another filter.
absl::StatusOr<registry::PageRequest> PageRequestOf(int32_t page_size,
                                                    const std::string& page_token, PageKind kind,
                                                    const std::string& event) {
  absl::StatusOr<size_t> limit = ResolvePageSize(page_size);
  if (!limit.ok()) return limit.status();
  registry::PageRequest page;
  page.limit = *limit;
  if (page_token.empty()) return page;
  absl::StatusOr<PageToken> token = DecodePageToken(page_token, kind);
  if (!token.ok()) return token.status();
  if (token->filter_event != event) {
    auto filter = [](const std::string& e) {
      return e.empty() ? std::string("every event") : absl::StrCat("event \"", e, "\"");
    };
    return absl::InvalidArgumentError(absl::StrCat(
        "page_token: issued for ", filter(token->filter_event), ", but this request asks for ",
        filter(event), "; ask for the next page with the same event as the first"));
  }
  page.after = std::move(token->last);
  return page;
}

// Protobuf message nesting a Raise request may have. protobuf's default (100) stops at about 33
// nested Structs, before EventBus's own limit (32 levels of params, refused naming the param) can
// speak; each params level costs two or three message levels.
constexpr int kRaiseRecursionLimit = 400;

// Parses a Raise request from its wire bytes. INVALID_ARGUMENT naming what may be wrong when
// protobuf refuses it.
absl::Status ParseRaiseRequest(const grpc::ByteBuffer& bytes, v1::RaiseRequest* request) {
  grpc::ByteBuffer copy(bytes);  // shares the slices; the reader needs a mutable buffer
  grpc::ProtoBufferReader reader(&copy);
  google::protobuf::io::CodedInputStream input(&reader);
  input.SetRecursionLimit(kRaiseRecursionLimit);
  if (!request->ParseFromCodedStream(&input) || !input.ConsumedEntireMessage()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "raise: the request is not a valid eventbus.v1.RaiseRequest (", bytes.Length(),
        " bytes): a string in it is not valid UTF-8, or its params are nested deeper than ",
        "protobuf can parse"));
  }
  return absl::OkStatus();
}

// The reactor of one Raise, which owns its request and response. A sync Raise whose caller goes
// away (cancels, disconnects, or its deadline passes) is abandoned: OnCancel hands that down to
// the dispatcher, which drops its deliveries from the targets' queues, so they do not hold them
// until their own timeout.
class RaiseReactor final : public grpc::ServerUnaryReactor {
 public:
  RaiseReactor(delivery::Dispatcher* dispatcher, grpc::ByteBuffer* out)
      : dispatcher_(dispatcher), out_(out) {}

  v1::RaiseRequest& request() { return request_; }
  v1::RaiseResponse& response() { return response_; }

  // Serializes response() as the call's answer and finishes with OK.
  void FinishWithResponse() {
    grpc::Slice slice(response_.SerializeAsString());
    *out_ = grpc::ByteBuffer(&slice, 1);
    Finish(grpc::Status::OK);
  }

  void SetHandle(delivery::Dispatcher::RaiseHandle handle) {
    std::lock_guard<std::mutex> lock(mu_);
    handle_ = std::move(handle);
  }

  // gRPC calls it after the method returned the reactor, on any thread, at most once.
  void OnCancel() override {
    delivery::Dispatcher::RaiseHandle handle;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      handle = handle_;
    }
    dispatcher_->Cancel(handle);
  }
  bool cancelled() {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }
  void OnDone() override { delete this; }

 private:
  delivery::Dispatcher* const dispatcher_;
  grpc::ByteBuffer* const out_;
  v1::RaiseRequest request_;
  v1::RaiseResponse response_;
  std::mutex mu_;
  delivery::Dispatcher::RaiseHandle handle_;  // guarded by mu_
  bool cancelled_ = false;                    // guarded by mu_
};

}  // namespace

EventBusServiceImpl::EventBusServiceImpl(registry::Registry* registry,
                                         store::SubscriptionManager* manager,
                                         delivery::Dispatcher* dispatcher,
                                         const net::WriterPool* pool, const base::Clock* clock,
                                         ServiceOptions options, const StoreLoader* loader)
    : registry_(registry),
      manager_(manager),
      dispatcher_(dispatcher),
      pool_(pool),
      clock_(clock),
      options_(std::move(options)),
      loader_(loader) {}

grpc::ServerUnaryReactor* EventBusServiceImpl::Subscribe(grpc::CallbackServerContext* context,
                                                         const v1::SubscribeRequest* request,
                                                         v1::SubscribeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status ready = Ready(); !ready.ok()) {
    reactor->Finish(ToGrpcStatus(ready));
    return reactor;
  }
  store::SubscribeRequest sub;
  sub.event = request->event();
  sub.socket = request->socket();
  if (request->has_expire_seconds()) sub.expire_seconds = request->expire_seconds();
  if (request->has_event_param()) sub.event_param = request->event_param();
  const auth::Caller caller = auth::CallerOf(*context, options_.auth_enabled);
  // Copied now: `done` may run after this method returned. Changes to the subscriptions are
  // logged at info with who asked (Raise is not: it is the hot path): the peer, and the caller's
  // name (a token's name, never the token).
  std::string who = CallerFields(*context, caller);
  // `done` may run inline or on a store thread; the response outlives it until Finish.
  manager_->Subscribe(
      ActorOf(caller), std::move(sub),
      [this, reactor, request, response,
       who = std::move(who)](absl::StatusOr<store::SubscribeResult> result) {
        if (!result.ok()) {
          EB_LOG(kInfo, "subscribe refused", who, " event=", base::LogValue(request->event()),
                 " socket=", base::LogValue(request->socket()),
                 " error=", base::LogValue(result.status().ToString()));
          reactor->Finish(ToGrpcStatus(result.status()));
          return;
        }
        const registry::Subscription& subscription = *result->subscription;
        EB_LOG(kInfo, "subscribed", who, " id=", base::LogValue(subscription.id),
               " event=", base::LogValue(subscription.event),
               " socket=", base::LogValue(subscription.socket),
               " owner=", base::LogValue(subscription.owner),
               " expire=", ExpiryText(subscription.expire_time),
               " created=", result->created ? "true" : "false");
        FillSubscription(subscription, clock_->Now(), response->mutable_subscription());
        response->set_created(result->created);
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

grpc::ServerUnaryReactor* EventBusServiceImpl::Unsubscribe(grpc::CallbackServerContext* context,
                                                           const v1::UnsubscribeRequest* request,
                                                           v1::UnsubscribeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status ready = Ready(); !ready.ok()) {
    reactor->Finish(ToGrpcStatus(ready));
    return reactor;
  }
  const auth::Caller caller = auth::CallerOf(*context, options_.auth_enabled);
  // For the log: who asked, and what it named (by id, or by event and socket).
  std::string fields = CallerFields(*context, caller);
  if (!request->id().empty()) absl::StrAppend(&fields, " id=", base::LogValue(request->id()));
  if (!request->event().empty()) {
    absl::StrAppend(&fields, " event=", base::LogValue(request->event()));
  }
  if (!request->socket().empty()) {
    absl::StrAppend(&fields, " socket=", base::LogValue(request->socket()));
  }
  manager_->Unsubscribe(
      ActorOf(caller), request->id(), request->event(), request->socket(),
      [reactor, response,
       fields = std::move(fields)](absl::StatusOr<store::UnsubscribeResult> removed) mutable {
        if (!removed.ok()) {
          EB_LOG(kInfo, "unsubscribe refused", fields,
                 " error=", base::LogValue(removed.status().ToString()));
          reactor->Finish(ToGrpcStatus(removed.status()));
          return;
        }
        if (removed->subscription != nullptr) {
          absl::StrAppend(&fields, " owner=", base::LogValue(removed->subscription->owner));
        }
        EB_LOG(kInfo, "unsubscribed", fields, " removed=", removed->removed);
        response->set_removed(static_cast<uint32_t>(removed->removed));
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

absl::StatusOr<delivery::RaiseOptions> EventBusServiceImpl::ResolveRaiseOptions(
    const v1::RaiseRequest& request, absl::Time deadline, absl::Time now) const {
  delivery::RaiseOptions options;
  options.sync = request.has_sync() ? request.sync() : options_.default_sync;
  options.queued_reports = request.all_deliveries();
  options.timeout = options_.default_timeout;
  if (request.has_timeout_ms()) {
    options.timeout = absl::Milliseconds(request.timeout_ms());
    if (request.timeout_ms() == 0 || options.timeout > options_.max_timeout) {
      return absl::InvalidArgumentError(
          absl::StrCat("timeout_ms: ", request.timeout_ms(), " is outside 1..",
                       absl::ToInt64Milliseconds(options_.max_timeout)));
    }
  }
  absl::Duration left = deadline - now;
  if (left <= absl::ZeroDuration()) {
    return absl::DeadlineExceededError("raise: the caller's deadline has already passed");
  }
  // Async Raise answers once everything is queued, so only a sync wait must end before the
  // caller gives up; an async notification keeps its full time to be written.
  if (options.sync && deadline != absl::InfiniteFuture()) {
    absl::Duration margin = std::min(options_.deadline_margin, left / 4);
    options.timeout = std::min(options.timeout, left - margin);
  }
  return options;
}

grpc::ServerUnaryReactor* EventBusServiceImpl::Raise(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request_bytes,
                                                     grpc::ByteBuffer* response_bytes) {
  auto* reactor = new RaiseReactor(dispatcher_, response_bytes);
  if (absl::Status ready = Ready(); !ready.ok()) {
    reactor->Finish(ToGrpcStatus(ready));
    return reactor;
  }
  absl::Status parsed = ParseRaiseRequest(*request_bytes, &reactor->request());
  if (!parsed.ok()) {
    reactor->Finish(ToGrpcStatus(parsed));
    return reactor;
  }
  const v1::RaiseRequest* request = &reactor->request();
  absl::Status valid = registry::ValidateEventName(request->event(), options_.max_event_name_bytes);
  if (!valid.ok()) {
    reactor->Finish(ToGrpcStatus(valid));
    return reactor;
  }
  absl::StatusOr<jsonrpc::Params> params = ParamsFromRequest(*request, options_.max_params_bytes);
  if (!params.ok()) {
    reactor->Finish(ToGrpcStatus(params.status()));
    return reactor;
  }
  // The caller's deadline is wall-clock time, whatever clock_ is.
  absl::StatusOr<delivery::RaiseOptions> options =
      ResolveRaiseOptions(*request, DeadlineOf(*context), absl::Now());
  if (!options.ok()) {
    reactor->Finish(ToGrpcStatus(options.status()));
    return reactor;
  }
  // `done` runs inline (nobody to deliver to) or on an event-loop thread. The reactor lives until
  // OnDone, which gRPC calls only after this method has returned it and Finish has been called.
  reactor->SetHandle(dispatcher_->Raise(
      request->event(), *params, *options, registry_->Subscribers(request->event()),
      [reactor](delivery::RaiseResult result) {
        if (reactor->cancelled()) {
          reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "raise: cancelled"));
          return;
        }
        RaiseResultToProto(result, &reactor->response());
        reactor->FinishWithResponse();
      }));
  return reactor;
}

grpc::ServerUnaryReactor* EventBusServiceImpl::ListSubscriptions(
    grpc::CallbackServerContext* context, const v1::ListSubscriptionsRequest* request,
    v1::ListSubscriptionsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status ready = Ready(); !ready.ok()) {
    reactor->Finish(ToGrpcStatus(ready));
    return reactor;
  }
  if (!request->event().empty()) {
    absl::Status valid =
        registry::ValidateEventName(request->event(), options_.max_event_name_bytes);
    if (!valid.ok()) {
      reactor->Finish(ToGrpcStatus(valid));
      return reactor;
    }
  }
  absl::StatusOr<registry::PageRequest> page = PageRequestOf(
      request->page_size(), request->page_token(), PageKind::kSubscriptions, request->event());
  if (!page.ok()) {
    reactor->Finish(ToGrpcStatus(page.status()));
    return reactor;
  }
  const auth::Caller caller = auth::CallerOf(*context, options_.auth_enabled);
  response->set_stale(manager_->stale());
  if (!LimitToVisible(caller, &*page)) {
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  registry::SubscriptionPage subs = registry_->ListPage(request->event(), *page);
  absl::Time now = clock_->Now();
  response->mutable_subscriptions()->Reserve(static_cast<int>(subs.subscriptions.size()));
  size_t bytes = 0;
  bool more = subs.more;
  const registry::Subscription* last = nullptr;
  for (const registry::SubscriptionPtr& sub : subs.subscriptions) {
    // A page ends early rather than outgrow what clients accept (gRPC's 4 MiB by default): with
    // long sockets and many targets, page_size subscriptions could be several times that.
    if (bytes >= kMaxPageBytes) {
      more = true;
      break;
    }
    v1::Subscription* out = response->add_subscriptions();
    FillSubscription(*sub, now, out);
    bytes += out->ByteSizeLong() + 8;  // with the field's tag and length
    last = sub.get();
  }
  if (more && last != nullptr) {
    PageToken token;
    token.kind = PageKind::kSubscriptions;
    token.filter_event = request->event();
    token.last = {last->event, last->socket};
    response->set_next_page_token(EncodePageToken(token));
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* EventBusServiceImpl::ListEvents(grpc::CallbackServerContext* context,
                                                          const v1::ListEventsRequest* request,
                                                          v1::ListEventsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status ready = Ready(); !ready.ok()) {
    reactor->Finish(ToGrpcStatus(ready));
    return reactor;
  }
  absl::StatusOr<registry::PageRequest> page =
      PageRequestOf(request->page_size(), request->page_token(), PageKind::kEvents, "");
  if (!page.ok()) {
    reactor->Finish(ToGrpcStatus(page.status()));
    return reactor;
  }
  const auth::Caller caller = auth::CallerOf(*context, options_.auth_enabled);
  response->set_stale(manager_->stale());
  // A caller that sees only its own subscriptions counts only those, and sees no event it has none
  // of.
  if (!LimitToVisible(caller, &*page)) {
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  registry::EventPage events = registry_->EventsPage(*page);
  response->mutable_events()->Reserve(static_cast<int>(events.events.size()));
  for (const registry::EventCount& event : events.events) {
    v1::EventInfo* info = response->add_events();
    info->set_event(event.event);
    info->set_subscribers(static_cast<uint32_t>(event.subscribers));
  }
  // Events are at most a few hundred bytes each: a page of kMaxPageSize stays far below 4 MiB.
  if (events.more && !events.events.empty()) {
    PageToken token;
    token.kind = PageKind::kEvents;
    token.last.event = events.events.back().event;
    response->set_next_page_token(EncodePageToken(token));
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

std::string EventBusServiceImpl::CallerFields(const grpc::CallbackServerContext& context,
                                              const auth::Caller& caller) const {
  std::string fields = absl::StrCat("peer=", base::LogValue(context.peer()));
  if (options_.auth_enabled) absl::StrAppend(&fields, " caller=", base::LogValue(caller.name));
  return fields;
}

void EventBusServiceImpl::FillSubscription(const registry::Subscription& sub, absl::Time now,
                                           v1::Subscription* out) const {
  SubscriptionToProto(
      sub, now, [this](const std::string& key) { return pool_->Stats(key); }, out);
}

}  // namespace eventbus::service
