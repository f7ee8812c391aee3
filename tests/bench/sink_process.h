// Many counting sinks in a child process, for the benchmark's 1k and 10k target phases: a process
// has RLIMIT_NOFILE descriptors, and 10k targets need 10k on the server's side and 10k more on the
// sinks' side. The child is forked before the benchmark starts any thread, and is driven over a
// socketpair: open N ports, read the count of JSON objects received. A sink answers each
// JSON-RPC request (sync mode) with a result at once, and counts notifications.
#ifndef EVENTBUS_TESTS_BENCH_SINK_PROCESS_H_
#define EVENTBUS_TESTS_BENCH_SINK_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <vector>

namespace eventbus::bench {

// Thread-compatible: one thread drives it.
class SinkProcess {
 public:
  // Forks the child. Call before any thread exists. Aborts when fork or socketpair fails.
  SinkProcess();
  // Stops the child and waits for it.
  ~SinkProcess();

  // Opens `n` listeners on 127.0.0.1 in the child; returns their ports. Each listener accepts one
  // connection and then closes (so the child holds one descriptor per target, not two): a target
  // that reconnects is refused.
  std::vector<uint16_t> Open(int n);
  // JSON objects received by every sink so far.
  uint64_t Messages();
  // Closes every listener and connection.
  void CloseAll();

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
};

}  // namespace eventbus::bench

#endif  // EVENTBUS_TESTS_BENCH_SINK_PROCESS_H_
