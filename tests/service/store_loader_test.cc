// StoreLoader on a fake clock: the retry schedule (base::Backoff), what Ready() answers before and
// after loading, which failures are logged, and a loader whose retries are off.
#include "server/service/store_loader.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/base/backoff.h"
#include "tests/testing/fake_clock.h"

namespace eventbus::service {
namespace {

using ::testing::HasSubstr;

// A load function that fails `failures` times (UNAVAILABLE "etcd down #N"), then succeeds.
struct FlakyLoad {
  int failures = 0;
  int calls = 0;
  absl::Status operator()() {
    ++calls;
    if (calls <= failures) return absl::UnavailableError(absl::StrCat("etcd down #", calls));
    return absl::OkStatus();
  }
};

StoreLoader::Options ExactOptions() {
  StoreLoader::Options options;
  options.backoff.initial = absl::Milliseconds(100);
  options.backoff.max = absl::Seconds(5);
  options.backoff.jitter = 0;
  return options;
}

TEST(BackoffTest, DoublesFrom100MsUpTo5s) {
  base::Backoff::Options options;
  options.jitter = 0;
  base::Backoff backoff(options);
  std::vector<int64_t> ms;
  for (int i = 0; i < 9; ++i) ms.push_back(absl::ToInt64Milliseconds(backoff.Next()));
  EXPECT_EQ(ms, (std::vector<int64_t>{100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000}));
  backoff.Reset();
  EXPECT_EQ(backoff.Next(), absl::Milliseconds(100));
}

TEST(BackoffTest, JitterStaysWithinPlusMinus20PercentAndVaries) {
  base::Backoff::Options options;  // 100 ms .. 5 s, +-20%
  std::vector<absl::Duration> firsts;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    base::Backoff backoff(options, seed);
    absl::Duration first = backoff.Next();
    EXPECT_GE(first, absl::Milliseconds(80));
    EXPECT_LE(first, absl::Milliseconds(120));
    firsts.push_back(first);
    for (int i = 0; i < 20; ++i) {
      absl::Duration next = backoff.Next();
      EXPECT_LE(next, absl::Seconds(6));
    }
    // Capped: after 20 steps the delay is 5 s +-20%.
    absl::Duration capped = backoff.Next();
    EXPECT_GE(capped, absl::Seconds(4));
  }
  // Replicas started together do not retry in lockstep.
  std::sort(firsts.begin(), firsts.end());
  EXPECT_LT(firsts.front(), firsts.back());
}

TEST(StoreLoaderTest, RetriesOnTheBackoffScheduleOfTheFakeClockUntilLoaded) {
  testing::FakeClock clock;
  FlakyLoad load;
  load.failures = 8;
  int* calls = &load.calls;
  StoreLoader loader("etcd://127.0.0.1:2379/eventbus", std::ref(load), &clock, ExactOptions());
  const absl::Time start = clock.Now();

  // The first attempt is due at once.
  absl::Time next = loader.Step();
  EXPECT_EQ(*calls, 1);
  EXPECT_EQ(next, start + absl::Milliseconds(100));
  // Not due yet: no attempt, same instant.
  clock.Advance(absl::Milliseconds(99));
  EXPECT_EQ(loader.Step(), next);
  EXPECT_EQ(*calls, 1);

  std::vector<int64_t> delays_ms;
  absl::Time previous = clock.Now();
  while (loader.state() == StoreLoader::State::kLoading) {
    clock.Set(next);
    delays_ms.push_back(absl::ToInt64Milliseconds(next - previous));
    previous = next;
    next = loader.Step();
  }
  // 1 ms remained of the first 100 ms; then 200, 400, ... capped at 5 s; the 9th attempt loads.
  EXPECT_EQ(delays_ms, (std::vector<int64_t>{1, 200, 400, 800, 1600, 3200, 5000, 5000}));
  EXPECT_EQ(*calls, 9);
  EXPECT_EQ(loader.attempts(), 9);
  EXPECT_EQ(loader.state(), StoreLoader::State::kLoaded);
  EXPECT_TRUE(loader.loaded());
  EXPECT_EQ(next, absl::InfiniteFuture());
  // Loaded is final: no more attempts.
  clock.Advance(absl::Hours(1));
  EXPECT_EQ(loader.Step(), absl::InfiniteFuture());
  EXPECT_EQ(*calls, 9);
}

TEST(StoreLoaderTest, ReadyIsUnavailableNamingTheStoreAndTheLastErrorUntilLoaded) {
  testing::FakeClock clock;
  FlakyLoad load;
  load.failures = 2;
  StoreLoader loader("etcd://127.0.0.1:2379/eventbus", std::ref(load), &clock, ExactOptions());

  absl::Status before = loader.Ready();
  EXPECT_EQ(before.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(before.message(), HasSubstr("store \"etcd://127.0.0.1:2379/eventbus\": not loaded"));

  loader.Step();
  EXPECT_EQ(loader.Ready(), absl::UnavailableError("store \"etcd://127.0.0.1:2379/eventbus\": "
                                                   "not loaded yet: etcd down #1"));
  clock.Advance(absl::Milliseconds(100));
  loader.Step();
  EXPECT_THAT(loader.Ready().message(), HasSubstr("not loaded yet: etcd down #2"));
  EXPECT_FALSE(loader.loaded());

  clock.Advance(absl::Milliseconds(200));
  loader.Step();
  EXPECT_TRUE(loader.Ready().ok()) << loader.Ready();
  EXPECT_TRUE(loader.last_error().ok());
}

TEST(StoreLoaderTest, WithoutRetryTheFirstFailureIsFinal) {
  testing::FakeClock clock;
  FlakyLoad load;
  load.failures = 1;
  StoreLoader::Options options = ExactOptions();
  options.retry = false;
  StoreLoader loader("sqlite", std::ref(load), &clock, options);
  EXPECT_EQ(loader.Step(), absl::InfiniteFuture());
  EXPECT_EQ(loader.state(), StoreLoader::State::kFailed);
  EXPECT_EQ(loader.last_error(), absl::UnavailableError("etcd down #1"));
  clock.Advance(absl::Hours(1));
  loader.Step();
  EXPECT_EQ(load.calls, 1);
  EXPECT_FALSE(loader.loaded());
}

TEST(StoreLoaderTest, LogsTheFirstFailureEveryTenthAndAnyChangeOfError) {
  std::vector<int> logged;
  for (int failures = 1; failures <= 30; ++failures) {
    if (StoreLoader::ShouldLogFailure(failures, /*message_changed=*/false, 10)) {
      logged.push_back(failures);
    }
  }
  EXPECT_EQ(logged, (std::vector<int>{1, 10, 20, 30}));
  EXPECT_TRUE(StoreLoader::ShouldLogFailure(7, /*message_changed=*/true, 10));
  EXPECT_FALSE(StoreLoader::ShouldLogFailure(7, /*message_changed=*/false, 10));
}

}  // namespace
}  // namespace eventbus::service
