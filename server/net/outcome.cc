#include "server/net/outcome.h"

namespace eventbus::net {

absl::string_view DeliveryCodeName(DeliveryCode code) {
  switch (code) {
    case DeliveryCode::kQueued:
      return "QUEUED";
    case DeliveryCode::kOk:
      return "OK";
    case DeliveryCode::kRpcError:
      return "RPC_ERROR";
    case DeliveryCode::kTimeout:
      return "TIMEOUT";
    case DeliveryCode::kConnectFailed:
      return "CONNECT_FAILED";
    case DeliveryCode::kResolveFailed:
      return "RESOLVE_FAILED";
    case DeliveryCode::kConnectionLost:
      return "CONNECTION_LOST";
    case DeliveryCode::kBadReply:
      return "BAD_REPLY";
    case DeliveryCode::kQueueFull:
      return "QUEUE_FULL";
    case DeliveryCode::kDestinationDenied:
      return "DESTINATION_DENIED";
    case DeliveryCode::kTlsFailed:
      return "TLS_FAILED";
    case DeliveryCode::kOverloaded:
      return "OVERLOADED";
  }
  return "UNKNOWN";
}

}  // namespace eventbus::net
