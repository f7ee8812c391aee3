// Loopback port helpers for tests that need a port number before something listens on it (a server
// restarted on the same port, a daemon such as etcd that takes its ports on the command line) or a
// port where nothing ever listens (connection refused).
#ifndef EVENTBUS_TESTS_TESTING_PORTS_H_
#define EVENTBUS_TESTS_TESTING_PORTS_H_

#include <cstdint>

namespace eventbus::testing {

// Returns a TCP port on 127.0.0.1 that no other caller gets: not in this process, not in another
// test process, not as the local port of an outgoing connection. The port stays reserved for the
// life of the process by a socket bound to it with SO_REUSEADDR that never listens. Linux hands
// out neither a port bound that way to bind(port 0) nor to connect(), yet a listener that sets
// SO_REUSEADDR itself (etcd, gRPC, JsonRpcPeer, anything Go or Envoy-like) may bind it explicitly.
// A listener without SO_REUSEADDR gets EADDRINUSE. Until someone listens, connecting to it is
// refused. Thread-safe. Aborts the test binary if no socket can be bound.
uint16_t PickUnusedPort();

// Returns a TCP port on 127.0.0.1 where connecting is refused for the life of the process: the
// port stays bound (so nobody else gets it) but never listens, so every SYN gets a RST.
// Thread-safe; every call returns the same port.
uint16_t ClosedPort();

// A TCP socket connected to 127.0.0.1:`port` (blocking, close-on-exec), or -1 with errno set.
int ConnectTcp(uint16_t port);

// True when something accepts TCP connections on 127.0.0.1:`port`.
bool PortAccepts(uint16_t port);

// A socket listening on 127.0.0.1:`port` (0: any; SO_REUSEADDR, close-on-exec), or -errno. Sets
// *bound to the port it got. For tests that need a port taken.
int ListenTcp(uint16_t port, uint16_t* bound = nullptr);

}  // namespace eventbus::testing

#endif  // EVENTBUS_TESTS_TESTING_PORTS_H_
