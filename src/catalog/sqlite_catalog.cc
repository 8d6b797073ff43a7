// The SQLite catalog: one database file in WAL mode. A single writer connection runs every mutating call
// in a transaction serialized by a mutex; read calls take a connection from a pool and run beside it.
#include <atomic>
#include <charconv>
#include <climits>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>
#include <unistd.h>

#include "catalog/catalog.h"
#include "catalog/catalog_internal.h"
#include "catalog/sqlite_db.h"
#include "common/error.h"

namespace ferry::catalog {

namespace {

using namespace internal;
using namespace sqlite;

// PRAGMA application_id of a ferry catalog ("FRRY"): tells a ferry catalog from any other SQLite file.
constexpr int32_t kApplicationId = 0x46525259;

// Schema migrations in order; PRAGMA user_version counts those applied. Each runs in one transaction.
// A released step is never edited: change the schema by appending a step.
const std::vector<const char*> kMigrations = {
    R"sql(
CREATE TABLE access_keys (
  id           TEXT PRIMARY KEY,
  secret       TEXT NOT NULL,
  role         TEXT NOT NULL,
  connector_id TEXT NOT NULL DEFAULT '',
  created      INTEGER NOT NULL
);
CREATE INDEX access_keys_connector ON access_keys(connector_id);

CREATE TABLE registration_tokens (
  token_sha256 TEXT PRIMARY KEY,
  expires      INTEGER NOT NULL,
  used         INTEGER NOT NULL DEFAULT 0  -- when it was consumed; 0: not yet
);

CREATE TABLE connectors (
  id                  TEXT PRIMARY KEY,
  name                TEXT NOT NULL,
  version             TEXT NOT NULL,
  capabilities        TEXT NOT NULL,  -- JSON array of strings
  ip_address          TEXT NOT NULL,
  mac_address         TEXT NOT NULL,
  vm_manager_type     TEXT NOT NULL,
  vm_manager_name     TEXT NOT NULL,
  vm_manager_id       TEXT NOT NULL,
  associated_on       INTEGER NOT NULL,
  last_heartbeat      INTEGER NOT NULL,
  disassociated       INTEGER NOT NULL,
  inventory_requested INTEGER NOT NULL,
  inventory_reported  INTEGER NOT NULL
);

CREATE TABLE servers (
  id              TEXT PRIMARY KEY,
  connector_id    TEXT NOT NULL REFERENCES connectors(id),
  server_type     TEXT NOT NULL,
  vm_manager_id   TEXT NOT NULL,
  vm_manager_type TEXT NOT NULL,
  vm_manager_name TEXT NOT NULL,
  vm_id           TEXT NOT NULL,
  vm_name         TEXT NOT NULL,
  vm_path         TEXT NOT NULL,
  guest_os        TEXT NOT NULL,
  cpus            INTEGER NOT NULL,
  memory_mib      INTEGER NOT NULL,
  disks           TEXT NOT NULL,  -- JSON array of {name, path, format, size}
  error           TEXT NOT NULL,
  updated         INTEGER NOT NULL,
  UNIQUE (connector_id, vm_manager_id, vm_id)
);
CREATE INDEX servers_vm_address ON servers(vm_manager_id, vm_id);

-- Jobs are never removed (DELETED is a state) so their ids stay dead; server_id has no foreign key because
-- a DELETED job may outlive its server.
CREATE TABLE replication_jobs (
  id                            TEXT PRIMARY KEY,
  server_id                     TEXT NOT NULL,
  seed_time                     INTEGER NOT NULL,
  frequency_hours               INTEGER NOT NULL,
  run_once                      INTEGER NOT NULL,
  next_run_time                 INTEGER NOT NULL,
  license_type                  TEXT NOT NULL,
  role_name                     TEXT NOT NULL,
  description                   TEXT NOT NULL,
  number_of_recent_amis_to_keep INTEGER NOT NULL,
  encrypted                     INTEGER NOT NULL,
  kms_key_id                    TEXT NOT NULL,
  state                         TEXT NOT NULL,
  status_message                TEXT NOT NULL,
  latest_ami_id                 TEXT NOT NULL,
  consecutive_failures          INTEGER NOT NULL,
  created                       INTEGER NOT NULL,
  deleted                       INTEGER NOT NULL DEFAULT 0  -- when delete_job ran; 0: live
);
CREATE INDEX replication_jobs_server ON replication_jobs(server_id);
CREATE UNIQUE INDEX replication_jobs_one_live_per_server ON replication_jobs(server_id) WHERE state != 'DELETED';
CREATE INDEX replication_jobs_due ON replication_jobs(next_run_time) WHERE next_run_time > 0;

CREATE TABLE replication_runs (
  id              TEXT PRIMARY KEY,
  job_id          TEXT NOT NULL REFERENCES replication_jobs(id),
  state           TEXT NOT NULL,
  type            TEXT NOT NULL,
  stage           TEXT NOT NULL,
  stage_progress  TEXT NOT NULL,
  status_message  TEXT NOT NULL,
  ami_id          TEXT NOT NULL,
  scheduled_start INTEGER NOT NULL,
  completed_time  INTEGER NOT NULL,
  description     TEXT NOT NULL,
  encrypted       INTEGER NOT NULL,
  kms_key_id      TEXT NOT NULL,
  connector_id    TEXT NOT NULL,
  bytes_total     INTEGER NOT NULL,
  bytes_done      INTEGER NOT NULL,
  bytes_uploaded  INTEGER NOT NULL,
  disks           TEXT NOT NULL,  -- JSON array of {name, snapshot_id, size}: snapshots committed so far
  created         INTEGER NOT NULL,
  updated         INTEGER NOT NULL
);
CREATE INDEX replication_runs_job_state ON replication_runs(job_id, state);
CREATE INDEX replication_runs_job_created ON replication_runs(job_id, created, id);
CREATE UNIQUE INDEX replication_runs_one_open_per_job ON replication_runs(job_id) WHERE state IN ('PENDING', 'ACTIVE');
CREATE INDEX replication_runs_open ON replication_runs(created, id) WHERE state IN ('PENDING', 'ACTIVE');

CREATE TABLE images (
  id        TEXT PRIMARY KEY,
  job_id    TEXT NOT NULL REFERENCES replication_jobs(id),
  run_id    TEXT NOT NULL,
  server_id TEXT NOT NULL,
  store     TEXT NOT NULL,
  disks     TEXT NOT NULL,  -- JSON array of {name, snapshot_id, size}
  created   INTEGER NOT NULL
);
CREATE INDEX images_job ON images(job_id, created, id);

CREATE TABLE catalog_state (
  id       INTEGER PRIMARY KEY CHECK (id = 1),
  status   TEXT NOT NULL,
  modified INTEGER NOT NULL
);
INSERT INTO catalog_state (id, status, modified) VALUES (1, 'NOT_IMPORTED', 0);
)sql",
    // 2: trust domains, store records, snapshot owners.
    R"sql(
ALTER TABLE registration_tokens ADD COLUMN domain TEXT NOT NULL DEFAULT '';
ALTER TABLE connectors ADD COLUMN domain TEXT NOT NULL DEFAULT '';
CREATE TABLE stores (
  name            TEXT PRIMARY KEY,
  repository_id   TEXT NOT NULL,
  encrypted       INTEGER NOT NULL,
  key_id          TEXT NOT NULL,
  key_file_sha256 TEXT NOT NULL,
  created         INTEGER NOT NULL
);
CREATE TABLE snapshot_owners (
  store       TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  job_id      TEXT NOT NULL,
  created     INTEGER NOT NULL,
  PRIMARY KEY (store, snapshot_id)
);
)sql",
};

// ---- Row mapping. Each SELECT below lists its columns in the order its reader expects them. ----

const std::string kAccessKeyColumns = "id, secret, role, connector_id, created";

AccessKey access_key_from(const Stmt& s) {
  return {s.text(0), s.text(1), s.text(2), s.text(3), s.int64(4)};
}

const std::string kConnectorColumns =
    "id, name, version, capabilities, ip_address, mac_address, vm_manager_type, vm_manager_name, vm_manager_id, "
    "associated_on, last_heartbeat, disassociated, inventory_requested, inventory_reported, domain";

Connector connector_from(const Stmt& s) {
  Connector c;
  c.id = s.text(0);
  c.name = s.text(1);
  c.version = s.text(2);
  c.capabilities = strings_from_json(s.text(3), "connector " + c.id + " capabilities");
  c.ip_address = s.text(4);
  c.mac_address = s.text(5);
  c.vm_manager_type = s.text(6);
  c.vm_manager_name = s.text(7);
  c.vm_manager_id = s.text(8);
  c.associated_on = s.int64(9);
  c.last_heartbeat = s.int64(10);
  c.disassociated = s.boolean(11);
  c.inventory_requested = s.int64(12);
  c.inventory_reported = s.int64(13);
  c.domain = s.text(14);
  return c;
}

// A server with its live job: FROM kServerSource.
const std::string kServerColumns =
    "s.id, s.connector_id, s.server_type, s.vm_manager_id, s.vm_manager_type, s.vm_manager_name, s.vm_id, s.vm_name, "
    "s.vm_path, s.guest_os, s.cpus, s.memory_mib, s.disks, s.error, s.updated, j.id, j.state";
const std::string kServerSource =
    "servers s LEFT JOIN replication_jobs j ON j.server_id = s.id AND j.state != 'DELETED'";

// SMS Server.replicationJobTerminated: the job has failed or is being deleted.
bool job_terminated(const std::string& state) { return state == "FAILED" || state == "DELETING"; }

Server server_from(const Stmt& s) {
  Server v;
  v.id = s.text(0);
  v.connector_id = s.text(1);
  v.server_type = s.text(2);
  v.vm_manager_id = s.text(3);
  v.vm_manager_type = s.text(4);
  v.vm_manager_name = s.text(5);
  v.vm_id = s.text(6);
  v.vm_name = s.text(7);
  v.vm_path = s.text(8);
  v.guest_os = s.text(9);
  v.cpus = s.integer(10);
  v.memory_mib = s.uint64(11);
  v.disks = disks_from_json(s.text(12), "server " + v.id + " disks");
  v.error = s.text(13);
  v.updated = s.int64(14);
  v.replication_job_id = s.text(15);
  v.replication_job_terminated = !s.is_null(15) && job_terminated(s.text(16));
  return v;
}

const std::string kJobColumns =
    "id, server_id, seed_time, frequency_hours, run_once, next_run_time, license_type, role_name, description, "
    "number_of_recent_amis_to_keep, encrypted, kms_key_id, state, status_message, latest_ami_id, "
    "consecutive_failures, created";

ReplicationJob job_from(const Stmt& s) {
  ReplicationJob j;
  j.id = s.text(0);
  j.server_id = s.text(1);
  j.seed_time = s.int64(2);
  j.frequency_hours = s.integer(3);
  j.run_once = s.boolean(4);
  j.next_run_time = s.int64(5);
  j.license_type = s.text(6);
  j.role_name = s.text(7);
  j.description = s.text(8);
  j.number_of_recent_amis_to_keep = s.integer(9);
  j.encrypted = s.boolean(10);
  j.kms_key_id = s.text(11);
  j.state = s.text(12);
  j.status_message = s.text(13);
  j.latest_ami_id = s.text(14);
  j.consecutive_failures = s.integer(15);
  j.created = s.int64(16);
  return j;
}

const std::string kRunColumns =
    "id, job_id, state, type, stage, stage_progress, status_message, ami_id, scheduled_start, completed_time, "
    "description, encrypted, kms_key_id, connector_id, bytes_total, bytes_done, bytes_uploaded, disks, created, updated";
const std::string kRunColumnsR =
    "r.id, r.job_id, r.state, r.type, r.stage, r.stage_progress, r.status_message, r.ami_id, r.scheduled_start, "
    "r.completed_time, r.description, r.encrypted, r.kms_key_id, r.connector_id, r.bytes_total, r.bytes_done, "
    "r.bytes_uploaded, r.disks, r.created, r.updated";

ReplicationRun run_from(const Stmt& s) {
  ReplicationRun r;
  r.id = s.text(0);
  r.job_id = s.text(1);
  r.state = s.text(2);
  r.type = s.text(3);
  r.stage = s.text(4);
  r.stage_progress = s.text(5);
  r.status_message = s.text(6);
  r.ami_id = s.text(7);
  r.scheduled_start = s.int64(8);
  r.completed_time = s.int64(9);
  r.description = s.text(10);
  r.encrypted = s.boolean(11);
  r.kms_key_id = s.text(12);
  r.connector_id = s.text(13);
  r.bytes_total = s.uint64(14);
  r.bytes_done = s.uint64(15);
  r.bytes_uploaded = s.uint64(16);
  r.disks = image_disks_from_json(s.text(17), "replication run " + r.id + " disks");
  r.created = s.int64(18);
  r.updated = s.int64(19);
  return r;
}

const std::string kImageColumns = "id, job_id, run_id, server_id, store, disks, created";

Image image_from(const Stmt& s) {
  Image i;
  i.id = s.text(0);
  i.job_id = s.text(1);
  i.run_id = s.text(2);
  i.server_id = s.text(3);
  i.store = s.text(4);
  i.disks = image_disks_from_json(s.text(5), "image " + i.id + " disks");
  i.created = s.int64(6);
  return i;
}


class SqliteCatalog final : public Catalog {
 private:
  // Defined first: the methods below deduce their return types from these.

  // Runs f(writer connection) in a transaction (joining the caller's) and returns what it returns.
  template <class F>
  auto write(F&& f) {
    using R = std::invoke_result_t<F&, Connection&>;
    if constexpr (std::is_void_v<R>) {
      transaction([&] { f(*writer_); });
    } else {
      std::optional<R> result;
      transaction([&] { result.emplace(f(*writer_)); });
      return std::move(*result);
    }
  }

  // Runs f(connection) on a pooled read connection, or, on the thread inside a transaction, on the writer
  // so the transaction reads its own writes.
  template <class F>
  auto read(F&& f) {
    if (owner_.load() == std::this_thread::get_id()) {
      std::lock_guard lock(write_mu_);
      return f(*writer_);
    }
    std::unique_ptr<Connection> c;
    {
      std::lock_guard lock(readers_mu_);
      if (!readers_.empty()) {
        c = std::move(readers_.back());
        readers_.pop_back();
      }
    }
    if (!c) c = open_reader();
    struct Return {
      SqliteCatalog& self;
      std::unique_ptr<Connection>& c;
      ~Return() {
        std::lock_guard lock(self.readers_mu_);
        self.readers_.push_back(std::move(c));
      }
    } give_back{*this, c};
    return f(*c);
  }

 public:
  explicit SqliteCatalog(const std::filesystem::path& file) : file_(file) {
    if (!sqlite3_threadsafe())
      fail(ErrorKind::kUnsupported, "catalog '" + file.string() + "': libsqlite3 was built without thread support");
    // The catalog holds secrets (access keys): a new one is created readable by its owner only, and SQLite gives its
    // -wal and -shm files the same mode.
    int fd = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);
    writer_ = std::make_unique<Connection>(file_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    check_identity();
    configure_writer();
    migrate();
  }

  ~SqliteCatalog() override {
    readers_.clear();  // the writer closes last, so it checkpoints the WAL into the database file
    writer_.reset();
  }

  // ---- Access keys ----

  void add_access_key(const AccessKey& key) override {
    require_id(key.id, "access key");
    write([&](Connection& c) {
      Stmt(c, "add access key " + key.id,
           "INSERT INTO access_keys (" + kAccessKeyColumns + ") VALUES (?, ?, ?, ?, ?)")
          .bind_all(key.id, key.secret, key.role, key.connector_id, key.created)
          .run();
    });
  }

  std::optional<AccessKey> find_access_key(const std::string& id) override {
    return read([&](Connection& c) {
      Stmt s(c, "find access key " + id, "SELECT " + kAccessKeyColumns + " FROM access_keys WHERE id = ?");
      s.bind_all(id);
      return one_row<AccessKey>(s, access_key_from);
    });
  }

  void remove_access_keys_of(const std::string& connector_id) override {
    write([&](Connection& c) {
      Stmt(c, "remove access keys of connector " + connector_id, "DELETE FROM access_keys WHERE connector_id = ?")
          .bind_all(connector_id)
          .run();
    });
  }

  // ---- Registration tokens ----

  void add_registration_token(const std::string& token_sha256, Time expires, const std::string& domain) override {
    require_id(token_sha256, "registration token");
    write([&](Connection& c) {
      Stmt(c, "add registration token", "INSERT INTO registration_tokens (token_sha256, expires, domain) VALUES (?, ?, ?)")
          .bind_all(token_sha256, expires, domain)
          .run();
    });
  }

  std::optional<std::string> consume_registration_token(const std::string& token_sha256, Time now) override {
    return write([&](Connection& c) -> std::optional<std::string> {
      // One statement: the check and the mark cannot be separated by another consumer.
      Stmt s(c, "consume registration token",
             "UPDATE registration_tokens SET used = ?2 WHERE token_sha256 = ?1 AND used = 0 AND expires > ?2 RETURNING domain");
      s.bind_all(token_sha256, now);
      if (!s.step()) return std::nullopt;
      std::string domain = s.text(0);
      while (s.step()) {
      }
      return domain;
    });
  }

  // ---- Connectors ----

  void put_connector(const Connector& x) override {
    require_id(x.id, "connector");
    write([&](Connection& c) {
      // An upsert, not INSERT OR REPLACE: REPLACE deletes the row first, which the servers' foreign key forbids.
      Stmt(c, "put connector " + x.id,
           "INSERT INTO connectors (" + kConnectorColumns +
               ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
               "name = excluded.name, version = excluded.version, capabilities = excluded.capabilities, "
               "ip_address = excluded.ip_address, mac_address = excluded.mac_address, "
               "vm_manager_type = excluded.vm_manager_type, vm_manager_name = excluded.vm_manager_name, "
               "vm_manager_id = excluded.vm_manager_id, associated_on = excluded.associated_on, "
               "last_heartbeat = excluded.last_heartbeat, disassociated = excluded.disassociated, "
               "inventory_requested = excluded.inventory_requested, inventory_reported = excluded.inventory_reported")
          .bind_all(x.id, x.name, x.version, strings_to_json(x.capabilities), x.ip_address, x.mac_address,
                    x.vm_manager_type, x.vm_manager_name, x.vm_manager_id, x.associated_on, x.last_heartbeat,
                    x.disassociated, x.inventory_requested, x.inventory_reported, x.domain)
          .run();
    });
  }

  std::optional<Connector> get_connector(const std::string& id) override {
    return read([&](Connection& c) {
      Stmt s(c, "get connector " + id, "SELECT " + kConnectorColumns + " FROM connectors WHERE id = ?");
      s.bind_all(id);
      return one_row<Connector>(s, connector_from);
    });
  }

  // A page of a list in id order (keyset paging: the token holds the last id). `sql` takes the id to start after
  // as its first parameter, then `extra`, then the row limit.
  template <class T, class Reader, class... Extra>
  Page<T> page_by_id(const PageRequest& page, const std::string& list, const std::string& what, const std::string& sql,
                     Reader reader, const Extra&... extra) {
    auto after = decode_token(page.token, list, 1);
    int limit = page_size(page);
    return read([&](Connection& c) {
      Stmt s(c, what, sql);
      s.bind_all(after ? (*after)[0] : std::string(), extra..., limit + 1);
      return page_rows<T>(s, limit, reader, list, [](const T& x) { return std::vector<std::string>{x.id}; });
    });
  }

  Page<Connector> list_connectors(const PageRequest& page) override {
    return page_by_id<Connector>(page, "connectors", "list connectors",
                                 "SELECT " + kConnectorColumns + " FROM connectors WHERE disassociated = 0 AND id > ? ORDER BY id LIMIT ?",
                                 connector_from);
  }

  std::vector<Connector> all_connectors() override {
    return read([&](Connection& c) {
      Stmt s(c, "list all connectors",
             "SELECT " + kConnectorColumns + " FROM connectors WHERE disassociated = 0 ORDER BY id");
      return all_rows<Connector>(s, connector_from);
    });
  }

  void heartbeat(const std::string& connector_id, Time now, const std::string& ip_address) override {
    write([&](Connection& c) {
      // An empty address keeps the one on record.
      if (Stmt(c, "heartbeat of connector " + connector_id,
               "UPDATE connectors SET last_heartbeat = ?2, ip_address = CASE WHEN ?3 = '' THEN ip_address ELSE ?3 END "
               "WHERE id = ?1")
              .bind_all(connector_id, now, ip_address)
              .run() == 0)
        fail(ErrorKind::kNotFound, "connector " + connector_id + " not found");
    });
  }

  void request_inventory(const std::vector<std::string>& connector_ids) override {
    write([&](Connection& c) {
      for (auto& id : connector_ids) {
        if (Stmt(c, "request inventory from connector " + id,
                 "UPDATE connectors SET inventory_requested = inventory_requested + 1 WHERE id = ?")
                .bind_all(id)
                .run() == 0)
          fail(ErrorKind::kNotFound, "connector " + id + " not found");
      }
    });
  }

  // ---- Server catalog ----

  std::vector<Server> replace_inventory(const std::string& connector_id, int64_t generation, std::vector<Server> servers,
                                        Time now) override {
    return write([&](Connection& c) {
      require_connector(c, connector_id);

      struct Known {
        std::string id, job_id, job_state;
        bool reported = false;
      };
      using Address = std::pair<std::string, std::string>;  // (vm_manager_id, vm_id)
      std::map<Address, Known> known;
      {
        Stmt s(c, "replace inventory of connector " + connector_id + ": read its servers",
               "SELECT s.id, s.vm_manager_id, s.vm_id, j.id, j.state FROM " + kServerSource + " WHERE s.connector_id = ?");
        s.bind_all(connector_id);
        while (s.step()) known[{s.text(1), s.text(2)}] = {s.text(0), s.text(3), s.text(4)};
      }

      const std::string what = "replace inventory of connector " + connector_id + ": store server";
      const std::string upsert =
          "INSERT INTO servers (id, connector_id, server_type, vm_manager_id, vm_manager_type, vm_manager_name, vm_id, "
          "vm_name, vm_path, guest_os, cpus, memory_mib, disks, error, updated) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
          "server_type = excluded.server_type, vm_manager_type = excluded.vm_manager_type, "
          "vm_manager_name = excluded.vm_manager_name, vm_name = excluded.vm_name, vm_path = excluded.vm_path, "
          "guest_os = excluded.guest_os, cpus = excluded.cpus, memory_mib = excluded.memory_mib, disks = excluded.disks, "
          "error = excluded.error, updated = excluded.updated";
      std::set<Address> seen;
      for (auto& v : servers) {
        Address address{v.vm_manager_id, v.vm_id};
        if (!seen.insert(address).second)
          fail(ErrorKind::kInvalidArgument, "connector " + connector_id + " reported VM '" + v.vm_id + "' of VM manager '" +
                                                v.vm_manager_id + "' twice");
        auto it = known.find(address);
        if (it != known.end()) {
          it->second.reported = true;
          v.id = it->second.id;
          v.replication_job_id = it->second.job_id;
          v.replication_job_terminated = !it->second.job_id.empty() && job_terminated(it->second.job_state);
        } else {
          v.id = new_id("s-");
          v.replication_job_id.clear();
          v.replication_job_terminated = false;
        }
        v.connector_id = connector_id;
        v.updated = now;
        Stmt(c, what + " " + v.id, upsert)
            .bind_all(v.id, v.connector_id, v.server_type, v.vm_manager_id, v.vm_manager_type, v.vm_manager_name, v.vm_id,
                      v.vm_name, v.vm_path, v.guest_os, v.cpus, v.memory_mib, disks_to_json(v.disks), v.error, v.updated)
            .run();
      }

      // Servers it no longer reports: gone, unless a live job still refers to them.
      const std::string vanished_error = "no longer reported by connector " + connector_id;
      for (auto& [address, k] : known) {
        if (k.reported) continue;
        if (k.job_id.empty()) {
          Stmt(c, "replace inventory of connector " + connector_id + ": remove server " + k.id,
               "DELETE FROM servers WHERE id = ?")
              .bind_all(k.id)
              .run();
        } else {
          Stmt(c, "replace inventory of connector " + connector_id + ": mark server " + k.id,
               "UPDATE servers SET error = ?, updated = ? WHERE id = ?")
              .bind_all(vanished_error, now, k.id)
              .run();
        }
      }

      Stmt(c, "replace inventory of connector " + connector_id + ": record generation",
           "UPDATE connectors SET inventory_reported = ? WHERE id = ?")
          .bind_all(generation, connector_id)
          .run();
      store_catalog_status(c, CatalogStatus::kAvailable, now);
      return std::move(servers);
    });
  }

  std::optional<Server> get_server(const std::string& id) override {
    return read([&](Connection& c) {
      Stmt s(c, "get server " + id, "SELECT " + kServerColumns + " FROM " + kServerSource + " WHERE s.id = ?");
      s.bind_all(id);
      return one_row<Server>(s, server_from);
    });
  }

  Page<Server> list_servers(const PageRequest& page,
                            const std::vector<std::pair<std::string, std::string>>& vm_addresses) override {
    if (vm_addresses.empty()) {
      // Walks the primary key index from the token on: a page costs the same wherever it starts.
      return page_by_id<Server>(page, "servers", "list servers",
                                "SELECT " + kServerColumns + " FROM " + kServerSource + " WHERE s.id > ? ORDER BY s.id LIMIT ?",
                                server_from);
    }
    // The filter goes in as one JSON parameter, so the statement text (and its cache entry) does not
    // depend on how many addresses there are.
    nlohmann::json filter = nlohmann::json::array();
    for (auto& [manager, vm] : vm_addresses) filter.push_back({manager, vm});
    return page_by_id<Server>(page, "servers", "list servers by VM address",
                              "SELECT " + kServerColumns + " FROM " + kServerSource +
                                  " WHERE s.id > ? AND s.id IN (SELECT m.id FROM json_each(?) f JOIN servers m"
                                  " ON m.vm_manager_id = json_extract(f.value, '$[0]') AND m.vm_id = json_extract(f.value, '$[1]'))"
                                  " ORDER BY s.id LIMIT ?",
                              server_from, filter.dump());
  }

  size_t server_count() override {
    return read([&](Connection& c) {
      Stmt s(c, "count servers", "SELECT count(*) FROM servers");
      s.step();
      return static_cast<size_t>(s.int64(0));
    });
  }

  void delete_all_servers(Time now) override {
    write([&](Connection& c) {
      {
        Stmt s(c, "delete server catalog: look for live jobs",
               "SELECT j.id, j.server_id FROM replication_jobs j JOIN servers s ON s.id = j.server_id "
               "WHERE j.state != 'DELETED' ORDER BY j.id LIMIT 1");
        if (s.step())
          fail(ErrorKind::kConflict, "cannot delete the server catalog: replication job " + s.text(0) +
                                         " replicates server " + s.text(1) + "; delete the job first");
      }
      Stmt(c, "delete server catalog", "DELETE FROM servers").run();
      store_catalog_status(c, CatalogStatus::kDeleted, now);
    });
  }

  CatalogStatus catalog_status() override {
    return read([&](Connection& c) {
      Stmt s(c, "read catalog status", "SELECT status FROM catalog_state WHERE id = 1");
      if (!s.step()) fail(ErrorKind::kCorrupt, "catalog '" + file_.string() + "': catalog_state has no row");
      return catalog_status_from_string(s.text(0), "catalog '" + file_.string() + "'");
    });
  }

  void set_catalog_status(CatalogStatus status, Time now) override {
    write([&](Connection& c) { store_catalog_status(c, status, now); });
  }

  Time catalog_modified() override {
    return read([&](Connection& c) {
      Stmt s(c, "read catalog modification time", "SELECT modified FROM catalog_state WHERE id = 1");
      if (!s.step()) fail(ErrorKind::kCorrupt, "catalog '" + file_.string() + "': catalog_state has no row");
      return s.int64(0);
    });
  }

  // ---- Replication jobs ----

  void create_job(const ReplicationJob& j) override {
    require_id(j.id, "replication job");
    write([&](Connection& c) {
      {
        Stmt s(c, "create replication job " + j.id + ": find server", "SELECT 1 FROM servers WHERE id = ?");
        s.bind_all(j.server_id);
        if (!s.step()) fail(ErrorKind::kNotFound, "server " + j.server_id + " not found");
      }
      {
        Stmt s(c, "create replication job " + j.id + ": look for a live job",
               "SELECT id FROM replication_jobs WHERE server_id = ? AND state != 'DELETED'");
        s.bind_all(j.server_id);
        if (s.step())
          fail(ErrorKind::kConflict, "server " + j.server_id + " already has replication job " + s.text(0));
      }
      Stmt(c, "create replication job " + j.id,
           "INSERT INTO replication_jobs (" + kJobColumns + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
          .bind_all(j.id, j.server_id, j.seed_time, j.frequency_hours, j.run_once, j.next_run_time, j.license_type,
                    j.role_name, j.description, j.number_of_recent_amis_to_keep, j.encrypted, j.kms_key_id, j.state,
                    j.status_message, j.latest_ami_id, j.consecutive_failures, j.created)
          .run();
    });
  }

  std::optional<ReplicationJob> get_job(const std::string& id) override {
    return read([&](Connection& c) {
      Stmt s(c, "get replication job " + id,
             "SELECT " + kJobColumns + " FROM replication_jobs WHERE id = ? AND state != 'DELETED'");
      s.bind_all(id);
      return one_row<ReplicationJob>(s, job_from);
    });
  }

  Page<ReplicationJob> list_jobs(const PageRequest& page) override {
    return page_by_id<ReplicationJob>(page, "jobs", "list replication jobs",
                                      "SELECT " + kJobColumns + " FROM replication_jobs WHERE id > ? AND state != 'DELETED' ORDER BY id LIMIT ?",
                                      job_from);
  }

  // Changes everything but the id, the server and the creation time.
  void update_job(const ReplicationJob& j) override {
    write([&](Connection& c) {
      if (Stmt(c, "update replication job " + j.id,
               "UPDATE replication_jobs SET seed_time = ?, frequency_hours = ?, run_once = ?, next_run_time = ?, "
               "license_type = ?, role_name = ?, description = ?, number_of_recent_amis_to_keep = ?, encrypted = ?, "
               "kms_key_id = ?, state = ?, status_message = ?, latest_ami_id = ?, consecutive_failures = ? "
               "WHERE id = ? AND state != 'DELETED'")
              .bind_all(j.seed_time, j.frequency_hours, j.run_once, j.next_run_time, j.license_type, j.role_name,
                        j.description, j.number_of_recent_amis_to_keep, j.encrypted, j.kms_key_id, j.state,
                        j.status_message, j.latest_ami_id, j.consecutive_failures, j.id)
              .run() == 0)
        fail(ErrorKind::kNotFound, "replication job " + j.id + " not found");
    });
  }

  void delete_job(const std::string& id, Time now) override {
    write([&](Connection& c) {
      if (Stmt(c, "delete replication job " + id,
               "UPDATE replication_jobs SET state = 'DELETED', next_run_time = 0, deleted = ? "
               "WHERE id = ? AND state != 'DELETED'")
              .bind_all(now, id)
              .run() == 0)
        fail(ErrorKind::kNotFound, "replication job " + id + " not found");
    });
  }

  std::vector<ReplicationJob> due_jobs(Time now) override {
    return read([&](Connection& c) {
      Stmt s(c, "find due replication jobs",
             "SELECT " + kJobColumns + " FROM replication_jobs "
             "WHERE next_run_time > 0 AND next_run_time <= ? AND state != 'DELETED' ORDER BY next_run_time, id");
      s.bind_all(now);
      return all_rows<ReplicationJob>(s, job_from);
    });
  }

  // ---- Replication runs ----

  bool create_run(const ReplicationRun& r) override {
    require_id(r.id, "replication run");
    return write([&](Connection& c) {
      {
        Stmt s(c, "create replication run " + r.id + ": find job",
               "SELECT 1 FROM replication_jobs WHERE id = ? AND state != 'DELETED'");
        s.bind_all(r.job_id);
        if (!s.step()) fail(ErrorKind::kNotFound, "replication job " + r.job_id + " not found");
      }
      {
        Stmt s(c, "create replication run " + r.id + ": look for an open run",
               "SELECT 1 FROM replication_runs WHERE job_id = ? AND state IN ('PENDING', 'ACTIVE') LIMIT 1");
        s.bind_all(r.job_id);
        if (s.step()) return false;
      }
      Stmt(c, "create replication run " + r.id,
           "INSERT INTO replication_runs (" + kRunColumns +
               ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
          .bind_all(r.id, r.job_id, r.state, r.type, r.stage, r.stage_progress, r.status_message, r.ami_id,
                    r.scheduled_start, r.completed_time, r.description, r.encrypted, r.kms_key_id, r.connector_id,
                    r.bytes_total, r.bytes_done, r.bytes_uploaded, image_disks_to_json(r.disks), r.created, r.updated)
          .run();
      return true;
    });
  }

  std::optional<ReplicationRun> get_run(const std::string& id) override {
    return read([&](Connection& c) {
      Stmt s(c, "get replication run " + id, "SELECT " + kRunColumns + " FROM replication_runs WHERE id = ?");
      s.bind_all(id);
      return one_row<ReplicationRun>(s, run_from);
    });
  }

  Page<ReplicationRun> list_runs(const std::string& job_id, const PageRequest& page) override {
    // Newest first: the token holds the job and the (created, id) of the last run returned.
    auto after = decode_token(page.token, "runs", 3);
    int64_t created = INT64_MAX;
    std::string id;
    if (after) {
      const std::string& t = (*after)[1];
      auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), created);
      if ((*after)[0] != job_id || ec != std::errc() || end != t.data() + t.size()) fail_bad_token(page.token, "runs");
      id = (*after)[2];
    }
    int limit = page_size(page);
    return read([&](Connection& c) {
      Stmt s(c, "list replication runs of job " + job_id,
             "SELECT " + kRunColumns + " FROM replication_runs WHERE job_id = ?1 AND "
             "(created < ?2 OR (created = ?2 AND id < ?3)) ORDER BY created DESC, id DESC LIMIT ?4");
      s.bind_all(job_id, created, after ? id : std::string("\xff"), limit + 1);
      return page_rows<ReplicationRun>(s, limit, run_from, "runs", [&](const ReplicationRun& r) {
        return std::vector<std::string>{job_id, std::to_string(r.created), r.id};
      });
    });
  }

  // Changes everything but the id, the job, the creation time and bytes_uploaded (add_run_bytes_uploaded's alone, so
  // an update from a run read a moment earlier never loses bytes counted meanwhile).
  void update_run(const ReplicationRun& r) override {
    write([&](Connection& c) {
      if (Stmt(c, "update replication run " + r.id,
               "UPDATE replication_runs SET state = ?, type = ?, stage = ?, stage_progress = ?, status_message = ?, "
               "ami_id = ?, scheduled_start = ?, completed_time = ?, description = ?, encrypted = ?, kms_key_id = ?, "
               "connector_id = ?, bytes_total = ?, bytes_done = ?, disks = ?, updated = ? WHERE id = ?")
              .bind_all(r.state, r.type, r.stage, r.stage_progress, r.status_message, r.ami_id, r.scheduled_start,
                        r.completed_time, r.description, r.encrypted, r.kms_key_id, r.connector_id, r.bytes_total,
                        r.bytes_done, image_disks_to_json(r.disks), r.updated, r.id)
              .run() == 0)
        fail(ErrorKind::kNotFound, "replication run " + r.id + " not found");
    });
  }

  void add_run_bytes_uploaded(const std::string& run_id, uint64_t bytes) override {
    write([&](Connection& c) {
      Stmt(c, "count bytes received for replication run " + run_id, "UPDATE replication_runs SET bytes_uploaded = bytes_uploaded + ? WHERE id = ?")
          .bind_all(bytes, run_id)
          .run();
    });
  }

  std::vector<ReplicationRun> open_runs(const std::string& connector_id) override {
    return read([&](Connection& c) {
      if (connector_id.empty()) {
        Stmt s(c, "list open replication runs",
               "SELECT " + kRunColumns + " FROM replication_runs WHERE state IN ('PENDING', 'ACTIVE') ORDER BY created, id");
        return all_rows<ReplicationRun>(s, run_from);
      }
      Stmt s(c, "list open replication runs of connector " + connector_id,
             // CROSS JOIN fixes the join order: from the few open runs to their jobs and servers by primary key,
             // not from the connector's (possibly thousands of) servers.
             "SELECT " + kRunColumnsR + " FROM replication_runs r CROSS JOIN replication_jobs j ON j.id = r.job_id "
             "CROSS JOIN servers s ON s.id = j.server_id WHERE r.state IN ('PENDING', 'ACTIVE') AND s.connector_id = ? "
             "ORDER BY r.created, r.id");
      s.bind_all(connector_id);
      return all_rows<ReplicationRun>(s, run_from);
    });
  }

  // ---- Images ----

  void add_image(const Image& i) override {
    require_id(i.id, "image");
    write([&](Connection& c) {
      {
        Stmt s(c, "add image " + i.id + ": find job", "SELECT 1 FROM replication_jobs WHERE id = ?");
        s.bind_all(i.job_id);
        if (!s.step()) fail(ErrorKind::kNotFound, "replication job " + i.job_id + " of image " + i.id + " not found");
      }
      Stmt(c, "add image " + i.id, "INSERT INTO images (" + kImageColumns + ") VALUES (?, ?, ?, ?, ?, ?, ?)")
          .bind_all(i.id, i.job_id, i.run_id, i.server_id, i.store, image_disks_to_json(i.disks), i.created)
          .run();
    });
  }

  std::optional<Image> get_image(const std::string& id) override {
    return read([&](Connection& c) {
      Stmt s(c, "get image " + id, "SELECT " + kImageColumns + " FROM images WHERE id = ?");
      s.bind_all(id);
      return one_row<Image>(s, image_from);
    });
  }

  std::vector<Image> images_of_job(const std::string& job_id) override {
    return read([&](Connection& c) {
      Stmt s(c, "list images of replication job " + job_id,
             // rowid: insertion order among images of the same second (ids are random)
             "SELECT " + kImageColumns + " FROM images WHERE job_id = ? ORDER BY created, rowid");
      s.bind_all(job_id);
      return all_rows<Image>(s, image_from);
    });
  }

  Page<Image> list_images(const PageRequest& page) override {
    return page_by_id<Image>(page, "images", "list images", "SELECT " + kImageColumns + " FROM images WHERE id > ? ORDER BY id LIMIT ?",
                             image_from);
  }

  void delete_image(const std::string& id) override {
    write([&](Connection& c) {
      if (Stmt(c, "delete image " + id, "DELETE FROM images WHERE id = ?").bind_all(id).run() == 0)
        fail(ErrorKind::kNotFound, "image " + id + " not found");
    });
  }

  // ---- Stores and snapshot owners ----

  std::optional<StoreRecord> get_store(const std::string& name) override {
    return read([&](Connection& c) {
      Stmt s(c, "get store " + name, "SELECT name, repository_id, encrypted, key_id, key_file_sha256, created FROM stores WHERE name = ?");
      s.bind_all(name);
      return one_row<StoreRecord>(s, [](const Stmt& r) {
        return StoreRecord{r.text(0), r.text(1), r.boolean(2), r.text(3), r.text(4), r.int64(5)};
      });
    });
  }

  void put_store(const StoreRecord& x) override {
    require_id(x.name, "store");
    write([&](Connection& c) {
      Stmt(c, "put store " + x.name,
           "INSERT INTO stores (name, repository_id, encrypted, key_id, key_file_sha256, created) VALUES (?, ?, ?, ?, ?, ?) "
           "ON CONFLICT(name) DO UPDATE SET repository_id = excluded.repository_id, encrypted = excluded.encrypted, "
           "key_id = excluded.key_id, key_file_sha256 = excluded.key_file_sha256")
          .bind_all(x.name, x.repository_id, x.encrypted, x.key_id, x.key_file_sha256, x.created)
          .run();
    });
  }

  bool claim_snapshot(const std::string& store, const std::string& snapshot_id, const std::string& job_id, Time now) override {
    return write([&](Connection& c) {
      Stmt(c, "claim snapshot " + snapshot_id,
           "INSERT INTO snapshot_owners (store, snapshot_id, job_id, created) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
          .bind_all(store, snapshot_id, job_id, now)
          .run();
      Stmt s(c, "find the owner of snapshot " + snapshot_id, "SELECT job_id FROM snapshot_owners WHERE store = ? AND snapshot_id = ?");
      s.bind_all(store, snapshot_id);
      return s.step() && s.text(0) == job_id;
    });
  }

  void release_snapshot(const std::string& store, const std::string& snapshot_id) override {
    write([&](Connection& c) {
      Stmt(c, "forget snapshot " + snapshot_id, "DELETE FROM snapshot_owners WHERE store = ? AND snapshot_id = ?").bind_all(store, snapshot_id).run();
    });
  }

  // ---- Transactions ----

  // The outermost level holds the writer lock and an IMMEDIATE transaction (so it never has to upgrade a
  // read lock, the SQLITE_BUSY trap of deferred transactions); nested levels are savepoints, so a nested
  // call that throws undoes only its own work if the caller catches and goes on.
  void transaction(const std::function<void()>& fn) override {
    std::lock_guard lock(write_mu_);
    Connection& c = *writer_;
    const int level = depth_;
    const std::string savepoint = "ferry_nested_" + std::to_string(level);
    if (level == 0) {
      c.exec("BEGIN IMMEDIATE", "begin transaction");
      owner_.store(std::this_thread::get_id());
    } else {
      c.exec(("SAVEPOINT " + savepoint).c_str(), "begin nested transaction");
    }
    depth_++;
    try {
      fn();
    } catch (...) {
      depth_--;
      abandon(level, savepoint);
      throw;
    }
    depth_--;
    try {
      c.exec(level == 0 ? "COMMIT" : ("RELEASE " + savepoint).c_str(),
             level == 0 ? "commit transaction" : "end nested transaction");
    } catch (...) {
      abandon(level, savepoint);
      throw;
    }
    if (level == 0) owner_.store(std::thread::id());
  }

 private:
  // Undoes the work of transaction level `level`.
  void abandon(int level, const std::string& savepoint) noexcept {
    Connection& c = *writer_;
    if (level == 0) {
      if (!sqlite3_get_autocommit(c.db())) c.exec_quietly("ROLLBACK");  // SQLite may have rolled back already
      owner_.store(std::thread::id());
    } else if (!sqlite3_get_autocommit(c.db())) {
      c.exec_quietly(("ROLLBACK TO " + savepoint + "; RELEASE " + savepoint).c_str());
    }
  }

  std::unique_ptr<Connection> open_reader() {
    auto c = std::make_unique<Connection>(file_, SQLITE_OPEN_READWRITE);
    c->exec("PRAGMA query_only = ON", "configure read connection");
    return c;
  }

  void require_connector(Connection& c, const std::string& id) {
    Stmt s(c, "find connector " + id, "SELECT 1 FROM connectors WHERE id = ?");
    s.bind_all(id);
    if (!s.step()) fail(ErrorKind::kNotFound, "connector " + id + " not found");
  }

  void store_catalog_status(Connection& c, CatalogStatus status, Time now) {
    Stmt(c, std::string("set catalog status ") + to_string(status),
         "UPDATE catalog_state SET status = ?, modified = ? WHERE id = 1")
        .bind_all(std::string(to_string(status)), now)
        .run();
  }

  int64_t pragma(Connection& c, const char* sql, const std::string& what) {
    Stmt s(c, what, sql);
    if (!s.step()) c.fail_sql(SQLITE_ERROR, what);
    return s.int64(0);
  }

  // Refuses files that are not SQLite or are someone else's database, before changing anything in them.
  void check_identity() {
    Connection& c = *writer_;
    const std::string name = "catalog '" + file_.string() + "'";
    // Raw calls here, so a file that is not SQLite at all gets one clear message.
    auto query = [&](const char* sql) -> int64_t {
      sqlite3_stmt* stmt = nullptr;
      int rc = sqlite3_prepare_v2(c.db(), sql, -1, &stmt, nullptr);
      if (rc == SQLITE_OK) rc = sqlite3_step(stmt);
      int64_t value = rc == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : 0;
      std::string message = sqlite3_errmsg(c.db());
      sqlite3_finalize(stmt);
      if (rc == SQLITE_ROW) return value;
      if (kind_of(rc) == ErrorKind::kCorrupt)
        fail(ErrorKind::kCorrupt, name + " is not a ferry catalog: not an SQLite database (" + message + ")");
      c.fail_sql(rc, std::string("check the file (") + sql + ")");
    };
    const int64_t app_id = query("PRAGMA application_id");
    const int64_t tables = query("SELECT count(*) FROM sqlite_master");
    if (app_id == kApplicationId) return;
    if (app_id == 0 && tables == 0) return;  // a new, empty file
    fail(ErrorKind::kCorrupt, name + " is not a ferry catalog: an SQLite database with " + std::to_string(tables) +
                                  " schema objects and application id " + std::to_string(app_id) + " (ferry's is " +
                                  std::to_string(kApplicationId) + ")");
  }

  void configure_writer() {
    Connection& c = *writer_;
    std::string mode;
    {
      Stmt s(c, "switch to WAL mode", "PRAGMA journal_mode = WAL");
      if (s.step()) mode = s.text(0);
    }
    if (mode != "wal")
      fail(ErrorKind::kIo, "catalog '" + file_.string() + "': cannot use WAL mode (journal mode stays '" + mode +
                               "'); is it on a network filesystem?");
    c.exec("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL", "configure connection");
  }

  void migrate() {
    Connection& c = *writer_;
    const int64_t known = static_cast<int64_t>(kMigrations.size());
    auto too_new = [&](int64_t version) {
      fail(ErrorKind::kUnsupported, "catalog '" + file_.string() + "' has schema version " + std::to_string(version) +
                                        ", newer than this ferry knows (" + std::to_string(known) +
                                        "); upgrade ferry to open it");
    };
    int64_t version = pragma(c, "PRAGMA user_version", "read the schema version");
    if (version > known) too_new(version);
    while (version < known) {
      transaction([&] {
        // Read again under the write lock: another process may have migrated in the meantime.
        version = pragma(c, "PRAGMA user_version", "read the schema version");
        if (version > known) too_new(version);
        if (version == known) return;
        const std::string what = "migrate schema to version " + std::to_string(version + 1);
        c.exec(kMigrations[static_cast<size_t>(version)], what);
        c.exec(("PRAGMA user_version = " + std::to_string(version + 1) + "; PRAGMA application_id = " +
                std::to_string(kApplicationId))
                   .c_str(),
               what);
        version++;
      });
    }
  }

  const std::filesystem::path file_;
  std::recursive_mutex write_mu_;  // held by the thread running a write transaction, for all of it
  std::atomic<std::thread::id> owner_{};  // that thread, if any
  int depth_ = 0;                         // its transaction nesting depth
  std::unique_ptr<Connection> writer_;
  std::mutex readers_mu_;
  std::vector<std::unique_ptr<Connection>> readers_;  // idle read connections
};

}  // namespace

std::unique_ptr<Catalog> open_sqlite_catalog(const std::filesystem::path& file) {
  return std::make_unique<SqliteCatalog>(file);
}

}  // namespace ferry::catalog
