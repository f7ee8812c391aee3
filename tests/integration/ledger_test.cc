// The ledger test (issue 7, SPEC §11): a bounded run of mixed async and sync Raises through the
// real eventbusd binary against loopback JSON-RPC peers that behave well and badly, with a peer
// restarted and etcd restarted mid-run, that accounts for every delivery. For every target it
// checks raised = delivered + failed + expired + still queued against the server's own counters,
// that no connection carried a seq twice, that nothing reached a target after its subscription
// expired or was removed, that every sync OK and every QUEUED to the healthy peer arrived, and that
// eventbusd's RSS and open fds stay flat in the second half. It prints the figures.
//
// Duration: LEDGER_SECONDS (default 60) for the etcd pass, LEDGER_SQLITE_SECONDS (default 20; 0
// skips) for the pass on the default SQLite store; LEDGER_RATE async Raises/s (default 100).
// Long form: LEDGER_SECONDS=600 build/tests/integration/ledger_test (README, "Ledger test").
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "server/base/mutex.h"
#include "tests/testing/etcd_harness.h"
#include "tests/testing/jsonrpc_peer.h"
#include "tests/testing/ports.h"
#include "tests/testing/process.h"
#include "tests/testing/wait.h"

namespace eventbus {
namespace {

namespace v1 = ::eventbus::v1;
using ::eventbus::client::Client;
using ::eventbus::client::ClientOptions;
using ::eventbus::testing::EtcdHarness;
using ::eventbus::testing::JsonRpcPeer;
using ::eventbus::testing::PeerMode;
using ::eventbus::testing::PortAccepts;
using ::eventbus::testing::Process;
using ::eventbus::testing::ProcessOptions;
using ::eventbus::testing::TempDir;
using ::eventbus::testing::WaitFor;

// Raised on every Raise; every target has one subscription to it (at times none: expiry, removal).
constexpr char kEvent[] = "E_LEDGER";
// Never raised. Every target has a permanent subscription to it, so ListSubscriptions keeps showing
// the target's connection counters while its E_LEDGER subscription is gone.
constexpr char kStatsEvent[] = "E_LEDGER_STATS";

// Budgets. Sync: connect + write + reply; async: time to be written. The async budget is generous
// so that a healthy peer never loses a QUEUED event to a loaded 2-core machine; the restarted
// peer's outage (8 s in runs of 40 s or more) is longer than it, so events expire in its queue.
constexpr uint32_t kSyncTimeoutMs = 1000;
constexpr uint32_t kAsyncTimeoutMs = 5000;
constexpr absl::Duration kPeerOutage = absl::Seconds(8);  // at most 0.2 of the run
constexpr absl::Duration kSlowReplyDelay = absl::Milliseconds(600);
// Far beyond every budget: a Raise call never fails on the client side (cancelled sync Raises are
// a known defect of their own, issue 7 item 5).
constexpr absl::Duration kCallDeadline = absl::Seconds(30);
// Small enough that the non-reading peer's queue fills and answers QUEUE_FULL.
constexpr int kQueueMaxMessages = 256;
constexpr int kSyncThreads = 4;
constexpr int kAsyncThreads = 2;

// Flatness in the second half: the median RSS of the last 15% of the run may exceed the highest
// RSS of the window before the half [0.35, 0.5] by 10% plus 8 MiB (allocator arenas grow in
// steps, and the queues of misbehaving peers come and go); fds may exceed it by 16 (connections
// to the closing, non-reading and restarted peers and to etcd are re-made all the time). A leak
// of one fd per reconnect (the closer alone reconnects ~50 times a second), or of about 500 bytes
// per delivery in the 60 s run (50 bytes in the 10-minute form), breaks either bound.
// Under AddressSanitizer or ThreadSanitizer (eventbusd is built with the same flags as this test)
// RSS is not checked: ASan holds freed memory in its quarantine (up to 256 MiB) and TSan keeps
// shadow and history memory, so RSS climbs for reasons of their own; ASan's leak check stands in.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kCheckRss = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kCheckRss = false;
#else
constexpr bool kCheckRss = true;
#endif
#else
constexpr bool kCheckRss = true;
#endif
constexpr double kRssGrowth = 0.10;
constexpr int64_t kRssSlackKb = 8 * 1024;
constexpr int kFdSlack = 16;

int EnvInt(const char* name, int fallback) {
  const char* text = std::getenv(name);
  int value = 0;
  if (text == nullptr || !absl::SimpleAtoi(text, &value) || value < 0) return fallback;
  return value;
}

// ---------------------------------------------------------------------------------------------
// Targets and their ledgers.

enum class Role {
  kHealthy,       // answers every request at once; never stopped
  kSlow,          // answers after kSlowReplyDelay
  kErrors,        // answers every request with a JSON-RPC error
  kCloser,        // closes the connection after each read
  kNoRead,        // accepts and never reads
  kRestarted,     // healthy, but stopped for kPeerOutage and restarted on the same port
  kExpiring,      // healthy; its subscriptions expire (refreshed for a while first)
  kUnsubscribed,  // healthy; unsubscribed mid-run, subscribed again later
};

const char* RoleName(Role role) {
  switch (role) {
    case Role::kHealthy:
      return "healthy";
    case Role::kSlow:
      return "slow";
    case Role::kErrors:
      return "errors";
    case Role::kCloser:
      return "closer";
    case Role::kNoRead:
      return "no-read";
    case Role::kRestarted:
      return "restarted";
    case Role::kExpiring:
      return "expiring";
    case Role::kUnsubscribed:
      return "unsubscribed";
  }
  return "?";
}

// The seq in the params of an E_LEDGER message, or -1.
int64_t SeqOf(absl::string_view message) {
  constexpr absl::string_view kKey = "\"seq\":";
  size_t at = message.find(kKey);
  if (at == absl::string_view::npos) return -1;
  size_t begin = at + kKey.size();
  size_t end = begin;
  while (end < message.size() && message[end] >= '0' && message[end] <= '9') ++end;
  int64_t seq = -1;
  if (!absl::SimpleAtoi(message.substr(begin, end - begin), &seq)) return -1;
  return seq;
}

// Everything known about one target: what the server answered for it, what its peer read. Filled
// by the raise threads (answers) and the peer thread (receipts); read once they have stopped.
struct Ledger {
  eventbus::Mutex mu;
  // Deliveries the server listed for this target, by mode and status.
  std::map<v1::DeliveryStatus, int64_t> async_status ABSL_GUARDED_BY(mu);
  std::map<v1::DeliveryStatus, int64_t> sync_status ABSL_GUARDED_BY(mu);
  // seq -> the status of its delivery to this target.
  absl::flat_hash_map<int64_t, v1::DeliveryStatus> answered ABSL_GUARDED_BY(mu);
  absl::flat_hash_set<int64_t> sync_seqs ABSL_GUARDED_BY(mu);
  // Receipts: per connection serial the seqs read on it.
  std::map<int, absl::flat_hash_set<int64_t>> by_connection ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<int64_t, int> received ABSL_GUARDED_BY(mu);  // seq -> times read
  int64_t duplicates_on_one_connection ABSL_GUARDED_BY(mu) = 0;
  std::vector<int64_t> duplicate_examples ABSL_GUARDED_BY(mu);
  int64_t unparsable ABSL_GUARDED_BY(mu) = 0;
  // Send-time windows [from, to) in which a Raise must not reach this target: after expiry or
  // after the acknowledged Unsubscribe, until the next Subscribe was sent.
  std::vector<std::pair<absl::Time, absl::Time>> forbidden ABSL_GUARDED_BY(mu);

  int64_t raised() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    int64_t n = 0;
    for (const auto& [status, count] : async_status) n += count;
    for (const auto& [status, count] : sync_status) n += count;
    return n;
  }
};

struct Target {
  Role role;
  // Declared before the peer, whose thread writes to it until the peer is destroyed.
  Ledger ledger;
  std::unique_ptr<JsonRpcPeer> peer;
  std::string socket;
  std::string address;  // "127.0.0.1:PORT", the key of its connection counters
};

// ---------------------------------------------------------------------------------------------
// eventbusd and its process figures.

struct Sample {
  absl::Duration at;  // since the raises began
  int64_t rss_kb = 0;
  int fds = 0;
};

int64_t ReadRssKb(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "VmRSS:")) {
      int64_t kb = 0;
      std::string digits;
      for (char c : line) {
        if (c >= '0' && c <= '9') digits.push_back(c);
      }
      if (absl::SimpleAtoi(digits, &kb)) return kb;
    }
  }
  return -1;
}

int CountFds(pid_t pid) {
  std::error_code error;
  int n = 0;
  for (auto it = std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fd"), error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    ++n;
  }
  return error ? -1 : n;
}

// ---------------------------------------------------------------------------------------------
// The run.

enum class StoreKind { kEtcd, kSqlite };

class LedgerRun {
 public:
  LedgerRun(StoreKind store, absl::Duration duration, int async_rate)
      : store_(store), duration_(duration), async_rate_(async_rate) {}
  // Stops the threads if a fatal failure left them running.
  ~LedgerRun() {
    stop_raising_ = true;
    stop_sampling_ = true;
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  // Everything below runs on the test thread, which owns the child processes.
  void Run();

 private:
  void StartPeers();
  void StartServer();
  v1::Subscription Subscribe(Target& target, const char* event, std::optional<uint32_t> expire);
  // Subscribe, retried while the store is unavailable (after the etcd restart), up to 60 s.
  // `*first_sent` is when the first attempt was sent.
  v1::Subscription SubscribeRetrying(Target& target, std::optional<uint32_t> expire,
                                     absl::Time* first_sent);
  void RaiseLoop(int thread, bool sync);
  void SampleLoop();
  void Record(int64_t seq, bool sync, absl::Time sent, const v1::RaiseResponse& response);
  absl::Time At(double fraction) const { return start_ + duration_ * fraction; }
  void WaitUntil(absl::Time t) {
    while (absl::Now() < t) absl::SleepFor(std::min(t - absl::Now(), absl::Milliseconds(200)));
  }
  std::map<std::string, v1::TargetState> TargetStates();
  void CheckAndPrint();

  const StoreKind store_;
  const absl::Duration duration_;
  const int async_rate_;

  TempDir dir_{"ledger"};
  std::unique_ptr<EtcdHarness> etcd_;
  std::unique_ptr<Process> server_;
  std::string address_;
  std::unique_ptr<Client> client_;
  std::vector<std::unique_ptr<Target>> targets_;
  absl::flat_hash_map<std::string, Target*> by_socket_;
  Target* target(Role role) {
    for (auto& t : targets_) {
      if (t->role == role) return t.get();
    }
    return nullptr;
  }

  absl::Time start_;
  // Raise threads first, the sampler last.
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_raising_{false};
  std::atomic<bool> stop_sampling_{false};

  eventbus::Mutex mu_;
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<absl::Time> sent_at_ ABSL_GUARDED_BY(mu_);  // index seq - 1
  int64_t raises_async_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t raises_sync_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t raise_errors_ ABSL_GUARDED_BY(mu_) = 0;
  std::string first_raise_error_ ABSL_GUARDED_BY(mu_);
  int64_t unknown_deliveries_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t sync_latency_max_ms_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Sample> samples_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> timeline_;  // test thread only
  void Note(const std::string& what) {
    timeline_.push_back(
        absl::StrFormat("%6.1fs %s", absl::ToDoubleSeconds(absl::Now() - start_), what));
  }
};

void LedgerRun::StartPeers() {
  for (Role role : {Role::kHealthy, Role::kSlow, Role::kErrors, Role::kCloser, Role::kNoRead,
                    Role::kRestarted, Role::kExpiring, Role::kUnsubscribed}) {
    auto target = std::make_unique<Target>();
    target->role = role;
    JsonRpcPeer::Options options;
    switch (role) {
      case Role::kSlow:
        options.behavior.reply_delay = kSlowReplyDelay;
        break;
      case Role::kErrors:
        options.behavior.mode = PeerMode::kReplyError;
        break;
      case Role::kCloser:
        options.behavior.mode = PeerMode::kCloseAfterRead;
        break;
      case Role::kNoRead:
        options.behavior.mode = PeerMode::kNoRead;
        options.receive_buffer_bytes = 4096;
        break;
      default:
        break;
    }
    Ledger* ledger = &target->ledger;
    options.on_message = [ledger](int connection, absl::string_view message) {
      const int64_t seq = SeqOf(message);
      eventbus::MutexLock lock(&ledger->mu);
      if (seq < 0) {
        ++ledger->unparsable;
        return;
      }
      if (!ledger->by_connection[connection].insert(seq).second) {
        ++ledger->duplicates_on_one_connection;
        if (ledger->duplicate_examples.size() < 5) ledger->duplicate_examples.push_back(seq);
      }
      ++ledger->received[seq];
    };
    absl::StatusOr<std::unique_ptr<JsonRpcPeer>> peer = JsonRpcPeer::Start(std::move(options));
    ASSERT_TRUE(peer.ok()) << peer.status();
    target->peer = *std::move(peer);
    target->socket = target->peer->socket();
    target->address = absl::StrCat("127.0.0.1:", target->peer->port());
    by_socket_[target->socket] = target.get();
    targets_.push_back(std::move(target));
  }
}

void LedgerRun::StartServer() {
  std::vector<std::string> flags = {
      absl::StrCat("--data_dir=", (dir_.path() / "data").string()),
      absl::StrCat("--queue_max_messages=", kQueueMaxMessages),
      // Counters live with the connection; an idle one is forgotten after this long, and with it
      // the figures of the expiring and unsubscribed targets.
      "--idle_timeout_s=86400",
      "--log_level=warning",
  };
  if (store_ == StoreKind::kEtcd) {
    absl::StatusOr<std::unique_ptr<EtcdHarness>> etcd = EtcdHarness::Start();
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
    flags.push_back(absl::StrCat("--store=etcd://", etcd_->endpoint(), "/ledger-", ::getpid()));
  }
  // The port may be taken between picking and binding on a shared machine: try again.
  for (int attempt = 0; attempt < 3; ++attempt) {
    address_ = absl::StrCat("127.0.0.1:", testing::PickUnusedPort());
    ProcessOptions options;
    options.argv = {EVENTBUSD_PATH, absl::StrCat("--listen=", address_)};
    options.argv.insert(options.argv.end(), flags.begin(), flags.end());
    options.log_path = (dir_.path() / absl::StrCat("eventbusd-", attempt, ".log")).string();
    absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(std::move(options));
    ASSERT_TRUE(process.ok()) << process.status();
    server_ = *std::move(process);
    // The port opens once the store has loaded; connecting only then keeps the client's channel
    // out of gRPC's reconnect backoff.
    const uint16_t port = static_cast<uint16_t>(std::stoi(address_.substr(address_.find(':') + 1)));
    bool up = WaitFor(absl::Seconds(30), [&] { return !server_->Running() || PortAccepts(port); });
    if (up && server_->Running()) {
      ClientOptions client_options;
      client_options.deadline = kCallDeadline;
      absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(address_, client_options);
      ASSERT_TRUE(client.ok()) << client.status();
      client_ = *std::move(client);
      absl::StatusOr<v1::ListEventsResponse> events = client_->ListEvents();
      ASSERT_TRUE(events.ok()) << events.status() << "\n" << server_->ReadLog();
      return;
    }
    std::string log = server_->ReadLog();
    server_.reset();
    ASSERT_TRUE(absl::StrContains(log, "bind") || absl::StrContains(log, "in use"))
        << "eventbusd did not start:\n"
        << log;
  }
  FAIL() << "eventbusd could not bind a port in 3 attempts";
}

v1::Subscription LedgerRun::Subscribe(Target& target, const char* event,
                                      std::optional<uint32_t> expire) {
  v1::SubscribeRequest request;
  request.set_event(event);
  request.set_socket(target.socket);
  if (expire.has_value()) request.set_expire_seconds(*expire);
  absl::StatusOr<v1::SubscribeResponse> response = client_->Subscribe(request);
  EXPECT_TRUE(response.ok()) << "subscribe " << event << " " << target.socket << ": "
                             << response.status() << "\n"
                             << server_->ReadLog();
  if (!response.ok()) return v1::Subscription();
  return response->subscription();
}

v1::Subscription LedgerRun::SubscribeRetrying(Target& target, std::optional<uint32_t> expire,
                                              absl::Time* first_sent) {
  v1::SubscribeRequest request;
  request.set_event(kEvent);
  request.set_socket(target.socket);
  if (expire.has_value()) request.set_expire_seconds(*expire);
  *first_sent = absl::Now();
  absl::Status last;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    absl::StatusOr<v1::SubscribeResponse> response = client_->Subscribe(request);
    if (response.ok()) return response->subscription();
    last = response.status();
    if (last.code() != absl::StatusCode::kUnavailable) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  ADD_FAILURE() << "subscribe " << target.socket << ": " << last << "\n" << server_->ReadLog();
  return v1::Subscription();
}

std::map<std::string, v1::TargetState> LedgerRun::TargetStates() {
  std::map<std::string, v1::TargetState> out;
  v1::ListSubscriptionsRequest request;
  request.set_event(kStatsEvent);
  absl::StatusOr<v1::ListSubscriptionsResponse> response = client_->ListSubscriptions(request);
  if (!response.ok()) return out;
  for (const v1::Subscription& sub : response->subscriptions()) {
    for (const v1::TargetState& state : sub.targets()) out[state.address()] = state;
  }
  return out;
}

void LedgerRun::Record(int64_t seq, bool sync, absl::Time sent, const v1::RaiseResponse& response) {
  for (const v1::Delivery& delivery : response.deliveries()) {
    auto it = by_socket_.find(delivery.socket());
    if (it == by_socket_.end()) {
      eventbus::MutexLock lock(&mu_);
      ++unknown_deliveries_;
      continue;
    }
    Ledger& ledger = it->second->ledger;
    eventbus::MutexLock lock(&ledger.mu);
    (sync ? ledger.sync_status : ledger.async_status)[delivery.status()]++;
    ledger.answered[seq] = delivery.status();
    if (sync) ledger.sync_seqs.insert(seq);
  }
  if (sync) {
    int64_t ms = absl::ToInt64Milliseconds(absl::Now() - sent);
    eventbus::MutexLock lock(&mu_);
    sync_latency_max_ms_ = std::max(sync_latency_max_ms_, ms);
  }
}

void LedgerRun::RaiseLoop(int thread, bool sync) {
  std::mt19937 rng(static_cast<unsigned>(thread * 7919 + 17));
  // About 2 KiB per event on average, so the non-reading peer's socket buffers (a few MiB) fill
  // within the run and its queue then answers QUEUE_FULL and expires events.
  std::uniform_int_distribution<int> pad_size(0, 4000);
  const absl::Duration interval =
      sync ? absl::Milliseconds(100) : absl::Seconds(kAsyncThreads) / std::max(1, async_rate_);
  absl::Time next = absl::Now();
  while (!stop_raising_.load()) {
    next += interval;
    // Pacing only (a bounded rate); nothing below depends on when this wakes up.
    if (absl::Now() < next) absl::SleepFor(next - absl::Now());
    if (absl::Now() > next + absl::Seconds(1)) next = absl::Now();  // no catch-up bursts
    int64_t seq;
    absl::Time sent;
    {
      eventbus::MutexLock lock(&mu_);
      seq = next_seq_++;
      sent = absl::Now();
      sent_at_.push_back(sent);
      ++(sync ? raises_sync_ : raises_async_);
    }
    v1::RaiseRequest request;
    request.set_event(kEvent);
    request.set_json(absl::StrCat(R"({"seq":)", seq, R"(,"mode":")", sync ? "sync" : "async",
                                  R"(","pad":")", std::string(pad_size(rng), 'x'), R"("})"));
    request.set_sync(sync);
    // Every delivery is accounted per target: QUEUED ones listed too.
    request.set_all_deliveries(true);
    request.set_timeout_ms(sync ? kSyncTimeoutMs : kAsyncTimeoutMs);
    absl::StatusOr<v1::RaiseResponse> response = client_->Raise(request);
    if (!response.ok()) {
      eventbus::MutexLock lock(&mu_);
      if (raise_errors_++ == 0) first_raise_error_ = response.status().ToString();
      continue;
    }
    Record(seq, sync, sent, *response);
  }
}

void LedgerRun::SampleLoop() {
  const pid_t pid = server_->pid();
  absl::Time next = start_;
  while (!stop_sampling_.load()) {
    Sample s;
    s.at = absl::Now() - start_;
    s.rss_kb = ReadRssKb(pid);
    s.fds = CountFds(pid);
    {
      eventbus::MutexLock lock(&mu_);
      samples_.push_back(s);
    }
    // The ledgers keep what they need; the peers' own transcripts would grow with the run.
    for (auto& t : targets_) t->peer->ClearRecorded();
    next += absl::Seconds(1);
    while (!stop_sampling_.load() && absl::Now() < next) {
      absl::SleepFor(std::min(next - absl::Now(), absl::Milliseconds(100)));
    }
  }
}

void LedgerRun::Run() {
  ASSERT_NO_FATAL_FAILURE(StartPeers());
  ASSERT_NO_FATAL_FAILURE(StartServer());

  Target& expiring = *target(Role::kExpiring);
  Target& unsubscribed = *target(Role::kUnsubscribed);
  Target& restarted = *target(Role::kRestarted);
  auto expire_time = [](const v1::Subscription& sub) {
    return absl::FromUnixSeconds(sub.expire_time().seconds()) +
           absl::Nanoseconds(sub.expire_time().nanos());
  };
  for (auto& t : targets_) {
    ASSERT_FALSE(Subscribe(*t, kStatsEvent, 0).id().empty());
  }
  // The expiring target's subscription lives `expire` seconds, refreshed every expire/2 until
  // 0.25 of the run; it then expires. Subscribed again at 0.45, it expires in the middle of the
  // etcd outage (from 0.55, `etcd_outage` long): eventbusd cannot delete it from etcd then, and a
  // restarted etcd renews every lease to its full TTL, so the key is back in etcd when eventbusd
  // reloads; that must not bring the subscription back.
  const absl::Duration etcd_outage = std::min(absl::Seconds(6), duration_ * 0.1);
  const uint32_t expire =
      static_cast<uint32_t>(std::max<int64_t>(4, absl::ToInt64Seconds(duration_ * 0.1)));
  absl::Time expires_at;
  int healthy_refreshes = 0;
  for (auto& t : targets_) {
    v1::Subscription sub =
        Subscribe(*t, kEvent, t.get() == &expiring ? std::optional<uint32_t>(expire) : 0);
    ASSERT_FALSE(sub.id().empty());
    if (t.get() == &expiring) expires_at = expire_time(sub);
  }

  start_ = absl::Now();
  for (int i = 0; i < kAsyncThreads; ++i) threads_.emplace_back([this, i] { RaiseLoop(i, false); });
  for (int i = 0; i < kSyncThreads; ++i) {
    threads_.emplace_back([this, i] { RaiseLoop(100 + i, true); });
  }
  threads_.emplace_back([this] { SampleLoop(); });

  // The control actions, in time order, on this thread (it owns etcd).
  std::multimap<absl::Time, std::function<void()>> schedule;
  for (absl::Time t = start_ + absl::Seconds(expire) / 2; t < At(0.25);
       t += absl::Seconds(expire) / 2) {
    schedule.emplace(t, [&] {
      // Refreshes only while etcd is healthy (a refresh that times out is issue 7 item 1).
      v1::Subscription sub = Subscribe(expiring, kEvent, expire);
      if (!sub.id().empty()) expires_at = std::max(expires_at, expire_time(sub));
      Note(absl::StrCat("expiring: refreshed, expires at +",
                        absl::FormatDuration(expires_at - start_)));
    });
  }
  const absl::Duration outage = std::min(kPeerOutage, duration_ * 0.2);
  // Refreshes of permanent subscriptions while Raises fan out to them, outside the etcd outage:
  // the same subscription, in every Raise exactly once (checked at the end).
  Target& healthy = *target(Role::kHealthy);
  for (absl::Time t = At(0.05); t < At(0.95); t += absl::Seconds(2)) {
    if (t >= At(0.5) && t < At(0.75)) continue;
    schedule.emplace(t, [&] {
      absl::StatusOr<v1::SubscribeResponse> response = client_->Subscribe([&] {
        v1::SubscribeRequest request;
        request.set_event(kEvent);
        request.set_socket(healthy.socket);
        request.set_expire_seconds(0);
        return request;
      }());
      EXPECT_TRUE(response.ok() && !response->created())
          << "refresh " << healthy.socket << ": "
          << (response.ok() ? "created a new subscription" : response.status().ToString());
      ++healthy_refreshes;
    });
  }
  schedule.emplace(At(0.15), [&] {
    restarted.peer->Stop();
    Note("restarted peer: stopped");
  });
  schedule.emplace(At(0.15) + outage, [&] {
    absl::Status restart = restarted.peer->Restart();
    for (int i = 0; i < 20 && !restart.ok(); ++i) {  // its port may linger briefly
      absl::SleepFor(absl::Milliseconds(250));
      restart = restarted.peer->Restart();
    }
    EXPECT_TRUE(restart.ok()) << restart;
    Note("restarted peer: listening again");
  });
  schedule.emplace(At(0.4), [&] {
    // A refresh right before the removal: its echo from the store (etcd's watch) must not
    // bring the subscription back.
    EXPECT_FALSE(Subscribe(unsubscribed, kEvent, 0).id().empty());
    v1::UnsubscribeRequest request;
    request.set_event(kEvent);
    request.set_socket(unsubscribed.socket);
    absl::StatusOr<v1::UnsubscribeResponse> response = client_->Unsubscribe(request);
    const absl::Time acked = absl::Now();
    EXPECT_TRUE(response.ok() && response->removed() == 1)
        << "unsubscribe: " << (response.ok() ? "removed 0" : response.status().ToString());
    {
      eventbus::MutexLock lock(&unsubscribed.ledger.mu);
      unsubscribed.ledger.forbidden.push_back({acked, absl::InfiniteFuture()});
    }
    Note("unsubscribed: Unsubscribe acknowledged");
  });
  schedule.emplace(At(0.45), [&] {
    // After the first expiry; this one expires during the etcd outage (SQLite: at that time).
    const uint32_t second_expire = static_cast<uint32_t>(
        std::max<int64_t>(2, absl::ToInt64Seconds(absl::Ceil(
                                 At(0.55) + etcd_outage / 2 - absl::Now(), absl::Seconds(1)))));
    absl::Time sent;
    v1::Subscription sub = SubscribeRetrying(expiring, second_expire, &sent);
    eventbus::MutexLock lock(&expiring.ledger.mu);
    expiring.ledger.forbidden.push_back({expires_at, sent});
    if (!sub.id().empty()) {
      expiring.ledger.forbidden.push_back({expire_time(sub), absl::InfiniteFuture()});
      Note(absl::StrCat("expiring: subscribed again, expires at +",
                        absl::FormatDuration(expire_time(sub) - start_)));
    }
  });
  if (etcd_ != nullptr) {
    schedule.emplace(At(0.55), [&] {
      absl::Status status = etcd_->Stop();
      EXPECT_TRUE(status.ok()) << status;
      Note("etcd: stopped");
    });
    schedule.emplace(At(0.55) + etcd_outage, [&] {
      absl::Status status = etcd_->Restart(absl::Seconds(60));
      EXPECT_TRUE(status.ok()) << status;
      Note("etcd: serving again");
      bool fresh = WaitFor(absl::Seconds(60), [&] {
        absl::StatusOr<v1::ListEventsResponse> events = client_->ListEvents();
        return events.ok() && !events->stale();
      });
      EXPECT_TRUE(fresh) << "eventbusd still reports stale lists 60 s after etcd came back\n"
                         << server_->ReadLog();
      Note("eventbusd: store fresh again");
    });
  }
  schedule.emplace(At(0.7), [&] {
    absl::Time sent;
    SubscribeRetrying(unsubscribed, 0, &sent);
    {
      eventbus::MutexLock lock(&unsubscribed.ledger.mu);
      unsubscribed.ledger.forbidden.back().second = sent;
    }
    Note("unsubscribed: subscribed again");
  });
  for (auto& [when, action] : schedule) {
    WaitUntil(when);
    action();
  }

  WaitUntil(At(1.0));
  stop_raising_ = true;
  for (size_t i = 0; i + 1 < threads_.size(); ++i) threads_[i].join();
  Note("raises stopped");

  // Drain: every target's queue empties within the async budget; the peers then read what was
  // written. Both bounded.
  bool drained = WaitFor(absl::Seconds(60), [&] {
    std::map<std::string, v1::TargetState> states = TargetStates();
    if (states.size() != targets_.size()) return false;
    for (const auto& [address, state] : states) {
      if (state.queued_messages() != 0 || state.outstanding_requests() != 0) return false;
    }
    return true;
  });
  EXPECT_TRUE(drained) << "queues did not drain within 60 s";
  Note("queues drained");
  Note(absl::StrCat("healthy: refreshed ", healthy_refreshes, " times"));
  WaitFor(absl::Seconds(30), [&] {
    eventbus::MutexLock lock(&healthy.ledger.mu);
    for (const auto& [seq, status] : healthy.ledger.answered) {
      if ((status == v1::DELIVERY_STATUS_QUEUED || status == v1::DELIVERY_STATUS_OK) &&
          !healthy.ledger.received.contains(seq)) {
        return false;
      }
    }
    return true;
  });
  // One more sample after the drain.
  absl::SleepFor(absl::Seconds(1));
  stop_sampling_ = true;
  threads_.back().join();
  {
    Sample s;
    s.at = absl::Now() - start_;
    s.rss_kb = ReadRssKb(server_->pid());
    s.fds = CountFds(server_->pid());
    eventbus::MutexLock lock(&mu_);
    samples_.push_back(s);
  }
  CheckAndPrint();

  EXPECT_TRUE(server_->Running()) << "eventbusd died\n" << server_->ReadLog();
  absl::StatusOr<testing::ExitStatus> exit = server_->Stop(absl::Seconds(15));
  EXPECT_TRUE(exit.ok() && exit->Success())
      << "eventbusd did not exit cleanly: "
      << (exit.ok() ? exit->ToString() : exit.status().ToString()) << "\n"
      << server_->ReadLog();
}

std::string StatusShort(v1::DeliveryStatus status) {
  std::string name = v1::DeliveryStatus_Name(status);
  constexpr absl::string_view kPrefix = "DELIVERY_STATUS_";
  if (absl::StartsWith(name, kPrefix)) name = name.substr(kPrefix.size());
  return name;
}

void LedgerRun::CheckAndPrint() {
  std::map<std::string, v1::TargetState> states = TargetStates();
  eventbus::MutexLock run_lock(&mu_);
  const std::string store = store_ == StoreKind::kEtcd ? "etcd" : "sqlite";

  std::string out = absl::StrFormat(
      "\n=== ledger (%s store): %s of raises, %d async + %d sync Raise calls (%d failed calls), "
      "slowest sync Raise %d ms ===\n",
      store, absl::FormatDuration(duration_), raises_async_, raises_sync_, raise_errors_,
      sync_latency_max_ms_);
  for (const std::string& line : timeline_) absl::StrAppend(&out, "  ", line, "\n");
  absl::StrAppend(
      &out, absl::StrFormat("%-13s %7s | %-44s | %7s %6s %6s %6s | %7s %5s %5s %5s\n", "target",
                            "raised", "server answered (async | sync)", "deliv", "failed", "exp",
                            "queued", "recv", "conns", "dup", "late"));

  std::map<v1::DeliveryStatus, int64_t> totals_async, totals_sync;
  int64_t total_received = 0;
  for (auto& t : targets_) {
    Ledger& ledger = t->ledger;
    eventbus::MutexLock lock(&ledger.mu);
    const v1::TargetState& state = states[t->address];
    const int64_t raised = ledger.raised();
    std::string answered;
    for (const auto& [status, count] : ledger.async_status) {
      absl::StrAppend(&answered, StatusShort(status), "=", count, " ");
    }
    absl::StrAppend(&answered, "| ");
    for (const auto& [status, count] : ledger.sync_status) {
      absl::StrAppend(&answered, StatusShort(status), "=", count, " ");
    }

    // Receipts the ledger forbids.
    int64_t late = 0, phantom = 0, sync_ok_missing = 0, queued_missing = 0, queued_read = 0;
    std::vector<int64_t> late_examples, phantom_examples, missing_examples;
    for (const auto& [seq, times] : ledger.received) {
      const absl::Time sent = sent_at_[static_cast<size_t>(seq - 1)];
      for (const auto& [from, to] : ledger.forbidden) {
        if (sent > from && sent < to) {
          ++late;
          if (late_examples.size() < 5) late_examples.push_back(seq);
          break;
        }
      }
      auto answer = ledger.answered.find(seq);
      // Read by the peer although the server listed no delivery for it, or refused it at once.
      const bool phantom_here =
          answer == ledger.answered.end() ||
          (!ledger.sync_seqs.contains(seq) && answer->second != v1::DELIVERY_STATUS_QUEUED);
      if (phantom_here) {
        ++phantom;
        if (phantom_examples.size() < 5) phantom_examples.push_back(seq);
      }
    }
    // Answers the ledger forbids: a delivery listed for a Raise sent inside a forbidden window.
    int64_t listed_late = 0;
    for (const auto& [seq, status] : ledger.answered) {
      const absl::Time sent = sent_at_[static_cast<size_t>(seq - 1)];
      for (const auto& [from, to] : ledger.forbidden) {
        if (sent > from && sent < to) {
          ++listed_late;
          break;
        }
      }
      const bool read = ledger.received.contains(seq);
      if (status == v1::DELIVERY_STATUS_QUEUED && read) ++queued_read;
      if ((status == v1::DELIVERY_STATUS_OK || status == v1::DELIVERY_STATUS_RPC_ERROR) && !read) {
        ++sync_ok_missing;
        if (missing_examples.size() < 5) missing_examples.push_back(seq);
      }
      if (t->role == Role::kHealthy && status == v1::DELIVERY_STATUS_QUEUED && !read) {
        ++queued_missing;
        if (missing_examples.size() < 5) missing_examples.push_back(seq);
      }
    }
    int64_t cross_connection = 0;
    for (const auto& [seq, times] : ledger.received) cross_connection += times - 1;
    cross_connection -= ledger.duplicates_on_one_connection;

    // Server side: "delivered" = notifications written + result replies received (OK);
    // "expired" = messages whose deadline came before they were written; "failed" = every other
    // outcome, RPC_ERROR replies included, immediate (QUEUE_FULL, CONNECT_FAILED while backing
    // off) or later (CONNECTION_LOST, reply TIMEOUT).
    const int64_t sync_delivered = ledger.sync_status[v1::DELIVERY_STATUS_OK];
    const int64_t queued = ledger.async_status[v1::DELIVERY_STATUS_QUEUED];
    const int64_t async_written = static_cast<int64_t>(state.delivered()) - sync_delivered;
    const int64_t async_lost = queued - async_written;  // expired or lost after QUEUED

    absl::StrAppend(
        &out,
        absl::StrFormat("%-13s %7d | %-44s | %7d %6d %6d %6d | %7d %5d %5d %5d\n",
                        RoleName(t->role), raised, answered, state.delivered(), state.failed(),
                        state.expired(), state.queued_messages() + state.outstanding_requests(),
                        ledger.received.size(), ledger.by_connection.size(),
                        ledger.duplicates_on_one_connection, late),
        absl::StrFormat("%-13s         async QUEUED %d: written %d, read %d, expired or lost "
                        "after queueing %d; reconnects %d; duplicates across connections %d\n",
                        "", queued, async_written, queued_read, async_lost, state.reconnects(),
                        cross_connection));

    const std::string who = absl::StrCat(RoleName(t->role), " (", t->socket, ")");
    EXPECT_EQ(raised, static_cast<int64_t>(state.delivered() + state.failed() + state.expired() +
                                           state.queued_messages() + state.outstanding_requests()))
        << who << ": raised != delivered + failed + expired + queued + outstanding";
    EXPECT_LE(static_cast<int64_t>(state.expired()),
              async_lost + ledger.sync_status[v1::DELIVERY_STATUS_TIMEOUT])
        << who << ": more expired than QUEUED-and-unwritten plus sync timeouts";
    EXPECT_GE(async_written, 0) << who << ": the server counts fewer deliveries than sync OKs";
    EXPECT_GE(async_lost, 0) << who << ": more notifications written than queued";
    EXPECT_LE(queued_read, async_written) << who << ": the peer read more than was written";
    EXPECT_EQ(ledger.duplicates_on_one_connection, 0)
        << who << ": seqs read twice on one connection, e.g. "
        << absl::StrJoin(ledger.duplicate_examples, ",");
    EXPECT_EQ(late, 0) << who << ": seqs read although raised after expiry/unsubscribe, e.g. "
                       << absl::StrJoin(late_examples, ",");
    EXPECT_EQ(listed_late, 0) << who << ": deliveries listed after expiry/unsubscribe";
    EXPECT_EQ(phantom, 0) << who << ": seqs read that the server never listed as QUEUED or sync, "
                          << "e.g. " << absl::StrJoin(phantom_examples, ",");
    EXPECT_EQ(sync_ok_missing, 0) << who << ": sync OK/RPC_ERROR never read by the peer, e.g. "
                                  << absl::StrJoin(missing_examples, ",");
    EXPECT_EQ(queued_missing, 0) << who << ": QUEUED to the healthy peer never read, e.g. "
                                 << absl::StrJoin(missing_examples, ",");
    EXPECT_EQ(ledger.unparsable, 0) << who << ": messages without a seq";
    // Every target was raised to; the healthy one delivered everything.
    EXPECT_GT(raised, 0) << who;
    if (t->role != Role::kExpiring && t->role != Role::kUnsubscribed) {
      EXPECT_EQ(raised, raises_async_ + raises_sync_ - raise_errors_)
          << who << ": a permanent subscription missing from some Raises, or listed twice";
    }
    if (t->role == Role::kHealthy) {
      EXPECT_EQ(async_lost, 0) << who << ": notifications to the healthy peer expired";
      EXPECT_EQ(state.expired(), 0u) << who << ": the server counts expired messages";
      EXPECT_GE(static_cast<int64_t>(ledger.received.size()),
                queued + ledger.sync_status[v1::DELIVERY_STATUS_OK])
          << who;
    }
    for (const auto& [status, count] : ledger.async_status) {
      totals_async[status] += count;
    }
    for (const auto& [status, count] : ledger.sync_status) totals_sync[status] += count;
    total_received += static_cast<int64_t>(ledger.received.size());
    // The expected failures of the misbehaving peers happened (the scenario does what it says).
    if (t->role == Role::kErrors) {
      EXPECT_GT(ledger.sync_status[v1::DELIVERY_STATUS_RPC_ERROR], 0) << who;
    }
    if (t->role == Role::kNoRead) {
      EXPECT_GT(ledger.sync_status[v1::DELIVERY_STATUS_TIMEOUT], 0) << who;
    }
    if (t->role == Role::kRestarted) {
      EXPECT_GT(state.failed() + state.expired(), 0u) << who << ": the outage failed nothing";
      EXPECT_GT(ledger.by_connection.size(), 1u) << who << ": never reconnected";
    }
    if (t->role == Role::kExpiring || t->role == Role::kUnsubscribed) {
      EXPECT_GE(ledger.forbidden.size(), 1u) << who;
    }
  }
  {
    std::string line = "deliveries: async";
    int64_t total = 0;
    for (const auto& [status, count] : totals_async) {
      absl::StrAppend(&line, " ", StatusShort(status), "=", count);
      total += count;
    }
    absl::StrAppend(&line, "; sync");
    for (const auto& [status, count] : totals_sync) {
      absl::StrAppend(&line, " ", StatusShort(status), "=", count);
      total += count;
    }
    absl::StrAppend(&out, line, "; ", total, " in all, ", total_received, " seqs read by peers\n");
  }
  EXPECT_EQ(raise_errors_, 0) << "Raise calls failed, first: " << first_raise_error_;
  EXPECT_EQ(unknown_deliveries_, 0) << "deliveries to sockets nobody subscribed";

  // RSS and fds.
  if (!samples_.empty()) {
    const Sample& first = samples_.front();
    const Sample& last = samples_.back();
    int64_t base_rss = 0;
    int base_fds = 0;
    std::vector<int64_t> tail_rss;
    int tail_fds = 0;
    int64_t peak_rss = 0;
    int peak_fds = 0;
    for (const Sample& s : samples_) {
      const double f = absl::FDivDuration(s.at, duration_);
      peak_rss = std::max(peak_rss, s.rss_kb);
      peak_fds = std::max(peak_fds, s.fds);
      if (f >= 0.35 && f <= 0.5) {
        base_rss = std::max(base_rss, s.rss_kb);
        base_fds = std::max(base_fds, s.fds);
      }
      if (f >= 0.85) {
        tail_rss.push_back(s.rss_kb);
        tail_fds = std::max(tail_fds, s.fds);
      }
    }
    std::sort(tail_rss.begin(), tail_rss.end());
    const int64_t tail_median = tail_rss.empty() ? 0 : tail_rss[tail_rss.size() / 2];
    absl::StrAppend(
        &out,
        absl::StrFormat("eventbusd RSS: start %d KiB, mid (max 0.35-0.5) %d KiB, end (median "
                        "last 15%%) %d KiB, after drain %d KiB, peak %d KiB\n",
                        first.rss_kb, base_rss, tail_median, last.rss_kb, peak_rss),
        absl::StrFormat("eventbusd fds: start %d, mid (max 0.35-0.5) %d, end (max last 15%%) %d, "
                        "after drain %d, peak %d; %d samples\n",
                        first.fds, base_fds, tail_fds, last.fds, peak_fds, samples_.size()));
    if (base_rss > 0 && !tail_rss.empty()) {
      if (kCheckRss) {
        EXPECT_LE(tail_median, static_cast<int64_t>(base_rss * (1 + kRssGrowth)) + kRssSlackKb)
            << "RSS grew in the second half";
      }
      EXPECT_LE(tail_fds, base_fds + kFdSlack) << "open fds grew in the second half";
      EXPECT_LE(last.fds, base_fds + kFdSlack) << "open fds after the drain";
    } else {
      ADD_FAILURE() << "too few RSS/fd samples";
    }
  }
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);
}

TEST(LedgerTest, EtcdStoreAccountsForEveryDelivery) {
  if (!EtcdHarness::Available()) {
    GTEST_SKIP() << EtcdHarness::kEtcdBinary << " is not installed (package etcd-server)";
  }
  const int seconds = EnvInt("LEDGER_SECONDS", 60);
  if (seconds == 0) GTEST_SKIP() << "LEDGER_SECONDS=0";
  LedgerRun run(StoreKind::kEtcd, absl::Seconds(std::max(seconds, 20)), EnvInt("LEDGER_RATE", 100));
  run.Run();
}

TEST(LedgerTest, SqliteStoreAccountsForEveryDelivery) {
  const int seconds = EnvInt("LEDGER_SQLITE_SECONDS", 20);
  if (seconds == 0) GTEST_SKIP() << "LEDGER_SQLITE_SECONDS=0";
  LedgerRun run(StoreKind::kSqlite, absl::Seconds(std::max(seconds, 15)),
                EnvInt("LEDGER_RATE", 100));
  run.Run();
}

}  // namespace
}  // namespace eventbus
