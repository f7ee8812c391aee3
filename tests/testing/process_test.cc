#include "tests/testing/process.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace eventbus::testing {
namespace {

class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char path[] = "/tmp/eventbus-process-XXXXXX";
    int fd = ::mkstemp(path);
    ASSERT_GE(fd, 0);
    ::close(fd);
    log_ = path;
  }
  void TearDown() override { ::unlink(log_.c_str()); }

  ProcessOptions Shell(const std::string& script) {
    ProcessOptions options;
    options.argv = {"sh", "-c", script};
    options.log_path = log_;
    return options;
  }

  std::string log_;
};

TEST_F(ProcessTest, ReportsTheExitCodeAndLogsOutput) {
  ProcessOptions options = Shell("echo out; echo err >&2; echo \"$EB_TEST_VAR\"; exit 3");
  options.env = {{"EB_TEST_VAR", "from-env"}};
  absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(options);
  ASSERT_TRUE(process.ok()) << process.status();
  EXPECT_GT((*process)->pid(), 0);
  absl::StatusOr<ExitStatus> exit = (*process)->Wait(absl::Seconds(10));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->code, 3);
  EXPECT_EQ(exit->ToString(), "exit 3");
  EXPECT_FALSE((*process)->Running());
  EXPECT_EQ((*process)->ReadLog(), "out\nerr\nfrom-env\n");
  // Once reaped, the same status again.
  EXPECT_EQ((*process)->Wait(absl::ZeroDuration())->code, 3);
}

TEST_F(ProcessTest, WaitTimesOutWhileTheChildRunsAndSignalEndsIt) {
  absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(Shell("exec sleep 30"));
  ASSERT_TRUE(process.ok()) << process.status();
  EXPECT_EQ((*process)->Wait(absl::Milliseconds(50)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE((*process)->Running());
  ASSERT_TRUE((*process)->Signal(SIGTERM).ok());
  absl::StatusOr<ExitStatus> exit = (*process)->Wait(absl::Seconds(10));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_FALSE(exit->code.has_value());
  EXPECT_EQ(exit->signal, SIGTERM);
  EXPECT_EQ((*process)->Signal(SIGTERM).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ProcessTest, StopKillsAChildThatIgnoresSigterm) {
  // The shell ignores TERM and its sleep inherits that.
  absl::StatusOr<std::unique_ptr<Process>> process =
      Process::Start(Shell("trap '' TERM; echo ready; exec sleep 30"));
  ASSERT_TRUE(process.ok()) << process.status();
  // Wait until the trap is set (the child says so) before sending TERM.
  for (int i = 0; i < 1000 && !absl::StrContains((*process)->ReadLog(), "ready"); ++i) {
    (*process)->Wait(absl::Milliseconds(5)).status().IgnoreError();
  }
  absl::StatusOr<ExitStatus> exit = (*process)->Stop(absl::Milliseconds(200));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->signal, SIGKILL);
}

TEST_F(ProcessTest, DestroyingTheHandleStopsTheChild) {
  pid_t pid = 0;
  {
    absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(Shell("exec sleep 30"));
    ASSERT_TRUE(process.ok()) << process.status();
    pid = (*process)->pid();
  }
  // Reaped by the destructor: the pid no longer names our child.
  EXPECT_NE(::kill(pid, 0), 0);
}

TEST_F(ProcessTest, AMissingProgramIsNotFound) {
  ProcessOptions options;
  options.argv = {"/nonexistent/eventbus-no-such-program"};
  absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(options);
  EXPECT_EQ(process.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(process.status().message(), "eventbus-no-such-program"));
}

}  // namespace
}  // namespace eventbus::testing
