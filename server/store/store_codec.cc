#include "server/store/store_codec.h"

#include <simdjson.h>

#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/jsonrpc/json_writer.h"
#include "server/uri/socket_uri.h"

namespace eventbus::store {
namespace {

constexpr int64_t kJsonVersion = 1;

absl::Status JsonError(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("stored subscription: ", what));
}

// Reads a required string member.
absl::Status GetString(simdjson::dom::object object, const char* key, std::string* out) {
  std::string_view value;
  simdjson::dom::element element;
  if (object[key].get(element) != simdjson::SUCCESS) {
    return JsonError(absl::StrCat("missing \"", key, "\""));
  }
  if (element.get(value) != simdjson::SUCCESS) {
    return JsonError(absl::StrCat("\"", key, "\" is not a string"));
  }
  out->assign(value.data(), value.size());
  return absl::OkStatus();
}

// Reads a required integer member.
absl::Status GetInt(simdjson::dom::object object, const char* key, int64_t* out) {
  simdjson::dom::element element;
  if (object[key].get(element) != simdjson::SUCCESS) {
    return JsonError(absl::StrCat("missing \"", key, "\""));
  }
  if (element.get(*out) != simdjson::SUCCESS) {
    return JsonError(absl::StrCat("\"", key, "\" is not an integer"));
  }
  return absl::OkStatus();
}

}  // namespace

StoredSubscription ToStored(const registry::Subscription& sub) {
  StoredSubscription stored;
  stored.id = sub.id;
  stored.event = sub.event;
  stored.socket = sub.socket;
  stored.create_time_us = absl::ToUnixMicros(sub.create_time);
  if (sub.Expires()) stored.expire_time_us = absl::ToUnixMicros(sub.expire_time);
  stored.event_param = sub.event_param;
  stored.owner = sub.owner;
  return stored;
}

absl::StatusOr<registry::SubscriptionPtr> FromStored(StoredSubscription stored) {
  StoredSubscriptionView view;
  view.id = stored.id;
  view.event = stored.event;
  view.socket = stored.socket;
  view.create_time_us = stored.create_time_us;
  view.expire_time_us = stored.expire_time_us;
  if (stored.event_param.has_value()) view.event_param = *stored.event_param;
  view.owner = stored.owner;
  return FromStored(view);
}

absl::StatusOr<registry::SubscriptionPtr> FromStored(const StoredSubscriptionView& stored) {
  if (stored.id.empty()) return absl::InvalidArgumentError("stored subscription: empty id");
  if (stored.event.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("stored subscription ", stored.id, ": empty event"));
  }
  absl::StatusOr<uri::SocketUri> target = uri::ParseSocket(stored.socket);
  if (!target.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("stored subscription ", stored.id, ": ", target.status().message()));
  }
  auto sub = std::make_shared<registry::Subscription>();
  sub->id = std::string(stored.id);
  sub->event = stored.event;
  // Stored text was normalised when written; normalise again in case the rules changed since.
  sub->socket = target->ToString();
  sub->target = *std::move(target);
  sub->create_time = absl::FromUnixMicros(stored.create_time_us);
  sub->expire_time = stored.expire_time_us.has_value()
                         ? absl::FromUnixMicros(*stored.expire_time_us)
                         : absl::InfiniteFuture();
  if (stored.event_param.has_value()) sub->event_param = *stored.event_param;
  sub->owner = stored.owner;
  return registry::SubscriptionPtr(std::move(sub));
}

std::string EncodeSubscriptionJson(const registry::Subscription& sub) {
  StoredSubscription stored = ToStored(sub);
  std::string out;
  out.reserve(112 + stored.id.size() + stored.event.size() + stored.socket.size() +
              stored.owner.size());
  out.append("{\"v\":");
  jsonrpc::AppendJsonInt(&out, kJsonVersion);
  out.append(",\"id\":");
  jsonrpc::AppendJsonString(&out, stored.id);
  out.append(",\"event\":");
  jsonrpc::AppendJsonString(&out, stored.event);
  out.append(",\"socket\":");
  jsonrpc::AppendJsonString(&out, stored.socket);
  out.append(",\"create_time_us\":");
  jsonrpc::AppendJsonInt(&out, stored.create_time_us);
  if (stored.expire_time_us.has_value()) {
    out.append(",\"expire_time_us\":");
    jsonrpc::AppendJsonInt(&out, *stored.expire_time_us);
  }
  if (stored.event_param.has_value()) {
    out.append(",\"event_param\":");
    jsonrpc::AppendJsonString(&out, *stored.event_param);
  }
  if (!stored.owner.empty()) {
    out.append(",\"owner\":");
    jsonrpc::AppendJsonString(&out, stored.owner);
  }
  out.push_back('}');
  return out;
}

absl::StatusOr<registry::SubscriptionPtr> DecodeSubscriptionJson(absl::string_view json) {
  // A parser per call: decoding happens at start-up and once per watch event, far from hot.
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::error_code error = parser.parse(json.data(), json.size()).get(root);
  if (error != simdjson::SUCCESS) {
    return JsonError(absl::StrCat("invalid JSON: ", simdjson::error_message(error)));
  }
  simdjson::dom::object object;
  if (root.get(object) != simdjson::SUCCESS) return JsonError("not a JSON object");

  int64_t version = 0;
  if (absl::Status status = GetInt(object, "v", &version); !status.ok()) return status;
  if (version != kJsonVersion) {
    return JsonError(
        absl::StrCat("unsupported version ", version, " (this build reads ", kJsonVersion, ")"));
  }
  StoredSubscription stored;
  absl::Status status = GetString(object, "id", &stored.id);
  if (status.ok()) status = GetString(object, "event", &stored.event);
  if (status.ok()) status = GetString(object, "socket", &stored.socket);
  if (status.ok()) status = GetInt(object, "create_time_us", &stored.create_time_us);
  if (!status.ok()) return status;

  simdjson::dom::element element;
  if (object["expire_time_us"].get(element) == simdjson::SUCCESS && !element.is_null()) {
    int64_t expire = 0;
    if (element.get(expire) != simdjson::SUCCESS) {
      return JsonError("\"expire_time_us\" is not an integer");
    }
    stored.expire_time_us = expire;
  }
  if (object["event_param"].get(element) == simdjson::SUCCESS && !element.is_null()) {
    std::string_view param;
    if (element.get(param) != simdjson::SUCCESS) {
      return JsonError("\"event_param\" is not a string");
    }
    stored.event_param = std::string(param);
  }
  // Records written before owners were kept have none: the anonymous caller's, owner "".
  if (object["owner"].get(element) == simdjson::SUCCESS && !element.is_null()) {
    std::string_view owner;
    if (element.get(owner) != simdjson::SUCCESS) return JsonError("\"owner\" is not a string");
    stored.owner = std::string(owner);
  }
  return FromStored(std::move(stored));
}

}  // namespace eventbus::store
