// The embedded default store (SPEC §8): subscriptions in one SQLite file that survives restarts and
// SIGKILL. Writes run on one writer thread; Put and Delete enqueue and return, and the writer
// commits everything queued in one transaction (group commit); once committed, the batch's
// acknowledgements run on a second thread while the writer commits the next batch. A third
// thread, on a connection of its own, checkpoints the write-ahead log into the file beside the
// commits, so that an acknowledgement waits for its commit's fsync and no other.
#ifndef EVENTBUS_SERVER_STORE_SQLITE_STORE_H_
#define EVENTBUS_SERVER_STORE_SQLITE_STORE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/base/mutex.h"
#include "server/store/subscription_store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace eventbus::store {

struct SqliteStoreOptions {
  // The database file; created (with its schema) when missing. Its directory must exist.
  std::string path;
  // How long a write waits for a lock held by another connection before it fails.
  absl::Duration busy_timeout = absl::Seconds(5);
};

// Owned by whoever opened it (OpenStore). Thread-safe. `done` callbacks and OnHealth run on the
// store's acknowledging thread, in commit order (OnHealth before the `done`s of the commit that
// changed it), OnReload on the thread calling Start (serialised with OnHealth); `done` runs
// inline only when the store is not running.
class SqliteStore final : public SubscriptionStore {
 public:
  explicit SqliteStore(SqliteStoreOptions options);
  ~SqliteStore() override;

  // Opens or creates the file, checks it (PRAGMA quick_check: every page and b-tree, indexes
  // included; about 1 s for 1M subscriptions, on a second connection and thread while the rows
  // load, so it costs start-up little on two cores) and the schema version, loads every row into
  // listener->OnReload (only once both the load and the check succeeded) and starts the writer
  // thread; logs how long the read, the check and the listener took. A file of an older schema is
  // migrated in place first (version 1 -> 2: an `owner` column, '' for the rows already there).
  // Errors name the file: `sqlite "/data/subscriptions.db": file is not a database`. DATA_LOSS when
  // the file is corrupt; FAILED_PRECONDITION when it was written by a newer schema; UNAVAILABLE
  // when it cannot be opened or read.
  absl::Status Start(Listener* listener) override;
  // Commits what is queued, then stops the writer and closes the file. Idempotent.
  void Stop() override;

  // done(OK) once the change is committed (WAL, synchronous=FULL: on disk); UNAVAILABLE when the
  // write failed (disk full, I/O error, locked) or the store is not running; DATA_LOSS when the
  // file turned out to be corrupt (no retry helps: it must be restored).
  void Put(registry::SubscriptionPtr sub, Done done) override;
  void Delete(registry::SubscriptionPtr sub, Done done) override;

  // False after a failed commit, true again after a successful one.
  bool healthy() const override { return healthy_.load(); }
  absl::string_view kind() const override { return "sqlite"; }

  const std::string& path() const { return options_.path; }

  // The write-ahead log stays below kMaxWalBytes however many commits (a test checks 5,000),
  // unless one group commit alone carries more than a fifth of it. Every kCheckpointPages pages
  // it gains, the checkpoint thread copies it into the file while the writer goes on committing
  // (SQLite's own checkpoint, run inside COMMIT, cost every acknowledgement two more fsyncs: the
  // file's and the restarted log's header). A log that is copied while it grows never starts
  // over, so once it holds kWalLimitPages the writer, between two commits, waits for the copy to
  // finish and completes it; the next commit then starts the log over, reusing the file (cut back
  // to kWalTruncateBytes only after a commit that made it larger).
  static constexpr int kCheckpointPages = 256;  // 1 MiB at SQLite's 4 KiB pages
  static constexpr int kWalLimitPages = 2048;   // 8 MiB
  static constexpr int64_t kWalTruncateBytes = 9 * 1024 * 1024;
  static constexpr uintmax_t kMaxWalBytes = 10 * 1024 * 1024;

  // The writer connection's settings as SQLite reports them after Start (PRAGMA journal_mode,
  // synchronous, wal_autocheckpoint, journal_size_limit, cache_size), for tests and the log.
  struct Settings {
    std::string journal_mode;
    int synchronous = -1;  // 2: FULL
    int wal_autocheckpoint = -1;
    int64_t journal_size_limit = 0;
    int64_t cache_size = 0;  // SQLite's convention: < 0 is KiB, > 0 pages
  };
  const Settings& settings() const { return settings_; }

 private:
  struct Op {
    bool put = true;
    registry::SubscriptionPtr sub;
    Done done;
  };

  // A committed (or failed) batch on its way to the acknowledging thread.
  struct Committed {
    std::vector<Op> ops;
    absl::Status status;
  };

  void Enqueue(Op op);
  void WriterLoop();
  // Runs the `done`s of each committed batch, in commit order, until Stop and the last batch.
  void AckLoop();
  // Writes `ops` in one transaction. Returns the commit's status, which applies to every op.
  absl::Status Commit(const std::vector<Op>& ops);
  absl::Status Exec(const char* sql);
  // Reads one integer or text PRAGMA of db_.
  absl::StatusOr<std::string> ReadPragma(const char* name);
  // After each successful commit, on the writer thread: starts a background checkpoint every
  // kCheckpointPages new pages, completes one itself at kWalLimitPages.
  void AfterCommit();
  void CheckpointLoop();
  // sqlite3_wal_hook: the number of pages in the log after each commit of db_.
  static int OnWalCommit(void* self, sqlite3* db, const char* schema, int pages);
  // Runs PRAGMA quick_check on `db`; DATA_LOSS naming the file and SQLite's first findings when
  // it fails.
  absl::Status CheckIntegrity(sqlite3* db) const;
  // CheckIntegrity on a read-only connection of its own (opened and closed here), so that it may
  // run on another thread while db_ loads the rows.
  absl::Status CheckIntegrityOnOwnConnection() const;
  // Reads every row into `all`, skipping (and logging) rows that no longer parse.
  absl::Status LoadAll(std::vector<registry::SubscriptionPtr>* all);
  // Errors of db_, or of `db`.
  absl::Status SqlError(absl::string_view operation, int rc) const;
  absl::Status SqlError(absl::string_view operation, int rc, sqlite3* db) const;
  void SetHealthy(bool healthy);
  void CloseDb();
  void StopCheckpointer();

  const SqliteStoreOptions options_;
  // Held across listener calls so they never overlap.
  eventbus::Mutex listener_mu_;
  Listener* listener_ = nullptr;
  // Used by Start (before the writer exists) and then only by the writer thread.
  sqlite3* db_ = nullptr;
  // Prepared once by the writer thread; used only there.
  sqlite3_stmt* put_stmt_ = nullptr;
  sqlite3_stmt* delete_stmt_ = nullptr;
  std::atomic<bool> healthy_{true};
  Settings settings_;
  // Pages in the log after the last commit, and when the last background checkpoint was started;
  // writer thread only.
  int wal_pages_ = 0;
  int wal_pages_at_last_checkpoint_ = 0;

  // The checkpoint thread's connection, and the hand-off to it.
  sqlite3* checkpoint_db_ = nullptr;
  std::thread checkpointer_;
  eventbus::Mutex checkpoint_mu_;
  bool checkpoint_requested_ ABSL_GUARDED_BY(checkpoint_mu_) = false;
  // A checkpoint is running (the thread's, or the writer's own): at most one at a time.
  bool checkpoint_running_ ABSL_GUARDED_BY(checkpoint_mu_) = false;
  bool checkpoint_stop_ ABSL_GUARDED_BY(checkpoint_mu_) = false;

  eventbus::Mutex mu_;
  std::vector<Op> queue_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread writer_;

  // Committed batches waiting for their acknowledgements. The acknowledgements (at 1M rows the
  // registry's Upsert and the gRPC answer: about 75 us each, as long as the commit itself) used
  // to run on the writer thread, so that the next commit waited for them.
  eventbus::Mutex ack_mu_;
  std::deque<Committed> acks_ ABSL_GUARDED_BY(ack_mu_);
  bool ack_stop_ ABSL_GUARDED_BY(ack_mu_) = false;
  std::thread acker_;
};

}  // namespace eventbus::store

#endif  // EVENTBUS_SERVER_STORE_SQLITE_STORE_H_
