// Fuzzes the subscriber socket parser (server/uri). Properties, for any input bytes:
// - ParseSocket and ParseTcpSocket never crash; a refusal is INVALID_ARGUMENT whose message names
//   the socket (`socket "<input>": ...`, the input perhaps shortened).
// - Normalisation is a fixed point: a parsed socket prints (ToString) to text that parses again to
//   the same socket and prints to the same text.
// - ParseTcpSocket agrees with ParseSocket on every tcp: and tls: socket.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/uri/socket_uri.h"
#include "tests/fuzz/fuzz_check.h"

namespace eventbus::uri {
namespace {

using ::eventbus::fuzz::Quote;

bool SameTargets(const SocketUri& a, const SocketUri& b) {
  return a.is_virtual == b.is_virtual && (!a.is_virtual || a.policy == b.policy) &&
         a.targets == b.targets;
}

void CheckRefusal(const absl::Status& status, absl::string_view input) {
  FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument,
             absl::StrCat("input ", Quote(input), ": ", status.ToString()));
  FUZZ_CHECK(absl::StartsWith(status.message(), "socket \""),
             absl::StrCat("input ", Quote(input),
                          ": message does not name the socket: ", Quote(status.message())));
}

void CheckSocket(absl::string_view input) {
  absl::StatusOr<SocketUri> parsed = ParseSocket(input);
  if (!parsed.ok()) {
    CheckRefusal(parsed.status(), input);
    return;
  }
  FUZZ_CHECK(!parsed->targets.empty(), absl::StrCat("input ", Quote(input), ": no targets"));
  FUZZ_CHECK(parsed->is_virtual || parsed->targets.size() == 1,
             absl::StrCat("input ", Quote(input), ": tcp/tls socket with several targets"));
  for (const TcpTarget& target : parsed->targets) {
    FUZZ_CHECK(!target.host.empty() && target.port != 0,
               absl::StrCat("input ", Quote(input), ": empty host or port 0"));
  }
  const std::string normal = parsed->ToString();
  absl::StatusOr<SocketUri> again = ParseSocket(normal);
  FUZZ_CHECK(again.ok(), absl::StrCat("input ", Quote(input), " normalises to ", Quote(normal),
                                      ", which is refused: ", again.status().ToString()));
  FUZZ_CHECK(SameTargets(*parsed, *again),
             absl::StrCat("input ", Quote(input), " normalises to ", Quote(normal),
                          ", which parses to ", Quote(again->ToString())));
  FUZZ_CHECK(again->ToString() == normal,
             absl::StrCat("input ", Quote(input), ": normal form ", Quote(normal),
                          " prints again as ", Quote(again->ToString())));

  // The target key names the connection: it must be stable under normalisation too.
  for (size_t i = 0; i < parsed->targets.size(); ++i) {
    FUZZ_CHECK(parsed->targets[i].Key() == again->targets[i].Key(),
               absl::StrCat("input ", Quote(input), ": key of member ", i, " changed"));
  }
}

void CheckTcpSocket(absl::string_view input) {
  absl::StatusOr<TcpTarget> target = ParseTcpSocket(input);
  absl::StatusOr<SocketUri> socket = ParseSocket(input);
  if (!target.ok()) {
    CheckRefusal(target.status(), input);
    // Anything ParseSocket takes as tcp: must be taken here too.
    FUZZ_CHECK(!socket.ok() || socket->is_virtual,
               absl::StrCat("input ", Quote(input), ": ParseSocket accepts a tcp: socket that ",
                            "ParseTcpSocket refuses: ", target.status().ToString()));
    return;
  }
  FUZZ_CHECK(socket.ok() && !socket->is_virtual && socket->targets.size() == 1 &&
                 socket->targets[0] == *target,
             absl::StrCat("input ", Quote(input), ": ParseTcpSocket accepts it as ",
                          Quote(target->ToString()), " but ParseSocket disagrees"));
  const std::string normal = target->ToString();
  absl::StatusOr<TcpTarget> again = ParseTcpSocket(normal);
  FUZZ_CHECK(again.ok() && *again == *target && again->ToString() == normal,
             absl::StrCat("input ", Quote(input), ": normal form ", Quote(normal),
                          " is not a fixed point"));
}

}  // namespace
}  // namespace eventbus::uri

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view input(reinterpret_cast<const char*>(data), size);
  eventbus::uri::CheckSocket(input);
  eventbus::uri::CheckTcpSocket(input);
  return 0;
}
