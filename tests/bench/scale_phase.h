// The benchmark's "scale" phase (issue 11, part 7): how EventBus holds up as subscriptions grow to
// a million. It runs the real eventbusd as a child process, so that its resident memory and its
// start-up are its own, and for each store (memory, sqlite) and each size (10k, 100k, 1M, up to
// --scale_max) prints: the Subscribe rate with --window calls in flight over the last Subscribes
// before the size is reached, the server's RSS and bytes per subscription over the empty server;
// for SQLite the time a restart takes to load them all (and its peak RSS while loading); and the
// time to page through all of them with the client's ListAllSubscriptions at the CLI's page size
// (the server's default, 1000) and at the largest (10,000). Opt-in: --phases=scale.
#ifndef EVENTBUS_TESTS_BENCH_SCALE_PHASE_H_
#define EVENTBUS_TESTS_BENCH_SCALE_PHASE_H_

namespace eventbus::bench {

// The baseline measured by the benchmark in the same run, for the ratios printed beside figures.
struct ScaleBaseline {
  // Trivial unary calls per second with the same window in flight.
  double calls_per_second = 0;
  // Median latency of one trivial unary call, one at a time.
  double sequential_p50_us = 0;
};

// Runs the phase with its --scale_* flags (scale_phase.cc) and --window; prints as it goes.
void RunScalePhase(int window, const ScaleBaseline& baseline);

}  // namespace eventbus::bench

#endif  // EVENTBUS_TESTS_BENCH_SCALE_PHASE_H_
