#include "server/store/sqlite_store.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/base/mutex.h"
#include "tests/store/store_test_listener.h"
#include "tests/testing/wait.h"

namespace eventbus::store {
namespace {

using ::testing::HasSubstr;

// A time with sub-microsecond digits, to check what precision survives a round trip.
absl::Time SomeInstant(int64_t seconds_from_now) {
  return absl::FromUnixNanos(1'700'000'000'123'456'789) + absl::Seconds(seconds_from_now);
}

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/eventbus-sqlite-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/subscriptions.db";
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::unique_ptr<SqliteStore> Open(RecordingListener* listener, std::string path = "") {
    SqliteStoreOptions options;
    options.path = path.empty() ? path_ : path;
    options.busy_timeout = busy_timeout_;
    auto store = std::make_unique<SqliteStore>(options);
    absl::Status status = store->Start(listener);
    EXPECT_TRUE(status.ok()) << status;
    return status.ok() ? std::move(store) : nullptr;
  }

  absl::Status StartError(const std::string& path) {
    SqliteStore store(SqliteStoreOptions{path});
    RecordingListener listener;
    return store.Start(&listener);
  }

  // Runs `sql` on the file through a separate connection.
  void ExecOnFile(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }

  // Runs a one-row, one-column query on the file through a separate connection.
  int64_t QueryInt(const std::string& sql) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    int64_t value = -1;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      value = sqlite3_column_int64(stmt, 0);
    }
    EXPECT_NE(value, -1) << sql << ": " << sqlite3_errmsg(db);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return value;
  }

  // Puts `count` subscriptions with distinct ids and sockets, all queued at once (one or a few
  // group commits), and waits for every acknowledgement.
  void PutMany(SqliteStore& store, int count) {
    std::atomic<int> acked{0};
    eventbus::Notification all;
    for (int i = 0; i < count; ++i) {
      store.Put(MakeSubscription(absl::StrCat("id", 100000 + i), "E_MANY",
                                 absl::StrCat("tcp:10.0.0.1:", 1000 + i, "/method_", i),
                                 SomeInstant(0), SomeInstant(3600)),
                [&, count](absl::Status status) {
                  EXPECT_TRUE(status.ok()) << status;
                  if (acked.fetch_add(1) + 1 == count) all.Notify();
                });
    }
    ASSERT_TRUE(all.WaitForNotificationWithTimeout(absl::Seconds(60)));
  }

  // Overwrites page `page` (numbered from 1, as SQLite does) of the closed file with garbage.
  void CorruptPage(int64_t page) {
    const int64_t page_size = QueryInt("PRAGMA page_size");
    std::fstream file(path_, std::ios::binary | std::ios::in | std::ios::out);
    ASSERT_TRUE(file.good());
    file.seekp((page - 1) * page_size);
    std::string garbage(static_cast<size_t>(page_size), '\xa5');
    file.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
    ASSERT_TRUE(file.good());
  }

  int64_t UniqueIndexRootPage() {
    // The UNIQUE (event, socket) constraint's index; id's PRIMARY KEY is autoindex_1.
    return QueryInt(
        "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_subscriptions_2'");
  }

  std::string dir_;
  std::string path_;
  absl::Duration busy_timeout_ = absl::Seconds(5);
};

TEST_F(SqliteStoreTest, ANewFileStartsEmpty) {
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->kind(), "sqlite");
  EXPECT_TRUE(store->healthy());
  ListenerState state = listener.state();
  EXPECT_EQ(state.reloads, 1);
  EXPECT_TRUE(state.subs.empty());
  EXPECT_TRUE(std::filesystem::exists(path_));
}

TEST_F(SqliteStoreTest, PutSubscriptionsAreReloadedAfterReopen) {
  std::vector<registry::SubscriptionPtr> subs = {
      MakeSubscription("00000000000000a1", "E_PIKE_BLOCKED", "tcp:127.0.0.1:8080/handle",
                       SomeInstant(0), SomeInstant(3600), "opensips_event"),
      MakeSubscription("00000000000000a2", "E_MY_EVENT", "tcp:Example.COM:9", SomeInstant(1)),
      MakeSubscription("00000000000000a3", "E_MY_EVENT",
                       "virtual:FAILOVER tcp:[::1]:8080 tcp:h:1/m", SomeInstant(2), SomeInstant(10),
                       ""),
  };
  {
    RecordingListener listener;
    auto store = Open(&listener);
    ASSERT_NE(store, nullptr);
    for (const auto& sub : subs) ASSERT_TRUE(PutAndWait(*store, sub).ok());
    store->Stop();
  }
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  ListenerState state = listener.state();
  ASSERT_EQ(state.subs.size(), subs.size());
  for (const auto& want : subs) {
    ASSERT_EQ(state.subs.count(want->id), 1u) << want->id;
    ExpectSameSubscription(*state.subs[want->id], *want);
  }
  // Reloaded subscriptions are parsed again, not just text.
  EXPECT_EQ(state.subs["00000000000000a2"]->target.targets.at(0).host, "example.com");
  EXPECT_TRUE(state.subs["00000000000000a3"]->target.is_virtual);
  EXPECT_EQ(state.subs["00000000000000a3"]->target.targets.size(), 2u);
}

TEST_F(SqliteStoreTest, PutWithTheSameIdReplacesTheRow) {
  auto first =
      MakeSubscription("00000000000000b1", "E", "tcp:h:1", SomeInstant(0), SomeInstant(60));
  auto refreshed =
      MakeSubscription("00000000000000b1", "E", "tcp:h:1", SomeInstant(0), SomeInstant(7200), "p");
  {
    RecordingListener listener;
    auto store = Open(&listener);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(PutAndWait(*store, first).ok());
    ASSERT_TRUE(PutAndWait(*store, refreshed).ok());
  }
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  ListenerState state = listener.state();
  ASSERT_EQ(state.subs.size(), 1u);
  ExpectSameSubscription(*state.subs.begin()->second, *refreshed);
}

TEST_F(SqliteStoreTest, DeletedSubscriptionsStayDeletedAfterReopen) {
  auto keep = MakeSubscription("00000000000000c1", "E", "tcp:h:1", SomeInstant(0));
  auto gone = MakeSubscription("00000000000000c2", "E", "tcp:h:2", SomeInstant(0));
  {
    RecordingListener listener;
    auto store = Open(&listener);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(PutAndWait(*store, keep).ok());
    ASSERT_TRUE(PutAndWait(*store, gone).ok());
    ASSERT_TRUE(DeleteAndWait(*store, gone).ok());
    // Deleting what is not there is fine.
    ASSERT_TRUE(DeleteAndWait(*store, gone).ok());
  }
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  ListenerState state = listener.state();
  ASSERT_EQ(state.subs.size(), 1u);
  EXPECT_EQ(state.subs.begin()->first, keep->id);
}

TEST_F(SqliteStoreTest, AThousandConcurrentPutsAreAllAcknowledgedAndDurable) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 125;
  {
    RecordingListener listener;
    auto store = Open(&listener);
    ASSERT_NE(store, nullptr);
    std::atomic<int> ok{0}, failed{0}, pending{kThreads * kPerThread};
    eventbus::Notification all_done;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          int n = t * kPerThread + i;
          store->Put(MakeSubscription(absl::StrCat("id", n), "E_BULK",
                                      absl::StrCat("tcp:10.0.0.1:", 1000 + n), SomeInstant(0),
                                      SomeInstant(3600)),
                     [&](absl::Status status) {
                       (status.ok() ? ok : failed).fetch_add(1);
                       if (pending.fetch_sub(1) == 1) all_done.Notify();
                     });
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    ASSERT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    EXPECT_EQ(ok.load(), kThreads * kPerThread);
    EXPECT_EQ(failed.load(), 0);
  }
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(listener.state().subs.size(), static_cast<size_t>(kThreads * kPerThread));
}

// The start-up load reads SQLite's column buffers in place and checks the file on a second
// connection meanwhile: every field of thousands of rows, of every shape, comes back as written.
TEST_F(SqliteStoreTest, ThousandsOfRowsOfEveryShapeAreLoadedExactlyAsWritten) {
  constexpr int kCount = 3000;
  std::vector<registry::SubscriptionPtr> written;
  for (int i = 0; i < kCount; ++i) {
    std::string socket;
    switch (i % 4) {
      case 0:
        socket = absl::StrCat("tcp:10.0.", i / 256, ".", i % 256, ":", 1000 + i);
        break;
      case 1:
        socket = absl::StrCat("tls:host-", i, ".example.com:443/method_", i);
        break;
      case 2:
        socket = absl::StrCat("tcp:[::1]:", 2000 + i, "/m");
        break;
      default:
        socket = absl::StrCat("virtual:ROUND-ROBIN tcp:10.1.0.1:", 3000 + i,
                              " tcp:10.1.0.2:", 3000 + i, "/x");
    }
    std::optional<std::string> event_param;
    if (i % 3 == 1) event_param = absl::StrCat("param_", i);
    if (i % 3 == 2) event_param = "";
    registry::SubscriptionPtr sub =
        MakeSubscription(absl::StrCat(absl::Hex(0x1000000000000000ull + i, absl::kZeroPad16)),
                         absl::StrCat("E_SHAPE_", i % 37), socket, SomeInstant(i),
                         i % 5 == 0 ? absl::InfiniteFuture() : SomeInstant(3600 + i), event_param);
    written.push_back(i % 7 == 0 ? OwnedBy(sub, absl::StrCat("owner-", i % 3)) : sub);
  }
  {
    RecordingListener listener;
    auto store = Open(&listener);
    ASSERT_NE(store, nullptr);
    std::atomic<int> failed{0}, pending{kCount};
    eventbus::Notification all_done;
    for (const registry::SubscriptionPtr& sub : written) {
      store->Put(sub, [&](absl::Status status) {
        if (!status.ok()) failed.fetch_add(1);
        if (pending.fetch_sub(1) == 1) all_done.Notify();
      });
    }
    ASSERT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    EXPECT_EQ(failed.load(), 0);
  }
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  ListenerState state = listener.state();
  ASSERT_EQ(state.subs.size(), written.size());
  for (const registry::SubscriptionPtr& want : written) {
    auto it = state.subs.find(want->id);
    ASSERT_NE(it, state.subs.end()) << want->id;
    ExpectSameSubscription(*it->second, *want);
    EXPECT_EQ(it->second->target.is_virtual, want->target.is_virtual) << want->id;
    EXPECT_EQ(it->second->target.targets, want->target.targets) << want->id;
  }
}

TEST_F(SqliteStoreTest, StopCommitsWhatIsStillQueued) {
  constexpr int kCount = 200;
  std::atomic<int> ok{0};
  {
    RecordingListener listener;
    auto store = Open(&listener);
    ASSERT_NE(store, nullptr);
    for (int n = 0; n < kCount; ++n) {
      store->Put(MakeSubscription(absl::StrCat("q", n), "E", absl::StrCat("tcp:h:", 1 + n),
                                  SomeInstant(0)),
                 [&](absl::Status status) {
                   if (status.ok()) ok.fetch_add(1);
                 });
    }
    store->Stop();
    // Every write was acknowledged before Stop returned.
    EXPECT_EQ(ok.load(), kCount);
  }
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(listener.state().subs.size(), static_cast<size_t>(kCount));
}

TEST_F(SqliteStoreTest, WritesAfterStopFailUnavailable) {
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  store->Stop();
  store->Stop();  // idempotent
  absl::Status status = PutAndWait(*store, MakeSubscription("x1", "E", "tcp:h:1", SomeInstant(0)));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr(path_));
}

TEST_F(SqliteStoreTest, ACorruptFileFailsStartNamingThePath) {
  {
    std::ofstream out(path_, std::ios::binary);
    for (int i = 0; i < 512; ++i) out << "this is not an sqlite database ";
  }
  absl::Status status = StartError(path_);
  EXPECT_EQ(status,
            absl::UnavailableError(absl::StrCat("sqlite \"", path_, "\": file is not a database")));
}

// Issue 7, defect 7: loading the rows scans the table and never reads the indexes, so a file
// whose index page was corrupt started fine and then failed every write. Start checks the file
// (PRAGMA quick_check) and refuses it, naming it.
TEST_F(SqliteStoreTest, ACorruptIndexPageFailsStartNamingThePath) {
  {
    RecordingListener listener;
    auto store = Open(&listener);
    ASSERT_NE(store, nullptr);
    PutMany(*store, 2000);
    store->Stop();  // the last connection checkpoints the WAL into the file
  }
  const int64_t root = UniqueIndexRootPage();
  ASSERT_GT(root, 1);
  // 2000 rows span several index pages: the root is an interior page every lookup goes through.
  ASSERT_GT(QueryInt("PRAGMA page_count"), root);
  CorruptPage(root);

  absl::Status status = StartError(path_);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(absl::StrCat("sqlite \"", path_, "\": ")));
  EXPECT_THAT(std::string(status.message()), HasSubstr("database file is corrupt"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("restore it from a backup"));
}

// The table itself corrupt: the load and the check beside it both fail; Start says DATA_LOSS,
// naming the file, and the listener never sees a row.
TEST_F(SqliteStoreTest, ACorruptTablePageFailsStartAndLoadsNothing) {
  {
    RecordingListener listener;
    auto store = Open(&listener);
    ASSERT_NE(store, nullptr);
    PutMany(*store, 2000);
    store->Stop();
  }
  const int64_t root = QueryInt("SELECT rootpage FROM sqlite_master WHERE name = 'subscriptions'");
  ASSERT_GT(root, 1);
  CorruptPage(root);

  SqliteStore store(SqliteStoreOptions{path_});
  RecordingListener listener;
  absl::Status status = store.Start(&listener);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(absl::StrCat("sqlite \"", path_, "\": ")));
  EXPECT_THAT(std::string(status.message()), HasSubstr("database file is corrupt"));
  EXPECT_EQ(listener.state().reloads, 0);
}

// A file that goes bad under a running store: the write that finds it says so (DATA_LOSS, not
// a retryable UNAVAILABLE) and the store turns unhealthy.
TEST_F(SqliteStoreTest, AWriteThatFindsTheFileCorruptFailsDataLoss) {
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  PutMany(*store, 2000);
  // Move everything from the WAL into the file, then corrupt the index there.
  ExecOnFile("PRAGMA wal_checkpoint(TRUNCATE)");
  const int64_t root = UniqueIndexRootPage();
  ASSERT_GT(root, 1);
  CorruptPage(root);
  // Another connection's write makes the store drop its page cache and read the file again.
  ExecOnFile("PRAGMA user_version=2");

  absl::Status status = PutAndWait(
      *store, MakeSubscription("x1", "E_MANY", "tcp:10.0.0.2:1", SomeInstant(0), SomeInstant(60)));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(absl::StrCat("sqlite \"", path_, "\": ")));
  EXPECT_THAT(std::string(status.message()), HasSubstr("database file is corrupt"));
  EXPECT_FALSE(store->healthy());
}

// Issue 7, defect 7: the WAL grew by every commit and filled small volumes. It is checkpointed
// and starts over as it goes, so it stays below SqliteStore::kMaxWalBytes however many commits
// (issue 11: checkpointed beside the commits, and started over at kWalLimitPages).
TEST_F(SqliteStoreTest, TheWalStaysBoundedOverFiveThousandCommits) {
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  const std::string wal = path_ + "-wal";
  constexpr int kCommits = 5000;
  uintmax_t largest = 0;
  std::vector<registry::SubscriptionPtr> kept;
  for (int i = 0; i < kCommits; ++i) {
    auto sub = MakeSubscription(absl::StrCat("w", i), "E_WAL",
                                absl::StrCat("tcp:10.0.0.1:", 1000 + i % 60000, "/method_", i),
                                SomeInstant(0), SomeInstant(3600), std::string(200, 'p'));
    // Every tenth commit deletes the previous subscription: rows are rewritten, not only added.
    if (i % 10 == 9) {
      ASSERT_TRUE(DeleteAndWait(*store, kept.back()).ok());
      kept.pop_back();
    } else {
      ASSERT_TRUE(PutAndWait(*store, sub).ok()) << i;
      kept.push_back(sub);
    }
    std::error_code error;
    uintmax_t size = std::filesystem::file_size(wal, error);
    if (!error) largest = std::max(largest, size);
  }
  EXPECT_GT(largest, 0u);
  EXPECT_LE(largest, SqliteStore::kMaxWalBytes) << "the WAL grew to " << largest << " bytes";
  std::cout << "largest WAL over " << kCommits << " commits: " << largest << " bytes (bound "
            << SqliteStore::kMaxWalBytes << ")\n";
  store->Stop();

  RecordingListener reopened;
  store = Open(&reopened);
  ASSERT_NE(store, nullptr);
  ListenerState state = reopened.state();
  ASSERT_EQ(state.subs.size(), kept.size());
  for (const auto& want : kept) {
    ASSERT_EQ(state.subs.count(want->id), 1u) << want->id;
    ExpectSameSubscription(*state.subs[want->id], *want);
  }
}

// Issue 11: the writer connection keeps the durability it had (WAL, synchronous=FULL) and leaves
// checkpoints to the checkpoint thread (no wal_autocheckpoint inside its COMMITs).
TEST_F(SqliteStoreTest, TheWriterCommitsWithFullSyncAndWithoutCheckpointing) {
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  const SqliteStore::Settings& settings = store->settings();
  EXPECT_EQ(settings.journal_mode, "wal");
  EXPECT_EQ(settings.synchronous, 2) << "2 is FULL";
  EXPECT_EQ(settings.wal_autocheckpoint, 0);
  EXPECT_EQ(settings.journal_size_limit, SqliteStore::kWalTruncateBytes);
  // WAL is a property of the file: a connection of its own sees it too.
  store->Stop();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)), "wal");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

// Issue 11: with checkpoints on a thread of their own, a Put is still acknowledged only once its
// commit is on disk. A child process writes rows large enough that the log is checkpointed and
// starts over several times, reporting each acknowledgement through a pipe; it is killed with
// SIGKILL mid-stream, and every row it acknowledged is in the file.
TEST_F(SqliteStoreTest, AcknowledgedPutsSurviveSigkillWhileTheLogIsCheckpointed) {
  int acks[2];
  ASSERT_EQ(::pipe(acks), 0);
  // Rows of about 1 KiB: 200 per group commit add some 60 pages to the log.
  constexpr int kBatch = 200;
  // Enough acknowledgements for the log to reach kWalLimitPages about three times over.
  constexpr size_t kKillAfter = 24000;
  const std::string param(1000, 'q');
  auto make = [&](uint32_t i) {
    return MakeSubscription(absl::StrCat("k", absl::Hex(i * 2654435761u, absl::kZeroPad8), i),
                            "E_KILL", absl::StrCat("tcp:10.0.0.2:", 1000 + i % 60000, "/m", i),
                            SomeInstant(0), SomeInstant(3600), param);
  };
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(acks[0]);
    SqliteStore store(SqliteStoreOptions{path_});
    RecordingListener listener;
    if (!store.Start(&listener).ok()) ::_exit(2);
    // Killed long before the end; the bound only keeps an orphan from writing forever.
    for (uint32_t next = 0; next < 10 * kKillAfter; next += kBatch) {
      std::atomic<int> pending{kBatch};
      eventbus::Notification all;
      for (uint32_t i = next; i < next + kBatch; ++i) {
        store.Put(make(i), [&, i](absl::Status status) {
          if (!status.ok()) ::_exit(3);
          if (::write(acks[1], &i, sizeof(i)) != sizeof(i)) ::_exit(4);
          if (pending.fetch_sub(1) == 1) all.Notify();
        });
      }
      all.WaitForNotification();
    }
    ::_exit(0);
  }
  ::close(acks[1]);
  std::vector<uint32_t> acked;
  uintmax_t largest_wal = 0;
  uint32_t i = 0;
  while (acked.size() < kKillAfter && ::read(acks[0], &i, sizeof(i)) == sizeof(i)) {
    acked.push_back(i);
    if (acked.size() % 1000 == 0) {
      std::error_code error;
      uintmax_t size = std::filesystem::file_size(path_ + "-wal", error);
      if (!error) largest_wal = std::max(largest_wal, size);
    }
  }
  ASSERT_EQ(acked.size(), kKillAfter) << "the writing child stopped early";
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  int wstatus = 0;
  ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
  EXPECT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL) << wstatus;
  // Acknowledgements written before the kill.
  while (::read(acks[0], &i, sizeof(i)) == sizeof(i)) acked.push_back(i);
  ::close(acks[0]);
  EXPECT_LE(largest_wal, SqliteStore::kMaxWalBytes);

  RecordingListener reopened;
  auto store = Open(&reopened);
  ASSERT_NE(store, nullptr);
  ListenerState state = reopened.state();
  EXPECT_GE(state.subs.size(), acked.size());
  size_t missing = 0;
  for (uint32_t n : acked) {
    registry::SubscriptionPtr want = make(n);
    auto it = state.subs.find(want->id);
    if (it == state.subs.end()) {
      ++missing;
      continue;
    }
    if (missing == 0) ExpectSameSubscription(*it->second, *want);
  }
  EXPECT_EQ(missing, 0u) << "of " << acked.size() << " acknowledged rows";
  std::cout << acked.size() << " acknowledged rows before SIGKILL, all in the file; largest WAL "
            << largest_wal << " bytes\n";
}

// Issue 11: acknowledgements run on a thread of their own, in commit order, so a slow one (at 1M
// subscriptions the registry's Upsert and the gRPC answer) does not hold up the next commit.
TEST_F(SqliteStoreTest, ASlowAcknowledgementDoesNotHoldUpTheNextCommit) {
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  eventbus::Notification release_first;
  eventbus::Mutex mu;
  std::vector<std::string> acked;
  eventbus::Notification second_acked;
  store->Put(MakeSubscription("first", "E_SLOW", "tcp:10.0.0.3:1/a", SomeInstant(0)),
             [&](absl::Status status) {
               EXPECT_TRUE(status.ok()) << status;
               release_first.WaitForNotification();
               eventbus::MutexLock lock(&mu);
               acked.push_back("first");
             });
  // Queued after the first commit began, so committed by a later one.
  ASSERT_TRUE(testing::WaitFor(absl::Seconds(30), [&] {
    return QueryInt("SELECT count(*) FROM subscriptions WHERE id = 'first'") == 1;
  }));
  store->Put(MakeSubscription("second", "E_SLOW", "tcp:10.0.0.3:2/b", SomeInstant(0)),
             [&](absl::Status status) {
               EXPECT_TRUE(status.ok()) << status;
               eventbus::MutexLock lock(&mu);
               acked.push_back("second");
               second_acked.Notify();
             });
  // Committed (another connection reads it) while the first acknowledgement still waits.
  EXPECT_TRUE(testing::WaitFor(absl::Seconds(30), [&] {
    return QueryInt("SELECT count(*) FROM subscriptions WHERE id = 'second'") == 1;
  }));
  EXPECT_FALSE(second_acked.HasBeenNotified());
  release_first.Notify();
  ASSERT_TRUE(second_acked.WaitForNotificationWithTimeout(absl::Seconds(30)));
  eventbus::MutexLock lock(&mu);
  EXPECT_EQ(acked, (std::vector<std::string>{"first", "second"}));
}

TEST_F(SqliteStoreTest, ADirectoryWhereTheFileShouldBeFailsStart) {
  std::filesystem::create_directory(path_);
  absl::Status status = StartError(path_);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("sqlite \"", path_, "\"")));
  EXPECT_THAT(status.message(), HasSubstr("is a directory"));
}

TEST_F(SqliteStoreTest, APathUnderARegularFileFailsStart) {
  std::string file = dir_ + "/plain-file";
  std::ofstream(file) << "x";
  std::string path = file + "/subscriptions.db";
  absl::Status status = StartError(path);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("sqlite \"", path, "\"")));
  EXPECT_THAT(status.message(), HasSubstr("Not a directory"));
}

TEST_F(SqliteStoreTest, AMissingDirectoryFailsStart) {
  std::string path = dir_ + "/no/such/dir/subscriptions.db";
  absl::Status status = StartError(path);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("sqlite \"", path, "\"")));
  EXPECT_THAT(status.message(), HasSubstr("No such file or directory"));
}

TEST_F(SqliteStoreTest, ASchemaFromANewerVersionIsRefused) {
  ExecOnFile("PRAGMA user_version=99");
  absl::Status status = StartError(path_);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr(path_));
  EXPECT_THAT(status.message(), HasSubstr("schema version 99"));
}

TEST_F(SqliteStoreTest, TheOwnerIsKeptAcrossReopen) {
  {
    RecordingListener listener;
    auto store = Open(&listener);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(
        PutAndWait(*store, OwnedBy(MakeSubscription("a", "E", "tcp:h:1", SomeInstant(0)), "alice"))
            .ok());
    ASSERT_TRUE(PutAndWait(*store, MakeSubscription("b", "E", "tcp:h:2", SomeInstant(0))).ok());
  }
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  ListenerState state = listener.state();
  ASSERT_EQ(state.subs.size(), 2u);
  EXPECT_EQ(state.subs.at("a")->owner, "alice");
  EXPECT_EQ(state.subs.at("b")->owner, "");
}

// A file written before owners were kept (schema version 1, made here with that version's exact
// CREATE TABLE) is migrated in place: its rows load with owner "", and owners are kept from then
// on.
TEST_F(SqliteStoreTest, AVersion1FileIsMigratedAndItsRowsHaveNoOwner) {
  ExecOnFile(
      "CREATE TABLE IF NOT EXISTS subscriptions ("
      "  id TEXT PRIMARY KEY NOT NULL,"
      "  event TEXT NOT NULL,"
      "  socket TEXT NOT NULL,"
      "  create_time_us INTEGER NOT NULL,"
      "  expire_time_us INTEGER,"
      "  event_param TEXT,"
      "  UNIQUE (event, socket));"
      "PRAGMA user_version=1;"
      "INSERT INTO subscriptions (id, event, socket, create_time_us, expire_time_us, event_param) "
      "VALUES ('old1', 'E', 'tcp:h:1/m', 1700000000123456, NULL, 'opensips_event'),"
      "       ('old2', 'F', 'tcp:h:2', 1700000000000000, 4000000000000000, NULL);");
  {
    RecordingListener listener;
    auto store = Open(&listener);
    ASSERT_NE(store, nullptr);
    ListenerState state = listener.state();
    ASSERT_EQ(state.subs.size(), 2u);
    const registry::Subscription& old1 = *state.subs.at("old1");
    EXPECT_EQ(old1.owner, "");
    EXPECT_EQ(old1.socket, "tcp:h:1/m");
    EXPECT_EQ(old1.event_param, "opensips_event");
    EXPECT_FALSE(old1.Expires());
    EXPECT_EQ(state.subs.at("old2")->owner, "");
    EXPECT_EQ(absl::ToUnixMicros(state.subs.at("old2")->expire_time), 4000000000000000);
    EXPECT_EQ(QueryInt("PRAGMA user_version"), 2);

    // An admin's refresh of an old row keeps it ownerless; a new row has its owner.
    ASSERT_TRUE(PutAndWait(*store, state.subs.at("old2")).ok());
    ASSERT_TRUE(
        PutAndWait(*store, OwnedBy(MakeSubscription("new", "E", "tcp:h:3", SomeInstant(0)), "bob"))
            .ok());
  }
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  ListenerState state = listener.state();
  ASSERT_EQ(state.subs.size(), 3u);
  EXPECT_EQ(state.subs.at("old1")->owner, "");
  EXPECT_EQ(state.subs.at("old2")->owner, "");
  EXPECT_EQ(state.subs.at("new")->owner, "bob");
  EXPECT_EQ(QueryInt("SELECT COUNT(*) FROM subscriptions WHERE owner = ''"), 2);
}

TEST_F(SqliteStoreTest, ARowThatNoLongerParsesIsSkipped) {
  {
    RecordingListener listener;
    auto store = Open(&listener);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(PutAndWait(*store, MakeSubscription("good", "E", "tcp:h:1", SomeInstant(0))).ok());
  }
  ExecOnFile(
      "INSERT INTO subscriptions (id, event, socket, create_time_us) "
      "VALUES ('bad', 'E', 'tcp:h:70000', 0)");
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  ListenerState state = listener.state();
  ASSERT_EQ(state.subs.size(), 1u);
  EXPECT_EQ(state.subs.begin()->first, "good");
}

TEST_F(SqliteStoreTest, AFailedWriteMakesItUnhealthyUntilAWriteSucceeds) {
  busy_timeout_ = absl::Milliseconds(50);
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);

  // Another connection holds the write lock, so the store's commit fails (SQLITE_BUSY).
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  absl::Status status = PutAndWait(*store, MakeSubscription("w1", "E", "tcp:h:1", SomeInstant(0)));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr(path_));
  EXPECT_FALSE(store->healthy());
  EXPECT_EQ(listener.state().health, std::vector<bool>{false});

  ASSERT_EQ(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  EXPECT_TRUE(PutAndWait(*store, MakeSubscription("w1", "E", "tcp:h:1", SomeInstant(0))).ok());
  EXPECT_TRUE(store->healthy());
  EXPECT_EQ(listener.state().health, (std::vector<bool>{false, true}));
}

TEST_F(SqliteStoreTest, OpenStoreSqliteKeepsTheFileInTheDataDirectoryItCreates) {
  const std::string data_dir = dir_ + "/var/lib/eventbus";
  absl::StatusOr<std::unique_ptr<SubscriptionStore>> store = OpenStore("sqlite", data_dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->kind(), "sqlite");
  RecordingListener listener;
  ASSERT_TRUE((*store)->Start(&listener).ok());
  ASSERT_TRUE(PutAndWait(**store, MakeSubscription("d1", "E", "tcp:h:1", SomeInstant(0))).ok());
  (*store)->Stop();
  EXPECT_TRUE(std::filesystem::is_regular_file(data_dir + "/subscriptions.db"));
}

TEST_F(SqliteStoreTest, OpenStoreSqliteWithAPathUsesThatFile) {
  absl::StatusOr<std::unique_ptr<SubscriptionStore>> store =
      OpenStore(absl::StrCat("sqlite:", dir_, "/custom.db"), "/nonexistent");
  ASSERT_TRUE(store.ok()) << store.status();
  RecordingListener listener;
  ASSERT_TRUE((*store)->Start(&listener).ok());
  (*store)->Stop();
  EXPECT_TRUE(std::filesystem::is_regular_file(dir_ + "/custom.db"));
}

TEST_F(SqliteStoreTest, OpenStoreSqliteFailsWhenTheDataDirectoryCannotBeCreated) {
  std::string file = dir_ + "/plain-file";
  std::ofstream(file) << "x";
  absl::StatusOr<std::unique_ptr<SubscriptionStore>> store = OpenStore("sqlite", file + "/data");
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(),
              HasSubstr(absl::StrCat("cannot create data directory \"", file, "/data\"")));
  EXPECT_EQ(OpenStore("sqlite:", dir_).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SqliteStoreTest, StartTwiceIsRefused) {
  RecordingListener listener;
  auto store = Open(&listener);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->Start(&listener).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace eventbus::store
