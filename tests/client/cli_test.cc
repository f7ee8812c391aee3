#include "client/cli.h"

#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/base/version.h"
#include "tests/testing/ports.h"

namespace eventbus::client {
namespace {

namespace v1 = ::eventbus::v1;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(ParseRaiseArgsTest, NamedStringAndTypedParamsKeepOrder) {
  auto request = ParseRaiseArgs({"E_PIKE_BLOCKED", "ip=192.168.2.11", "count:=3"});
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->event(), "E_PIKE_BLOCKED");
  ASSERT_TRUE(request->has_named());
  ASSERT_EQ(request->named().params_size(), 2);
  EXPECT_EQ(request->named().params(0).name(), "ip");
  EXPECT_EQ(request->named().params(0).value().string_value(), "192.168.2.11");
  EXPECT_EQ(request->named().params(1).name(), "count");
  EXPECT_EQ(request->named().params(1).json(), "3");
  EXPECT_FALSE(request->has_sync());
  EXPECT_FALSE(request->has_timeout_ms());
}

TEST(ParseRaiseArgsTest, TypedParamsTakeAnyJsonValue) {
  auto request =
      ParseRaiseArgs({"E", "b:=true", "n:=null", "l:=[1,2]", "o:={\"a\":1}", "s:=\"x\"", "eq=a=b"});
  ASSERT_TRUE(request.ok()) << request.status();
  const auto& p = request->named().params();
  ASSERT_EQ(p.size(), 6);
  EXPECT_EQ(p[0].json(), "true");
  EXPECT_EQ(p[1].json(), "null");
  EXPECT_EQ(p[2].json(), "[1,2]");
  EXPECT_EQ(p[3].json(), "{\"a\":1}");
  EXPECT_EQ(p[4].json(), "\"x\"");
  EXPECT_EQ(p[5].name(), "eq");
  EXPECT_EQ(p[5].value().string_value(), "a=b");
}

TEST(ParseRaiseArgsTest, PlainValuesArePositionalJsonOrStrings) {
  auto request = ParseRaiseArgs({"E_MY_EVENT", "3", "x"});
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_TRUE(request->has_positional());
  ASSERT_EQ(request->positional().values_size(), 2);
  EXPECT_EQ(request->positional().values(0).number_value(), 3);
  EXPECT_EQ(request->positional().values(1).string_value(), "x");
}

TEST(ParseRaiseArgsTest, PositionalValuesThatAreNotNamesStayPositional) {
  auto request = ParseRaiseArgs({"E", "192.168.2.11", "{\"a\":\"b=c\"}", "-5", "\"q\""});
  ASSERT_TRUE(request.ok()) << request.status();
  const auto& v = request->positional().values();
  ASSERT_EQ(v.size(), 4);
  EXPECT_EQ(v[0].string_value(), "192.168.2.11");
  EXPECT_EQ(v[1].struct_value().fields().at("a").string_value(), "b=c");
  EXPECT_EQ(v[2].number_value(), -5);
  EXPECT_EQ(v[3].string_value(), "q");
}

TEST(ParseRaiseArgsTest, NoArgsMeansNoParams) {
  auto request = ParseRaiseArgs({"E"});
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->params_case(), v1::RaiseRequest::PARAMS_NOT_SET);
}

TEST(ParseRaiseArgsTest, JsonIsForwardedAsGiven) {
  auto request = ParseRaiseArgs({"E", "--json", "{\"a\": [1, 2]}"});
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->json(), "{\"a\": [1, 2]}");
  request = ParseRaiseArgs({"--json={\"a\":1}", "E"});
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->json(), "{\"a\":1}");
}

TEST(ParseRaiseArgsTest, OptionsSetSyncTimeoutAndOutput) {
  auto command = ParseRaiseCommand({"--sync", "--timeout", "250", "--output=json", "E", "a=1"});
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_TRUE(command->request.sync());
  EXPECT_EQ(command->request.timeout_ms(), 250u);
  EXPECT_EQ(command->output, OutputFormat::kJson);

  command = ParseRaiseCommand({"E", "--async"});
  ASSERT_TRUE(command.ok()) << command.status();
  ASSERT_TRUE(command->request.has_sync());
  EXPECT_FALSE(command->request.sync());
  EXPECT_EQ(command->output, OutputFormat::kTable);
}

TEST(ParseRaiseArgsTest, DoubleDashEndsOptions) {
  auto request = ParseRaiseArgs({"E", "--", "--sync"});
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_FALSE(request->has_sync());
  EXPECT_EQ(request->positional().values(0).string_value(), "--sync");
}

TEST(ParseRaiseArgsTest, RejectsMixingNamedAndPositional) {
  auto request = ParseRaiseArgs({"E", "ip=1.2.3.4", "3"});
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(request.status().message(), HasSubstr("cannot mix named"));
  EXPECT_THAT(request.status().message(), HasSubstr("\"ip=1.2.3.4\""));
  EXPECT_THAT(request.status().message(), HasSubstr("\"3\""));
}

TEST(ParseRaiseArgsTest, RejectsBadTypedJsonNamingTheArgument) {
  auto request = ParseRaiseArgs({"E", "count:=abc"});
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(request.status().message(), HasSubstr("\"count:=abc\""));
  EXPECT_THAT(request.status().message(), HasSubstr("invalid JSON"));
  EXPECT_THAT(request.status().message(), ::testing::Not(HasSubstr("\n")));
}

TEST(ParseRaiseArgsTest, RejectsEmptyName) {
  EXPECT_THAT(ParseRaiseArgs({"E", "=x"}).status().message(), HasSubstr("empty name"));
  EXPECT_THAT(ParseRaiseArgs({"E", ":=3"}).status().message(), HasSubstr("empty name"));
}

TEST(ParseRaiseArgsTest, RejectsUsageMistakes) {
  EXPECT_THAT(ParseRaiseArgs({}).status().message(), HasSubstr("missing EVENT"));
  EXPECT_THAT(ParseRaiseArgs({"E", "--json", "{}", "a=1"}).status().message(),
              HasSubstr("--json cannot be combined"));
  EXPECT_THAT(ParseRaiseArgs({"E", "--timeout", "x"}).status().message(),
              HasSubstr("--timeout \"x\""));
  EXPECT_THAT(ParseRaiseArgs({"E", "--timeout", "0"}).status().message(),
              HasSubstr("at least 1 ms"));
  EXPECT_THAT(ParseRaiseArgs({"E", "--timeout"}).status().message(), HasSubstr("needs a value"));
  EXPECT_THAT(ParseRaiseArgs({"E", "--bogus"}).status().message(),
              HasSubstr("unknown option --bogus"));
  EXPECT_THAT(ParseRaiseArgs({"E", "--output", "xml"}).status().message(),
              HasSubstr("expected table or json"));
}

TEST(ParseRaiseArgsTest, TypedNamedParamsTravelAsJsonTextSoNothingIsRounded) {
  // Param.json carries the text as typed: 12345678901234567890 is not turned into the double
  // 1.2345678901234567e+19, and object keys keep their order.
  auto request = ParseRaiseArgs(
      {"E", "id:=12345678901234567890", "obj:={\"z\":1,\"a\":[2]}", "s=12345678901234567890"});
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_EQ(request->named().params_size(), 3);
  EXPECT_EQ(request->named().params(0).json(), "12345678901234567890");
  EXPECT_EQ(request->named().params(1).json(), "{\"z\":1,\"a\":[2]}");
  EXPECT_EQ(request->named().params(2).value().string_value(), "12345678901234567890");
  // Still checked here, before anything is sent.
  EXPECT_THAT(ParseRaiseArgs({"E", "x:={\"a\":"}).status().message(),
              HasSubstr("invalid JSON value"));
}

TEST(ParseRaiseArgsTest, RejectsPositionalIntegersThatADoubleWouldRoundInsteadOfLosingDigits) {
  // Positional params travel as google.protobuf.ListValue (doubles): 12345678901234567890 would
  // arrive as 1.2345678901234567e+19.
  for (const char* arg : {"12345678901234567890", "[1,-9007199254740993]",
                          "{\"a\":{\"b\":99999999999999999999999}}"}) {
    auto request = ParseRaiseArgs({"E", arg});
    ASSERT_FALSE(request.ok()) << arg;
    EXPECT_THAT(request.status().message(), HasSubstr(absl::StrCat("argument \"", arg, "\"")));
    EXPECT_THAT(request.status().message(), HasSubstr("use --json")) << arg;
  }
  // Up to 2^53 every integer is exact; fractions, exponents and digits in strings are not checked.
  auto request = ParseRaiseArgs(
      {"E", "9007199254740992", "-9007199254740992", "1.5e300", "\"123456789012345678901\""});
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->positional().values(0).number_value(), 9007199254740992.0);
  EXPECT_EQ(request->positional().values(3).string_value(), "123456789012345678901");
}

TEST(ParseSubscribeArgsTest, ParsesEventSocketAndOptions) {
  auto command = ParseSubscribeArgs(
      {"E", "virtual:FAILOVER tcp:a:1 tcp:b:2", "--expire", "0", "--event_param=opensips_event"});
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_EQ(command->request.event(), "E");
  EXPECT_EQ(command->request.socket(), "virtual:FAILOVER tcp:a:1 tcp:b:2");
  ASSERT_TRUE(command->request.has_expire_seconds());
  EXPECT_EQ(command->request.expire_seconds(), 0u);
  EXPECT_EQ(command->request.event_param(), "opensips_event");

  command = ParseSubscribeArgs({"E", "tcp:a:1"});
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_FALSE(command->request.has_expire_seconds());
  EXPECT_FALSE(command->request.has_event_param());
}

TEST(ParseSubscribeArgsTest, RejectsWrongArgumentCountAndBadExpire) {
  EXPECT_FALSE(ParseSubscribeArgs({"E"}).ok());
  EXPECT_FALSE(ParseSubscribeArgs({"E", "s", "x"}).ok());
  EXPECT_THAT(ParseSubscribeArgs({"E", "s", "--expire", "-1"}).status().message(),
              HasSubstr("--expire \"-1\""));
  // Too big is not "negative": the message says which range is accepted.
  EXPECT_THAT(ParseSubscribeArgs({"E", "s", "--expire", "5000000000"}).status().message(),
              HasSubstr("--expire \"5000000000\": expected an integer from 0 to 4294967295"));
}

TEST(ParseUnsubscribeArgsTest, TakesIdOrEventAndSocket) {
  auto by_id = ParseUnsubscribeArgs({"0123456789abcdef"});
  ASSERT_TRUE(by_id.ok());
  EXPECT_EQ(by_id->id(), "0123456789abcdef");
  auto by_key = ParseUnsubscribeArgs({"E", "tcp:a:1"});
  ASSERT_TRUE(by_key.ok());
  EXPECT_EQ(by_key->event(), "E");
  EXPECT_EQ(by_key->socket(), "tcp:a:1");
  EXPECT_FALSE(ParseUnsubscribeArgs({}).ok());
  EXPECT_FALSE(ParseUnsubscribeArgs({"a", "b", "c"}).ok());
}

TEST(FormatTest, ShortStatusAndStateNames) {
  EXPECT_EQ(StatusName(v1::DELIVERY_STATUS_CONNECT_FAILED), "CONNECT_FAILED");
  EXPECT_EQ(StatusName(v1::DELIVERY_STATUS_OK), "OK");
  EXPECT_EQ(StateName(v1::CONNECTION_STATE_BACKOFF), "BACKOFF");
}

TEST(FormatTest, RaiseTableHasOneLinePerTargetAndIndentedAttempts) {
  v1::RaiseResponse response;
  v1::Delivery* ok = response.add_deliveries();
  ok->set_socket("tcp:127.0.0.1:8080");
  ok->set_status(v1::DELIVERY_STATUS_OK);
  ok->mutable_latency()->set_nanos(1500000);
  ok->set_result("{\"ok\":true}");
  v1::Delivery* err = response.add_deliveries();
  err->set_socket("tcp:h:1");
  err->set_status(v1::DELIVERY_STATUS_RPC_ERROR);
  err->mutable_error()->set_code(-32601);
  err->mutable_error()->set_message("Method not found");
  v1::Delivery* group = response.add_deliveries();
  group->set_socket("virtual:FAILOVER tcp:a:1 tcp:b:2");
  group->set_status(v1::DELIVERY_STATUS_TIMEOUT);
  group->set_detail("no reply");
  v1::Attempt* attempt = group->add_attempts();
  attempt->set_member("tcp:a:1");
  attempt->set_status(v1::DELIVERY_STATUS_CONNECT_FAILED);
  attempt->set_detail("connect to a:1: Connection refused");

  std::string table = FormatRaiseTable(response);
  std::vector<std::string> lines = absl::StrSplit(table, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u) << table;
  EXPECT_THAT(lines[0], HasSubstr("tcp:127.0.0.1:8080"));
  EXPECT_THAT(lines[0], HasSubstr("OK"));
  EXPECT_THAT(lines[0], HasSubstr("1.50 ms"));
  EXPECT_THAT(lines[0], HasSubstr("{\"ok\":true}"));
  EXPECT_THAT(lines[1], HasSubstr("error -32601: Method not found"));
  EXPECT_THAT(lines[2], HasSubstr("TIMEOUT"));
  EXPECT_THAT(lines[2], HasSubstr("no reply"));
  EXPECT_THAT(lines[3], ::testing::StartsWith("  tcp:a:1"));
  EXPECT_THAT(lines[3], HasSubstr("CONNECT_FAILED"));
  EXPECT_THAT(lines[3], HasSubstr("Connection refused"));
}

TEST(FormatTest, EmptyResultsSaySo) {
  EXPECT_EQ(FormatRaiseTable({}), "no subscribers\n");
  EXPECT_EQ(FormatSubscriptionsTable({}), "no subscriptions\n");
  EXPECT_EQ(FormatEventsTable({}), "no events\n");
}

TEST(FormatTest, SubscriptionsTableShowsExpiryAndTargets) {
  v1::ListSubscriptionsResponse response;
  v1::Subscription* never = response.add_subscriptions();
  never->set_id("0123456789abcdef");
  never->set_event("E");
  never->set_socket("tcp:a:1");
  v1::TargetState* t = never->add_targets();
  t->set_address("a:1");
  t->set_state(v1::CONNECTION_STATE_CONNECTED);
  v1::Subscription* expiring = response.add_subscriptions();
  expiring->set_id("fedcba9876543210");
  expiring->set_event("E");
  expiring->set_socket("tcp:b:2");
  expiring->mutable_expire_time()->set_seconds(1700003600);
  expiring->mutable_ttl()->set_seconds(90);
  std::string table = FormatSubscriptionsTable(response);
  std::vector<std::string> lines = absl::StrSplit(table, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << table;
  EXPECT_THAT(lines[0], HasSubstr("ID"));
  EXPECT_THAT(lines[1], HasSubstr("never"));
  EXPECT_THAT(lines[1], HasSubstr("a:1 CONNECTED"));
  EXPECT_THAT(lines[2], HasSubstr("2023-11-14T23:13:20Z"));
  EXPECT_THAT(lines[2], HasSubstr("1m30s"));
}

TEST(FormatTest, SubscriptionsTableHasAnOwnerColumnOnlyWhenSomeSubscriptionHasAnOwner) {
  v1::ListSubscriptionsResponse response;
  v1::Subscription* legacy = response.add_subscriptions();
  legacy->set_id("0123456789abcdef");
  legacy->set_event("E");
  legacy->set_socket("tcp:a:1");
  EXPECT_THAT(FormatSubscriptionsTable(response), Not(HasSubstr("OWNER")));

  v1::Subscription* owned = response.add_subscriptions();
  owned->set_id("fedcba9876543210");
  owned->set_event("E");
  owned->set_socket("tcp:b:2");
  owned->set_owner("billing");
  std::string table = FormatSubscriptionsTable(response);
  std::vector<std::string> lines = absl::StrSplit(table, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << table;
  EXPECT_THAT(lines[0],
              ::testing::MatchesRegex("ID +EVENT +SOCKET +OWNER +EXPIRES +TTL +TARGETS *"));
  EXPECT_THAT(lines[1], ::testing::MatchesRegex("0123456789abcdef +E +tcp:a:1 +- +never .*"));
  EXPECT_THAT(lines[2], ::testing::MatchesRegex("fedcba9876543210 +E +tcp:b:2 +billing +never .*"));
}

TEST(FormatTest, ASubscriptionShowsItsOwnerWhenItHasOne) {
  v1::Subscription sub;
  sub.set_id("0123456789abcdef");
  sub.set_event("E");
  sub.set_socket("tcp:a:1");
  EXPECT_THAT(FormatSubscription(sub, true), Not(HasSubstr("owner")));
  sub.set_owner("billing");
  EXPECT_THAT(FormatSubscription(sub, true), ::testing::ContainsRegex("owner +billing\n"));
}

TEST(RunCliTest, UsageErrorsExitTwoWithoutContactingAServer) {
  std::ostringstream out, err;
  // Port 1 on loopback: nothing listens, but parsing fails before any call.
  EXPECT_EQ(RunCli({"raise", "E", "a=1", "2"}, "127.0.0.1:1", out, err), 2);
  EXPECT_THAT(err.str(), HasSubstr("cannot mix named"));
  EXPECT_THAT(err.str(), HasSubstr("usage: eventbus"));
  std::ostringstream out2, err2;
  EXPECT_EQ(RunCli({"frobnicate"}, "127.0.0.1:1", out2, err2), 2);
  EXPECT_THAT(err2.str(), HasSubstr("unknown command \"frobnicate\""));
  std::ostringstream out3, err3;
  EXPECT_EQ(RunCli({}, "127.0.0.1:1", out3, err3), 2);
  std::ostringstream out4, err4;
  EXPECT_EQ(RunCli({"--timeout_ms", "abc", "events"}, "127.0.0.1:1", out4, err4), 2);
}

TEST(StreamLineTest, ParsesEveryFieldAndKeepsParamsAsTyped) {
  v1::RaiseRequest defaults;
  defaults.set_sync(false);
  defaults.set_timeout_ms(700);
  absl::StatusOr<v1::RaiseRequest> request = ParseStreamLine(
      R"( {"params": {"z": 12345678901234567890, "a": [1, "x"]}, "event": "E", "all": true} )",
      defaults);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->event(), "E");
  EXPECT_EQ(request->json(), R"({"z": 12345678901234567890, "a": [1, "x"]})");
  EXPECT_FALSE(request->sync());
  EXPECT_EQ(request->timeout_ms(), 700u);
  EXPECT_TRUE(request->all_deliveries());

  request =
      ParseStreamLine(R"({"event":"E","params":["}{",2],"sync":true,"timeout_ms":500})", defaults);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->json(), R"(["}{",2])");
  EXPECT_TRUE(request->sync());
  EXPECT_EQ(request->timeout_ms(), 500u);
}

TEST(StreamLineTest, RefusesWhatItCannotRaiseSayingWhy) {
  const v1::RaiseRequest none;
  EXPECT_THAT(ParseStreamLine("{", none).status().message(), HasSubstr("invalid JSON"));
  EXPECT_THAT(ParseStreamLine("[1]", none).status().message(), HasSubstr("expected a JSON object"));
  EXPECT_EQ(ParseStreamLine(R"({"params":{}})", none).status().message(), "missing \"event\"");
  EXPECT_EQ(ParseStreamLine(R"({"event":"E","params":3})", none).status().message(),
            "\"params\": not a JSON object or array");
  EXPECT_EQ(ParseStreamLine(R"({"event":"E","sync":"yes"})", none).status().message(),
            "\"sync\": not true or false");
  EXPECT_EQ(ParseStreamLine(R"({"event":"E","timeout_ms":0.5})", none).status().message(),
            "\"timeout_ms\": expected an integer from 1 to 4294967295");
  EXPECT_THAT(ParseStreamLine(R"({"event":"E","x":1})", none).status().message(),
              HasSubstr("unknown key \"x\""));
}

TEST(StreamLineTest, FormatsOneLinePerResult) {
  v1::RaiseStreamResult result;
  result.mutable_error()->set_code(3);
  result.mutable_error()->set_message("event [2]: bad");
  EXPECT_EQ(FormatStreamResult(9, result), "line 9: error INVALID_ARGUMENT: bad\n");
  result.mutable_response()->set_subscribers(0);
  EXPECT_EQ(FormatStreamResult(1, result), "line 1: no subscribers\n");
  v1::RaiseResponse* r = result.mutable_response();
  r->set_subscribers(2);
  r->set_queued(1);
  r->set_failed(1);
  v1::Delivery* d = r->add_deliveries();
  d->set_socket("tcp:h:1");
  d->set_status(v1::DELIVERY_STATUS_QUEUE_FULL);
  d->set_detail("queue full");
  EXPECT_EQ(FormatStreamResult(2, result),
            "line 2: 2 subscribers: 1 QUEUED, 0 OK, 1 failed; first failure: tcp:h:1 QUEUE_FULL "
            "queue full\n");
}

TEST(RunCliTest, RaiseStreamUsageErrorsExitTwo) {
  std::ostringstream out, err;
  std::istringstream in("");
  EXPECT_EQ(RunCli({"raise-stream", "E"}, "127.0.0.1:1", out, err, "", &in), 2);
  EXPECT_THAT(err.str(), HasSubstr("raise-stream: unexpected argument \"E\""));
  std::ostringstream out2, err2;
  EXPECT_EQ(RunCli({"raise-stream", "--batch", "0"}, "127.0.0.1:1", out2, err2, "", &in), 2);
  EXPECT_THAT(err2.str(), HasSubstr("--batch 0 is outside 1..10000"));
}

TEST(RunCliTest, HelpExitsZero) {
  std::ostringstream out, err;
  EXPECT_EQ(RunCli({"--help"}, "", out, err), 0);
  EXPECT_THAT(out.str(), HasSubstr("usage: eventbus"));
}

TEST(RunCliTest, VersionPrintsTheBuildsVersionAndExits0) {
  std::ostringstream out, err;
  EXPECT_EQ(RunCli({"--version"}, "", out, err), 0);
  EXPECT_THAT(out.str(), HasSubstr(absl::StrCat("eventbus ", base::Version())));
  EXPECT_THAT(out.str(), HasSubstr(absl::StrCat("build: ", base::BuildType())));
  EXPECT_EQ(err.str(), "");
}

TEST(RunCliTest, HealthTakesAtMostOneServiceName) {
  std::ostringstream out, err;
  EXPECT_EQ(RunCli({"health", "a", "b"}, "127.0.0.1:1", out, err), 2);
  EXPECT_THAT(err.str(), HasSubstr("health: unexpected argument \"b\""));
}

TEST(RunCliTest, HealthOfAnUnreachableServerExits2NamingTheCode) {
  std::ostringstream out, err;
  const std::string closed = absl::StrCat("127.0.0.1:", testing::ClosedPort());
  EXPECT_EQ(RunCli({"--timeout_ms", "2000", "health"}, closed, out, err), 2);
  EXPECT_THAT(err.str(), HasSubstr("eventbus: health: UNAVAILABLE"));
  EXPECT_EQ(out.str(), "");
}

TEST(RunCliTest, TokensTravelOnlyOverTlsAndComeFromAFileOrTheEnvironment) {
  std::ostringstream out, err;
  // From the environment, without TLS: refused before any connection.
  EXPECT_EQ(RunCli({"events"}, "127.0.0.1:1", out, err, "env-token-0123456789"), 2);
  EXPECT_THAT(err.str(), HasSubstr("a bearer token ($EVENTBUS_TOKEN) is sent only over TLS: add "
                                   "--tls or --tls_ca FILE"));
  EXPECT_THAT(err.str(), Not(HasSubstr("env-token")));
  err.str("");
  EXPECT_EQ(RunCli({"--tls", "--token_file=/nonexistent/token", "events"}, "127.0.0.1:1", out, err),
            2);
  EXPECT_THAT(err.str(), HasSubstr("--token_file \"/nonexistent/token\": cannot read"));
  err.str("");
  // No --token flag: a secret on the command line shows in `ps`.
  EXPECT_EQ(RunCli({"--tls", "--token", "abc", "events"}, "127.0.0.1:1", out, err), 2);
  EXPECT_THAT(err.str(), HasSubstr("unknown flag --token"));
  err.str("");
  EXPECT_EQ(RunCli({"--tls=yes", "events"}, "127.0.0.1:1", out, err), 2);
  EXPECT_THAT(err.str(), HasSubstr("--tls takes no value"));
  err.str("");
  EXPECT_EQ(RunCli({"--tls_ca"}, "127.0.0.1:1", out, err), 2);
  EXPECT_THAT(err.str(), HasSubstr("--tls_ca needs a value"));
}

}  // namespace
}  // namespace eventbus::client
