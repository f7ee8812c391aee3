#include "server/store/sqlite_store.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/base/log.h"
#include "server/base/mutex.h"
#include "server/store/store_codec.h"

namespace eventbus::store {
namespace {

// user_version of the schema this build writes. Bump it, and migrate in Start, when the table
// changes. 1: the first table. 2: `owner` added (SPEC §10).
constexpr int kSchemaVersion = 2;

constexpr char kCreateSchema[] =
    "CREATE TABLE IF NOT EXISTS subscriptions ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  event TEXT NOT NULL,"
    "  socket TEXT NOT NULL,"
    "  create_time_us INTEGER NOT NULL,"
    "  expire_time_us INTEGER,"          // NULL: never expires.
    "  event_param TEXT,"                // NULL: the server's setting applies.
    "  owner TEXT NOT NULL DEFAULT '',"  // '': the anonymous caller (or made before version 2).
    "  UNIQUE (event, socket))";

// Version 1 -> 2. Rows made before owners were kept get '': only an admin may change them once
// authentication is on.
constexpr char kAddOwnerColumn[] =
    "ALTER TABLE subscriptions ADD COLUMN owner TEXT NOT NULL DEFAULT ''";

// REPLACE also removes a row holding the same (event, socket) under another id: the newest write
// of a natural key wins, as in the registry.
constexpr char kPutSql[] =
    "INSERT OR REPLACE INTO subscriptions"
    " (id, event, socket, create_time_us, expire_time_us, event_param, owner)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
constexpr char kDeleteSql[] = "DELETE FROM subscriptions WHERE id = ?1";
constexpr char kSelectSql[] =
    "SELECT id, event, socket, create_time_us, expire_time_us, event_param, owner"
    " FROM subscriptions";

// Finalizes a statement when it goes out of scope.
struct StatementDeleter {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using Statement = std::unique_ptr<sqlite3_stmt, StatementDeleter>;

std::string ColumnText(sqlite3_stmt* stmt, int column) {
  const unsigned char* text = sqlite3_column_text(stmt, column);
  if (text == nullptr) return std::string();
  return std::string(reinterpret_cast<const char*>(text), sqlite3_column_bytes(stmt, column));
}

// The text of a column of the current row without a copy: valid until the next step.
absl::string_view ColumnView(sqlite3_stmt* stmt, int column) {
  const unsigned char* text = sqlite3_column_text(stmt, column);
  if (text == nullptr) return absl::string_view();
  return absl::string_view(reinterpret_cast<const char*>(text),
                           static_cast<size_t>(sqlite3_column_bytes(stmt, column)));
}

void BindText(sqlite3_stmt* stmt, int index, const std::string& text) {
  sqlite3_bind_text(stmt, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
}

}  // namespace

SqliteStore::SqliteStore(SqliteStoreOptions options) : options_(std::move(options)) {}

SqliteStore::~SqliteStore() { Stop(); }

absl::Status SqliteStore::SqlError(absl::string_view operation, int rc) const {
  return SqlError(operation, rc, db_);
}

absl::Status SqliteStore::SqlError(absl::string_view operation, int rc, sqlite3* db) const {
  if ((rc & 0xff) == SQLITE_NOTADB) {
    return absl::UnavailableError(
        absl::StrCat("sqlite \"", options_.path, "\": file is not a database"));
  }
  if ((rc & 0xff) == SQLITE_CORRUPT) {
    // Every later write through the damaged page fails the same way: say so, not "unavailable".
    return absl::DataLossError(
        absl::StrCat("sqlite \"", options_.path, "\": ", operation, ": database file is corrupt (",
                     db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc),
                     "); restore it from a backup, or move it away to start empty"));
  }
  std::string detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  // SQLite's "unable to open database file" hides the reason; the OS error names it.
  int sys_errno = db != nullptr ? sqlite3_system_errno(db) : 0;
  if ((rc & 0xff) == SQLITE_CANTOPEN && sys_errno != 0) {
    absl::StrAppend(&detail, " (", std::strerror(sys_errno), ")");
  }
  return absl::UnavailableError(
      absl::StrCat("sqlite \"", options_.path, "\": ", operation, ": ", detail));
}

absl::Status SqliteStore::Exec(const char* sql) {
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqlError(sql, rc);
  return absl::OkStatus();
}

absl::StatusOr<std::string> SqliteStore::ReadPragma(const char* name) {
  const std::string sql = absl::StrCat("PRAGMA ", name);
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &raw, nullptr);
  Statement stmt(raw);
  if (rc == SQLITE_OK) rc = sqlite3_step(stmt.get());
  if (rc != SQLITE_ROW) return SqlError(sql, rc);
  return ColumnText(stmt.get(), 0);
}

absl::Status SqliteStore::CheckIntegrity(sqlite3* db) const {
  // quick_check reads every page and checks every b-tree (tables and indexes), which a start-up
  // that only scans the table would not; it skips integrity_check's cross-check of each index
  // entry against its row, which costs ten times as much (3 s against 0.3 s at 100k rows).
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(5)", -1, &raw, nullptr);
  Statement stmt(raw);
  if (rc != SQLITE_OK) return SqlError("check", rc, db);
  std::vector<std::string> problems;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    std::string line = ColumnText(stmt.get(), 0);
    if (line != "ok") problems.push_back(std::move(line));
  }
  if (rc != SQLITE_DONE) return SqlError("check", rc, db);
  if (problems.empty()) return absl::OkStatus();
  return absl::DataLossError(
      absl::StrCat("sqlite \"", options_.path,
                   "\": database file is corrupt (quick_check: ", absl::StrJoin(problems, "; "),
                   "); restore it from a backup, or move it away to start empty"));
}

absl::Status SqliteStore::CheckIntegrityOnOwnConnection() const {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(options_.path.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  absl::Status status;
  if (rc != SQLITE_OK) {
    status = SqlError("open for the check", rc, db);
  } else {
    sqlite3_busy_timeout(db, static_cast<int>(absl::ToInt64Milliseconds(options_.busy_timeout)));
    sqlite3_extended_result_codes(db, 1);
    status = CheckIntegrity(db);
  }
  sqlite3_close_v2(db);
  return status;
}

namespace {

// Rows copied out of SQLite's cursor, a batch at a time: their texts in one buffer, each row's
// fields as offsets into it (no allocation per row).
struct RowBatch {
  struct Text {
    uint32_t offset = 0, size = 0;
  };
  struct Row {
    Text id, event, socket, event_param, owner;
    int64_t create_time_us = 0;
    int64_t expire_time_us = 0;
    bool expires = false;
    bool has_event_param = false;
  };
  std::string text;
  std::vector<Row> rows;

  Text Add(absl::string_view value) {
    Text t{static_cast<uint32_t>(text.size()), static_cast<uint32_t>(value.size())};
    text.append(value.data(), value.size());
    return t;
  }
  absl::string_view View(Text t) const { return absl::string_view(text).substr(t.offset, t.size); }
};

constexpr size_t kRowsPerBatch = 4096;

// Hands batches from the reading thread to the building one; at most a few wait, so the read
// never runs far ahead of what is built.
class BatchQueue {
 public:
  void Push(RowBatch batch) {
    eventbus::MutexLock lock(&mu_);
    mu_.Await([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queue_.size() < 4; });
    queue_.push_back(std::move(batch));
  }
  void Close() {
    eventbus::MutexLock lock(&mu_);
    closed_ = true;
  }
  // False once closed and drained.
  bool Pop(RowBatch* batch) {
    eventbus::MutexLock lock(&mu_);
    mu_.Await([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || closed_; });
    if (queue_.empty()) return false;
    *batch = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }

 private:
  eventbus::Mutex mu_;
  std::deque<RowBatch> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

absl::Status SqliteStore::LoadAll(std::vector<registry::SubscriptionPtr>* all) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db_, kSelectSql, -1, &raw, nullptr);
  Statement stmt(raw);
  if (rc != SQLITE_OK) return SqlError("load", rc);
  sqlite3_stmt* row = stmt.get();

  // Parsing the sockets and building the subscriptions costs more than stepping SQLite's cursor
  // (which only this thread may do): a second thread builds while this one reads (1M rows: about
  // 2 s on one thread).
  BatchQueue queue;
  std::thread builder([this, &queue, all] {
    RowBatch batch;
    while (queue.Pop(&batch)) {
      for (const RowBatch::Row& r : batch.rows) {
        StoredSubscriptionView view;
        view.id = batch.View(r.id);
        view.event = batch.View(r.event);
        view.socket = batch.View(r.socket);
        view.create_time_us = r.create_time_us;
        if (r.expires) view.expire_time_us = r.expire_time_us;
        if (r.has_event_param) view.event_param = batch.View(r.event_param);
        view.owner = batch.View(r.owner);
        absl::StatusOr<registry::SubscriptionPtr> sub = FromStored(view);
        if (!sub.ok()) {
          // One bad row (hand-edited, or a socket rule that got stricter) must not keep the
          // server down; it is reported and left in the file.
          EB_LOG(kWarning, "sqlite: skipping a stored subscription",
                 "path=", base::LogValue(options_.path),
                 " error=", base::LogValue(sub.status().message()));
          continue;
        }
        all->push_back(*std::move(sub));
      }
    }
  });
  RowBatch batch;
  while ((rc = sqlite3_step(row)) == SQLITE_ROW) {
    RowBatch::Row r;
    r.id = batch.Add(ColumnView(row, 0));
    r.event = batch.Add(ColumnView(row, 1));
    r.socket = batch.Add(ColumnView(row, 2));
    r.create_time_us = sqlite3_column_int64(row, 3);
    if (sqlite3_column_type(row, 4) != SQLITE_NULL) {
      r.expires = true;
      r.expire_time_us = sqlite3_column_int64(row, 4);
    }
    if (sqlite3_column_type(row, 5) != SQLITE_NULL) {
      r.has_event_param = true;
      r.event_param = batch.Add(ColumnView(row, 5));
    }
    r.owner = batch.Add(ColumnView(row, 6));
    batch.rows.push_back(r);
    if (batch.rows.size() == kRowsPerBatch) {
      queue.Push(std::move(batch));
      batch = RowBatch();
    }
  }
  if (!batch.rows.empty()) queue.Push(std::move(batch));
  queue.Close();
  builder.join();
  if (rc != SQLITE_DONE) return SqlError("load", rc);
  return absl::OkStatus();
}

void SqliteStore::CloseDb() {
  if (db_ == nullptr) return;
  // close_v2 finalizes nothing for us, but defers the close until every statement is finalized;
  // every statement here is finalized by its owner before this runs.
  sqlite3_close_v2(db_);
  db_ = nullptr;
}

absl::Status SqliteStore::Start(Listener* listener) {
  {
    eventbus::MutexLock lock(&mu_);
    if (running_ || stopping_) {
      return absl::FailedPreconditionError(
          absl::StrCat("sqlite \"", options_.path, "\": already started"));
    }
  }
  const std::string& path = options_.path;
  auto fail = [&](absl::Status status) {
    CloseDb();
    return status;
  };

  // SQLite's own message for these is a bare "unable to open database file".
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return absl::UnavailableError(
        absl::StrCat("sqlite \"", path, "\": is a directory, not a database file"));
  }

  int rc =
      sqlite3_open_v2(path.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) return fail(SqlError("open", rc));
  // SQLite quietly falls back to read-only when the file cannot be written; every later write
  // would fail, so refuse now.
  if (sqlite3_db_readonly(db_, "main") == 1) {
    return fail(absl::UnavailableError(
        absl::StrCat("sqlite \"", path, "\": file is read-only (check its permissions)")));
  }
  sqlite3_busy_timeout(db_, static_cast<int>(absl::ToInt64Milliseconds(options_.busy_timeout)));
  sqlite3_extended_result_codes(db_, 1);

  // The first statement reads the header: a file that is not SQLite fails here with
  // "file is not a database".
  {
    sqlite3_stmt* raw = nullptr;
    rc = sqlite3_prepare_v2(db_, "PRAGMA journal_mode=WAL", -1, &raw, nullptr);
    Statement stmt(raw);
    if (rc == SQLITE_OK) rc = sqlite3_step(stmt.get());
    if (rc != SQLITE_ROW) return fail(SqlError("set journal_mode", rc));
    std::string mode = absl::AsciiStrToLower(ColumnText(stmt.get(), 0));
    if (mode != "wal") {
      // WAL needs shared memory (not on some network filesystems); the rollback journal is as
      // durable, only slower.
      EB_LOG(kWarning, "sqlite: WAL unavailable, using the rollback journal",
             "path=", base::LogValue(path), " journal_mode=", mode);
    }
  }
  // FULL: with WAL, NORMAL already survives SIGKILL (the commit is in the WAL file, in the OS
  // page cache, before done runs) but not a power cut or kernel crash. FULL fsyncs the WAL at
  // every commit; group commit pays that once per batch, so durability costs little throughput.
  if (absl::Status status = Exec("PRAGMA synchronous=FULL"); !status.ok()) return fail(status);
  // SQLite's own checkpoint (wal_autocheckpoint) runs inside the COMMIT that crosses its
  // threshold, so the acknowledgements of that group commit waited for it: at 1M rows a group
  // commit of 64 Subscribes writes about 85 pages, and a checkpoint every 128 pages made most
  // commits pay fsyncs of the file and of the restarted log besides their own (measured: 14 ms per
  // commit against 4.3 ms with no checkpoint). This hook replaces it: AfterCommit starts the
  // checkpoint thread instead, and the log stays bounded (kWalLimitPages).
  sqlite3_wal_hook(db_, &SqliteStore::OnWalCommit, this);
  // When the log starts over the file is reused, not cut back: extending it again each time would
  // make the next commits' fsyncs write its size too.
  if (absl::Status status =
          Exec(absl::StrCat("PRAGMA journal_size_limit=", kWalTruncateBytes).c_str());
      !status.ok()) {
    return fail(status);
  }
  int version = 0;
  {
    sqlite3_stmt* raw = nullptr;
    rc = sqlite3_prepare_v2(db_, "PRAGMA user_version", -1, &raw, nullptr);
    Statement stmt(raw);
    if (rc == SQLITE_OK) rc = sqlite3_step(stmt.get());
    if (rc != SQLITE_ROW) return fail(SqlError("read schema version", rc));
    version = sqlite3_column_int(stmt.get(), 0);
  }
  if (version > kSchemaVersion) {
    return fail(absl::FailedPreconditionError(absl::StrCat(
        "sqlite \"", path, "\": schema version ", version,
        " was written by a newer EventBus (this build reads up to ", kSchemaVersion, ")")));
  }
  if (version < kSchemaVersion) {
    // A file to migrate is checked before it is written to (a new one is checked in no time).
    if (absl::Status status = CheckIntegrity(db_); !status.ok()) return fail(status);
    // One transaction: a crash half-way leaves the file at its old version, migrated again at the
    // next start. Version 0 is a new file (CREATE makes the current table); an older version's
    // table exists, and CREATE ... IF NOT EXISTS leaves it as it is for the steps below.
    absl::Status status = Exec("BEGIN IMMEDIATE");
    if (status.ok()) status = Exec(kCreateSchema);
    if (status.ok() && version == 1) status = Exec(kAddOwnerColumn);
    if (status.ok()) status = Exec(absl::StrCat("PRAGMA user_version=", kSchemaVersion).c_str());
    if (status.ok()) status = Exec("COMMIT");
    if (!status.ok()) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return fail(status);
    }
  }

  // quick_check reads every page of the file, as long as the load itself takes (about 3 s each at
  // 1M rows on the development VM): on a file that needs no migration it runs on a second,
  // read-only connection and thread while this one loads the rows. Start still fails, before the
  // listener sees any row, when either finds a fault; the check's verdict comes first.
  const absl::Time load_start = absl::Now();
  absl::Status checked;
  absl::Duration check_time;
  std::thread checker;
  if (version == kSchemaVersion) {
    checker = std::thread([this, &checked, &check_time] {
      const absl::Time start = absl::Now();
      checked = CheckIntegrityOnOwnConnection();
      check_time = absl::Now() - start;
    });
  }
  std::vector<registry::SubscriptionPtr> all;
  absl::Status loaded = LoadAll(&all);
  const absl::Duration read_time = absl::Now() - load_start;
  if (checker.joinable()) checker.join();
  if (!checked.ok()) return fail(checked);
  if (!loaded.ok()) return fail(loaded);
  const size_t count = all.size();
  const absl::Time apply_start = absl::Now();

  // What the writer connection runs with, as SQLite reports it.
  {
    absl::StatusOr<std::string> journal_mode = ReadPragma("journal_mode");
    absl::StatusOr<std::string> synchronous = ReadPragma("synchronous");
    absl::StatusOr<std::string> autocheckpoint = ReadPragma("wal_autocheckpoint");
    absl::StatusOr<std::string> size_limit = ReadPragma("journal_size_limit");
    absl::StatusOr<std::string> cache_size = ReadPragma("cache_size");
    for (const auto* read :
         {&journal_mode, &synchronous, &autocheckpoint, &size_limit, &cache_size}) {
      if (!read->ok()) return fail(read->status());
    }
    settings_.journal_mode = absl::AsciiStrToLower(*journal_mode);
    if (!absl::SimpleAtoi(*synchronous, &settings_.synchronous) ||
        !absl::SimpleAtoi(*autocheckpoint, &settings_.wal_autocheckpoint) ||
        !absl::SimpleAtoi(*size_limit, &settings_.journal_size_limit) ||
        !absl::SimpleAtoi(*cache_size, &settings_.cache_size)) {
      return fail(absl::InternalError(
          absl::StrCat("sqlite \"", path, "\": a PRAGMA read back is not a number")));
    }
  }
  // The checkpoint thread's own connection: a checkpoint on it copies the log into the file while
  // db_ commits (only one connection may write, but any may checkpoint).
  rc = sqlite3_open_v2(path.c_str(), &checkpoint_db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                       nullptr);
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(checkpoint_db_,
                         static_cast<int>(absl::ToInt64Milliseconds(options_.busy_timeout)));
    sqlite3_extended_result_codes(checkpoint_db_, 1);
    // FULL: the checkpoint fsyncs the file before the log may start over. No commits here.
    rc = sqlite3_exec(checkpoint_db_, "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) sqlite3_wal_autocheckpoint(checkpoint_db_, 0);
  }
  if (rc != SQLITE_OK) {
    absl::Status status = SqlError("open for checkpoints", rc, checkpoint_db_);
    sqlite3_close_v2(checkpoint_db_);
    checkpoint_db_ = nullptr;
    return fail(status);
  }

  healthy_.store(true);
  listener_ = listener;
  {
    eventbus::MutexLock lock(&checkpoint_mu_);
    checkpoint_stop_ = false;
  }
  checkpointer_ = std::thread([this] { CheckpointLoop(); });
  {
    eventbus::MutexLock lock(&mu_);
    running_ = true;
  }
  // The writer runs before OnReload so the listener may already write from it.
  {
    eventbus::MutexLock lock(&ack_mu_);
    ack_stop_ = false;
  }
  acker_ = std::thread([this] { AckLoop(); });
  writer_ = std::thread([this] { WriterLoop(); });
  eventbus::MutexLock lock(&listener_mu_);
  listener_->OnReload(std::move(all));
  // Where a slow start-up goes: reading and parsing the rows, the file check beside it, and the
  // listener taking them in (the registry's bulk load).
  EB_LOG(kInfo, "sqlite: loaded subscriptions", "path=", base::LogValue(path), " count=", count,
         " read_ms=", absl::ToInt64Milliseconds(read_time),
         " check_ms=", absl::ToInt64Milliseconds(check_time),
         " apply_ms=", absl::ToInt64Milliseconds(absl::Now() - apply_start));
  return absl::OkStatus();
}

void SqliteStore::Stop() {
  {
    eventbus::MutexLock lock(&mu_);
    if (!running_ || stopping_) return;
    stopping_ = true;
  }
  // The writer commits what is still queued before it leaves, and the acknowledging thread
  // acknowledges every batch before it does.
  writer_.join();
  {
    eventbus::MutexLock lock(&ack_mu_);
    ack_stop_ = true;
  }
  acker_.join();
  StopCheckpointer();
  // The last connection to close checkpoints the whole log into the file.
  CloseDb();
}

void SqliteStore::AckLoop() {
  for (;;) {
    Committed batch;
    {
      eventbus::MutexLock lock(&ack_mu_);
      ack_mu_.Await(
          [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(ack_mu_) { return !acks_.empty() || ack_stop_; });
      if (acks_.empty()) return;  // stopping, and every batch acknowledged
      batch = std::move(acks_.front());
      acks_.pop_front();
    }
    SetHealthy(batch.status.ok());
    if (!batch.status.ok()) {
      EB_LOG(kError, "sqlite: write failed", "path=", base::LogValue(options_.path),
             " ops=", batch.ops.size(), " error=", base::LogValue(batch.status.message()));
    }
    for (Op& op : batch.ops) op.done(batch.status);
  }
}

void SqliteStore::StopCheckpointer() {
  {
    eventbus::MutexLock lock(&checkpoint_mu_);
    checkpoint_stop_ = true;
  }
  if (checkpointer_.joinable()) checkpointer_.join();
  if (checkpoint_db_ != nullptr) {
    sqlite3_close_v2(checkpoint_db_);
    checkpoint_db_ = nullptr;
  }
}

int SqliteStore::OnWalCommit(void* self, sqlite3*, const char*, int pages) {
  static_cast<SqliteStore*>(self)->wal_pages_ = pages;
  return SQLITE_OK;
}

void SqliteStore::AfterCommit() {
  // The log started over since the last checkpoint.
  if (wal_pages_ < wal_pages_at_last_checkpoint_) wal_pages_at_last_checkpoint_ = 0;
  if (wal_pages_ >= kWalLimitPages) {
    // A checkpoint that runs while commits add pages copies all but the last of them, and SQLite
    // starts the log over only at a commit that finds every page copied. Here, between two
    // commits (the last one's acknowledgements under way), the rest is copied: mostly the pages of
    // the commits since the last background checkpoint began, and two fsyncs.
    {
      eventbus::MutexLock lock(&checkpoint_mu_);
      checkpoint_mu_.Await(
          [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(checkpoint_mu_) { return !checkpoint_running_; });
      checkpoint_running_ = true;
      checkpoint_requested_ = false;
    }
    int log_pages = 0, copied = 0;
    int rc =
        sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_pages, &copied);
    {
      eventbus::MutexLock lock(&checkpoint_mu_);
      checkpoint_running_ = false;
    }
    if (rc != SQLITE_OK || copied < log_pages) {
      EB_LOG(kWarning, "sqlite: checkpoint incomplete; the log cannot start over yet",
             "path=", base::LogValue(options_.path), " log_pages=", log_pages, " copied=", copied,
             " error=", base::LogValue(sqlite3_errstr(rc)));
    }
    wal_pages_at_last_checkpoint_ = wal_pages_;
    return;
  }
  if (wal_pages_ - wal_pages_at_last_checkpoint_ >= kCheckpointPages) {
    wal_pages_at_last_checkpoint_ = wal_pages_;
    eventbus::MutexLock lock(&checkpoint_mu_);
    checkpoint_requested_ = true;
  }
}

void SqliteStore::CheckpointLoop() {
  for (;;) {
    {
      eventbus::MutexLock lock(&checkpoint_mu_);
      checkpoint_mu_.Await([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(checkpoint_mu_) {
        return checkpoint_stop_ || (checkpoint_requested_ && !checkpoint_running_);
      });
      if (checkpoint_stop_) return;
      checkpoint_requested_ = false;
      checkpoint_running_ = true;
    }
    // PASSIVE: copies what the log holds now without waiting for, or blocking, the writer.
    int log_pages = 0, copied = 0;
    int rc = sqlite3_wal_checkpoint_v2(checkpoint_db_, nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                       &log_pages, &copied);
    {
      eventbus::MutexLock lock(&checkpoint_mu_);
      checkpoint_running_ = false;
    }
    // A failed checkpoint loses nothing (the log keeps every commit); a write that meets the
    // same fault reports it through health.
    if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY) {
      EB_LOG(kWarning, "sqlite: checkpoint failed", "path=", base::LogValue(options_.path),
             " error=", base::LogValue(SqlError("checkpoint", rc, checkpoint_db_).message()));
    }
  }
}

void SqliteStore::Put(registry::SubscriptionPtr sub, Done done) {
  Enqueue(Op{true, std::move(sub), std::move(done)});
}

void SqliteStore::Delete(registry::SubscriptionPtr sub, Done done) {
  Enqueue(Op{false, std::move(sub), std::move(done)});
}

void SqliteStore::Enqueue(Op op) {
  {
    eventbus::MutexLock lock(&mu_);
    if (running_ && !stopping_) {
      queue_.push_back(std::move(op));
      return;
    }
  }
  op.done(
      absl::UnavailableError(absl::StrCat("sqlite \"", options_.path, "\": store not running")));
}

void SqliteStore::WriterLoop() {
  sqlite3_stmt* raw = nullptr;
  Statement put_stmt, delete_stmt;
  int rc = sqlite3_prepare_v3(db_, kPutSql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  put_stmt.reset(raw);
  absl::Status prepared = rc == SQLITE_OK ? absl::OkStatus() : SqlError("prepare put", rc);
  if (prepared.ok()) {
    rc = sqlite3_prepare_v3(db_, kDeleteSql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
    delete_stmt.reset(raw);
    if (rc != SQLITE_OK) prepared = SqlError("prepare delete", rc);
  }
  put_stmt_ = put_stmt.get();
  delete_stmt_ = delete_stmt.get();

  for (;;) {
    std::vector<Op> batch;
    {
      eventbus::MutexLock lock(&mu_);
      mu_.Await([this]()
                    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; });
      if (queue_.empty()) break;  // stopping, and nothing left to commit
      batch.swap(queue_);
    }
    absl::Status status = prepared.ok() ? Commit(batch) : prepared;
    const bool committed = status.ok();
    {
      eventbus::MutexLock lock(&ack_mu_);
      acks_.push_back(Committed{std::move(batch), std::move(status)});
    }
    if (committed) AfterCommit();
  }
  put_stmt_ = nullptr;
  delete_stmt_ = nullptr;
}

absl::Status SqliteStore::Commit(const std::vector<Op>& ops) {
  absl::Status status = Exec("BEGIN IMMEDIATE");
  if (!status.ok()) return status;
  for (const Op& op : ops) {
    const registry::Subscription& sub = *op.sub;
    sqlite3_stmt* stmt = op.put ? put_stmt_ : delete_stmt_;
    BindText(stmt, 1, sub.id);
    if (op.put) {
      StoredSubscription row = ToStored(sub);
      BindText(stmt, 2, row.event);
      BindText(stmt, 3, row.socket);
      sqlite3_bind_int64(stmt, 4, row.create_time_us);
      if (row.expire_time_us.has_value()) {
        sqlite3_bind_int64(stmt, 5, *row.expire_time_us);
      } else {
        sqlite3_bind_null(stmt, 5);
      }
      if (row.event_param.has_value()) {
        BindText(stmt, 6, *row.event_param);
      } else {
        sqlite3_bind_null(stmt, 6);
      }
      BindText(stmt, 7, row.owner);
    }
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    if (rc != SQLITE_DONE) {
      status = SqlError(op.put ? "put" : "delete", rc);
      break;
    }
  }
  if (status.ok()) status = Exec("COMMIT");
  if (!status.ok() && !sqlite3_get_autocommit(db_)) {
    // A failed COMMIT (e.g. disk full while writing the WAL) leaves the transaction open.
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  return status;
}

void SqliteStore::SetHealthy(bool healthy) {
  if (healthy_.exchange(healthy) == healthy) return;
  if (!healthy) {
    EB_LOG(kWarning, "sqlite: store unhealthy", "path=", base::LogValue(options_.path));
  } else {
    EB_LOG(kInfo, "sqlite: store healthy again", "path=", base::LogValue(options_.path));
  }
  eventbus::MutexLock lock(&listener_mu_);
  listener_->OnHealth(healthy);
}

}  // namespace eventbus::store
