#include "server/net/fd_budget.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace eventbus::net {
namespace {

constexpr uint64_t kLargestCounted = uint64_t{1} << 20;

// fs.nr_open, the most any process may have open; 1048576 when unreadable (the kernel default).
uint64_t NrOpen() {
  std::ifstream file("/proc/sys/fs/nr_open");
  uint64_t value = 0;
  if (file >> value && value > 0) return value;
  return kLargestCounted;
}

}  // namespace

absl::StatusOr<FdLimit> RaiseFdLimit(uint64_t* previous_soft) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(absl::StrCat("getrlimit(RLIMIT_NOFILE): ", std::strerror(errno)));
  }
  if (previous_soft != nullptr) *previous_soft = limit.rlim_cur;
  rlim_t target = limit.rlim_max;
  // Linux refuses RLIM_INFINITY for RLIMIT_NOFILE; fs.nr_open is the real ceiling.
  if (target == RLIM_INFINITY) target = NrOpen();
  if (limit.rlim_cur < target) {
    rlimit raised = limit;
    raised.rlim_cur = target;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit.rlim_cur = target;
  }
  return FdLimit{limit.rlim_cur, limit.rlim_max};
}

FdBudget DeriveFdBudget(uint64_t soft_limit) {
  const size_t limit = static_cast<size_t>(std::min(soft_limit, kLargestCounted));
  FdBudget budget;
  budget.reserve = std::max<size_t>(64, limit / 8);
  const size_t shared = limit > budget.reserve ? limit - budget.reserve : 0;
  budget.client_connections = std::max<size_t>(1, shared / 4);
  budget.target_connections = std::max<size_t>(1, shared - shared / 4);
  budget.fd_headroom = budget.reserve / 2;
  return budget;
}

}  // namespace eventbus::net
