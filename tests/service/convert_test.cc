#include "server/service/convert.h"

#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace eventbus::service {
namespace {

namespace v1 = ::eventbus::v1;
using google::protobuf::Value;
using ::testing::HasSubstr;

Value Json(const std::string& text) {
  Value value;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(text, &value).ok()) << text;
  return value;
}

Value Str(const std::string& s) {
  Value v;
  v.set_string_value(s);
  return v;
}

Value Num(double d) {
  Value v;
  v.set_number_value(d);
  return v;
}

v1::RaiseRequest Named(std::vector<std::pair<std::string, Value>> params) {
  v1::RaiseRequest request;
  request.set_event("E");
  for (auto& [name, value] : params) {
    v1::Param* p = request.mutable_named()->add_params();
    p->set_name(name);
    *p->mutable_value() = value;
  }
  return request;
}

TEST(ValueToJsonTest, WritesIntegralNumbersWithoutDecimalPoint) {
  EXPECT_EQ(ValueToJson(Num(3)), "3");
  EXPECT_EQ(ValueToJson(Num(-7)), "-7");
  EXPECT_EQ(ValueToJson(Num(0)), "0");
  EXPECT_EQ(ValueToJson(Num(9007199254740992.0)), "9007199254740992");
}

TEST(ValueToJsonTest, WritesFractionalNumbers) { EXPECT_EQ(ValueToJson(Num(2.5)), "2.5"); }

TEST(ValueToJsonTest, WritesBoolNullAndUnsetKindAsNull) {
  Value t, f, null, unset;
  t.set_bool_value(true);
  f.set_bool_value(false);
  null.set_null_value(google::protobuf::NULL_VALUE);
  EXPECT_EQ(ValueToJson(t), "true");
  EXPECT_EQ(ValueToJson(f), "false");
  EXPECT_EQ(ValueToJson(null), "null");
  EXPECT_EQ(ValueToJson(unset), "null");
}

TEST(ValueToJsonTest, EscapesStringsAsSpecSection2) {
  EXPECT_EQ(ValueToJson(Str("a\"b\\c/d\n\t\r\b\f")), R"("a\"b\\c/d\n\t\r\b\f")");
  EXPECT_EQ(ValueToJson(Str(std::string("\x01\x1f", 2))), R"("\u0001\u001f")");
  EXPECT_EQ(ValueToJson(Str("h\xc3\xa9llo")), "\"h\xc3\xa9llo\"");
  EXPECT_EQ(ValueToJson(Str("")), R"("")");
}

TEST(ValueToJsonTest, WritesListsAndNestedValues) {
  EXPECT_EQ(ValueToJson(Json(R"([1, "x", [true, null], {"k": []}])")),
            R"([1,"x",[true,null],{"k":[]}])");
  EXPECT_EQ(ValueToJson(Json("[]")), "[]");
}

TEST(ValueToJsonTest, SortsStructKeys) {
  EXPECT_EQ(ValueToJson(Json(R"({"b": 1, "a": {"z": 2, "y": [3]}, "c\"": "q"})")),
            R"({"a":{"y":[3],"z":2},"b":1,"c\"":"q"})");
  EXPECT_EQ(ValueToJson(Json("{}")), "{}");
}

TEST(ParamsFromRequestTest, NoParamsIsKindNone) {
  v1::RaiseRequest request;
  request.set_event("E");
  auto params = ParamsFromRequest(request, 100);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->kind, jsonrpc::Params::Kind::kNone);
  EXPECT_EQ(params->json, "");
}

TEST(ParamsFromRequestTest, NamedParamsKeepTheGivenOrder) {
  auto params = ParamsFromRequest(
      Named({{"ip", Str("192.168.2.11")}, {"count", Num(3)}, {"a", Json("[1]")}}), 1000);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->kind, jsonrpc::Params::Kind::kNamed);
  EXPECT_EQ(params->json, R"({"ip":"192.168.2.11","count":3,"a":[1]})");
}

TEST(ParamsFromRequestTest, EmptyNamedListIsAnEmptyObject) {
  v1::RaiseRequest request;
  request.mutable_named();
  auto params = ParamsFromRequest(request, 1000);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->kind, jsonrpc::Params::Kind::kNamed);
  EXPECT_EQ(params->json, "{}");
}

TEST(ParamsFromRequestTest, EscapesNamedParamNames) {
  auto params = ParamsFromRequest(Named({{"a\"b", Num(1)}}), 1000);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->json, R"({"a\"b":1})");
}

TEST(ParamsFromRequestTest, RejectsEmptyName) {
  auto params = ParamsFromRequest(Named({{"ip", Num(1)}, {"", Num(2)}}), 1000);
  EXPECT_EQ(params.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(params.status().message(), "params: parameter 2 has an empty name");
}

TEST(ParamsFromRequestTest, RejectsDuplicateName) {
  auto params = ParamsFromRequest(Named({{"ip", Num(1)}, {"n", Num(1)}, {"ip", Num(2)}}), 1000);
  EXPECT_EQ(params.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(params.status().message(), R"(params: duplicate name "ip")");
}

// Beyond 16 names the check uses a set: duplicates are still found, distinct names still pass.
TEST(ParamsFromRequestTest, ManyNamesAreCheckedForDuplicatesToo) {
  std::vector<std::pair<std::string, Value>> named;
  for (int i = 0; i < 40; ++i) named.push_back({absl::StrCat("p", i), Num(i)});
  auto distinct = ParamsFromRequest(Named(named), 100000);
  ASSERT_TRUE(distinct.ok()) << distinct.status();
  named.push_back({"p17", Num(0)});
  auto repeated = ParamsFromRequest(Named(named), 100000);
  EXPECT_EQ(repeated.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(repeated.status().message(), R"(params: duplicate name "p17")");
}

TEST(ParamsFromRequestTest, PositionalParamsAreAnArray) {
  v1::RaiseRequest request;
  *request.mutable_positional()->add_values() = Num(3);
  *request.mutable_positional()->add_values() = Str("x");
  auto params = ParamsFromRequest(request, 1000);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->kind, jsonrpc::Params::Kind::kPositional);
  EXPECT_EQ(params->json, R"([3,"x"])");
}

TEST(ParamsFromRequestTest, RawJsonKeepsItsTokensByteForByteWithoutWhitespace) {
  v1::RaiseRequest request;
  request.set_json("{\"b\": 1,  \"a\":[2.50]\n}");
  auto params = ParamsFromRequest(request, 1000);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->kind, jsonrpc::Params::Kind::kNamed);
  EXPECT_EQ(params->json, R"({"b":1,"a":[2.50]})");

  request.set_json("[1,2]");
  params = ParamsFromRequest(request, 1000);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->kind, jsonrpc::Params::Kind::kPositional);
}

TEST(ParamsFromRequestTest, RejectsRawJsonThatIsNotAnObjectOrArray) {
  v1::RaiseRequest request;
  for (const char* text : {"3", "\"x\"", "{", "{\"a\":}", ""}) {
    request.set_json(text);
    EXPECT_EQ(ParamsFromRequest(request, 1000).status().code(), absl::StatusCode::kInvalidArgument)
        << text;
  }
}

TEST(ParamsFromRequestTest, RejectsParamsOverTheSizeLimit) {
  // {"k":"0123456789"} is 18 bytes.
  v1::RaiseRequest request = Named({{"k", Str("0123456789")}});
  EXPECT_TRUE(ParamsFromRequest(request, 18).ok());
  auto params = ParamsFromRequest(request, 17);
  EXPECT_EQ(params.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(params.status().message(),
            "params: 18 bytes exceed the limit of 17 (--max_params_bytes)");

  v1::RaiseRequest positional;
  *positional.mutable_positional()->add_values() = Str("0123456789");
  EXPECT_EQ(ParamsFromRequest(positional, 5).status().message(),
            "params: 14 bytes exceed the limit of 5 (--max_params_bytes)");

  v1::RaiseRequest raw;
  raw.set_json("[1, 2, 3]");
  EXPECT_EQ(ParamsFromRequest(raw, 8).status().message(),
            "params: 9 bytes exceed the limit of 8 (--max_params_bytes)");
}

Value List(std::vector<Value> values) {
  Value v;
  for (Value& value : values) *v.mutable_list_value()->add_values() = std::move(value);
  return v;
}

Value Object(const std::string& key, Value value) {
  Value v;
  (*v.mutable_struct_value()->mutable_fields())[key] = std::move(value);
  return v;
}

v1::RaiseRequest Positional(std::vector<Value> values) {
  v1::RaiseRequest request;
  request.set_event("E");
  for (Value& value : values) *request.mutable_positional()->add_values() = std::move(value);
  return request;
}

// Regression (issue 7): NaN and +-Infinity were written as null, changing the value silently.
TEST(ParamsFromRequestTest, RejectsNonFiniteNumbersNamingTheParam) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  struct Case {
    v1::RaiseRequest request;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {Named({{"ok", Num(1)}, {"x", Num(nan)}}), R"(param "x": NaN cannot be sent as JSON)"},
           {Named({{"x", Num(inf)}}), R"(param "x": Infinity cannot be sent as JSON)"},
           {Named({{"x\"y", Num(-inf)}}), R"(param "x\"y": -Infinity cannot be sent as JSON)"},
           {Named({{"deep", Object("a", List({Num(1), Object("b", Num(nan))}))}}),
            R"(param "deep": NaN cannot be sent as JSON)"},
           {Positional({Num(1), Num(nan)}), "param [1]: NaN cannot be sent as JSON"},
           {Positional({Str("s"), List({Num(2), Num(-inf)})}),
            "param [1]: -Infinity cannot be sent as JSON"},
           {Positional({Object("k", Num(inf))}), "param [0]: Infinity cannot be sent as JSON"},
       }) {
    auto params = ParamsFromRequest(c.request, 1 << 20);
    ASSERT_FALSE(params.ok()) << params->json;
    EXPECT_EQ(params.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(params.status().message(), c.message);
  }
  // Finite extremes are numbers.
  auto params = ParamsFromRequest(
      Named({{"max", Num(std::numeric_limits<double>::max())}, {"min", Num(-0.0)}}), 1000);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->json, R"({"max":1.7976931348623157e+308,"min":0})");
}

// Nesting `levels` lists or structs around 1 (alternating, lists outermost).
Value Nested(int levels) {
  Value value = Num(1);
  for (int i = levels - 1; i >= 0; --i) {
    value = (i % 2 == 0) ? List({value}) : Object("k", value);
  }
  return value;
}

// The params object or array is level 1, so a param value may nest 31 more.
TEST(ParamsFromRequestTest, RejectsNestingDeeperThanTheLimitNamingTheParam) {
  ASSERT_EQ(jsonrpc::kMaxParamsDepth, 32);
  auto params = ParamsFromRequest(Named({{"a", Nested(31)}}), 1 << 20);
  ASSERT_TRUE(params.ok()) << params.status();
  params = ParamsFromRequest(Positional({Num(0), Nested(31)}), 1 << 20);
  ASSERT_TRUE(params.ok()) << params.status();

  params = ParamsFromRequest(Named({{"a", Num(1)}, {"deep", Nested(32)}}), 1 << 20);
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(params.status().message(), R"(param "deep": nested deeper than 32 levels)");

  params = ParamsFromRequest(Positional({Num(0), Num(1), Nested(40)}), 1 << 20);
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.status().message(), "param [2]: nested deeper than 32 levels");

  v1::RaiseRequest raw;
  raw.set_json(absl::StrCat(R"({"j":)", std::string(40, '['), std::string(40, ']'), "}"));
  EXPECT_EQ(ParamsFromRequest(raw, 1 << 20).status().message(),
            R"(params json: param "j": nested deeper than 32 levels)");
}

// Param.json: one JSON value as text, forwarded token for token.
v1::Param* AddJsonParam(v1::RaiseRequest* request, const std::string& name,
                        const std::string& json) {
  v1::Param* p = request->mutable_named()->add_params();
  p->set_name(name);
  p->set_json(json);
  return p;
}

TEST(ParamsFromRequestTest, NamedParamGivenAsJsonTextKeepsIntegersAndKeyOrderExactly) {
  v1::RaiseRequest request = Named({{"ok", Json("true")}});
  AddJsonParam(&request, "id", "12345678901234567890");
  AddJsonParam(&request, "big", "9007199254740993");
  AddJsonParam(&request, "obj", R"( {"z": 1, "a": [2, -9223372036854775809, 1e400]} )");
  AddJsonParam(&request, "nothing", "null");
  auto params = ParamsFromRequest(request, 1000);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->json, R"({"ok":true,"id":12345678901234567890,"big":9007199254740993,)"
                          R"("obj":{"z":1,"a":[2,-9223372036854775809,1e400]},"nothing":null})");
}

TEST(ParamsFromRequestTest, ParamWithNoValueIsRefusedNamingItNeverSentAsNull) {
  v1::RaiseRequest request = Named({{"ok", Json("true")}});
  request.mutable_named()->add_params()->set_name("count");  // neither value nor json
  auto params = ParamsFromRequest(request, 1000);
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(params.status().message(),
            R"(param "count": no value (null must be given explicitly))");

  // A Value whose kind nobody set (e.g. a field the client library dropped).
  params = ParamsFromRequest(Named({{"count", Value()}}), 1000);
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.status().message(),
            R"(param "count": no value (null must be given explicitly))");

  Value list;
  *list.mutable_list_value()->add_values() = Num(1);
  list.mutable_list_value()->add_values();  // unset
  params = ParamsFromRequest(Named({{"l", list}}), 1000);
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.status().message(),
            R"(param "l": a nested value has no kind set (null must be given explicitly))");

  params = ParamsFromRequest(Positional({Num(0), Value()}), 1000);
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.status().message(), "param [1]: no value (null must be given explicitly)");

  Value null_value;
  null_value.set_null_value(google::protobuf::NULL_VALUE);
  params = ParamsFromRequest(Named({{"n", null_value}}), 1000);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->json, R"({"n":null})");
}

TEST(ParamsFromRequestTest, ParamJsonTextThatIsNotOneJsonValueIsRefusedSayingWhy) {
  struct Case {
    std::string json;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"", R"(param "x": json: empty (give null explicitly))"},
      {"  ", R"(param "x": json: empty (give null explicitly))"},
      {"NaN", "param \"x\": json: "},
      {"1 2", "param \"x\": json: "},
      {"{\"a\":1", "param \"x\": json: "},
      {"\"\xff\"", R"(param "x": json: invalid UTF-8 at byte 1)"},
      {std::string(32, '[') + std::string(32, ']'),
       R"(param "x": json: nested deeper than 32 levels)"},
  };
  for (const Case& c : cases) {
    v1::RaiseRequest request;
    request.set_event("E");
    AddJsonParam(&request, "x", c.json);
    auto params = ParamsFromRequest(request, 1000);
    ASSERT_FALSE(params.ok()) << c.json;
    EXPECT_EQ(params.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(params.status().message(), c.message))
        << c.json << " -> " << params.status().message();
    EXPECT_GT(params.status().message().size(), std::string("param \"x\": json: ").size());
  }
  // 31 levels inside the params object (32 in all) is the most allowed.
  v1::RaiseRequest request;
  request.set_event("E");
  AddJsonParam(&request, "x", std::string(31, '[') + std::string(31, ']'));
  EXPECT_TRUE(ParamsFromRequest(request, 1000).ok());
}

TEST(DeliveryStatusTest, MapsEveryCode) {
  EXPECT_EQ(DeliveryStatusFromCode(net::DeliveryCode::kQueued), v1::DELIVERY_STATUS_QUEUED);
  EXPECT_EQ(DeliveryStatusFromCode(net::DeliveryCode::kOk), v1::DELIVERY_STATUS_OK);
  EXPECT_EQ(DeliveryStatusFromCode(net::DeliveryCode::kRpcError), v1::DELIVERY_STATUS_RPC_ERROR);
  EXPECT_EQ(DeliveryStatusFromCode(net::DeliveryCode::kTimeout), v1::DELIVERY_STATUS_TIMEOUT);
  EXPECT_EQ(DeliveryStatusFromCode(net::DeliveryCode::kConnectFailed),
            v1::DELIVERY_STATUS_CONNECT_FAILED);
  EXPECT_EQ(DeliveryStatusFromCode(net::DeliveryCode::kResolveFailed),
            v1::DELIVERY_STATUS_RESOLVE_FAILED);
  EXPECT_EQ(DeliveryStatusFromCode(net::DeliveryCode::kConnectionLost),
            v1::DELIVERY_STATUS_CONNECTION_LOST);
  EXPECT_EQ(DeliveryStatusFromCode(net::DeliveryCode::kBadReply), v1::DELIVERY_STATUS_BAD_REPLY);
  EXPECT_EQ(DeliveryStatusFromCode(net::DeliveryCode::kQueueFull), v1::DELIVERY_STATUS_QUEUE_FULL);
}

TEST(ConnectionStateTest, MapsEveryState) {
  EXPECT_EQ(ConnectionStateFromConnState(net::ConnState::kIdle), v1::CONNECTION_STATE_IDLE);
  EXPECT_EQ(ConnectionStateFromConnState(net::ConnState::kResolving),
            v1::CONNECTION_STATE_RESOLVING);
  EXPECT_EQ(ConnectionStateFromConnState(net::ConnState::kConnecting),
            v1::CONNECTION_STATE_CONNECTING);
  EXPECT_EQ(ConnectionStateFromConnState(net::ConnState::kConnected),
            v1::CONNECTION_STATE_CONNECTED);
  EXPECT_EQ(ConnectionStateFromConnState(net::ConnState::kBackoff), v1::CONNECTION_STATE_BACKOFF);
}

TEST(ReportToProtoTest, OkCarriesResultAndLatency) {
  delivery::DeliveryReport report;
  report.subscription_id = "00000000000000ab";
  report.socket = "tcp:127.0.0.1:8080";
  report.outcome.code = net::DeliveryCode::kOk;
  report.outcome.result = R"({"ok":true})";
  report.latency = absl::Microseconds(1500);
  v1::Delivery d;
  ReportToProto(report, &d);
  EXPECT_EQ(d.subscription_id(), "00000000000000ab");
  EXPECT_EQ(d.socket(), "tcp:127.0.0.1:8080");
  EXPECT_EQ(d.status(), v1::DELIVERY_STATUS_OK);
  EXPECT_EQ(d.result(), R"({"ok":true})");
  EXPECT_FALSE(d.has_error());
  EXPECT_EQ(d.latency().seconds(), 0);
  EXPECT_EQ(d.latency().nanos(), 1500000);
  EXPECT_EQ(d.attempts_size(), 0);
}

TEST(ReportToProtoTest, RpcErrorCarriesTheErrorOnly) {
  delivery::DeliveryReport report;
  report.outcome.code = net::DeliveryCode::kRpcError;
  report.outcome.result = "ignored";
  report.outcome.error_code = -32601;
  report.outcome.error_message = "Method not found";
  report.outcome.error_data = R"({"m":"E"})";
  report.latency = absl::Milliseconds(2500);
  v1::Delivery d;
  ReportToProto(report, &d);
  EXPECT_EQ(d.status(), v1::DELIVERY_STATUS_RPC_ERROR);
  ASSERT_TRUE(d.has_error());
  EXPECT_EQ(d.error().code(), -32601);
  EXPECT_EQ(d.error().message(), "Method not found");
  EXPECT_EQ(d.error().data(), R"({"m":"E"})");
  EXPECT_EQ(d.result(), "");
  EXPECT_EQ(d.latency().seconds(), 2);
  EXPECT_EQ(d.latency().nanos(), 500000000);
}

TEST(ReportToProtoTest, FailureCarriesDetailAndNoError) {
  delivery::DeliveryReport report;
  report.outcome.code = net::DeliveryCode::kConnectFailed;
  report.outcome.detail = "connect to 127.0.0.1:9: Connection refused";
  v1::Delivery d;
  ReportToProto(report, &d);
  EXPECT_EQ(d.status(), v1::DELIVERY_STATUS_CONNECT_FAILED);
  EXPECT_EQ(d.detail(), "connect to 127.0.0.1:9: Connection refused");
  EXPECT_FALSE(d.has_error());
}

TEST(ReportToProtoTest, VirtualGroupListsEveryAttemptInOrder) {
  delivery::DeliveryReport report;
  report.socket = "virtual:FAILOVER tcp:a:1 tcp:b:2";
  report.outcome.code = net::DeliveryCode::kOk;
  report.outcome.result = "1";
  delivery::Attempt first;
  first.member = "tcp:a:1";
  first.outcome.code = net::DeliveryCode::kRpcError;
  first.outcome.error_code = 7;
  first.outcome.error_message = "no";
  first.latency = absl::Milliseconds(1);
  delivery::Attempt second;
  second.member = "tcp:b:2";
  second.outcome.code = net::DeliveryCode::kOk;
  second.outcome.result = "1";
  second.latency = absl::Milliseconds(2);
  report.attempts = {first, second};
  v1::Delivery d;
  ReportToProto(report, &d);
  ASSERT_EQ(d.attempts_size(), 2);
  EXPECT_EQ(d.attempts(0).member(), "tcp:a:1");
  EXPECT_EQ(d.attempts(0).status(), v1::DELIVERY_STATUS_RPC_ERROR);
  EXPECT_EQ(d.attempts(0).error().code(), 7);
  EXPECT_EQ(d.attempts(0).latency().nanos(), 1000000);
  EXPECT_EQ(d.attempts(1).member(), "tcp:b:2");
  EXPECT_EQ(d.attempts(1).status(), v1::DELIVERY_STATUS_OK);
  EXPECT_EQ(d.attempts(1).result(), "1");
  EXPECT_FALSE(d.attempts(1).has_error());
}

registry::Subscription MakeSubscription() {
  registry::Subscription sub;
  sub.id = "0123456789abcdef";
  sub.event = "E_PIKE_BLOCKED";
  sub.socket = "virtual:PARALLEL tcp:a:1 tcp:[::1]:2/m";
  sub.target.is_virtual = true;
  sub.target.targets = {*uri::ParseTcpSocket("tcp:a:1"), *uri::ParseTcpSocket("tcp:[::1]:2/m")};
  sub.create_time = absl::FromUnixSeconds(1700000000) + absl::Milliseconds(250);
  return sub;
}

std::optional<net::TargetStats> NoStats(const std::string&) { return std::nullopt; }

TEST(RaiseResultToProtoTest, CountsQueuedOkAndFailedAndListsTheReportsGiven) {
  delivery::RaiseResult result;
  result.targets = 5;
  result.queued = 3;
  result.reports.resize(2);
  result.reports[0].subscription_id = "a";
  result.reports[0].outcome.code = net::DeliveryCode::kOk;
  result.reports[1].subscription_id = "b";
  result.reports[1].outcome.code = net::DeliveryCode::kQueueFull;
  v1::RaiseResponse r;
  RaiseResultToProto(result, &r);
  EXPECT_EQ(r.subscribers(), 5u);
  EXPECT_EQ(r.queued(), 3u);
  EXPECT_EQ(r.ok(), 1u);
  EXPECT_EQ(r.failed(), 1u);
  ASSERT_EQ(r.deliveries_size(), 2);
  EXPECT_EQ(r.deliveries(1).subscription_id(), "b");
  EXPECT_EQ(r.deliveries(1).status(), v1::DELIVERY_STATUS_QUEUE_FULL);
}

TEST(RaiseResultToProtoTest, ListedQueuedReportsAreCountedOnceAndZeroCountsArePresent) {
  delivery::RaiseResult result;
  result.targets = 1;
  result.queued = 1;
  result.reports.resize(1);
  result.reports[0].outcome.code = net::DeliveryCode::kQueued;
  v1::RaiseResponse r;
  RaiseResultToProto(result, &r);
  EXPECT_EQ(r.queued(), 1u);
  EXPECT_TRUE(r.has_ok() && r.has_failed());
  EXPECT_EQ(r.ok() + r.failed(), 0u);
  EXPECT_EQ(r.deliveries_size(), 1);

  v1::RaiseResponse none;
  RaiseResultToProto(delivery::RaiseResult{}, &none);
  EXPECT_TRUE(none.has_subscribers() && none.has_queued() && none.has_ok() && none.has_failed());
}

TEST(SubscriptionToProtoTest, NeverExpiringHasNoExpiryOrTtl) {
  registry::Subscription sub = MakeSubscription();
  v1::Subscription out;
  SubscriptionToProto(sub, absl::FromUnixSeconds(1700000100), NoStats, &out);
  EXPECT_EQ(out.id(), "0123456789abcdef");
  EXPECT_EQ(out.event(), "E_PIKE_BLOCKED");
  EXPECT_EQ(out.socket(), "virtual:PARALLEL tcp:a:1 tcp:[::1]:2/m");
  EXPECT_EQ(out.create_time().seconds(), 1700000000);
  EXPECT_EQ(out.create_time().nanos(), 250000000);
  EXPECT_FALSE(out.has_expire_time());
  EXPECT_FALSE(out.has_ttl());
  EXPECT_FALSE(out.has_event_param());
  EXPECT_EQ(out.owner(), "");
}

TEST(SubscriptionToProtoTest, ShowsTheOwner) {
  registry::Subscription sub = MakeSubscription();
  sub.owner = "billing";
  v1::Subscription out;
  SubscriptionToProto(sub, absl::FromUnixSeconds(1700000100), NoStats, &out);
  EXPECT_EQ(out.owner(), "billing");
}

TEST(SubscriptionToProtoTest, TtlIsTimeLeftAndNeverNegative) {
  registry::Subscription sub = MakeSubscription();
  sub.expire_time = absl::FromUnixSeconds(1700003600);
  sub.event_param = "";
  v1::Subscription out;
  SubscriptionToProto(sub, absl::FromUnixSeconds(1700000600), NoStats, &out);
  EXPECT_EQ(out.expire_time().seconds(), 1700003600);
  EXPECT_EQ(out.ttl().seconds(), 3000);
  ASSERT_TRUE(out.has_event_param());
  EXPECT_EQ(out.event_param(), "");

  v1::Subscription expired;
  SubscriptionToProto(sub, absl::FromUnixSeconds(1700009999), NoStats, &expired);
  ASSERT_TRUE(expired.has_ttl());
  EXPECT_EQ(expired.ttl().seconds(), 0);
  EXPECT_EQ(expired.ttl().nanos(), 0);
}

TEST(SubscriptionToProtoTest, ReportsEachTargetIdleWithoutAConnection) {
  registry::Subscription sub = MakeSubscription();
  auto stats = [](const std::string& key) -> std::optional<net::TargetStats> {
    if (key != "[::1]:2") return std::nullopt;
    net::TargetStats s;
    s.key = key;
    s.state = net::ConnState::kConnected;
    s.queued_messages = 3;
    s.outstanding_requests = 2;
    s.delivered = 10;
    s.failed = 1;
    s.reconnects = 4;
    return s;
  };
  v1::Subscription out;
  SubscriptionToProto(sub, absl::FromUnixSeconds(1700000000), stats, &out);
  ASSERT_EQ(out.targets_size(), 2);
  EXPECT_EQ(out.targets(0).address(), "a:1");
  EXPECT_EQ(out.targets(0).state(), v1::CONNECTION_STATE_IDLE);
  EXPECT_EQ(out.targets(0).delivered(), 0u);
  EXPECT_EQ(out.targets(1).address(), "[::1]:2");
  EXPECT_EQ(out.targets(1).state(), v1::CONNECTION_STATE_CONNECTED);
  EXPECT_EQ(out.targets(1).queued_messages(), 3u);
  EXPECT_EQ(out.targets(1).outstanding_requests(), 2u);
  EXPECT_EQ(out.targets(1).delivered(), 10u);
  EXPECT_EQ(out.targets(1).failed(), 1u);
  EXPECT_EQ(out.targets(1).reconnects(), 4u);
}

TEST(TimeToProtoTest, NanosStayNonNegativeBeforeTheEpoch) {
  google::protobuf::Timestamp ts;
  TimeToProto(absl::FromUnixMillis(-1500), &ts);
  EXPECT_EQ(ts.seconds(), -2);
  EXPECT_EQ(ts.nanos(), 500000000);
}

TEST(DurationToProtoTest, SecondsAndNanosShareTheSign) {
  google::protobuf::Duration d;
  DurationToProto(-absl::Milliseconds(1500), &d);
  EXPECT_EQ(d.seconds(), -1);
  EXPECT_EQ(d.nanos(), -500000000);
}

TEST(ToGrpcStatusTest, KeepsCodeAndMessage) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  grpc::Status s = ToGrpcStatus(absl::InvalidArgumentError(R"(socket "tcp:h:70000": bad)"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), R"(socket "tcp:h:70000": bad)");
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("x")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ToGrpcStatus(absl::UnavailableError("x")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ToGrpcStatus(absl::DeadlineExceededError("x")).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
}

}  // namespace
}  // namespace eventbus::service
