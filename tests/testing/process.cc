#include "tests/testing/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

extern char** environ;

namespace eventbus::testing {
namespace {

// Finds `program` the way execvp would, in the parent: after fork only async-signal-safe calls
// are allowed, and a PATH search allocates.
std::string ResolveProgram(const std::string& program) {
  if (program.find('/') != std::string::npos) return program;
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':')) {
    std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", program);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::string();
}

ExitStatus FromWaitStatus(int status) {
  ExitStatus exit;
  if (WIFEXITED(status)) {
    exit.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    exit.signal = WTERMSIG(status);
  }
  return exit;
}

int OpenPidFd(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  return -1;
#endif
}

}  // namespace

std::string ExitStatus::ToString() const {
  if (code.has_value()) return absl::StrCat("exit ", *code);
  return absl::StrCat("signal ", signal, " (", strsignal(signal), ")");
}

absl::StatusOr<std::unique_ptr<Process>> Process::Start(ProcessOptions options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("process: empty argv");
  const std::string program = ResolveProgram(options.argv[0]);
  if (program.empty() || ::access(program.c_str(), X_OK) != 0) {
    return absl::NotFoundError(
        absl::StrCat("process: program \"", options.argv[0], "\" not found or not executable"));
  }

  // Everything the child needs is built before fork.
  std::vector<char*> argv;
  for (std::string& arg : options.argv) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::set<std::string, std::less<>> overridden;
  std::vector<std::string> env_storage;
  for (const auto& [key, value] : options.env) {
    overridden.insert(key);
    env_storage.push_back(absl::StrCat(key, "=", value));
  }
  for (char** entry = environ; *entry != nullptr; ++entry) {
    absl::string_view text(*entry);
    if (overridden.count(text.substr(0, text.find('='))) == 0) env_storage.emplace_back(text);
  }
  std::vector<char*> envp;
  for (std::string& entry : env_storage) envp.push_back(entry.data());
  envp.push_back(nullptr);

  const std::string log_path = options.log_path.empty() ? "/dev/null" : options.log_path;
  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(
        absl::StrCat("process: open log \"", log_path, "\": ", std::strerror(errno)));
  }
  // The child writes errno here when exec fails; a successful exec closes it (CLOEXEC).
  int exec_pipe[2];
  if (::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    ::close(log_fd);
    return absl::InternalError(absl::StrCat("process: pipe: ", std::strerror(errno)));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(log_fd);
    ::close(exec_pipe[0]);
    ::close(exec_pipe[1]);
    return absl::InternalError(absl::StrCat("process: fork: ", std::strerror(err)));
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only. The child dies with the thread that forked it, so a
    // crashed or killed test leaves no process behind.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::execve(program.c_str(), argv.data(), envp.data());
    int err = errno;
    ssize_t ignored = ::write(exec_pipe[1], &err, sizeof(err));
    (void)ignored;
    ::_exit(127);
  }
  ::close(log_fd);
  ::close(exec_pipe[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(exec_pipe[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  ::close(exec_pipe[0]);
  if (n == sizeof(child_errno)) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    return absl::InternalError(
        absl::StrCat("process: exec \"", program, "\": ", std::strerror(child_errno)));
  }
  return std::unique_ptr<Process>(new Process(std::move(options), pid, OpenPidFd(pid)));
}

Process::~Process() {
  if (!exit_.has_value()) {
    absl::StatusOr<ExitStatus> ignored = Stop();
    (void)ignored;
  }
  if (pidfd_ >= 0) ::close(pidfd_);
}

bool Process::TryReap() {
  if (exit_.has_value()) return true;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_ = FromWaitStatus(status);
    return true;
  }
  if (r < 0 && errno == ECHILD) {
    // Reaped elsewhere (a SIGCHLD handler); nothing more can be learnt.
    exit_ = ExitStatus{};
    return true;
  }
  return false;
}

bool Process::Running() { return !TryReap(); }

absl::Status Process::Signal(int sig) {
  if (exit_.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("process ", pid_, " (", options_.argv[0], ") has exited"));
  }
  // An exited but unreaped child (a zombie) still accepts signals, harmlessly.
  if (::kill(pid_, sig) != 0) {
    return absl::InternalError(absl::StrCat("process ", pid_, ": kill: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<ExitStatus> Process::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (TryReap()) return *exit_;
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    if (pidfd_ >= 0) {
      pollfd pfd{pidfd_, POLLIN, 0};
      int ms = static_cast<int>(absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))));
      ::poll(&pfd, 1, ms);
    } else {
      absl::SleepFor(std::min(left, absl::Milliseconds(5)));
    }
  }
  return absl::DeadlineExceededError(absl::StrCat("process ", pid_, " (", options_.argv[0],
                                                  ") still running after ",
                                                  absl::FormatDuration(timeout)));
}

absl::StatusOr<ExitStatus> Process::Stop(absl::Duration grace) {
  if (exit_.has_value()) return *exit_;
  if (absl::Status status = Signal(SIGTERM); !status.ok()) return status;
  absl::StatusOr<ExitStatus> exit = Wait(grace);
  if (exit.ok()) return exit;
  return Kill();
}

absl::StatusOr<ExitStatus> Process::Kill() {
  if (exit_.has_value()) return *exit_;
  if (absl::Status status = Signal(SIGKILL); !status.ok()) return status;
  // SIGKILL cannot be caught; the wait only covers the kernel tearing the process down.
  return Wait(absl::Seconds(30));
}

std::string Process::ReadLog() const {
  if (options_.log_path.empty()) return std::string();
  std::ifstream in(options_.log_path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace eventbus::testing
