// Runs a child process for a test: a real etcd (etcd_harness.h), or the eventbusd binary in the
// integration tests. Output goes to a log file the test can print on failure; the child is killed
// when the handle goes away, so no test leaves processes behind.
#ifndef EVENTBUS_TESTS_TESTING_PROCESS_H_
#define EVENTBUS_TESTS_TESTING_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace eventbus::testing {

struct ProcessOptions {
  // argv[0] is the program: a path, or a name looked up in PATH.
  std::vector<std::string> argv;
  // Added to (or replacing in) the parent's environment.
  std::vector<std::pair<std::string, std::string>> env;
  // stdout and stderr are appended here; empty means /dev/null.
  std::string log_path;
};

// How a child ended.
struct ExitStatus {
  // Set when it called exit(); otherwise `signal` says which signal ended it.
  std::optional<int> code;
  int signal = 0;

  bool Success() const { return code.has_value() && *code == 0; }
  // "exit 0", "exit 3", "signal 9 (Killed)".
  std::string ToString() const;
};

// One child process. Thread-compatible: one thread drives it. The child gets SIGKILL if the
// thread that started it exits (PR_SET_PDEATHSIG), so a test that crashes or times out leaves
// nothing running: start children from the test's own thread, not from a short-lived helper.
class Process {
 public:
  // Spawns the child. NOT_FOUND when the program does not exist, INTERNAL for other spawn errors.
  static absl::StatusOr<std::unique_ptr<Process>> Start(ProcessOptions options);

  // Stops the child if it still runs: SIGTERM, then SIGKILL after a 5 s grace period.
  ~Process();

  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const ProcessOptions& options() const { return options_; }

  // True until the child has exited (and been reaped by Wait).
  bool Running();
  // Sends `sig`. FAILED_PRECONDITION when the child has already been reaped.
  absl::Status Signal(int sig);
  // Waits up to `timeout` for the child to exit and reaps it. DEADLINE_EXCEEDED when it still
  // runs. Once reaped, returns the same status on every call.
  absl::StatusOr<ExitStatus> Wait(absl::Duration timeout);
  // SIGTERM, up to `grace` to exit, then SIGKILL. Returns how it ended.
  absl::StatusOr<ExitStatus> Stop(absl::Duration grace = absl::Seconds(5));
  // SIGKILL and reap.
  absl::StatusOr<ExitStatus> Kill();

  // The log file's contents so far ("" when there is none).
  std::string ReadLog() const;

 private:
  Process(ProcessOptions options, pid_t pid, int pidfd)
      : options_(std::move(options)), pid_(pid), pidfd_(pidfd) {}
  // Reaps the child if it has exited; true when it has.
  bool TryReap();

  ProcessOptions options_;
  pid_t pid_;
  // A pidfd polls readable when the child exits; -1 where unsupported (then Wait polls).
  int pidfd_;
  std::optional<ExitStatus> exit_;
};

}  // namespace eventbus::testing

#endif  // EVENTBUS_TESTS_TESTING_PROCESS_H_
