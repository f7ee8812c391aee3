// The process's file-descriptor budget: raising RLIMIT_NOFILE's soft limit at start-up, and the
// one place where the default caps on client (gRPC) and target (subscriber) connections are
// derived from it, leaving a reserve for everything else (store, files, gRPC internals, etcd,
// event loops). server/main.cc applies the result; README "File descriptors" documents it.
#ifndef EVENTBUS_SERVER_NET_FD_BUDGET_H_
#define EVENTBUS_SERVER_NET_FD_BUDGET_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"

namespace eventbus::net {

// RLIMIT_NOFILE as it stands.
struct FdLimit {
  uint64_t soft = 0;
  uint64_t hard = 0;
};

// Raises the soft RLIMIT_NOFILE to the hard limit (or, when the hard limit is unlimited, to the
// kernel's fs.nr_open) and returns the limit in force afterwards, with `previous_soft` set to the
// soft limit before. INTERNAL when the limit cannot be read; a refused raise is not an error (the
// returned limit says what is in force).
absl::StatusOr<FdLimit> RaiseFdLimit(uint64_t* previous_soft = nullptr);

// How the descriptors under a soft limit are shared out.
struct FdBudget {
  // Kept for everything but connections: max(64, limit / 8).
  size_t reserve = 0;
  // Default --max_client_connections: a quarter of what the reserve leaves (at least 1).
  size_t client_connections = 0;
  // Default --max_target_connections: the other three quarters (at least 1).
  size_t target_connections = 0;
  // A new client connection is refused when fewer than this many descriptors are left under the
  // soft limit, whatever the caps say: half the reserve.
  size_t fd_headroom = 0;
};

// Derives the budget from `soft_limit` (values above 2^20 count as 2^20). Pure.
FdBudget DeriveFdBudget(uint64_t soft_limit);

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_FD_BUDGET_H_
