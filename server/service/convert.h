// Pure glue between the public proto API (eventbus.v1) and the domain types below it: protobuf
// Values and RaiseRequest params become JSON-RPC params text, delivery reports and subscriptions
// become proto messages, absl::Status becomes grpc::Status. No I/O, no threads.
#ifndef EVENTBUS_SERVER_SERVICE_CONVERT_H_
#define EVENTBUS_SERVER_SERVICE_CONVERT_H_

#include <cstddef>
#include <optional>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "eventbus/v1/eventbus.pb.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "grpcpp/support/status.h"
#include "server/delivery/dispatcher.h"
#include "server/jsonrpc/encoder.h"
#include "server/net/outcome.h"
#include "server/net/writer_pool.h"
#include "server/registry/subscription.h"

namespace eventbus::service {

// Appends `value` as compact JSON: integral numbers without a decimal point, strings escaped as
// SPEC §2, Struct keys sorted (proto maps are unordered; sorting makes the bytes deterministic).
// A Value with no kind set is written as null, and so are NaN and +-Infinity (ParamsFromRequest
// refuses those instead).
void AppendValueJson(const google::protobuf::Value& value, std::string* out);
std::string ValueToJson(const google::protobuf::Value& value);

// Converts the params of `request` into JSON-RPC params text: named (object, in the given order),
// positional (array), json (validated raw text, kept byte for byte) or none. INVALID_ARGUMENT for
// an empty or duplicate name, invalid raw JSON, or params larger than `max_params_bytes`
// ("params: 70000 bytes exceed the limit of 65536 (--max_params_bytes)"), and naming the param
// for a number JSON cannot carry or nesting deeper than jsonrpc::kMaxParamsDepth, at any depth
// (`param "x": NaN cannot be sent as JSON`, `param [2]: nested deeper than 32 levels`).
absl::StatusOr<jsonrpc::Params> ParamsFromRequest(const eventbus::v1::RaiseRequest& request,
                                                  size_t max_params_bytes);

// Maps a delivery code to the public enum.
eventbus::v1::DeliveryStatus DeliveryStatusFromCode(net::DeliveryCode code);
// Maps a connection state to the public enum.
eventbus::v1::ConnectionState ConnectionStateFromConnState(net::ConnState state);

// Fills `out` from one delivery report (attempts only for virtual groups; RpcError only for
// RPC_ERROR).
void ReportToProto(const delivery::DeliveryReport& report, eventbus::v1::Delivery* out);
// Fills the whole answer of a Raise: its deliveries (every report in `result`) and the counts
// (subscribers, queued, ok, failed; always set).
void RaiseResultToProto(const delivery::RaiseResult& result, eventbus::v1::RaiseResponse* out);

// Looks up the connection of a target key ("host:port"); nullopt when there is none yet.
using StatsLookup = absl::FunctionRef<std::optional<net::TargetStats>(const std::string& key)>;

// Fills `out` from `sub` as seen at `now`: expire_time and ttl stay unset when it never expires,
// ttl = max(0, expire - now); one TargetState per TCP target from `stats` (IDLE when the target
// has no connection yet).
void SubscriptionToProto(const registry::Subscription& sub, absl::Time now, StatsLookup stats,
                         eventbus::v1::Subscription* out);

void TimeToProto(absl::Time time, google::protobuf::Timestamp* out);
void DurationToProto(absl::Duration duration, google::protobuf::Duration* out);

// Same canonical code, same message.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace eventbus::service

#endif  // EVENTBUS_SERVER_SERVICE_CONVERT_H_
