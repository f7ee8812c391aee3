// The writer pool against a real black-holing DNS server (issue 7, defect 3): glibc's getaddrinfo
// is pointed at a UDP+TCP server on 127.0.0.1:53 that reads queries and never answers, while
// `fast.test` is answered from the hosts file. A name stuck in DNS must fail with RESOLVE_FAILED at
// the resolve timeout, and must not delay a name from the hosts file or an IP literal.
//
// The resolver configuration is the system's (/etc/resolv.conf, /etc/hosts, /etc/nsswitch.conf),
// so the test runs in its own mount and network namespaces: main() forks a child that unshares
// them (falling back to a user namespace when not root), makes every mount private, and re-executes
// this binary there; the re-executed binary bind-mounts test files over those three, brings up its
// private loopback and runs the tests. Nothing outside the namespaces changes. When namespaces
// cannot be created at all, the binary prints why and exits 77, which ctest reports as skipped.
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/net/resolver.h"
#include "server/net/writer_pool.h"
#include "tests/net/loopback_peer.h"

namespace eventbus::net {
namespace {

constexpr char kInsideEnv[] = "EVENTBUS_RESOLVER_DNS_TEST_INSIDE";
constexpr int kSkipExitCode = 77;
constexpr absl::Duration kWait = absl::Seconds(10);
constexpr absl::Duration kResolveTimeout = absl::Milliseconds(1500);

// glibc itself would wait 5 s per try, twice, for the black hole: far beyond the resolve timeout.
constexpr char kResolvConf[] = "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n";
constexpr char kHosts[] =
    "127.0.0.1 localhost\n"
    "::1 localhost\n"
    "127.0.0.1 fast.test\n";
constexpr char kNsswitch[] = "hosts: files dns\n";

// How the namespace set-up went (inside the namespaces); checked by every test.
absl::Status& SetupStatus() {
  static absl::Status* status = new absl::Status();
  return *status;
}

// ---------------------------------------------------------------------------------------------
// Namespace set-up

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  return static_cast<bool>(out.flush());
}

// In the forked child: new mount and network namespaces, every mount private (so the bind mounts
// made later never propagate to the host), then this binary again. Exits 77 when the kernel or
// the privileges refuse the namespaces.
[[noreturn]] void EnterNamespacesAndExec(char** argv) {
  constexpr int kFlags = CLONE_NEWNS | CLONE_NEWNET;
  if (::unshare(kFlags) != 0) {
    const int as_is = errno;
    const uid_t uid = ::getuid();
    const gid_t gid = ::getgid();
    if (::unshare(CLONE_NEWUSER | kFlags) != 0) {
      std::fprintf(stderr,
                   "resolver_dns_test: SKIPPED: cannot create mount and network namespaces "
                   "(unshare: %s; with a user namespace: %s): needs root, CAP_SYS_ADMIN or "
                   "unprivileged user namespaces\n",
                   strerror(as_is), strerror(errno));
      ::_exit(kSkipExitCode);
    }
    if (!WriteFile("/proc/self/setgroups", "deny") ||
        !WriteFile("/proc/self/uid_map", absl::StrCat("0 ", uid, " 1")) ||
        !WriteFile("/proc/self/gid_map", absl::StrCat("0 ", gid, " 1"))) {
      std::fprintf(stderr,
                   "resolver_dns_test: SKIPPED: cannot map the user into its user namespace\n");
      ::_exit(kSkipExitCode);
    }
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    std::fprintf(stderr, "resolver_dns_test: make mounts private: %s\n", strerror(errno));
    ::_exit(1);
  }
  ::setenv(kInsideEnv, "1", 1);
  ::execv("/proc/self/exe", argv);
  std::fprintf(stderr, "resolver_dns_test: exec /proc/self/exe: %s\n", strerror(errno));
  ::_exit(1);
}

// Runs this binary in new namespaces and returns its exit code.
int RunInNamespaces(char** argv) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    std::fprintf(stderr, "resolver_dns_test: fork: %s\n", strerror(errno));
    return 1;
  }
  if (pid == 0) EnterNamespacesAndExec(argv);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  std::fprintf(stderr, "resolver_dns_test: killed by signal %d\n", WTERMSIG(status));
  return 1;
}

absl::Status BindFile(const std::string& dir, const char* name, const char* text,
                      const char* target) {
  std::string source = absl::StrCat(dir, "/", name);
  if (!WriteFile(source, text)) {
    return absl::InternalError(absl::StrCat("write ", source, ": ", strerror(errno)));
  }
  if (::mount(source.c_str(), target, nullptr, MS_BIND, nullptr) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("bind-mount ", source, " on ", target, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status BringUpLoopback() {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  ifreq ifr{};
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  absl::Status status;
  if (::ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) {
    status = absl::InternalError(absl::StrCat("SIOCGIFFLAGS lo: ", strerror(errno)));
  } else {
    ifr.ifr_flags |= IFF_UP;
    if (::ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) {
      status = absl::InternalError(absl::StrCat("SIOCSIFFLAGS lo: ", strerror(errno)));
    }
  }
  ::close(fd);
  return status;
}

// Inside the namespaces, before any test (and any lookup): the test resolver configuration.
absl::Status SetUpInside() {
  char dir[] = "/tmp/resolver_dns_test.XXXXXX";
  if (::mkdtemp(dir) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", strerror(errno)));
  }
  for (auto [name, text, target] : {std::tuple{"resolv.conf", kResolvConf, "/etc/resolv.conf"},
                                    std::tuple{"hosts", kHosts, "/etc/hosts"},
                                    std::tuple{"nsswitch.conf", kNsswitch, "/etc/nsswitch.conf"}}) {
    absl::Status status = BindFile(dir, name, text, target);
    if (!status.ok()) return status;
  }
  // The bind mounts hold the files; the directory itself is no longer needed by name.
  for (const char* name : {"resolv.conf", "hosts", "nsswitch.conf"}) {
    ::unlink(absl::StrCat(dir, "/", name).c_str());
  }
  ::rmdir(dir);
  return BringUpLoopback();
}

// ---------------------------------------------------------------------------------------------
// The black hole

// "slow.test" as a DNS question name: length-prefixed labels, then the root's 0.
std::string QuestionName(absl::string_view host) {
  std::string out;
  for (absl::string_view label : absl::StrSplit(host, '.')) {
    out.push_back(static_cast<char>(label.size()));
    out.append(label.data(), label.size());
  }
  out.push_back('\0');
  return out;
}

// A DNS server on 127.0.0.1:53 (UDP and TCP) that never answers: UDP queries are read and kept,
// TCP connections are left in the accept queue.
class BlackHoleDns {
 public:
  // Binds both sockets; a failure fails the test.
  static std::unique_ptr<BlackHoleDns> Start() {
    auto dns = std::unique_ptr<BlackHoleDns>(new BlackHoleDns());
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(53);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    dns->udp_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    dns->tcp_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::bind(dns->udp_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::bind(dns->tcp_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(dns->tcp_, 64) != 0) {
      ADD_FAILURE() << "black-hole DNS on 127.0.0.1:53: " << strerror(errno);
      return nullptr;
    }
    dns->reader_ = std::thread([d = dns.get()] { d->Read(); });
    return dns;
  }
  ~BlackHoleDns() {
    stop_.store(true);
    if (reader_.joinable()) reader_.join();
    ::close(udp_);
    ::close(tcp_);
  }

  // True once a query for `host` arrived.
  bool WaitForQuery(absl::string_view host, absl::Duration timeout) {
    std::string name = QuestionName(host);
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] {
      for (const std::string& q : queries_) {
        if (absl::StrContains(q, name)) return true;
      }
      return false;
    });
  }
  bool SawQuery(absl::string_view host) { return WaitForQuery(host, absl::ZeroDuration()); }

 private:
  BlackHoleDns() = default;
  void Read() {
    while (!stop_.load()) {
      pollfd p{udp_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      char buf[1500];
      ssize_t n = ::recv(udp_, buf, sizeof(buf), 0);
      if (n <= 0) continue;
      std::lock_guard<std::mutex> lock(mu_);
      queries_.emplace_back(buf, static_cast<size_t>(n));
      cv_.notify_all();
    }
  }

  int udp_ = -1;
  int tcp_ = -1;
  std::atomic<bool> stop_{false};
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> queries_;  // guarded by mu_
};

// ---------------------------------------------------------------------------------------------
// Outcomes

class Outcomes {
 public:
  OutcomeCallback Callback(const std::string& name) {
    return [this, name](Outcome outcome) {
      std::lock_guard<std::mutex> lock(mu_);
      done_.push_back(Done{name, std::move(outcome), absl::Now()});
      cv_.notify_all();
    };
  }
  bool WaitFor(size_t count, absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                        [&] { return done_.size() >= count; });
  }
  struct Done {
    std::string name;
    Outcome outcome;
    absl::Time at;
  };
  std::optional<Done> Get(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Done& d : done_) {
      if (d.name == name) return d;
    }
    return std::nullopt;
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Done> done_;  // guarded by mu_
};

Request Notification(const std::string& host, uint16_t port, const std::string& name,
                     Outcomes& outcomes, bool fail_fast) {
  Request r;
  r.target.host = host;
  r.target.port = port;
  r.body = std::make_shared<const std::string>(
      absl::StrCat("\"jsonrpc\":\"2.0\",\"method\":\"", name, "\"}"));
  r.deadline = absl::Now() + absl::Seconds(30);
  r.fail_fast = fail_fast;
  r.done = outcomes.Callback(name);
  return r;
}

class ResolverDnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(SetupStatus().ok()) << "test resolver configuration: " << SetupStatus();
    dns_ = BlackHoleDns::Start();
    ASSERT_NE(dns_, nullptr);
  }
  std::unique_ptr<BlackHoleDns> dns_;
};

TEST_F(ResolverDnsTest, TheConfigurationBlackHolesNamesButAnswersTheHostsFile) {
  ResolveResult fast = ResolveBlocking("fast.test", 80);
  ASSERT_TRUE(fast.ok()) << fast.status();
  EXPECT_EQ((*fast)[0].text, "127.0.0.1:80");
  EXPECT_FALSE(dns_->SawQuery("fast.test"));

  // getaddrinfo for a name not in the hosts file goes to the black hole (and hangs there: the
  // thread is left behind, the process exit ends it).
  std::thread([] { (void)ResolveBlocking("hang.test", 80); }).detach();
  EXPECT_TRUE(dns_->WaitForQuery("hang.test", kWait));
}

TEST_F(ResolverDnsTest, ABlackHoledNameFailsAtTheTimeoutAndDelaysNoOtherTarget) {
  auto peer = LoopbackPeer::Start({});
  ASSERT_NE(peer, nullptr);
  PoolOptions options;
  // One loop: every target below shares it, so a blocked loop would delay them all.
  options.num_loops = 1;
  options.resolve_timeout = kResolveTimeout;
  auto pool = WriterPool::Create(options);
  ASSERT_TRUE(pool.ok()) << pool.status();
  Outcomes outcomes;

  // A plain getaddrinfo for a black-holed name, to show how long glibc alone would take.
  auto glibc_returned = std::make_shared<std::atomic<bool>>(false);
  std::thread([returned = glibc_returned] {
    (void)ResolveBlocking("control.test", 80);
    returned->store(true);
  }).detach();

  // More black-holed names than the old resolver had threads, each asked for twice (two
  // targets, one name); fail_fast: the first failed resolve completes them.
  const absl::Time start = absl::Now();
  constexpr int kSlowNames = 4;
  std::vector<Request> batch;
  for (int i = 0; i < kSlowNames; ++i) {
    std::string host = absl::StrCat("slow", i, ".test");
    batch.push_back(Notification(host, 1000, absl::StrCat(host, "/a"), outcomes, true));
    batch.push_back(Notification(host, 1001, absl::StrCat(host, "/b"), outcomes, true));
  }
  (*pool)->Submit(std::move(batch));
  // The slow lookups are under way.
  ASSERT_TRUE(dns_->WaitForQuery("slow0.test", kWait));

  // Then a name from the hosts file and an IP literal, both to the live peer.
  const absl::Time fast_start = absl::Now();
  batch.clear();
  batch.push_back(Notification("fast.test", peer->port(), "fast", outcomes, false));
  batch.push_back(Notification("127.0.0.1", peer->port(), "literal", outcomes, false));
  (*pool)->Submit(std::move(batch));
  ASSERT_TRUE(peer->WaitForMessages(2, kWait))
      << "fast.test and 127.0.0.1 not delivered within " << kWait << " behind black-holed names";
  const absl::Duration fast_took = absl::Now() - fast_start;
  ASSERT_TRUE(outcomes.WaitFor(2, kWait));
  for (const char* name : {"fast", "literal"}) {
    std::optional<Outcomes::Done> done = outcomes.Get(name);
    ASSERT_TRUE(done.has_value()) << name << " was not delivered before the slow names failed";
    EXPECT_EQ(done->outcome.code, DeliveryCode::kOk) << name << ": " << done->outcome.detail;
  }
  // Delivered long before any slow name timed out (loopback: a few ms; the timeout: 1.5 s).
  EXPECT_LT(fast_took, kResolveTimeout / 2);
  EXPECT_FALSE(dns_->SawQuery("fast.test"));

  // Each black-holed target fails with RESOLVE_FAILED at the resolve timeout.
  ASSERT_TRUE(outcomes.WaitFor(2 + 2 * kSlowNames, kWait));
  for (int i = 0; i < kSlowNames; ++i) {
    std::string host = absl::StrCat("slow", i, ".test");
    for (const char* which : {"/a", "/b"}) {
      std::optional<Outcomes::Done> done = outcomes.Get(host + which);
      ASSERT_TRUE(done.has_value()) << host << which;
      EXPECT_EQ(done->outcome.code, DeliveryCode::kResolveFailed) << host << which;
      EXPECT_EQ(done->outcome.detail,
                absl::StrCat("resolve \"", host, "\": timed out after 1500 ms"));
      const absl::Duration took = done->at - start;
      EXPECT_GE(took, kResolveTimeout) << host << which;
      EXPECT_LT(took, kResolveTimeout + absl::Seconds(1)) << host << which;
    }
  }
  // Every slow name was asked of the DNS server: concurrently, each on its own thread.
  for (int i = 0; i < kSlowNames; ++i) {
    EXPECT_TRUE(dns_->SawQuery(absl::StrCat("slow", i, ".test"))) << i;
  }
  // While glibc alone is still waiting for the black hole (5 s per try).
  EXPECT_FALSE(glibc_returned->load());

  // The IP-literal target still works while the slow names' lookups hang in the background.
  std::vector<Request> again;
  again.push_back(Notification("127.0.0.1", peer->port(), "literal-again", outcomes, false));
  (*pool)->Submit(std::move(again));
  ASSERT_TRUE(peer->WaitForMessages(3, absl::Milliseconds(500)));
  (*pool)->Shutdown();
}

}  // namespace
}  // namespace eventbus::net

int main(int argc, char** argv) {
  if (std::getenv(eventbus::net::kInsideEnv) == nullptr) {
    return eventbus::net::RunInNamespaces(argv);
  }
  eventbus::net::SetupStatus() = eventbus::net::SetUpInside();
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
