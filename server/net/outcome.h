// The outcome of one message handed to the writer pool (SPEC §5). Produced on the loop thread that
// owns the target's connection; delivery/ turns it into a per-target report.
#ifndef EVENTBUS_SERVER_NET_OUTCOME_H_
#define EVENTBUS_SERVER_NET_OUTCOME_H_

#include <cstdint>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace eventbus::net {

// Mirrors eventbus.v1.DeliveryStatus (without UNSPECIFIED).
enum class DeliveryCode {
  kQueued,             // async: accepted into the queue (set by delivery/, never by a Connection)
  kOk,                 // sync: result reply; async: completely written to the socket
  kRpcError,           // sync: error reply
  kTimeout,            // deadline passed while connected (not written / no reply)
  kConnectFailed,      // deadline passed, or no retry before it, while the target could not be
                       // connected
  kResolveFailed,      // as above, but the host name did not resolve
  kConnectionLost,     // the connection closed while the request was outstanding
  kBadReply,           // the reply was not valid JSON-RPC
  kQueueFull,          // rejected at once: the target's queue was full
  kDestinationDenied,  // the destination policy refused every address the target resolved to
  kTlsFailed,          // tls: targets: the TLS handshake failed (verification error in detail)
  kOverloaded,         // async: refused at once: the loop owning the target would not write it
                       // before its deadline (net/admission.h); nothing was queued
};

// "QUEUED", "OK", "RPC_ERROR", "TIMEOUT", "CONNECT_FAILED", "RESOLVE_FAILED", "CONNECTION_LOST",
// "BAD_REPLY", "QUEUE_FULL", "DESTINATION_DENIED", "TLS_FAILED", "OVERLOADED".
absl::string_view DeliveryCodeName(DeliveryCode code);

struct Outcome {
  DeliveryCode code = DeliveryCode::kOk;
  // kOk in sync mode: raw JSON of the reply's "result".
  std::string result;
  // kRpcError: the reply's error object ("data" as raw JSON, "" when absent).
  int64_t error_code = 0;
  std::string error_message;
  std::string error_data;
  // Human-readable explanation, e.g. "connect to 127.0.0.1:9: Connection refused".
  std::string detail;
};

// Runs exactly once, on the loop thread that owns the target.
using OutcomeCallback = absl::AnyInvocable<void(Outcome)>;

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_OUTCOME_H_
