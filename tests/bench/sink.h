// A counting JSON-RPC sink for the benchmark: one epoll thread accepts loopback connections,
// frames incoming JSON objects with a brace counter, counts them, and (when asked) answers every
// request that carries an "id" with {"jsonrpc":"2.0","id":N,"result":true}. It keeps no bytes, so
// it can absorb millions of events.
#ifndef EVENTBUS_TESTS_BENCH_SINK_H_
#define EVENTBUS_TESTS_BENCH_SINK_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

namespace eventbus::bench {

// Thread-safe counters; the rest is the sink thread's.
class Sink {
 public:
  // Listens on 127.0.0.1:0. Aborts if the kernel refuses a socket (a broken benchmark machine).
  explicit Sink(bool reply);
  ~Sink();

  uint16_t port() const { return port_; }
  std::string socket() const { return "tcp:127.0.0.1:" + std::to_string(port_); }
  uint64_t messages() const { return messages_.load(std::memory_order_relaxed); }

 private:
  void Loop();

  bool reply_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int stop_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<uint64_t> messages_{0};
  std::thread thread_;
};

}  // namespace eventbus::bench

#endif  // EVENTBUS_TESTS_BENCH_SINK_H_
