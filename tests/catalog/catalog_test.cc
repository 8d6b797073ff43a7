// Catalog tests: the SQLite catalog on real files in a scratch directory, read as the catalog's specification.
#include "catalog/catalog.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "common/error.h"
#include "fixtures/fixtures.h"

namespace ferry::catalog {
namespace {

using ferry::testing::TempDir;

// Runs fn and returns the kind of the ferry::Error it throws; fails the test if it throws nothing.
template <class F>
ErrorKind error_kind(F&& fn, std::string* message = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.kind();
  }
  ADD_FAILURE() << "expected a ferry::Error";
  return ErrorKind::kExternal;
}

// Runs SQL on a catalog file behind the catalog's back (to fake other versions and foreign files).
void raw_sql(const std::filesystem::path& file, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(file.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string message = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << message;
}

// The first column of the first row of `sql`, as text ("" if no row).
std::string raw_value(const std::filesystem::path& file, const std::string& sql) {
  sqlite3* db = nullptr;
  sqlite3_stmt* st = nullptr;
  std::string value;
  if (sqlite3_open(file.c_str(), &db) == SQLITE_OK && sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
    value = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  sqlite3_close(db);
  return value;
}

Connector make_connector(const std::string& id, const std::string& name = "conn") {
  Connector c;
  c.id = id;
  c.name = name;
  c.version = "0.1.0";
  c.capabilities = {"VSPHERE", "SNAPSHOT_BATCHING"};
  c.ip_address = "10.0.0.5";
  c.mac_address = "52:54:00:12:34:56";
  c.vm_manager_type = "VSPHERE";
  c.vm_manager_name = "vcenter";
  c.vm_manager_id = "vc-1";
  c.associated_on = 1000;
  c.last_heartbeat = 1000;
  return c;
}

Server make_server(const std::string& vm_id, const std::string& manager = "vc-1") {
  Server s;
  s.vm_manager_id = manager;
  s.vm_manager_type = "VSPHERE";
  s.vm_manager_name = "vcenter";
  s.vm_id = vm_id;
  s.vm_name = "vm " + vm_id;
  s.vm_path = "/dc/vm/" + vm_id;
  s.guest_os = "linux";
  s.cpus = 2;
  s.memory_mib = 4096;
  s.disks = {{"scsi0:0", "/data/" + vm_id + "-disk1.vmdk", "vmdk", 10ull << 30},
             {"scsi0:1", "/data/" + vm_id + "-disk2.vmdk", "vmdk", 0}};
  return s;
}

std::vector<Server> make_servers(int n, const std::string& prefix = "vm-") {
  std::vector<Server> out;
  for (int i = 0; i < n; i++) out.push_back(make_server(prefix + std::to_string(i)));
  return out;
}

ReplicationJob make_job(const std::string& server_id, Time next_run = 0) {
  ReplicationJob j;
  j.id = Catalog::new_id("sms-job-");
  j.server_id = server_id;
  j.seed_time = 5000;
  j.frequency_hours = 12;
  j.next_run_time = next_run;
  j.role_name = "sms";
  j.description = "nightly";
  j.created = 4000;
  return j;
}

ReplicationRun make_run(const std::string& job_id, Time created, const std::string& state = "PENDING") {
  ReplicationRun r;
  r.id = Catalog::new_id("sms-run-");
  r.job_id = job_id;
  r.state = state;
  r.created = created;
  r.updated = created;
  return r;
}

class CatalogTest : public ::testing::Test {
 protected:
  std::filesystem::path file() const { return dir_.path() / "catalog.db"; }
  Catalog& cat() {
    if (!catalog_) catalog_ = open_sqlite_catalog(file());
    return *catalog_;
  }
  void reopen() {
    catalog_.reset();
    catalog_ = open_sqlite_catalog(file());
  }
  // A connector with `n` servers imported; returns the servers.
  std::vector<Server> import(const std::string& connector_id, int n, const std::string& prefix = "vm-") {
    if (!cat().get_connector(connector_id)) cat().put_connector(make_connector(connector_id));
    return cat().replace_inventory(connector_id, 1, make_servers(n, prefix), 2000);
  }

  TempDir dir_;
  std::unique_ptr<Catalog> catalog_;
};

// ---- Ids ----

TEST(CatalogIds, NewIdsArePrefixedSeventeenLowerHexDigitsAndDistinct) {
  std::set<std::string> ids;
  for (int i = 0; i < 1000; i++) {
    std::string id = Catalog::new_id("sms-job-");
    ASSERT_EQ(id.size(), 8u + 17u);
    ASSERT_EQ(id.rfind("sms-job-", 0), 0u);
    ASSERT_EQ(id.find_first_not_of("0123456789abcdef", 8), std::string::npos) << id;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 1000u);
}

// ---- The file ----

TEST_F(CatalogTest, FreshFileGetsTheSchemaAndReopeningIsIdempotent) {
  EXPECT_EQ(cat().server_count(), 0u);
  EXPECT_EQ(cat().catalog_status(), CatalogStatus::kNotImported);
  reopen();
  reopen();
  EXPECT_EQ(cat().catalog_status(), CatalogStatus::kNotImported);
  EXPECT_EQ(cat().server_count(), 0u);
}

TEST_F(CatalogTest, ReopenKeepsData) {
  auto servers = import("c-1", 3);
  AccessKey key{"AKIAABCDEFGHIJKLMNOP", std::string(40, 's'), "admin", "", 77};
  cat().add_access_key(key);
  auto job = make_job(servers[0].id);
  cat().create_job(job);
  reopen();
  EXPECT_EQ(cat().server_count(), 3u);
  EXPECT_EQ(cat().get_server(servers[1].id)->vm_id, servers[1].vm_id);
  EXPECT_EQ(cat().find_access_key(key.id)->secret, key.secret);
  EXPECT_EQ(cat().get_job(job.id)->description, "nightly");
  EXPECT_EQ(cat().catalog_status(), CatalogStatus::kAvailable);
  EXPECT_EQ(cat().catalog_modified(), 2000);
}

TEST_F(CatalogTest, NewerSchemaVersionIsUnsupportedAndNamesFileAndVersions) {
  cat();
  catalog_.reset();
  raw_sql(file(), "PRAGMA user_version = 999");
  std::string message;
  EXPECT_EQ(error_kind([&] { open_sqlite_catalog(file()); }, &message), ErrorKind::kUnsupported);
  EXPECT_NE(message.find(file().string()), std::string::npos) << message;
  EXPECT_NE(message.find("999"), std::string::npos) << message;
}

TEST_F(CatalogTest, FileThatIsNotSqliteIsCorrupt) {
  std::ofstream(file()) << "this is a text file, not a database, and it is long enough to have a header.\n";
  std::string message;
  EXPECT_EQ(error_kind([&] { open_sqlite_catalog(file()); }, &message), ErrorKind::kCorrupt);
  EXPECT_NE(message.find(file().string()), std::string::npos) << message;
}

TEST_F(CatalogTest, ForeignSqliteDatabaseIsCorruptAndLeftAlone) {
  raw_sql(file(), "CREATE TABLE recipes (name TEXT); INSERT INTO recipes VALUES ('soup')");
  std::string message;
  EXPECT_EQ(error_kind([&] { open_sqlite_catalog(file()); }, &message), ErrorKind::kCorrupt);
  EXPECT_NE(message.find(file().string()), std::string::npos) << message;
  EXPECT_NE(message.find("not a ferry catalog"), std::string::npos) << message;
  // Not switched to WAL (the journal mode is kept in the file) nor migrated (no version, no tables added).
  EXPECT_NE(raw_value(file(), "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw_value(file(), "PRAGMA user_version"), "0");
  EXPECT_EQ(raw_value(file(), "SELECT count(*) FROM sqlite_master"), "1");
  EXPECT_EQ(raw_value(file(), "SELECT name FROM recipes"), "soup");
}

TEST_F(CatalogTest, OpeningInAMissingDirectoryFailsNamingTheFile) {
  auto missing = dir_.path() / "no" / "such" / "catalog.db";
  std::string message;
  EXPECT_EQ(error_kind([&] { open_sqlite_catalog(missing); }, &message), ErrorKind::kIo);
  EXPECT_NE(message.find(missing.string()), std::string::npos) << message;
}

// ---- Access keys and registration tokens ----

TEST_F(CatalogTest, AccessKeysAreFoundByIdAndRemovedWithTheirConnector) {
  cat().add_access_key({"AKIAADMIN00000000001", std::string(40, 'a'), "admin", "", 10});
  cat().add_access_key({"AKCOCONN000000000001", std::string(40, 'b'), "connector", "c-1", 11});
  cat().add_access_key({"AKCOCONN000000000002", std::string(40, 'c'), "connector", "c-1", 12});
  cat().add_access_key({"AKCOCONN000000000003", std::string(40, 'd'), "connector", "c-2", 13});
  auto k = cat().find_access_key("AKCOCONN000000000001");
  ASSERT_TRUE(k);
  EXPECT_EQ(k->secret, std::string(40, 'b'));
  EXPECT_EQ(k->role, "connector");
  EXPECT_EQ(k->connector_id, "c-1");
  EXPECT_EQ(k->created, 11);
  EXPECT_FALSE(cat().find_access_key("AKIANOPE"));
  EXPECT_EQ(error_kind([&] { cat().add_access_key({"AKIAADMIN00000000001", "x", "admin", "", 1}); }), ErrorKind::kConflict);

  cat().remove_access_keys_of("c-1");
  EXPECT_FALSE(cat().find_access_key("AKCOCONN000000000001"));
  EXPECT_FALSE(cat().find_access_key("AKCOCONN000000000002"));
  EXPECT_TRUE(cat().find_access_key("AKCOCONN000000000003"));
  EXPECT_TRUE(cat().find_access_key("AKIAADMIN00000000001"));
}

TEST_F(CatalogTest, RegistrationTokenIsConsumedOnceAndNotAfterItExpires) {
  cat().add_registration_token("aaaa", 100);
  cat().add_registration_token("bbbb", 100);
  EXPECT_TRUE(cat().consume_registration_token("aaaa", 50));
  EXPECT_FALSE(cat().consume_registration_token("aaaa", 51));  // used
  EXPECT_FALSE(cat().consume_registration_token("bbbb", 100));  // expired
  EXPECT_FALSE(cat().consume_registration_token("cccc", 1));    // unknown
}

// ---- Connectors ----

TEST_F(CatalogTest, ConnectorsArePutReadListedAndHeartbeat) {
  auto c = make_connector("c-00000000000000002", "second");
  cat().put_connector(make_connector("c-00000000000000001", "first"));
  cat().put_connector(c);
  auto got = cat().get_connector(c.id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->name, "second");
  EXPECT_EQ(got->capabilities, c.capabilities);
  EXPECT_EQ(got->mac_address, c.mac_address);
  EXPECT_EQ(got->associated_on, 1000);

  c.name = "renamed";  // put replaces by id
  cat().put_connector(c);
  EXPECT_EQ(cat().get_connector(c.id)->name, "renamed");
  EXPECT_EQ(cat().all_connectors().size(), 2u);

  cat().heartbeat(c.id, 5000, "10.0.0.9");
  cat().heartbeat(c.id, 6000, "");  // keeps the address
  got = cat().get_connector(c.id);
  EXPECT_EQ(got->last_heartbeat, 6000);
  EXPECT_EQ(got->ip_address, "10.0.0.9");
  EXPECT_EQ(error_kind([&] { cat().heartbeat("c-nope", 1, ""); }), ErrorKind::kNotFound);

  auto gone = make_connector("c-00000000000000003");
  gone.disassociated = true;
  cat().put_connector(gone);
  EXPECT_TRUE(cat().get_connector(gone.id)->disassociated);
  EXPECT_EQ(cat().all_connectors().size(), 2u);
  auto page = cat().list_connectors({"", 1});
  ASSERT_EQ(page.items.size(), 1u);
  EXPECT_EQ(page.items[0].id, "c-00000000000000001");
  ASSERT_FALSE(page.next_token.empty());
  page = cat().list_connectors({page.next_token, 1});
  ASSERT_EQ(page.items.size(), 1u);
  EXPECT_EQ(page.items[0].id, "c-00000000000000002");
  EXPECT_TRUE(page.next_token.empty());  // the disassociated one is not listed
}

TEST_F(CatalogTest, RequestInventoryBumpsTheGenerationOfEachConnector) {
  cat().put_connector(make_connector("c-1"));
  cat().put_connector(make_connector("c-2"));
  cat().request_inventory({"c-1", "c-2"});
  cat().request_inventory({"c-1"});
  EXPECT_EQ(cat().get_connector("c-1")->inventory_requested, 2);
  EXPECT_EQ(cat().get_connector("c-2")->inventory_requested, 1);
  // An unknown id fails the whole request.
  EXPECT_EQ(error_kind([&] { cat().request_inventory({"c-2", "c-nope"}); }), ErrorKind::kNotFound);
  EXPECT_EQ(cat().get_connector("c-2")->inventory_requested, 1);
  // A put after a request keeps what the caller passes (the service reads, modifies, puts).
  cat().replace_inventory("c-1", 2, {}, 10);
  EXPECT_EQ(cat().get_connector("c-1")->inventory_reported, 2);
}

// ---- Server catalog ----

TEST_F(CatalogTest, ReplaceInventoryKeepsServerIdsStableAcrossImports) {
  auto first = import("c-1", 5);
  std::set<std::string> ids;
  for (auto& s : first) {
    EXPECT_EQ(s.id.rfind("s-", 0), 0u);
    EXPECT_EQ(s.connector_id, "c-1");
    ids.insert(s.id);
  }
  EXPECT_EQ(ids.size(), 5u);

  auto again = make_servers(5);
  std::reverse(again.begin(), again.end());
  again[0].vm_name = "renamed";
  auto second = cat().replace_inventory("c-1", 2, again, 3000);
  for (auto& s : second) {
    auto before = std::find_if(first.begin(), first.end(), [&](const Server& f) { return f.vm_id == s.vm_id; });
    ASSERT_NE(before, first.end());
    EXPECT_EQ(s.id, before->id) << s.vm_id;
  }
  auto stored = cat().get_server(second[0].id);
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->vm_name, "renamed");
  EXPECT_EQ(stored->updated, 3000);
  EXPECT_EQ(stored->disks.size(), 2u);
  EXPECT_EQ(stored->disks[0].size, 10ull << 30);
  EXPECT_EQ(stored->disks[1].path, "/data/" + stored->vm_id + "-disk2.vmdk");
  EXPECT_EQ(cat().server_count(), 5u);
  EXPECT_EQ(cat().get_connector("c-1")->inventory_reported, 2);
  EXPECT_EQ(cat().catalog_status(), CatalogStatus::kAvailable);
  EXPECT_EQ(cat().catalog_modified(), 3000);
}

TEST_F(CatalogTest, ReplaceInventoryRemovesVanishedServersButKeepsOnesWithALiveJob) {
  auto first = import("c-1", 4);
  auto other = import("c-2", 2, "other-");
  cat().create_job(make_job(first[1].id));
  auto deleted_job = make_job(first[2].id);
  cat().create_job(deleted_job);
  cat().delete_job(deleted_job.id, 2500);

  // Only vm-0 is still reported.
  cat().replace_inventory("c-1", 2, {make_server("vm-0")}, 3000);
  EXPECT_TRUE(cat().get_server(first[0].id));
  auto kept = cat().get_server(first[1].id);
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->error, "no longer reported by connector c-1");
  EXPECT_FALSE(kept->replication_job_id.empty());
  EXPECT_FALSE(cat().get_server(first[2].id));  // its job is DELETED, so it goes
  EXPECT_FALSE(cat().get_server(first[3].id));
  EXPECT_TRUE(cat().get_server(other[0].id));  // another connector's servers are untouched
  EXPECT_EQ(cat().server_count(), 4u);

  // Reported again: same id, error cleared.
  auto back = cat().replace_inventory("c-1", 3, {make_server("vm-0"), make_server("vm-1")}, 4000);
  EXPECT_EQ(back[1].id, first[1].id);
  EXPECT_EQ(cat().get_server(first[1].id)->error, "");
}

TEST_F(CatalogTest, ReplaceInventoryRejectsUnknownConnectorsAndDuplicateVms) {
  EXPECT_EQ(error_kind([&] { cat().replace_inventory("c-nope", 1, make_servers(1), 1); }), ErrorKind::kNotFound);
  cat().put_connector(make_connector("c-1"));
  EXPECT_EQ(error_kind([&] { cat().replace_inventory("c-1", 1, {make_server("a"), make_server("a")}, 1); }),
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(cat().server_count(), 0u);
  EXPECT_EQ(cat().get_connector("c-1")->inventory_reported, 0);
}

TEST_F(CatalogTest, ListServersFillsTheLiveJobAndWhetherItTerminated) {
  auto servers = import("c-1", 3);
  auto job = make_job(servers[0].id);
  cat().create_job(job);
  auto old = make_job(servers[1].id);
  cat().create_job(old);
  cat().delete_job(old.id, 1);
  std::map<std::string, Server> by_id;
  for (auto& s : cat().list_servers({}).items) by_id[s.id] = s;
  EXPECT_EQ(by_id[servers[0].id].replication_job_id, job.id);
  EXPECT_FALSE(by_id[servers[0].id].replication_job_terminated);
  EXPECT_EQ(by_id[servers[1].id].replication_job_id, "");
  EXPECT_EQ(by_id[servers[2].id].replication_job_id, "");

  job.state = "FAILED";
  cat().update_job(job);
  EXPECT_TRUE(cat().get_server(servers[0].id)->replication_job_terminated);
}

TEST_F(CatalogTest, PagingOverTenThousandServersVisitsEachExactlyOnce) {
  auto servers = import("c-1", 10000);
  std::set<std::string> expected;
  for (auto& s : servers) expected.insert(s.id);

  std::set<std::string> seen;
  std::string token, last;
  int pages = 0;
  do {
    auto page = cat().list_servers({token, 100});
    ASSERT_LE(page.items.size(), 100u);
    for (auto& s : page.items) {
      EXPECT_GT(s.id, last);  // ascending ids
      last = s.id;
      EXPECT_TRUE(seen.insert(s.id).second) << s.id;
    }
    token = page.next_token;
    pages++;
    ASSERT_LE(pages, 101);
  } while (!token.empty());
  EXPECT_EQ(pages, 100);  // no empty page at the end
  EXPECT_EQ(seen, expected);

  // The page size is clamped to [1, 1000].
  EXPECT_EQ(cat().list_servers({"", 0}).items.size(), 1u);
  EXPECT_EQ(cat().list_servers({"", 5000}).items.size(), 1000u);

  // Print page latency for the record (not an assertion: timing belongs in bench/).
  std::vector<double> ms;
  token.clear();
  for (int i = 0; i < 200; i++) {
    auto t0 = std::chrono::steady_clock::now();
    auto page = cat().list_servers({token, 100});
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    token = page.next_token;
  }
  std::sort(ms.begin(), ms.end());
  std::printf("list_servers, 10000 servers, page of 100: median %.3f ms, p95 %.3f ms\n", ms[ms.size() / 2],
              ms[ms.size() * 95 / 100]);
}

TEST_F(CatalogTest, BadPageTokenIsInvalidArgument) {
  import("c-1", 3);
  std::string message;
  EXPECT_EQ(error_kind([&] { cat().list_servers({"zz-not-a-token", 10}); }, &message), ErrorKind::kInvalidArgument);
  EXPECT_NE(message.find("nextToken"), std::string::npos) << message;
  EXPECT_NE(message.find("is not valid"), std::string::npos) << message;
  EXPECT_EQ(error_kind([&] { cat().list_servers({"abcd", 10}); }), ErrorKind::kInvalidArgument);
  // A token from another listing is not valid either.
  auto job = make_job(cat().list_servers({}).items[0].id);
  cat().create_job(job);
  cat().create_job(make_job(cat().list_servers({}).items[1].id));
  auto jobs = cat().list_jobs({"", 1});
  ASSERT_FALSE(jobs.next_token.empty());
  EXPECT_EQ(error_kind([&] { cat().list_servers({jobs.next_token, 10}); }), ErrorKind::kInvalidArgument);
  EXPECT_EQ(error_kind([&] { cat().list_runs(job.id, {jobs.next_token, 10}); }), ErrorKind::kInvalidArgument);
}

TEST_F(CatalogTest, ListServersFiltersByVmAddress) {
  auto servers = import("c-1", 20);
  import("c-2", 1, "other-");
  auto page = cat().list_servers({}, {{"vc-1", "vm-3"}, {"vc-1", "vm-17"}, {"vc-1", "vm-3"}, {"vc-9", "vm-1"}});
  std::set<std::string> vms;
  for (auto& s : page.items) vms.insert(s.vm_id);
  EXPECT_EQ(vms, (std::set<std::string>{"vm-3", "vm-17"}));
  EXPECT_EQ(page.items.size(), 2u);
  // Paged too.
  page = cat().list_servers({"", 1}, {{"vc-1", "vm-3"}, {"vc-1", "vm-17"}});
  ASSERT_EQ(page.items.size(), 1u);
  auto rest = cat().list_servers({page.next_token, 1}, {{"vc-1", "vm-3"}, {"vc-1", "vm-17"}});
  ASSERT_EQ(rest.items.size(), 1u);
  EXPECT_NE(rest.items[0].id, page.items[0].id);
  EXPECT_TRUE(rest.next_token.empty());
}

TEST_F(CatalogTest, DeleteAllServersRefusesWhileALiveJobExists) {
  auto servers = import("c-1", 3);
  auto job = make_job(servers[0].id);
  cat().create_job(job);
  EXPECT_EQ(error_kind([&] { cat().delete_all_servers(9000); }), ErrorKind::kConflict);
  EXPECT_EQ(cat().server_count(), 3u);
  cat().delete_job(job.id, 9000);
  cat().delete_all_servers(9001);
  EXPECT_EQ(cat().server_count(), 0u);
  EXPECT_EQ(cat().catalog_status(), CatalogStatus::kDeleted);
  EXPECT_EQ(cat().catalog_modified(), 9001);
  cat().set_catalog_status(CatalogStatus::kImporting, 9002);
  EXPECT_EQ(cat().catalog_status(), CatalogStatus::kImporting);
}

// ---- Replication jobs ----

TEST_F(CatalogTest, JobsAreCreatedOncePerServerUpdatedAndDeleted) {
  auto servers = import("c-1", 2);
  auto job = make_job(servers[0].id, 7000);
  cat().create_job(job);
  auto got = cat().get_job(job.id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->server_id, servers[0].id);
  EXPECT_EQ(got->frequency_hours, 12);
  EXPECT_EQ(got->license_type, "AWS");
  EXPECT_EQ(got->state, "PENDING");

  std::string message;
  EXPECT_EQ(error_kind([&] { cat().create_job(make_job(servers[0].id)); }, &message), ErrorKind::kConflict);
  EXPECT_NE(message.find(job.id), std::string::npos) << message;
  EXPECT_EQ(error_kind([&] { cat().create_job(make_job("s-nope")); }), ErrorKind::kNotFound);

  job.state = "ACTIVE";
  job.frequency_hours = 24;
  job.encrypted = true;
  job.kms_key_id = "key-1";
  job.consecutive_failures = 2;
  cat().update_job(job);
  got = cat().get_job(job.id);
  EXPECT_EQ(got->state, "ACTIVE");
  EXPECT_EQ(got->frequency_hours, 24);
  EXPECT_TRUE(got->encrypted);
  EXPECT_EQ(got->kms_key_id, "key-1");
  EXPECT_EQ(got->consecutive_failures, 2);

  auto other = make_job(servers[1].id);
  cat().create_job(other);
  EXPECT_EQ(cat().list_jobs({}).items.size(), 2u);

  cat().delete_job(job.id, 8000);
  EXPECT_FALSE(cat().get_job(job.id));
  auto listed = cat().list_jobs({});
  ASSERT_EQ(listed.items.size(), 1u);
  EXPECT_EQ(listed.items[0].id, other.id);
  EXPECT_EQ(error_kind([&] { cat().update_job(job); }), ErrorKind::kNotFound);
  EXPECT_EQ(error_kind([&] { cat().delete_job(job.id, 8001); }), ErrorKind::kNotFound);

  // The server is free for a new job; the old id stays dead.
  cat().create_job(make_job(servers[0].id));
  auto reuse = make_job(servers[1].id);
  reuse.id = job.id;
  cat().delete_job(other.id, 8002);
  EXPECT_EQ(error_kind([&] { cat().create_job(reuse); }), ErrorKind::kConflict);
}

TEST_F(CatalogTest, DueJobsAreLiveJobsScheduledAtOrBeforeNow) {
  auto servers = import("c-1", 4);
  auto early = make_job(servers[0].id, 100);
  auto now = make_job(servers[1].id, 200);
  auto later = make_job(servers[2].id, 300);
  auto unscheduled = make_job(servers[3].id, 0);
  for (auto& j : {early, now, later, unscheduled}) cat().create_job(j);
  auto due = cat().due_jobs(200);
  ASSERT_EQ(due.size(), 2u);
  EXPECT_EQ(due[0].id, early.id);
  EXPECT_EQ(due[1].id, now.id);
  cat().delete_job(early.id, 150);
  EXPECT_EQ(cat().due_jobs(200).size(), 1u);
}

// ---- Replication runs ----

TEST_F(CatalogTest, RunIsNotCreatedWhileTheJobHasAnOpenOne) {
  auto servers = import("c-1", 1);
  auto job = make_job(servers[0].id);
  cat().create_job(job);
  auto first = make_run(job.id, 100);
  EXPECT_TRUE(cat().create_run(first));
  EXPECT_FALSE(cat().create_run(make_run(job.id, 101)));
  first.state = "ACTIVE";
  first.stage = "UPLOADING";
  first.stage_progress = "37%";
  first.bytes_total = 1ull << 40;
  first.bytes_done = 1ull << 39;
  first.connector_id = "c-1";
  first.disks = {{"scsi0:0", "snap-0", 10ull << 30}};
  cat().update_run(first);
  EXPECT_FALSE(cat().create_run(make_run(job.id, 102)));
  auto got = cat().get_run(first.id);
  EXPECT_EQ(got->stage_progress, "37%");
  EXPECT_EQ(got->bytes_total, 1ull << 40);
  EXPECT_EQ(got->connector_id, "c-1");
  ASSERT_EQ(got->disks.size(), 1u);
  EXPECT_EQ(got->disks[0].snapshot_id, "snap-0");
  EXPECT_EQ(got->disks[0].size, 10ull << 30);

  first.state = "COMPLETED";
  cat().update_run(first);
  EXPECT_TRUE(cat().create_run(make_run(job.id, 103)));
  EXPECT_EQ(error_kind([&] { cat().create_run(make_run("sms-job-nope", 1)); }), ErrorKind::kNotFound);
  EXPECT_EQ(error_kind([&] { cat().update_run(make_run(job.id, 1)); }), ErrorKind::kNotFound);

  // A deleted job's runs stay readable by id.
  cat().delete_job(job.id, 200);
  EXPECT_TRUE(cat().get_run(first.id));
}

TEST_F(CatalogTest, ListRunsPagesNewestFirst) {
  auto servers = import("c-1", 2);
  auto job = make_job(servers[0].id);
  auto other = make_job(servers[1].id);
  cat().create_job(job);
  cat().create_job(other);
  std::vector<std::string> ids;  // in creation order; three share a creation time
  for (Time t : {10, 20, 20, 20, 30, 40, 50}) {
    auto r = make_run(job.id, t, "COMPLETED");
    ASSERT_TRUE(cat().create_run(r));
    ids.push_back(r.id);
  }
  cat().create_run(make_run(other.id, 35, "COMPLETED"));

  std::vector<ReplicationRun> all;
  std::string token;
  do {
    auto page = cat().list_runs(job.id, {token, 2});
    all.insert(all.end(), page.items.begin(), page.items.end());
    token = page.next_token;
  } while (!token.empty());
  ASSERT_EQ(all.size(), ids.size());
  for (size_t i = 1; i < all.size(); i++) {
    EXPECT_TRUE(all[i - 1].created > all[i].created ||
                (all[i - 1].created == all[i].created && all[i - 1].id > all[i].id));
  }
  EXPECT_EQ(all.front().created, 50);
  EXPECT_EQ(all.back().created, 10);
  std::set<std::string> seen;
  for (auto& r : all) seen.insert(r.id);
  EXPECT_EQ(seen, std::set<std::string>(ids.begin(), ids.end()));
  // A token is bound to its job.
  auto page = cat().list_runs(job.id, {"", 2});
  EXPECT_EQ(error_kind([&] { cat().list_runs(other.id, {page.next_token, 2}); }), ErrorKind::kInvalidArgument);
}

TEST_F(CatalogTest, OpenRunsAreOldestFirstAndFilteredByTheServersConnector) {
  auto a = import("c-a", 2, "a-");
  auto b = import("c-b", 1, "b-");
  auto ja = make_job(a[0].id), ja2 = make_job(a[1].id), jb = make_job(b[0].id);
  for (auto& j : {ja, ja2, jb}) cat().create_job(j);
  auto ra = make_run(ja.id, 30, "ACTIVE");
  auto rb = make_run(jb.id, 10, "PENDING");
  auto done = make_run(ja2.id, 5, "COMPLETED");
  for (auto& r : {ra, rb, done}) cat().create_run(r);

  auto open = cat().open_runs();
  ASSERT_EQ(open.size(), 2u);
  EXPECT_EQ(open[0].id, rb.id);
  EXPECT_EQ(open[1].id, ra.id);
  auto of_a = cat().open_runs("c-a");
  ASSERT_EQ(of_a.size(), 1u);
  EXPECT_EQ(of_a[0].id, ra.id);
  EXPECT_EQ(cat().open_runs("c-b").size(), 1u);
  EXPECT_TRUE(cat().open_runs("c-none").empty());
}

// ---- Images ----

TEST_F(CatalogTest, ImagesAreAddedListedAndDeleted) {
  auto servers = import("c-1", 1);
  auto job = make_job(servers[0].id);
  cat().create_job(job);
  std::vector<std::string> ids;
  for (Time t : {300, 100, 200}) {
    Image i;
    i.id = Catalog::new_id("ami-");
    i.job_id = job.id;
    i.run_id = Catalog::new_id("sms-run-");
    i.server_id = servers[0].id;
    i.store = "plain";
    i.disks = {{"scsi0:0", "snap-1", 1ull << 30}, {"scsi0:1", "snap-2", 2ull << 30}};
    i.created = t;
    cat().add_image(i);
    ids.push_back(i.id);
  }
  auto got = cat().get_image(ids[0]);
  ASSERT_TRUE(got);
  ASSERT_EQ(got->disks.size(), 2u);
  EXPECT_EQ(got->disks[1].snapshot_id, "snap-2");
  EXPECT_EQ(got->disks[1].size, 2ull << 30);
  EXPECT_EQ(got->store, "plain");

  auto of_job = cat().images_of_job(job.id);
  ASSERT_EQ(of_job.size(), 3u);
  EXPECT_EQ(of_job[0].created, 100);
  EXPECT_EQ(of_job[2].created, 300);

  auto page = cat().list_images({"", 2});
  EXPECT_EQ(page.items.size(), 2u);
  auto rest = cat().list_images({page.next_token, 2});
  EXPECT_EQ(rest.items.size(), 1u);
  EXPECT_TRUE(rest.next_token.empty());

  cat().delete_image(ids[1]);
  EXPECT_FALSE(cat().get_image(ids[1]));
  EXPECT_EQ(cat().images_of_job(job.id).size(), 2u);
  EXPECT_EQ(error_kind([&] { cat().delete_image(ids[1]); }), ErrorKind::kNotFound);
  Image orphan;
  orphan.id = Catalog::new_id("ami-");
  orphan.job_id = "sms-job-nope";
  EXPECT_EQ(error_kind([&] { cat().add_image(orphan); }), ErrorKind::kNotFound);
}

// Runs finishing within one second make images of the same second; retention and the next run's parent need
// them in the order they were made, which their random ids do not give.
TEST_F(CatalogTest, ImagesOfTheSameSecondListInTheOrderTheyWereAdded) {
  auto servers = import("c-1", 1);
  auto job = make_job(servers[0].id);
  cat().create_job(job);
  std::vector<std::string> added;
  for (const char* id : {"ami-f0000000000000000", "ami-a0000000000000000", "ami-c0000000000000000", "ami-10000000000000000"}) {
    Image i;
    i.id = id;
    i.job_id = job.id;
    i.run_id = Catalog::new_id("sms-run-");
    i.server_id = servers[0].id;
    i.store = "plain";
    i.created = 500;
    cat().add_image(i);
    added.push_back(id);
  }
  std::vector<std::string> listed;
  for (auto& i : cat().images_of_job(job.id)) listed.push_back(i.id);
  EXPECT_EQ(listed, added);
}

// ---- Transactions and concurrency ----

TEST_F(CatalogTest, TransactionRollsBackEverythingOnException) {
  cat().put_connector(make_connector("c-1"));
  EXPECT_THROW(cat().transaction([&] {
    cat().add_access_key({"AKIAROLLEDBACK000001", "s", "admin", "", 1});
    cat().replace_inventory("c-1", 1, make_servers(10), 1);
    EXPECT_EQ(cat().server_count(), 10u);  // the transaction reads its own writes
    throw std::runtime_error("boom");
  }),
               std::runtime_error);
  EXPECT_FALSE(cat().find_access_key("AKIAROLLEDBACK000001"));
  EXPECT_EQ(cat().server_count(), 0u);
  EXPECT_EQ(cat().catalog_status(), CatalogStatus::kNotImported);
  // Still usable afterwards.
  cat().add_access_key({"AKIAAFTER00000000001", "s", "admin", "", 1});
  EXPECT_TRUE(cat().find_access_key("AKIAAFTER00000000001"));
}

TEST_F(CatalogTest, NestedTransactionsCommitTogetherAndAFailedInnerOneUndoesOnlyItself) {
  cat().transaction([&] {
    cat().add_access_key({"AKIAOUTER00000000001", "s", "admin", "", 1});
    cat().transaction([&] { cat().add_access_key({"AKIAINNER00000000001", "s", "admin", "", 1}); });
    try {
      cat().transaction([&] {
        cat().add_access_key({"AKIAINNER00000000002", "s", "admin", "", 1});
        throw std::runtime_error("inner");
      });
    } catch (const std::runtime_error&) {
    }
    // A failing mutating call inside a transaction undoes only itself, too.
    EXPECT_EQ(error_kind([&] { cat().add_access_key({"AKIAOUTER00000000001", "s", "admin", "", 1}); }),
              ErrorKind::kConflict);
  });
  EXPECT_TRUE(cat().find_access_key("AKIAOUTER00000000001"));
  EXPECT_TRUE(cat().find_access_key("AKIAINNER00000000001"));
  EXPECT_FALSE(cat().find_access_key("AKIAINNER00000000002"));
}

TEST_F(CatalogTest, OtherThreadsDoNotSeeAnUncommittedTransaction) {
  cat().put_connector(make_connector("c-1"));
  std::atomic<bool> written{false}, checked{false};
  std::thread writer([&] {
    cat().transaction([&] {
      cat().replace_inventory("c-1", 1, make_servers(5), 1);
      written = true;
      while (!checked) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
  });
  while (!written) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(cat().server_count(), 0u);  // a reader runs beside the open write transaction
  checked = true;
  writer.join();
  EXPECT_EQ(cat().server_count(), 5u);
}

TEST_F(CatalogTest, ConcurrentReadersAndWritersDoNotFail) {
  auto servers = import("c-1", 200);
  // A second catalog on the same file plays another process: its writes contend for SQLite's lock.
  auto second = open_sqlite_catalog(file());
  std::atomic<int> failures{0};
  std::atomic<bool> stop{false};
  auto guard = [&](auto fn) {
    return [&, fn] {
      try {
        fn();
      } catch (const std::exception& e) {
        failures++;
        ADD_FAILURE() << e.what();
      }
    };
  };
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; w++) {
    Catalog* c = w % 2 ? second.get() : &cat();
    threads.emplace_back(guard([&, c, w] {
      for (int i = 0; i < 50; i++) {
        c->add_access_key({"AKIA" + std::to_string(w) + "-" + std::to_string(i), "s", "admin", "", i});
        c->heartbeat("c-1", i, "");
        if (i % 10 == 0) c->replace_inventory("c-1", i, make_servers(200), i);
        auto job = make_job(servers[static_cast<size_t>(w * 50 + i)].id);
        c->create_job(job);
        c->create_run(make_run(job.id, i));
      }
    }));
  }
  for (int r = 0; r < 4; r++) {
    Catalog* c = r % 2 ? second.get() : &cat();
    threads.emplace_back(guard([&, c] {
      while (!stop) {
        std::string token;
        size_t n = 0;
        do {
          auto page = c->list_servers({token, 37});
          n += page.items.size();
          token = page.next_token;
        } while (!token.empty());
        EXPECT_EQ(n, 200u);
        c->open_runs("c-1");
        c->get_connector("c-1");
      }
    }));
  }
  for (size_t i = 0; i < 4; i++) threads[i].join();
  stop = true;
  for (size_t i = 4; i < threads.size(); i++) threads[i].join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(cat().list_jobs({"", 1000}).items.size(), 200u);
  EXPECT_EQ(cat().open_runs().size(), 200u);
}

}  // namespace
}  // namespace ferry::catalog

namespace ferry::catalog {
namespace {

TEST_F(CatalogTest, TokensCarryATrustDomainThatTheConnectorKeepsAcrossUpdates) {
  cat().add_registration_token("dddd", 100, "site-a");
  auto domain = cat().consume_registration_token("dddd", 50);
  ASSERT_TRUE(domain);
  EXPECT_EQ(*domain, "site-a");
  Connector c = make_connector("c-1");
  c.domain = *domain;
  cat().put_connector(c);
  c.domain = "";  // what a heartbeat's description carries: the domain is set at registration only
  c.version = "2";
  cat().put_connector(c);
  EXPECT_EQ(cat().get_connector("c-1")->domain, "site-a");
  EXPECT_EQ(cat().get_connector("c-1")->version, "2");
}

TEST_F(CatalogTest, StoresAreRecordedAndSnapshotsOwnedByOneJob) {
  EXPECT_FALSE(cat().get_store("plain"));
  cat().put_store({"plain", "repo1", false, "", "digest1", 10});
  cat().put_store({"plain", "repo1", false, "", "digest2", 11});
  auto s = cat().get_store("plain");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->key_file_sha256, "digest2");
  EXPECT_EQ(s->created, 10);  // the first record's
  EXPECT_TRUE(cat().claim_snapshot("plain", "snap", "job-a", 1));
  EXPECT_TRUE(cat().claim_snapshot("plain", "snap", "job-a", 2));   // again by its owner
  EXPECT_FALSE(cat().claim_snapshot("plain", "snap", "job-b", 3));  // another job's
  EXPECT_TRUE(cat().claim_snapshot("other", "snap", "job-b", 3));   // per store
  cat().release_snapshot("plain", "snap");
  EXPECT_TRUE(cat().claim_snapshot("plain", "snap", "job-b", 4));
}

}  // namespace
}  // namespace ferry::catalog

namespace ferry::catalog {
namespace {

TEST_F(CatalogTest, BytesUploadedIsAddedToAndNoUpdateOfTheRunLosesIt) {
  auto servers = import("c-1", 1);
  auto job = make_job(servers[0].id);
  cat().create_job(job);
  auto run = make_run(job.id, 100);
  ASSERT_TRUE(cat().create_run(run));
  auto stale = *cat().get_run(run.id);  // read before the bytes arrive
  cat().add_run_bytes_uploaded(run.id, 1000);
  cat().add_run_bytes_uploaded(run.id, 24);
  stale.stage = "Replicating";
  cat().update_run(stale);
  reopen();
  EXPECT_EQ(cat().get_run(run.id)->bytes_uploaded, 1024u);
  EXPECT_EQ(cat().get_run(run.id)->stage, "Replicating");
}

}  // namespace
}  // namespace ferry::catalog
