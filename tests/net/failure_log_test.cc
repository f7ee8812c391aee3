#include "server/net/failure_log.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/net/writer_pool.h"
#include "tests/net/test_sync.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/log_capture.h"
#include "tests/testing/ports.h"
#include "tests/testing/wait.h"

namespace eventbus::net {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr char kTarget[] = "127.0.0.1:9";

Outcome Failed(DeliveryCode code, std::string detail) {
  Outcome outcome;
  outcome.code = code;
  outcome.detail = std::move(detail);
  return outcome;
}

Outcome Ok() { return Outcome(); }

const Outcome kRefused =
    Failed(DeliveryCode::kConnectFailed, "connect to 127.0.0.1:9: Connection refused");

class FailureLogTest : public ::testing::Test {
 protected:
  FailureLogOptions Options() {
    FailureLogOptions options;
    options.interval = absl::Seconds(60);
    return options;
  }
  void Fail(TargetFailureLog& log, const std::string& key, const Outcome& outcome = kRefused,
            bool expired = false) {
    log.OnComplete(key, outcome, expired, absl::Milliseconds(3));
  }
  std::vector<std::string> Lines(absl::string_view msg) {
    return capture_.Matching({absl::StrCat("msg=\"", msg, "\"")});
  }

  testing::FakeClock clock_;
  testing::LogCapture capture_{base::LogLevel::kInfo};
};

TEST_F(FailureLogTest, SuccessesAloneLogNothingAndKeepNoState) {
  TargetFailureLog log(&clock_, Options());
  for (int i = 0; i < 100; ++i) log.OnComplete(kTarget, Ok(), false, absl::Milliseconds(1));
  EXPECT_THAT(capture_.lines(), SizeIs(0));
  EXPECT_EQ(log.failing_targets(), 0u);
}

TEST_F(FailureLogTest, FirstFailureIsOneWarningWithTargetStatusAndDetail) {
  TargetFailureLog log(&clock_, Options());
  for (int i = 0; i < 5; ++i) {
    Fail(log, kTarget);
    clock_.Advance(absl::Seconds(1));
  }
  ASSERT_THAT(capture_.lines(), SizeIs(1));
  EXPECT_THAT(capture_.lines()[0],
              HasSubstr("level=warning msg=\"target failing\" target=127.0.0.1:9 "
                        "status=CONNECT_FAILED detail=\"connect to 127.0.0.1:9: Connection "
                        "refused\"\n"));
  EXPECT_EQ(log.failing_targets(), 1u);
}

TEST_F(FailureLogTest, ExpiredAndEveryNonOkOutcomeCountAsFailures) {
  TargetFailureLog log(&clock_, Options());
  Fail(log, "a:1", Failed(DeliveryCode::kTimeout, "not written before its deadline"), true);
  Fail(log, "b:1", Failed(DeliveryCode::kRpcError, "error reply -32601: Method not found"));
  Fail(log, "c:1", Failed(DeliveryCode::kQueueFull, "queue full (10000 messages)"));
  Fail(log, "d:1", Ok(), /*expired=*/true);
  EXPECT_THAT(Lines("target failing"), SizeIs(4));
  EXPECT_THAT(capture_.Matching({"target=a:1", "status=TIMEOUT expired=true"}), SizeIs(1));
  EXPECT_THAT(capture_.Matching({"target=b:1", "status=RPC_ERROR"}), SizeIs(1));
  EXPECT_THAT(capture_.Matching({"target=c:1", "status=QUEUE_FULL"}), SizeIs(1));
  EXPECT_THAT(capture_.Matching({"target=d:1", "expired=true"}), SizeIs(1));
}

TEST_F(FailureLogTest, OverloadedIsNotAFailureOfTheTarget) {
  TargetFailureLog log(&clock_, Options());
  Fail(log, kTarget,
       Failed(DeliveryCode::kOverloaded,
              "not queued: its deadline passed while it waited 2s for the writer loop"));
  EXPECT_THAT(capture_.lines(), SizeIs(0));
  EXPECT_EQ(log.failing_targets(), 0u);
  // Nor a recovery of a failing one.
  Fail(log, kTarget);
  Fail(log, kTarget, Failed(DeliveryCode::kOverloaded, "not queued"));
  EXPECT_EQ(log.failing_targets(), 1u);
  EXPECT_THAT(Lines("target recovered"), SizeIs(0));
}

TEST_F(FailureLogTest, OneSummaryPerIntervalWithCountTotalSinceAndLastStatus) {
  TargetFailureLog log(&clock_, Options());
  const absl::Time start = clock_.Now();
  Fail(log, kTarget);  // the first-failure line
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(absl::Seconds(10));
    Fail(log, kTarget);
  }
  EXPECT_THAT(Lines("target still failing"), SizeIs(0));
  log.OnStateChange(kTarget, ConnState::kConnecting, ConnState::kBackoff, "refused");
  log.OnStateChange(kTarget, ConnState::kConnecting, ConnState::kBackoff, "refused");
  clock_.Set(start + absl::Seconds(60));
  Fail(log, kTarget, Failed(DeliveryCode::kTimeout, "no reply within 1000 ms"));
  std::vector<std::string> summaries = Lines("target still failing");
  ASSERT_THAT(summaries, SizeIs(1));
  EXPECT_THAT(summaries[0],
              HasSubstr("level=warning msg=\"target still failing\" target=127.0.0.1:9 "
                        "failures=5 over=1m total=6 since=2023-11-14T22:13:20.000Z "
                        "last_status=TIMEOUT last_detail=\"no reply within 1000 ms\" "
                        "connect_failures=2 reconnects=0 closes=0\n"));
  // Within the next interval: counted, not logged.
  for (int i = 0; i < 50; ++i) {
    clock_.Advance(absl::Seconds(1));
    Fail(log, kTarget);
  }
  EXPECT_THAT(Lines("target still failing"), SizeIs(1));
  clock_.Advance(absl::Seconds(10));
  Fail(log, kTarget);
  summaries = Lines("target still failing");
  ASSERT_THAT(summaries, SizeIs(2));
  EXPECT_THAT(summaries[1], HasSubstr("failures=51 over=1m total=57 "));
  EXPECT_THAT(capture_.lines(), SizeIs(3));
}

TEST_F(FailureLogTest, RecoveryIsOneLineWithHowLongAndHowManyThenStateIsForgotten) {
  TargetFailureLog log(&clock_, Options());
  Fail(log, kTarget);
  clock_.Advance(absl::Seconds(30));
  Fail(log, kTarget);
  clock_.Advance(absl::Seconds(60) + absl::Milliseconds(250));
  log.OnComplete(kTarget, Ok(), false, absl::Milliseconds(1));
  std::vector<std::string> recovered = Lines("target recovered");
  ASSERT_THAT(recovered, SizeIs(1));
  EXPECT_THAT(recovered[0], HasSubstr("level=warning msg=\"target recovered\" "
                                      "target=127.0.0.1:9 failed_for=1m30.25s failures=2 "
                                      "since=2023-11-14T22:13:20.000Z\n"));
  EXPECT_EQ(log.failing_targets(), 0u);
  log.OnComplete(kTarget, Ok(), false, absl::Milliseconds(1));
  EXPECT_THAT(Lines("target recovered"), SizeIs(1));
  // Failing again is a new first failure.
  Fail(log, kTarget);
  EXPECT_THAT(Lines("target failing"), SizeIs(2));
}

TEST_F(FailureLogTest, GlobalCapBoundsLinesForTenThousandFailingTargets) {
  FailureLogOptions options = Options();
  options.max_lines_per_interval = 20;
  TargetFailureLog log(&clock_, options);
  constexpr int kTargets = 10000;
  for (int i = 0; i < kTargets; ++i) Fail(log, absl::StrCat("10.0.", i / 256, ".", i % 256, ":80"));
  EXPECT_EQ(log.failing_targets(), static_cast<size_t>(kTargets));
  EXPECT_THAT(Lines("target failing"), SizeIs(20));
  EXPECT_THAT(capture_.lines(), SizeIs(20));

  // Each of them keeps failing: per interval, at most the cap plus one line saying what was held
  // back.
  for (int round = 0; round < 3; ++round) {
    capture_.Clear();
    clock_.Advance(absl::Seconds(61));
    for (int repeat = 0; repeat < 3; ++repeat) {
      for (int i = 0; i < kTargets; ++i) {
        Fail(log, absl::StrCat("10.0.", i / 256, ".", i % 256, ":80"));
      }
    }
    EXPECT_THAT(capture_.lines(), SizeIs(21)) << "round " << round;
    std::vector<std::string> suppressed = Lines("more targets failing than logged");
    ASSERT_THAT(suppressed, SizeIs(1));
    // Round 0 reports the 9,980 first-failure lines held back, later rounds the summaries.
    EXPECT_THAT(suppressed[0], HasSubstr("suppressed=9980 limit=20 interval=1m "
                                         "failing_targets=10000 untracked_failures=0"));
    EXPECT_THAT(Lines("target still failing"), SizeIs(20));
  }
}

TEST_F(FailureLogTest, TickReportsSuppressedLinesWithoutFurtherFailures) {
  FailureLogOptions options = Options();
  options.max_lines_per_interval = 1;
  TargetFailureLog log(&clock_, options);
  Fail(log, "a:1");
  Fail(log, "b:1");
  Fail(log, "c:1");
  EXPECT_THAT(capture_.lines(), SizeIs(1));
  log.Tick();
  EXPECT_THAT(capture_.lines(), SizeIs(1));  // the interval is not over
  clock_.Advance(absl::Seconds(60));
  log.Tick();
  EXPECT_THAT(capture_.Matching({"more targets failing than logged", "suppressed=2 "}), SizeIs(1));
}

TEST_F(FailureLogTest, TheTickingThreadReportsABurstThatWentQuiet) {
  FailureLogOptions options = Options();
  options.max_lines_per_interval = 1;
  TargetFailureLog log(&clock_, options);
  log.StartTicking(absl::Milliseconds(5));
  for (int i = 0; i < 50; ++i) Fail(log, absl::StrCat("t", i, ":1"));
  clock_.Advance(absl::Seconds(60));
  // No further completion: only the ticking thread can say what the interval held back.
  EXPECT_TRUE(testing::WaitFor(absl::Seconds(10), [&] {
    return !capture_.Matching({"more targets failing than logged", "suppressed=49 "}).empty();
  }));
}

TEST_F(FailureLogTest, QuietFailingTargetsAreForgottenOnceAndMemoryIsBounded) {
  FailureLogOptions options = Options();
  options.forget_after = absl::Minutes(10);
  options.max_targets = 3;
  TargetFailureLog log(&clock_, options);
  for (int i = 0; i < 5; ++i) Fail(log, absl::StrCat("t", i, ":1"));
  EXPECT_EQ(log.failing_targets(), 3u);
  EXPECT_THAT(Lines("target failing"), SizeIs(3));
  clock_.Advance(absl::Minutes(5));
  Fail(log, "t0:1");
  log.Tick();
  EXPECT_EQ(log.failing_targets(), 3u);
  clock_.Advance(absl::Minutes(5));
  log.Tick();  // t1, t2 quiet for 10 minutes; t0 for 5
  EXPECT_EQ(log.failing_targets(), 1u);
  std::vector<std::string> forgotten = Lines("failing target quiet, no longer tracked");
  ASSERT_THAT(forgotten, SizeIs(2));
  EXPECT_THAT(forgotten[0], HasSubstr("level=info"));
  EXPECT_THAT(forgotten[0], HasSubstr("quiet_for=10m failures=1 "));
  clock_.Advance(absl::Minutes(5));
  // The next completion sweeps too (no Tick needed).
  log.OnStateChange("other:1", ConnState::kIdle, ConnState::kResolving, "");
  log.OnComplete("other:1", Ok(), false, absl::Milliseconds(1));
  EXPECT_EQ(log.failing_targets(), 0u);
  // The two targets beyond max_targets are counted, once.
  EXPECT_THAT(capture_.Matching(
                  {"more targets failing than logged", "suppressed=0 ", "untracked_failures=2"}),
              SizeIs(1));
}

TEST_F(FailureLogTest, UntrackedFailuresBeyondMaxTargetsAreReported) {
  FailureLogOptions options = Options();
  options.max_targets = 1;
  options.max_lines_per_interval = 1;
  TargetFailureLog log(&clock_, options);
  Fail(log, "a:1");
  Fail(log, "b:1");
  Fail(log, "b:1");
  clock_.Advance(absl::Seconds(60));
  Fail(log, "a:1");  // its summary opens the new interval, which reports b's two failures
  EXPECT_THAT(capture_.Matching({"level=warning msg=\"more targets failing than logged\" "
                                 "suppressed=0 limit=1 interval=1m failing_targets=1 "
                                 "untracked_failures=2\n"}),
              SizeIs(1));
  Fail(log, "c:1");
  clock_.Advance(absl::Seconds(60));
  log.Tick();
  EXPECT_THAT(capture_.Matching({"more targets failing than logged", "untracked_failures=1\n"}),
              SizeIs(1));
  EXPECT_EQ(log.failing_targets(), 1u);
}

TEST_F(FailureLogTest, ConnectionChangesAreInfoAndRetryChurnOnlyDebug) {
  TargetFailureLog log(&clock_, Options());
  log.OnStateChange(kTarget, ConnState::kIdle, ConnState::kResolving, "");
  log.OnStateChange(kTarget, ConnState::kResolving, ConnState::kConnecting, "");
  log.OnStateChange(kTarget, ConnState::kConnecting, ConnState::kBackoff, "refused");
  log.OnStateChange(kTarget, ConnState::kBackoff, ConnState::kConnecting, "");
  EXPECT_THAT(capture_.lines(), SizeIs(0));
  log.OnStateChange(kTarget, ConnState::kConnecting, ConnState::kConnected, "");
  log.OnStateChange(kTarget, ConnState::kConnected, ConnState::kIdle,
                    "connection to 127.0.0.1:9 closed by the peer");
  std::vector<std::string> lines = capture_.lines();
  ASSERT_THAT(lines, SizeIs(2));
  EXPECT_THAT(lines[0], HasSubstr("level=info msg=\"target connected\" target=127.0.0.1:9\n"));
  EXPECT_THAT(lines[1], HasSubstr("level=info msg=\"target connection closed\" "
                                  "target=127.0.0.1:9 reason=\"connection to 127.0.0.1:9 "
                                  "closed by the peer\"\n"));
}

TEST_F(FailureLogTest, DebugLevelShowsEveryStateChange) {
  testing::LogCapture debug(base::LogLevel::kDebug);
  TargetFailureLog log(&clock_, Options());
  log.OnStateChange(kTarget, ConnState::kConnecting, ConnState::kBackoff, "refused");
  EXPECT_THAT(debug.Matching({"level=debug msg=\"target connection state\" target=127.0.0.1:9 "
                              "from=CONNECTING to=BACKOFF detail=refused"}),
              SizeIs(1));
}

TEST_F(FailureLogTest, AFailingTargetsChurnGoesIntoItsSummaryNotIntoLines) {
  TargetFailureLog log(&clock_, Options());
  Fail(log, kTarget, Failed(DeliveryCode::kConnectionLost, "closed by the peer"));
  for (int i = 0; i < 10; ++i) {
    log.OnStateChange(kTarget, ConnState::kConnecting, ConnState::kConnected, "");
    log.OnStateChange(kTarget, ConnState::kConnected, ConnState::kIdle, "closed by the peer");
  }
  log.OnStateChange(kTarget, ConnState::kConnecting, ConnState::kBackoff, "refused");
  EXPECT_THAT(capture_.lines(), SizeIs(1));
  clock_.Advance(absl::Seconds(60));
  Fail(log, kTarget, Failed(DeliveryCode::kConnectionLost, "closed by the peer"));
  EXPECT_THAT(Lines("target still failing"), SizeIs(1));
  EXPECT_THAT(Lines("target still failing")[0],
              HasSubstr("connect_failures=1 reconnects=10 closes=10\n"));
}

TEST_F(FailureLogTest, ConnectionLinesHaveTheirOwnCap) {
  FailureLogOptions options = Options();
  options.max_connection_lines_per_interval = 10;
  options.max_lines_per_interval = 10;
  TargetFailureLog log(&clock_, options);
  for (int i = 0; i < 1000; ++i) {
    log.OnStateChange(absl::StrCat("h", i, ":1"), ConnState::kConnecting, ConnState::kConnected,
                      "");
  }
  EXPECT_THAT(Lines("target connected"), SizeIs(10));
  // Failure lines are not starved by connection lines.
  Fail(log, kTarget);
  EXPECT_THAT(Lines("target failing"), SizeIs(1));
  clock_.Advance(absl::Seconds(60));
  log.Tick();
  EXPECT_THAT(capture_.Matching({"level=info msg=\"more target connection changes than logged\" "
                                 "suppressed=990 limit=10 interval=1m"}),
              SizeIs(1));
}

TEST_F(FailureLogTest, ManyThreadsAtOnceKeepFailuresAndRecoveriesPaired) {
  FailureLogOptions options = Options();
  options.max_lines_per_interval = 1000000;
  TargetFailureLog log(&clock_, options);
  constexpr int kThreads = 4;
  constexpr int kTargetsPerThread = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Like a loop thread: it owns its targets, and each fails, then recovers, three times.
      for (int round = 0; round < 3; ++round) {
        for (int i = 0; i < kTargetsPerThread; ++i) {
          std::string key = absl::StrCat("t", t, "-", i, ":1");
          log.OnComplete(key, Ok(), false, absl::Milliseconds(1));
          log.OnComplete(key, kRefused, false, absl::Milliseconds(1));
          log.OnComplete(key, kRefused, false, absl::Milliseconds(1));
          log.OnStateChange(key, ConnState::kConnecting, ConnState::kConnected, "");
          log.OnComplete(key, Ok(), false, absl::Milliseconds(1));
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(log.failing_targets(), 0u);
  EXPECT_THAT(Lines("target failing"), SizeIs(kThreads * kTargetsPerThread * 3));
  EXPECT_THAT(Lines("target recovered"), SizeIs(kThreads * kTargetsPerThread * 3));
}

// Through a real writer pool: a notification to a port that refuses connections.
TEST(FailureLogPoolTest, ARefusedTargetGetsAWarningLine) {
  testing::LogCapture capture(base::LogLevel::kInfo);
  TargetFailureLog log(base::RealClock::Get(), FailureLogOptions());
  PoolOptions options;
  options.num_loops = 2;
  options.min_backoff = absl::Milliseconds(20);
  options.observer = &log;
  absl::StatusOr<std::unique_ptr<WriterPool>> pool = WriterPool::Create(options);
  ASSERT_TRUE(pool.ok()) << pool.status();
  const uint16_t port = testing::ClosedPort();
  Request request;
  request.target.host = "127.0.0.1";
  request.target.port = port;
  request.body = std::make_shared<const std::string>("\"jsonrpc\":\"2.0\",\"method\":\"E\"}");
  request.deadline = absl::Now() + absl::Milliseconds(200);
  TestEvent done;
  Outcome outcome;
  request.done = [&](Outcome o) {
    outcome = std::move(o);
    done.Notify();
  };
  std::vector<Request> requests;
  requests.push_back(std::move(request));
  (*pool)->Submit(std::move(requests));
  ASSERT_TRUE(done.WaitFor(absl::Seconds(10)));
  EXPECT_EQ(outcome.code, DeliveryCode::kConnectFailed);
  const std::string target = absl::StrCat("target=127.0.0.1:", port, " ");
  std::vector<std::string> lines =
      capture.Matching({"level=warning msg=\"target failing\"", target, "status=CONNECT_FAILED",
                        "Connection refused"});
  EXPECT_THAT(lines, SizeIs(1));
  (*pool)->Shutdown();
}

}  // namespace
}  // namespace eventbus::net
