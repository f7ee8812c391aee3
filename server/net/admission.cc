#include "server/net/admission.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace eventbus::net {
namespace {

// Weight of a new sample in the moving average: 1/8, as TCP's smoothed RTT.
constexpr int64_t kSmoothing = 8;

void Learn(absl::Duration* average, absl::Duration sample) {
  *average += (std::max(sample, absl::ZeroDuration()) - *average) / kSmoothing;
}

}  // namespace

FlushPlan::FlushPlan(FlushCosts initial) : costs_(initial) {}

absl::Duration FlushPlan::Offset(bool connect) const {
  return work_ + (connect ? costs_.connect : costs_.write);
}

absl::Duration FlushPlan::Add(bool connect) {
  work_ = Offset(connect);
  ++(connect ? planned_connects_ : planned_writes_);
  return work_;
}

void FlushPlan::Promise(absl::Time deadline, absl::Duration offset) {
  latest_start_ = std::min(latest_start_, deadline - offset);
}

bool FlushPlan::ShouldFlushBefore(absl::Time now, size_t messages) const {
  return work_ > absl::ZeroDuration() &&
         now + costs_.enqueue * static_cast<int64_t>(messages) > latest_start_;
}

void FlushPlan::Clear() {
  work_ = absl::ZeroDuration();
  latest_start_ = absl::InfiniteFuture();
  planned_connects_ = 0;
  planned_writes_ = 0;
}

void FlushPlan::LearnConnect(absl::Duration took) { Learn(&costs_.connect, took); }

void FlushPlan::LearnWrite(absl::Duration took) { Learn(&costs_.write, took); }

void FlushPlan::LearnEnqueue(absl::Duration took) { Learn(&costs_.enqueue, took); }

std::string FlushPlan::DescribeAhead() const {
  return absl::StrCat(planned_connects_ + planned_writes_, " connections to flush first, ",
                      planned_connects_, " to connect");
}

}  // namespace eventbus::net
