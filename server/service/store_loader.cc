#include "server/service/store_loader.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/base/log.h"

namespace eventbus::service {

StoreLoader::StoreLoader(std::string store_name, absl::AnyInvocable<absl::Status()> load,
                         const base::Clock* clock, Options options)
    : name_(std::move(store_name)),
      load_(std::move(load)),
      clock_(clock),
      options_(options),
      backoff_(options.backoff) {}

bool StoreLoader::ShouldLogFailure(int failures, bool message_changed, int log_every) {
  if (failures <= 1 || message_changed) return true;
  return log_every > 0 && failures % log_every == 0;
}

absl::Time StoreLoader::Step() {
  const absl::Time now = clock_->Now();
  {
    eventbus::MutexLock lock(&mu_);
    if (state_ != State::kLoading) return absl::InfiniteFuture();
    if (now < next_attempt_) return next_attempt_;
    if (attempts_ == 0) first_attempt_ = now;
  }
  // The attempt blocks (an etcd read bounded by its call timeout): never under mu_, so Ready()
  // keeps answering meanwhile.
  absl::Status status = load_();
  const absl::Time done = clock_->Now();

  eventbus::MutexLock lock(&mu_);
  ++attempts_;
  if (status.ok()) {
    state_ = State::kLoaded;
    last_error_ = absl::OkStatus();
    loaded_.store(true, std::memory_order_release);
    if (attempts_ > 1) {
      EB_LOG(kInfo, "store loaded", "store=", base::LogValue(name_), " attempts=", attempts_,
             " after_ms=", absl::ToInt64Milliseconds(done - first_attempt_));
    }
    return absl::InfiniteFuture();
  }
  const bool changed = last_error_.message() != status.message();
  last_error_ = std::move(status);
  if (!options_.retry) {
    state_ = State::kFailed;
    return absl::InfiniteFuture();
  }
  absl::Duration delay = backoff_.Next();
  next_attempt_ = done + delay;
  if (ShouldLogFailure(attempts_, changed, options_.log_every)) {
    EB_LOG(kWarning, "store not loaded yet; retrying", "store=", base::LogValue(name_),
           " attempt=", attempts_, " retry_in_ms=", absl::ToInt64Milliseconds(delay),
           " error=", base::LogValue(last_error_.message()));
  }
  return next_attempt_;
}

StoreLoader::State StoreLoader::state() const {
  eventbus::MutexLock lock(&mu_);
  return state_;
}

absl::Status StoreLoader::Ready() const {
  if (loaded()) return absl::OkStatus();
  eventbus::MutexLock lock(&mu_);
  if (attempts_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("store \"", name_, "\": not loaded yet (first attempt in progress)"));
  }
  return absl::UnavailableError(
      absl::StrCat("store \"", name_, "\": not loaded yet: ", last_error_.message()));
}

absl::Status StoreLoader::last_error() const {
  eventbus::MutexLock lock(&mu_);
  return last_error_;
}

int StoreLoader::attempts() const {
  eventbus::MutexLock lock(&mu_);
  return attempts_;
}

}  // namespace eventbus::service
