// Inside catalog/: the SQLite plumbing under the catalog — a connection with its cached prepared statements, one use
// of a statement, and the row helpers. Nothing here knows ferry's schema (sqlite_catalog.cc does).
#pragma once

#include <sqlite3.h>

#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "catalog/catalog.h"
#include "catalog/catalog_internal.h"
#include "common/error.h"

namespace ferry::catalog::sqlite {

// How long a connection waits for a lock another process (or connection) holds before failing.
inline constexpr int kBusyTimeoutMs = 10000;

inline ErrorKind kind_of(int rc) {
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT: return ErrorKind::kConflict;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return ErrorKind::kCorrupt;
    default: return ErrorKind::kIo;
  }
}

// One SQLite connection and its prepared statements, cached by SQL text. Not thread-safe: the owner
// (the catalog's writer lock, or a pool lease) serializes its use.
class Connection {
 public:
  Connection(const std::filesystem::path& file, int flags) : file_(file.string()) {
    int rc = sqlite3_open_v2(file_.c_str(), &db_, flags | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close_v2(db_);
      fail(rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT ? ErrorKind::kCorrupt : ErrorKind::kIo,
           "catalog '" + file_ + "': open: " + msg);
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  }
  ~Connection() {
    for (auto& [sql, c] : cache_) sqlite3_finalize(c.stmt);
    sqlite3_close_v2(db_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  sqlite3* db() const { return db_; }

  [[noreturn]] void fail_sql(int rc, const std::string& what) const {
    fail(kind_of(rc), "catalog '" + file_ + "': " + what + ": " + sqlite3_errmsg(db_));
  }

  void exec(const char* sql, const std::string& what) {
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) fail_sql(rc, what);
  }
  // For cleanup paths that must not throw.
  void exec_quietly(const char* sql) noexcept { sqlite3_exec(db_, sql, nullptr, nullptr, nullptr); }

  // A prepared statement for `sql`: the cached one, or (if that one is in use further up the stack) a
  // fresh one that release() finalizes.
  sqlite3_stmt* acquire(const std::string& sql, const std::string& what, bool* cached) {
    auto it = cache_.find(sql);
    if (it != cache_.end() && !it->second.in_use) {
      it->second.in_use = true;
      *cached = true;
      return it->second.stmt;
    }
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                                it == cache_.end() ? SQLITE_PREPARE_PERSISTENT : 0, &stmt, nullptr);
    if (rc != SQLITE_OK) fail_sql(rc, what + " (preparing)");
    *cached = it == cache_.end();
    if (*cached) cache_.emplace(sql, Cached{stmt, true});
    return stmt;
  }
  void release(sqlite3_stmt* stmt, bool cached) noexcept {
    if (!cached) {
      sqlite3_finalize(stmt);
      return;
    }
    sqlite3_reset(stmt);  // ends the statement's read of the database, so WAL checkpoints can proceed
    sqlite3_clear_bindings(stmt);
    cache_.find(sqlite3_sql(stmt))->second.in_use = false;
  }

 private:
  struct Cached {
    sqlite3_stmt* stmt;
    bool in_use;
  };
  std::string file_;
  sqlite3* db_ = nullptr;
  std::unordered_map<std::string, Cached> cache_;
};

// One use of a prepared statement: bind, step, read columns; reset on destruction.
class Stmt {
 public:
  Stmt(Connection& c, std::string what, const std::string& sql) : c_(c), what_(std::move(what)) {
    s_ = c_.acquire(sql, what_, &cached_);
  }
  ~Stmt() { c_.release(s_, cached_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  template <class T>
  Stmt& bind(int i, const T& v) {
    int rc;
    if constexpr (std::is_same_v<T, bool>) {
      rc = sqlite3_bind_int(s_, i, v ? 1 : 0);
    } else if constexpr (std::is_integral_v<T>) {
      rc = sqlite3_bind_int64(s_, i, static_cast<sqlite3_int64>(v));
    } else {
      std::string_view sv(v);
      rc = sqlite3_bind_text(s_, i, sv.data(), static_cast<int>(sv.size()), SQLITE_TRANSIENT);
    }
    if (rc != SQLITE_OK) c_.fail_sql(rc, what_ + " (binding parameter " + std::to_string(i) + ")");
    return *this;
  }
  // Binds the arguments to parameters 1, 2, ... in order.
  template <class... A>
  Stmt& bind_all(const A&... args) {
    int i = 1;
    (bind(i++, args), ...);
    return *this;
  }

  // True: a row is ready. False: done.
  bool step() {
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    c_.fail_sql(rc, what_);
  }
  // Runs to completion; returns the number of rows changed.
  int64_t run() {
    while (step()) {
    }
    return sqlite3_changes64(c_.db());
  }

  std::string text(int i) const {
    auto* p = sqlite3_column_text(s_, i);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(s_, i)))
             : std::string();
  }
  int64_t int64(int i) const { return sqlite3_column_int64(s_, i); }
  uint64_t uint64(int i) const { return static_cast<uint64_t>(sqlite3_column_int64(s_, i)); }
  int integer(int i) const { return sqlite3_column_int(s_, i); }
  bool boolean(int i) const { return sqlite3_column_int(s_, i) != 0; }
  bool is_null(int i) const { return sqlite3_column_type(s_, i) == SQLITE_NULL; }

 private:
  Connection& c_;
  std::string what_;
  sqlite3_stmt* s_ = nullptr;
  bool cached_ = false;
};


template <class T, class Reader>
std::vector<T> all_rows(Stmt& s, Reader reader) {
  std::vector<T> out;
  while (s.step()) out.push_back(reader(s));
  return out;
}

template <class T, class Reader>
std::optional<T> one_row(Stmt& s, Reader reader) {
  if (!s.step()) return std::nullopt;
  return reader(s);
}

// Reads up to `limit` + 1 rows (the query binds limit + 1) and makes a page of `limit` of them; the token
// holds the key of the last item when more follow.
template <class T, class Reader, class Key>
Page<T> page_rows(Stmt& s, int limit, Reader reader, const std::string& list, Key key) {
  Page<T> page;
  page.items.reserve(static_cast<size_t>(limit) + 1);
  while (s.step()) page.items.push_back(reader(s));
  if (page.items.size() > static_cast<size_t>(limit)) {
    page.items.pop_back();
    page.next_token = internal::encode_token(list, key(page.items.back()));
  }
  return page;
}

inline void require_id(const std::string& id, const std::string& what) {
  if (id.empty()) fail(ErrorKind::kInvalidArgument, what + " has no id");
}

}  // namespace ferry::catalog::sqlite
