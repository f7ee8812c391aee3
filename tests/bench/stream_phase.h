// The RaiseStream phase of eventbus_bench: async events over one RaiseStream call, batched (many
// events per message) and one per message, delivered to 1 and to 100 loopback sinks, each figure
// printed beside its ratio to a trivial streaming gRPC baseline measured in the same process (a
// second server whose RaiseStream answers every message at once with empty results).
#ifndef EVENTBUS_TESTS_BENCH_STREAM_PHASE_H_
#define EVENTBUS_TESTS_BENCH_STREAM_PHASE_H_

#include <functional>

#include "absl/time/time.h"
#include "client/client.h"

namespace eventbus::bench {

struct StreamPhaseOptions {
  // How long each measurement streams.
  absl::Duration duration = absl::Seconds(3);
  // Events per message in the batched runs.
  int batch = 64;
  // The server's CPU so far when it is a process of its own (--spawn_server): each run then also
  // prints it per delivered message. Null: the server is in this process, or not measurable.
  std::function<absl::Duration()> server_cpu;
};

// Runs the baseline and the three EventBus runs against the server `client` talks to, printing
// one line each. CPU figures are this process's (server, client and sinks when in-process), and
// the server's alone when options.server_cpu is set.
void RunStreamPhase(client::Client& client, const StreamPhaseOptions& options);

}  // namespace eventbus::bench

#endif  // EVENTBUS_TESTS_BENCH_STREAM_PHASE_H_
