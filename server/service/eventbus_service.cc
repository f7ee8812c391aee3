#include "server/service/eventbus_service.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "google/protobuf/arena.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
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

// Parses a Raise request from `input` (`size` bytes). INVALID_ARGUMENT naming `what` and what may
// be wrong when protobuf refuses it.
absl::Status ParseRaiseRequest(google::protobuf::io::CodedInputStream* input, size_t size,
                               absl::string_view what, v1::RaiseRequest* request) {
  input->SetRecursionLimit(kRaiseRecursionLimit);
  if (!request->ParseFromCodedStream(input) || !input->ConsumedEntireMessage()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " is not a valid eventbus.v1.RaiseRequest (", size,
        " bytes): a string in it is not valid UTF-8, or its params are nested deeper than ",
        "protobuf can parse"));
  }
  return absl::OkStatus();
}

// Parses a Raise request from its wire bytes.
absl::Status ParseRaiseRequest(const grpc::ByteBuffer& bytes, v1::RaiseRequest* request) {
  grpc::ByteBuffer copy(bytes);  // shares the slices; the reader needs a mutable buffer
  grpc::ProtoBufferReader reader(&copy);
  google::protobuf::io::CodedInputStream input(&reader);
  return ParseRaiseRequest(&input, bytes.Length(), "raise: the request", request);
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
  void OnDone() override {
    // gRPC calls OnDone after every other callback, OnCancel included, has returned; it orders
    // them inside libgrpc++, where ThreadSanitizer cannot see it. Taking the mutex they all
    // released makes that order visible before the reactor goes.
    { std::lock_guard<std::mutex> lock(mu_); }
    delete this;
  }

 private:
  delivery::Dispatcher* const dispatcher_;
  grpc::ByteBuffer* const out_;
  v1::RaiseRequest request_;
  v1::RaiseResponse response_;
  std::mutex mu_;
  delivery::Dispatcher::RaiseHandle handle_;  // guarded by mu_
  bool cancelled_ = false;                    // guarded by mu_
};

// Splits the wire bytes of a RaiseStreamRequest into the bytes of its events (field 1), without
// parsing them: each is parsed on its own, so one that protobuf refuses spoils only itself.
// Unknown fields are skipped. INVALID_ARGUMENT when the message itself is malformed or carries
// more than `max_events` events.
absl::Status SplitStreamRequest(const grpc::Slice& bytes, size_t message, size_t max_events,
                                std::vector<absl::string_view>* events) {
  using google::protobuf::internal::WireFormatLite;
  const char* data = reinterpret_cast<const char*>(bytes.begin());
  const int size = static_cast<int>(bytes.size());
  google::protobuf::io::CodedInputStream input(reinterpret_cast<const uint8_t*>(data), size);
  auto malformed = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("raise_stream: message ", message, " (", size,
                     " bytes) is not a valid eventbus.v1.RaiseStreamRequest"));
  };
  for (;;) {
    const uint32_t tag = input.ReadTag();
    if (tag == 0) {
      if (input.CurrentPosition() != size) return malformed();
      return absl::OkStatus();
    }
    if (tag != WireFormatLite::MakeTag(v1::RaiseStreamRequest::kEventsFieldNumber,
                                       WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
      if (!WireFormatLite::SkipField(&input, tag)) return malformed();
      continue;
    }
    uint32_t length = 0;
    if (!input.ReadVarint32(&length)) return malformed();
    const int at = input.CurrentPosition();
    if (length > static_cast<uint32_t>(size - at)) return malformed();
    if (events->size() == max_events) {
      return absl::InvalidArgumentError(absl::StrCat("raise_stream: message ", message,
                                                     " has more than ", max_events,
                                                     " events; send them in several messages"));
    }
    events->emplace_back(data + at, length);
    if (!input.Skip(static_cast<int>(length))) return malformed();
  }
}

// The reactor of one RaiseStream. Reads a message, raises its events in order, and answers the
// message once every event has its result; answers are written in message order. See
// EventBusServiceImpl for the flow control. State changes happen under mu_; the gRPC operations
// they decide on (StartRead, StartWrite, Finish) are started after it is released, by Act().
//
// Lifetime: gRPC deletes the reactor (OnDone) only after Finish, and Finish is called only once
// no dispatcher callback of this stream is outstanding (in_flight_ == 0), so the callbacks may use
// `this`.
class RaiseStreamReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  RaiseStreamReactor(EventBusServiceImpl* service, absl::Time deadline)
      : service_(service), deadline_(deadline) {
    if (absl::Status ready = service_->Ready(); !ready.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      reads_done_ = true;
      finish_status_ = ToGrpcStatus(ready);
    }
    Act();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The caller half-closed (or the call ended): answer what was read, then finish.
      {
        std::lock_guard<std::mutex> lock(mu_);
        reading_ = false;
        reads_done_ = true;
      }
      Act();
      return;
    }
    ++messages_;
    grpc::Slice bytes;
    std::vector<absl::string_view> events;
    absl::Status split;
    if (grpc::Status dumped = read_.DumpToSingleSlice(&bytes); !dumped.ok()) {
      split = absl::InternalError(absl::StrCat("raise_stream: message ", messages_,
                                               " could not be read: ", dumped.error_message()));
    } else {
      split = SplitStreamRequest(bytes, messages_, EventBusServiceImpl::kStreamMaxEventsPerMessage,
                                 &events);
    }
    read_.Clear();
    if (!split.ok()) {
      // The message as a whole is unusable: answer what came before it, then end the stream.
      {
        std::lock_guard<std::mutex> lock(mu_);
        reading_ = false;
        reads_done_ = true;
        finish_status_ = ToGrpcStatus(split);
      }
      Act();
      return;
    }
    auto answer = std::make_unique<Answer>();
    Answer* a = answer.get();
    // One more than its events while they are being raised: a sync event's answer may come (and
    // the whole answer be written and freed) before RaiseOne is done with `a`.
    a->left = events.size() + 1;
    a->kinds.resize(events.size(), Kind::kRefused);
    for (size_t i = 0; i < events.size(); ++i) a->response.add_results();
    {
      std::lock_guard<std::mutex> lock(mu_);
      answers_.push_back(std::move(answer));
      // Counted before the first is raised: the stream cannot finish while this loop runs.
      in_flight_ += events.size();
    }
    // Async events go to the dispatcher in batches (one post per writer loop, one answer), each
    // sent off before a sync event so that every target sees the events in order.
    Batched batched;
    // The events' requests, parsed one by one and needed only while each is raised.
    google::protobuf::Arena requests;
    for (size_t i = 0; i < events.size(); ++i) RaiseOne(a, i, events[i], &requests, &batched);
    SendBatch(a, &batched);
    {
      std::lock_guard<std::mutex> lock(mu_);
      reading_ = false;
      if (--a->left == 0) ++unwritten_;
    }
    Act();
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (ok) {
        answers_.pop_front();
        --unwritten_;
      } else {
        // The caller is gone; nothing more can be written.
        write_failed_ = true;
      }
    }
    Act();
  }

  // Any thread, at most once: the caller cancelled, disconnected, or passed its deadline.
  void OnCancel() override {
    std::vector<delivery::Dispatcher::RaiseHandle> handles;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      for (const auto& answer : answers_) {
        handles.insert(handles.end(), answer->handles.begin(), answer->handles.end());
      }
    }
    // Sync events still waiting are abandoned; they answer soon, and then the stream finishes.
    for (const auto& handle : handles) service_->dispatcher()->Cancel(handle);
    Act(/*on_cancel_done=*/true);
  }

  void OnDone() override {
    // gRPC calls OnDone after every other callback, OnCancel included, has returned; it orders
    // them inside libgrpc++, where ThreadSanitizer cannot see it. Taking the mutex they all
    // released makes that order visible before the reactor goes.
    { std::lock_guard<std::mutex> lock(mu_); }
    delete this;
  }

 private:
  enum class Kind : uint8_t { kRefused, kAsync, kSync };

  // The answer to one message, complete when `left` reaches 0.
  struct Answer {
    // Holds the response and all it holds: one block freed at once, not an allocation per result.
    google::protobuf::Arena arena;
    // One result per event, filled by whoever answers it.
    v1::RaiseStreamResponse& response =
        *google::protobuf::Arena::CreateMessage<v1::RaiseStreamResponse>(&arena);
    std::vector<Kind> kinds;
    size_t left = 0;  // guarded by mu_
    // Sync events' handles, for OnCancel. Guarded by mu_.
    std::vector<delivery::Dispatcher::RaiseHandle> handles;
    grpc::ByteBuffer bytes;  // the serialized response while it is written
  };

  // The async events of a message not yet handed to the dispatcher: `batch`'s k-th event is
  // event indexes[k].
  struct Batched {
    std::optional<delivery::Dispatcher::Batch> batch;  // made by the first event
    std::vector<uint32_t> indexes;
  };

  // Hands `batched` to the dispatcher (unless empty) and empties it; its events' results arrive in
  // DoneMany.
  void SendBatch(Answer* a, Batched* batched) {
    if (!batched->batch.has_value()) return;
    Batched sent = std::exchange(*batched, Batched{});
    sent.batch->Finish(
        [this, a, indexes = std::move(sent.indexes)](std::vector<delivery::RaiseResult> results) {
          for (size_t k = 0; k < indexes.size(); ++k) {
            RaiseResultToProto(
                results[k],
                a->response.mutable_results(static_cast<int>(indexes[k]))->mutable_response());
          }
          DoneMany(a, indexes.size());
        });
  }

  // Parses (on `arena`), validates and raises event `i` of answer `a`: a sync one at once (its
  // result arrives in Done), an async one into `batched`.
  void RaiseOne(Answer* a, size_t i, absl::string_view bytes, google::protobuf::Arena* arena,
                Batched* batched) {
    v1::RaiseStreamResult* result = a->response.mutable_results(static_cast<int>(i));
    auto refuse = [&](const absl::Status& status) {
      v1::StreamError* error = result->mutable_error();
      error->set_code(static_cast<int32_t>(status.code()));
      error->set_message(absl::StrCat("event [", i, "]: ", status.message()));
      Done(a, i);
    };
    v1::RaiseRequest& request = *google::protobuf::Arena::CreateMessage<v1::RaiseRequest>(arena);
    google::protobuf::io::CodedInputStream input(reinterpret_cast<const uint8_t*>(bytes.data()),
                                                 static_cast<int>(bytes.size()));
    absl::Status parsed = ParseRaiseRequest(&input, bytes.size(), "the event", &request);
    if (!parsed.ok()) return refuse(parsed);
    absl::StatusOr<PreparedRaise> prepared = service_->PrepareRaise(request, deadline_);
    if (!prepared.ok()) return refuse(prepared.status());
    const bool sync = prepared->options.sync;
    bool cancelled;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled = cancelled_;
      if (!cancelled) {
        a->kinds[i] = sync ? Kind::kSync : Kind::kAsync;
        ++(sync ? sync_in_flight_ : async_unqueued_);
      }
    }
    if (cancelled) {
      return refuse(absl::CancelledError("raise_stream: cancelled before it was raised"));
    }
    if (!sync) {
      if (!batched->batch.has_value()) batched->batch.emplace(service_->dispatcher()->NewBatch());
      service_->AddToBatch(request, *prepared, &*batched->batch);
      batched->indexes.push_back(static_cast<uint32_t>(i));
      if (batched->batch->full()) SendBatch(a, batched);
      return;
    }
    // The async events before it go first.
    SendBatch(a, batched);
    delivery::Dispatcher::RaiseHandle handle =
        service_->StartRaise(request, *prepared, [this, a, i](delivery::RaiseResult raised) {
          RaiseResultToProto(raised,
                             a->response.mutable_results(static_cast<int>(i))->mutable_response());
          Done(a, i);
        });
    bool cancel_now = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Kept while the answer is (it outlives the event's result); Cancel of an answered Raise
      // is a no-op.
      a->handles.push_back(handle);
      cancel_now = cancelled_;
    }
    // OnCancel came while this event was being raised, and did not see its handle.
    if (cancel_now) service_->dispatcher()->Cancel(handle);
  }

  // Event `i` of `a` has its result.
  void Done(Answer* a, size_t i) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      Answered(a, 1, a->kinds[i]);
    }
    Act();
  }

  // `count` async events of `a` have their results.
  void DoneMany(Answer* a, size_t count) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      Answered(a, count, Kind::kAsync);
    }
    Act();
  }

  // Counts `count` events of `a`, all of `kind`, as answered. Called with mu_ held.
  void Answered(Answer* a, size_t count, Kind kind) {
    in_flight_ -= count;
    a->left -= count;
    if (a->left == 0) ++unwritten_;
    if (kind == Kind::kSync) sync_in_flight_ -= count;
    if (kind == Kind::kAsync) async_unqueued_ -= count;
  }

  // Starts whatever the state now allows: the next write, the next read, or the finish.
  // `on_cancel_done`: called at the end of OnCancel.
  void Act(bool on_cancel_done = false) {
    bool read = false;
    grpc::ByteBuffer* write = nullptr;
    std::optional<grpc::Status> finish;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (on_cancel_done) on_cancel_done_ = true;
      if (finished_) return;
      const bool ending = cancelled_ || write_failed_;
      if (!ending && !writing_ && !answers_.empty() && answers_.front()->left == 0) {
        Answer& front = *answers_.front();
        grpc::Slice slice(front.response.SerializeAsString());
        front.bytes = grpc::ByteBuffer(&slice, 1);
        writing_ = true;
        write = &front.bytes;
      }
      if (!ending && !reading_ && !reads_done_ &&
          async_unqueued_ < EventBusServiceImpl::kStreamMaxUnqueuedEvents &&
          sync_in_flight_ < EventBusServiceImpl::kStreamMaxSyncEvents &&
          unwritten_ < EventBusServiceImpl::kStreamMaxUnwritten) {
        reading_ = true;
        read = true;
      }
      // A read still outstanding when the call ends fails by itself; a message being raised
      // (reading_ with in_flight_ > 0) or a write in progress must finish first.
      const bool all_answered = in_flight_ == 0 && !writing_;
      // A cancelled stream finishes only once OnCancel has had its last look at the state
      // (gRPC runs OnDone after OnCancel returns, but through reference counts inside
      // libgrpc++, which ThreadSanitizer cannot see): so the finish is decided after it.
      const bool cancel_settled = !cancelled_ || on_cancel_done_;
      if (all_answered && cancel_settled &&
          (ending || (reads_done_ && !reading_ && answers_.empty()))) {
        finished_ = true;
        if (cancelled_) {
          finish = grpc::Status(grpc::StatusCode::CANCELLED, "raise_stream: cancelled");
        } else {
          finish = finish_status_.value_or(grpc::Status::OK);
        }
      }
    }
    if (write != nullptr) StartWrite(write);
    if (read) StartRead(&read_);
    if (finish.has_value()) Finish(*std::move(finish));
  }

  EventBusServiceImpl* const service_;
  const absl::Time deadline_;
  grpc::ByteBuffer read_;  // the message being read; the reading thread's
  size_t messages_ = 0;    // messages read so far; the reading thread's

  std::mutex mu_;
  // Messages read and not yet completely written, in order. Guarded by mu_ (the Answers' own
  // results are written by whoever answers each event, and read once `left` is 0).
  std::deque<std::unique_ptr<Answer>> answers_;
  size_t in_flight_ = 0;       // events raised (or being raised) without a result yet
  size_t sync_in_flight_ = 0;  // of those, sync ones
  size_t async_unqueued_ = 0;  // of those, async ones (not all queued yet)
  size_t unwritten_ = 0;       // answers complete and not yet completely written
  bool reading_ = false;       // a read outstanding, or its message being raised
  bool reads_done_ = false;    // no further read: half-closed, failed, or a bad message
  bool writing_ = false;
  bool write_failed_ = false;
  bool cancelled_ = false;
  bool on_cancel_done_ = false;  // OnCancel has made its last Act
  bool finished_ = false;
  std::optional<grpc::Status> finish_status_;  // the status to end with once all is answered
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

absl::StatusOr<PreparedRaise> EventBusServiceImpl::PrepareRaise(const v1::RaiseRequest& request,
                                                                absl::Time deadline) const {
  absl::Status valid = registry::ValidateEventName(request.event(), options_.max_event_name_bytes);
  if (!valid.ok()) return valid;
  PreparedRaise prepared;
  absl::StatusOr<jsonrpc::Params> params = ParamsFromRequest(request, options_.max_params_bytes);
  if (!params.ok()) return params.status();
  prepared.params = *std::move(params);
  // The caller's deadline is wall-clock time, whatever clock_ is.
  absl::StatusOr<delivery::RaiseOptions> options =
      ResolveRaiseOptions(request, deadline, absl::Now());
  if (!options.ok()) return options.status();
  prepared.options = *options;
  return prepared;
}

delivery::Dispatcher::RaiseHandle EventBusServiceImpl::StartRaise(const v1::RaiseRequest& request,
                                                                  const PreparedRaise& prepared,
                                                                  delivery::Dispatcher::Done done) {
  return dispatcher_->Raise(request.event(), prepared.params, prepared.options,
                            registry_->Subscribers(request.event()), std::move(done));
}

void EventBusServiceImpl::AddToBatch(const v1::RaiseRequest& request, const PreparedRaise& prepared,
                                     delivery::Dispatcher::Batch* batch) {
  batch->Add(request.event(), prepared.params, prepared.options,
             registry_->Subscribers(request.event()));
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
  absl::StatusOr<PreparedRaise> prepared = PrepareRaise(reactor->request(), DeadlineOf(*context));
  if (!prepared.ok()) {
    reactor->Finish(ToGrpcStatus(prepared.status()));
    return reactor;
  }
  // `done` runs inline (nobody to deliver to) or on an event-loop thread. The reactor lives until
  // OnDone, which gRPC calls only after this method has returned it and Finish has been called.
  reactor->SetHandle(
      StartRaise(reactor->request(), *prepared, [reactor](delivery::RaiseResult result) {
        if (reactor->cancelled()) {
          reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "raise: cancelled"));
          return;
        }
        RaiseResultToProto(result, &reactor->response());
        reactor->FinishWithResponse();
      }));
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* EventBusServiceImpl::RaiseStream(
    grpc::CallbackServerContext* context) {
  return new RaiseStreamReactor(this, DeadlineOf(*context));
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
