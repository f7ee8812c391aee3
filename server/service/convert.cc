#include "server/service/convert.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/jsonrpc/json_text.h"
#include "server/jsonrpc/json_writer.h"

namespace eventbus::service {
namespace {

namespace v1 = ::eventbus::v1;
using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

std::string TooDeep() {
  return absl::StrCat("nested deeper than ", jsonrpc::kMaxParamsDepth, " levels");
}

void AppendListJson(const ListValue& list, std::string* out) {
  out->push_back('[');
  bool first = true;
  for (const Value& element : list.values()) {
    if (!first) out->push_back(',');
    first = false;
    AppendValueJson(element, out);
  }
  out->push_back(']');
}

// A Struct's fields in key order: a protobuf map has none, and the wire must not vary.
std::vector<std::pair<const std::string*, const Value*>> SortedFields(const Struct& object) {
  std::vector<std::pair<const std::string*, const Value*>> fields;
  fields.reserve(object.fields().size());
  for (const auto& [key, value] : object.fields()) fields.emplace_back(&key, &value);
  std::sort(fields.begin(), fields.end(),
            [](const auto& a, const auto& b) { return *a.first < *b.first; });
  return fields;
}

void AppendStructJson(const Struct& object, std::string* out) {
  out->push_back('{');
  bool first = true;
  for (const auto& [key, value] : SortedFields(object)) {
    if (!first) out->push_back(',');
    first = false;
    jsonrpc::AppendJsonString(out, *key);
    out->push_back(':');
    AppendValueJson(*value, out);
  }
  out->push_back('}');
}

// Appends `value` as AppendValueJson does, but returns what JSON cannot carry instead of writing
// it: NaN and +-Infinity (JSON has no such numbers; writing null would change the value
// silently), and lists or structs deeper than jsonrpc::kMaxParamsDepth. `level` is the level a
// list or struct `value` sits at (the params object or array is level 1). Returns "" when fine.
std::string AppendParamJson(const Value& value, int level, std::string* out) {
  switch (value.kind_case()) {
    case Value::kNumberValue: {
      const double number = value.number_value();
      if (std::isnan(number)) return "NaN cannot be sent as JSON";
      if (std::isinf(number)) {
        return number > 0 ? "Infinity cannot be sent as JSON" : "-Infinity cannot be sent as JSON";
      }
      jsonrpc::AppendJsonNumber(out, number);
      return {};
    }
    case Value::kListValue: {
      if (level > jsonrpc::kMaxParamsDepth) return TooDeep();
      out->push_back('[');
      bool first = true;
      for (const Value& element : value.list_value().values()) {
        if (!first) out->push_back(',');
        first = false;
        std::string fault = AppendParamJson(element, level + 1, out);
        if (!fault.empty()) return fault;
      }
      out->push_back(']');
      return {};
    }
    case Value::kStructValue: {
      if (level > jsonrpc::kMaxParamsDepth) return TooDeep();
      out->push_back('{');
      bool first = true;
      for (const auto& [key, field] : SortedFields(value.struct_value())) {
        if (!first) out->push_back(',');
        first = false;
        jsonrpc::AppendJsonString(out, *key);
        out->push_back(':');
        std::string fault = AppendParamJson(*field, level + 1, out);
        if (!fault.empty()) return fault;
      }
      out->push_back('}');
      return {};
    }
    case Value::KIND_NOT_SET:
      // A Value nobody set (a client library that dropped a field it did not recognise, such as
      // proto-loader's `number_value` under keepCase) must not turn into null silently.
      return level == 2 ? "no value (null must be given explicitly)"
                        : "a nested value has no kind set (null must be given explicitly)";
    default:
      AppendValueJson(value, out);
      return {};
  }
}

// Appends one param given as JSON text (Param.json): checked (one JSON value, well-formed UTF-8,
// nested at most jsonrpc::kMaxParamsDepth with the params object as level 1), then copied token
// for token without the whitespace between tokens. Returns "" when fine, else what is wrong.
std::string AppendParamJsonText(absl::string_view text, std::string* out) {
  if (size_t bad = jsonrpc::InvalidUtf8Offset(text); bad != absl::string_view::npos) {
    return absl::StrCat("json: invalid UTF-8 at byte ", bad);
  }
  if (jsonrpc::TrimJsonSpace(text).empty()) return "json: empty (give null explicitly)";
  // The value sits inside the params object: its outermost list or object is level 2.
  std::string fault = jsonrpc::CheckJsonText(text, jsonrpc::kMaxParamsDepth - 1);
  if (absl::StartsWith(fault, "nested deeper than")) return absl::StrCat("json: ", TooDeep());
  if (!fault.empty()) return absl::StrCat("json: ", fault);
  jsonrpc::AppendCompactJson(jsonrpc::TrimJsonSpace(text), out);
  return {};
}

absl::Status TooLarge(size_t size, size_t limit) {
  return absl::InvalidArgumentError(absl::StrCat("params: ", size, " bytes exceed the limit of ",
                                                 limit, " (--max_params_bytes)"));
}

// Delivery and Attempt spell the outcome with the same fields.
template <typename Message>
void SetOutcome(const net::Outcome& outcome, Message* out) {
  out->set_status(DeliveryStatusFromCode(outcome.code));
  if (outcome.code == net::DeliveryCode::kOk) out->set_result(outcome.result);
  if (outcome.code == net::DeliveryCode::kRpcError) {
    v1::RpcError* error = out->mutable_error();
    error->set_code(outcome.error_code);
    error->set_message(outcome.error_message);
    error->set_data(outcome.error_data);
  }
  out->set_detail(outcome.detail);
}

}  // namespace

void AppendValueJson(const Value& value, std::string* out) {
  switch (value.kind_case()) {
    case Value::kNumberValue:
      jsonrpc::AppendJsonNumber(out, value.number_value());
      return;
    case Value::kStringValue:
      jsonrpc::AppendJsonString(out, value.string_value());
      return;
    case Value::kBoolValue:
      out->append(value.bool_value() ? "true" : "false");
      return;
    case Value::kListValue:
      AppendListJson(value.list_value(), out);
      return;
    case Value::kStructValue:
      AppendStructJson(value.struct_value(), out);
      return;
    case Value::kNullValue:
    case Value::KIND_NOT_SET:
      out->append("null");
      return;
  }
  out->append("null");
}

std::string ValueToJson(const Value& value) {
  std::string out;
  AppendValueJson(value, &out);
  return out;
}

absl::StatusOr<jsonrpc::Params> ParamsFromRequest(const v1::RaiseRequest& request,
                                                  size_t max_params_bytes) {
  jsonrpc::Params params;
  switch (request.params_case()) {
    case v1::RaiseRequest::PARAMS_NOT_SET:
      return params;
    case v1::RaiseRequest::kJson: {
      // Checked before parsing so an oversized text costs no parse.
      if (request.json().size() > max_params_bytes) {
        return TooLarge(request.json().size(), max_params_bytes);
      }
      return jsonrpc::ParamsFromRawJson(request.json());
    }
    case v1::RaiseRequest::kPositional: {
      params.kind = jsonrpc::Params::Kind::kPositional;
      params.json.push_back('[');
      int index = 0;
      for (const Value& value : request.positional().values()) {
        if (index > 0) params.json.push_back(',');
        std::string fault = AppendParamJson(value, 2, &params.json);
        if (!fault.empty()) {
          return absl::InvalidArgumentError(absl::StrCat("param [", index, "]: ", fault));
        }
        ++index;
      }
      params.json.push_back(']');
      break;
    }
    case v1::RaiseRequest::kNamed: {
      params.kind = jsonrpc::Params::Kind::kNamed;
      const auto& all = request.named().params();
      // A few names are compared with those before them; a set (an allocation) pays from more.
      constexpr int kScanNames = 16;
      absl::flat_hash_set<absl::string_view> seen;
      auto repeated = [&](int i) {
        if (all.size() > kScanNames) return !seen.insert(all[i].name()).second;
        for (int j = 0; j < i; ++j) {
          if (all[j].name() == all[i].name()) return true;
        }
        return false;
      };
      params.json.push_back('{');
      int index = 0;
      for (const v1::Param& param : all) {
        ++index;
        if (param.name().empty()) {
          return absl::InvalidArgumentError(
              absl::StrCat("params: parameter ", index, " has an empty name"));
        }
        if (repeated(index - 1)) {
          std::string quoted;
          jsonrpc::AppendJsonString(&quoted, param.name());
          return absl::InvalidArgumentError(absl::StrCat("params: duplicate name ", quoted));
        }
        if (index > 1) params.json.push_back(',');
        jsonrpc::AppendJsonString(&params.json, param.name());
        params.json.push_back(':');
        std::string fault;
        switch (param.form_case()) {
          case v1::Param::kValue:
            fault = AppendParamJson(param.value(), 2, &params.json);
            break;
          case v1::Param::kJson:
            fault = AppendParamJsonText(param.json(), &params.json);
            break;
          case v1::Param::FORM_NOT_SET:
            fault = "no value (null must be given explicitly)";
            break;
        }
        if (!fault.empty()) {
          std::string quoted;
          jsonrpc::AppendJsonString(&quoted, param.name());
          return absl::InvalidArgumentError(absl::StrCat("param ", quoted, ": ", fault));
        }
      }
      params.json.push_back('}');
      break;
    }
  }
  if (params.json.size() > max_params_bytes) {
    return TooLarge(params.json.size(), max_params_bytes);
  }
  return params;
}

v1::DeliveryStatus DeliveryStatusFromCode(net::DeliveryCode code) {
  switch (code) {
    case net::DeliveryCode::kQueued:
      return v1::DELIVERY_STATUS_QUEUED;
    case net::DeliveryCode::kOk:
      return v1::DELIVERY_STATUS_OK;
    case net::DeliveryCode::kRpcError:
      return v1::DELIVERY_STATUS_RPC_ERROR;
    case net::DeliveryCode::kTimeout:
      return v1::DELIVERY_STATUS_TIMEOUT;
    case net::DeliveryCode::kConnectFailed:
      return v1::DELIVERY_STATUS_CONNECT_FAILED;
    case net::DeliveryCode::kResolveFailed:
      return v1::DELIVERY_STATUS_RESOLVE_FAILED;
    case net::DeliveryCode::kConnectionLost:
      return v1::DELIVERY_STATUS_CONNECTION_LOST;
    case net::DeliveryCode::kBadReply:
      return v1::DELIVERY_STATUS_BAD_REPLY;
    case net::DeliveryCode::kQueueFull:
      return v1::DELIVERY_STATUS_QUEUE_FULL;
    case net::DeliveryCode::kDestinationDenied:
      return v1::DELIVERY_STATUS_DESTINATION_DENIED;
    case net::DeliveryCode::kTlsFailed:
      return v1::DELIVERY_STATUS_TLS_FAILED;
    case net::DeliveryCode::kOverloaded:
      return v1::DELIVERY_STATUS_OVERLOADED;
  }
  return v1::DELIVERY_STATUS_UNSPECIFIED;
}

v1::ConnectionState ConnectionStateFromConnState(net::ConnState state) {
  switch (state) {
    case net::ConnState::kIdle:
      return v1::CONNECTION_STATE_IDLE;
    case net::ConnState::kResolving:
      return v1::CONNECTION_STATE_RESOLVING;
    case net::ConnState::kConnecting:
      return v1::CONNECTION_STATE_CONNECTING;
    case net::ConnState::kConnected:
      return v1::CONNECTION_STATE_CONNECTED;
    case net::ConnState::kBackoff:
      return v1::CONNECTION_STATE_BACKOFF;
  }
  return v1::CONNECTION_STATE_UNSPECIFIED;
}

void ReportToProto(const delivery::DeliveryReport& report, v1::Delivery* out) {
  out->set_subscription_id(report.subscription_id);
  out->set_socket(report.socket);
  SetOutcome(report.outcome, out);
  DurationToProto(report.latency, out->mutable_latency());
  for (const delivery::Attempt& attempt : report.attempts) {
    v1::Attempt* a = out->add_attempts();
    a->set_member(attempt.member);
    SetOutcome(attempt.outcome, a);
    DurationToProto(attempt.latency, a->mutable_latency());
  }
}

void RaiseResultToProto(const delivery::RaiseResult& result, v1::RaiseResponse* out) {
  uint32_t ok = 0, failed = 0;
  out->mutable_deliveries()->Reserve(static_cast<int>(result.reports.size()));
  for (const delivery::DeliveryReport& report : result.reports) {
    if (report.outcome.code == net::DeliveryCode::kOk) {
      ++ok;
    } else if (report.outcome.code != net::DeliveryCode::kQueued) {
      ++failed;
    }
    ReportToProto(report, out->add_deliveries());
  }
  out->set_subscribers(static_cast<uint32_t>(result.targets));
  out->set_queued(static_cast<uint32_t>(result.queued));
  out->set_ok(ok);
  out->set_failed(failed);
}

void SubscriptionToProto(const registry::Subscription& sub, absl::Time now, StatsLookup stats,
                         v1::Subscription* out) {
  out->set_id(sub.id);
  out->set_event(sub.event);
  out->set_socket(sub.socket);
  TimeToProto(sub.create_time, out->mutable_create_time());
  if (sub.Expires()) {
    TimeToProto(sub.expire_time, out->mutable_expire_time());
    DurationToProto(std::max(absl::ZeroDuration(), sub.expire_time - now), out->mutable_ttl());
  }
  if (sub.event_param.has_value()) out->set_event_param(*sub.event_param);
  out->set_owner(sub.owner);
  for (const uri::TcpTarget& target : sub.target.targets) {
    v1::TargetState* state = out->add_targets();
    std::string key = target.Key();
    std::optional<net::TargetStats> s = stats(key);
    state->set_address(std::move(key));
    if (!s.has_value()) {
      state->set_state(v1::CONNECTION_STATE_IDLE);
      continue;
    }
    state->set_state(ConnectionStateFromConnState(s->state));
    state->set_queued_messages(s->queued_messages);
    state->set_outstanding_requests(s->outstanding_requests);
    state->set_delivered(s->delivered);
    state->set_failed(s->failed);
    state->set_expired(s->expired);
    state->set_reconnects(s->reconnects);
  }
}

void TimeToProto(absl::Time time, google::protobuf::Timestamp* out) {
  // ToUnixSeconds rounds toward the infinite past, so nanos is never negative.
  int64_t seconds = absl::ToUnixSeconds(time);
  out->set_seconds(seconds);
  out->set_nanos(
      static_cast<int32_t>((time - absl::FromUnixSeconds(seconds)) / absl::Nanoseconds(1)));
}

void DurationToProto(absl::Duration duration, google::protobuf::Duration* out) {
  // IDivDuration truncates toward zero: seconds and nanos share their sign, as proto requires.
  absl::Duration rem;
  int64_t seconds = absl::IDivDuration(duration, absl::Seconds(1), &rem);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(rem / absl::Nanoseconds(1)));
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace eventbus::service
