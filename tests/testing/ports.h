// Loopback port helpers for tests that need a port number before something listens on it (a server
// restarted on the same port) or a port where nothing ever listens (connection refused).
#ifndef EVENTBUS_TESTS_TESTING_PORTS_H_
#define EVENTBUS_TESTS_TESTING_PORTS_H_

#include <cstdint>

namespace eventbus::testing {

// Returns a TCP port on 127.0.0.1 that was free a moment ago: binds port 0, reads the port the
// kernel chose, and closes the socket. Another process may take it in between; tests that can
// should listen on port 0 instead. Aborts the test binary if no socket can be bound.
uint16_t PickUnusedPort();

// Returns a TCP port on 127.0.0.1 where connecting is refused for the life of the process: the
// port stays bound (so nobody else gets it) but never listens, so every SYN gets a RST.
// Thread-safe; every call returns the same port.
uint16_t ClosedPort();

}  // namespace eventbus::testing

#endif  // EVENTBUS_TESTS_TESTING_PORTS_H_
