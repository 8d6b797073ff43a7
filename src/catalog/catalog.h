// catalog — the server's metadata: access keys, connectors, the server catalog (discovered VMs),
// replication jobs, runs and images. The only place in ferry that speaks SQL.
//
// Promises:
//  - Every mutating call is one transaction: after a crash the catalog holds either all of it or none.
//  - Ids handed out are never reused (a deleted job's id stays dead).
//  - Listing calls page by an opaque token; a page is ordered by id and stable under concurrent inserts
//    (a token names the last id returned, not an offset).
// Concurrency: all methods are thread-safe; the SQLite implementation serializes writers and lets readers
// run beside them (WAL).
// Implementations: SQLite (open_sqlite_catalog); PostgreSQL can follow behind the same interface.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ferry::catalog {

// Unix seconds throughout.
using Time = int64_t;

struct AccessKey {
  std::string id;      // "AKIA" + 16 upper-case alphanumerics for admins, "AKCO…" for connectors
  std::string secret;  // 40 characters
  std::string role;    // "admin" or "connector"
  std::string connector_id;  // for role "connector"
  Time created = 0;
};

struct Connector {
  std::string id;  // "c-" + 17 hex digits
  std::string name;
  std::string version;
  std::vector<std::string> capabilities;
  std::string ip_address;
  std::string mac_address;
  std::string vm_manager_type;  // SMS enum where one fits (VSPHERE, HYPERV-MANAGER), else LIBVIRT, AZURE, OVA, LOCAL
  std::string vm_manager_name;
  std::string vm_manager_id;
  Time associated_on = 0;
  Time last_heartbeat = 0;
  bool disassociated = false;
  // The trust domain its registration token named ("" = the shared one): its servers are replicated into stores of
  // that domain only, so tenants that must not share deduplication don't. Set at registration, never changed.
  std::string domain;
  // Inventory handshake: the server bumps `inventory_requested`; the connector reports with the generation it answered.
  int64_t inventory_requested = 0;
  int64_t inventory_reported = 0;
};

struct Disk {
  std::string name;    // e.g. "scsi0:0", "disk1" — stable within the VM, names the disk across runs
  std::string path;    // what the connector opens (a disk::open_source spec: file, device, "pkg.ova#member")
  std::string format;  // "vmdk", "vhdx", "qcow2", ...
  uint64_t size = 0;   // virtual size in bytes, 0 if unknown
};

// One discovered machine (SMS "Server").
struct Server {
  std::string id;  // "s-" + 17 hex digits; stable across imports for the same (connector, vm_manager_id, vm_id)
  std::string connector_id;
  std::string server_type = "VIRTUAL_MACHINE";
  std::string vm_manager_id;
  std::string vm_manager_type;
  std::string vm_manager_name;
  std::string vm_id;
  std::string vm_name;
  std::string vm_path;
  std::string guest_os;
  int cpus = 0;
  uint64_t memory_mib = 0;
  std::vector<Disk> disks;
  std::string error;  // non-empty: discovered, but cannot be replicated (the reason, for the user)
  std::string replication_job_id;     // the live job replicating it, if any (filled by the catalog on read)
  bool replication_job_terminated = false;
  Time updated = 0;
};

struct ReplicationJob {
  std::string id;  // "sms-job-" + 17 hex digits
  std::string server_id;
  Time seed_time = 0;
  int frequency_hours = 0;  // 0 with run_once
  bool run_once = false;
  Time next_run_time = 0;   // 0: none scheduled
  std::string license_type = "AWS";
  std::string role_name;
  std::string description;
  int number_of_recent_amis_to_keep = 0;  // 0 = keep all
  bool encrypted = false;
  std::string kms_key_id;
  std::string state = "PENDING";  // SMS ReplicationJobState
  std::string status_message;
  std::string latest_ami_id;
  int consecutive_failures = 0;
  Time created = 0;
};

struct ImageDisk {
  std::string name;
  std::string snapshot_id;
  uint64_t size = 0;
};

struct ReplicationRun {
  std::string id;  // "sms-run-" + 17 hex digits
  std::string job_id;
  std::string state = "PENDING";  // SMS ReplicationRunState
  std::string type = "ON_DEMAND";  // or AUTOMATIC
  std::string stage;               // stageDetails.stage
  std::string stage_progress;      // stageDetails.stageProgress, e.g. "37%"
  std::string status_message;
  std::string ami_id;
  Time scheduled_start = 0;
  Time completed_time = 0;
  std::string description;
  bool encrypted = false;
  std::string kms_key_id;
  std::string connector_id;  // who is doing it, once assigned
  uint64_t bytes_total = 0;
  uint64_t bytes_done = 0;
  uint64_t bytes_uploaded = 0;
  std::vector<ImageDisk> disks;  // disks whose snapshot this run has committed so far (a resumed run skips them)
  Time created = 0;
  Time updated = 0;
};

// A completed run's result (the SMS AMI).
struct Image {
  std::string id;  // "ami-" + 17 hex digits
  std::string job_id;
  std::string run_id;
  std::string server_id;
  std::string store;  // which repository holds it ("plain" or the master key id)
  std::vector<ImageDisk> disks;
  Time created = 0;
};

// A store the server keeps (DATA/stores/<name>): what it must still be when it is opened again, so a store whose
// config or key file was swapped is refused instead of served.
struct StoreRecord {
  std::string name;
  std::string repository_id;
  bool encrypted = false;
  std::string key_id;           // master key id
  std::string key_file_sha256;  // of keys/data as the server last wrote or accepted it
  Time created = 0;
};

template <class T>
struct Page {
  std::vector<T> items;
  std::string next_token;  // empty: last page
};

struct PageRequest {
  std::string token;  // from a previous Page::next_token, or empty
  int max_results = 50;
};

enum class CatalogStatus { kNotImported, kImporting, kAvailable, kDeleted };
// SMS ServerCatalogStatus names: NOT_IMPORTED, IMPORTING, AVAILABLE, DELETED.
const char* to_string(CatalogStatus status);

class Catalog {
 public:
  virtual ~Catalog() = default;

  // A fresh random id with the given prefix ("c-", "s-", "sms-job-", "sms-run-", "ami-"): 17 lower-case hex digits.
  static std::string new_id(const std::string& prefix);

  // Access keys.
  virtual void add_access_key(const AccessKey& key) = 0;
  virtual std::optional<AccessKey> find_access_key(const std::string& id) = 0;
  virtual void remove_access_keys_of(const std::string& connector_id) = 0;

  // One-time registration tokens, stored as SHA-256 hex of the token, with the trust domain the connector gets.
  virtual void add_registration_token(const std::string& token_sha256, Time expires, const std::string& domain = "") = 0;
  // Marks the token used and returns its domain; nullopt if unknown, used or expired.
  virtual std::optional<std::string> consume_registration_token(const std::string& token_sha256, Time now) = 0;

  // Connectors.
  virtual void put_connector(const Connector& c) = 0;  // insert or replace by id
  virtual std::optional<Connector> get_connector(const std::string& id) = 0;
  virtual Page<Connector> list_connectors(const PageRequest& page) = 0;  // disassociated ones excluded
  virtual std::vector<Connector> all_connectors() = 0;                  // disassociated ones excluded
  virtual void heartbeat(const std::string& connector_id, Time now, const std::string& ip_address) = 0;
  // Bumps inventory_requested on every given connector.
  virtual void request_inventory(const std::vector<std::string>& connector_ids) = 0;

  // Server catalog.
  // Replaces what `connector_id` reported: upserts by (vm_manager_id, vm_id) keeping existing server ids, removes
  // servers it no longer reports unless a live job refers to them, records `generation` as inventory_reported.
  // Fills in ids of new servers in `servers` and returns them.
  virtual std::vector<Server> replace_inventory(const std::string& connector_id, int64_t generation, std::vector<Server> servers,
                                               Time now) = 0;
  virtual std::optional<Server> get_server(const std::string& id) = 0;
  // Filter: if non-empty, only servers matching one of these (vm_manager_id, vm_id) pairs.
  virtual Page<Server> list_servers(const PageRequest& page,
                                    const std::vector<std::pair<std::string, std::string>>& vm_addresses = {}) = 0;
  virtual size_t server_count() = 0;
  // Removes every server (DeleteServerCatalog). Throws kConflict if a live job refers to one.
  virtual void delete_all_servers(Time now) = 0;
  virtual CatalogStatus catalog_status() = 0;
  virtual void set_catalog_status(CatalogStatus status, Time now) = 0;
  virtual Time catalog_modified() = 0;

  // Replication jobs. create_job throws kConflict if a live (not DELETED) job exists for the server.
  virtual void create_job(const ReplicationJob& job) = 0;
  virtual std::optional<ReplicationJob> get_job(const std::string& id) = 0;  // DELETED jobs are not found
  virtual Page<ReplicationJob> list_jobs(const PageRequest& page) = 0;
  virtual void update_job(const ReplicationJob& job) = 0;
  virtual void delete_job(const std::string& id, Time now) = 0;  // state DELETED; its runs stay readable by id
  // Live jobs whose next_run_time is set and <= now.
  virtual std::vector<ReplicationJob> due_jobs(Time now) = 0;

  // Replication runs. create_run returns false (and creates nothing) if the job already has a PENDING or ACTIVE run.
  virtual bool create_run(const ReplicationRun& run) = 0;
  virtual std::optional<ReplicationRun> get_run(const std::string& id) = 0;
  virtual Page<ReplicationRun> list_runs(const std::string& job_id, const PageRequest& page) = 0;  // newest first
  // Writes every field but the id, job, creation time and bytes_uploaded.
  virtual void update_run(const ReplicationRun& run) = 0;
  // Adds to a run's bytes_uploaded in one statement (what the server received for it, resends included); the only
  // writer of that field.
  virtual void add_run_bytes_uploaded(const std::string& run_id, uint64_t bytes) = 0;
  // PENDING or ACTIVE runs, oldest first; with a connector id, only runs of servers that connector reports.
  virtual std::vector<ReplicationRun> open_runs(const std::string& connector_id = "") = 0;

  // Images.
  virtual void add_image(const Image& image) = 0;
  virtual std::optional<Image> get_image(const std::string& id) = 0;
  // Oldest first; images of the same second in the order they were added.
  virtual std::vector<Image> images_of_job(const std::string& job_id) = 0;
  virtual Page<Image> list_images(const PageRequest& page) = 0;
  virtual void delete_image(const std::string& id) = 0;

  // Stores.
  virtual std::optional<StoreRecord> get_store(const std::string& name) = 0;
  virtual void put_store(const StoreRecord& record) = 0;  // insert or replace by name
  // Snapshot ownership: the job whose run committed a snapshot. claim_snapshot records `job_id` as the owner of
  // (store, snapshot id) and returns true, or returns false if another job owns it (a connector naming someone
  // else's snapshot). release_snapshot forgets it (the snapshot was deleted).
  virtual bool claim_snapshot(const std::string& store, const std::string& snapshot_id, const std::string& job_id, Time now) = 0;
  virtual void release_snapshot(const std::string& store, const std::string& snapshot_id) = 0;

  // Runs fn in one transaction (nested calls join it). Throwing rolls it back.
  virtual void transaction(const std::function<void()>& fn) = 0;
};

// Opens (creating if absent) the SQLite catalog at `file`, WAL mode, applying pending schema migrations.
// Throws kCorrupt naming the file if it is not a ferry catalog, kUnsupported if its schema is newer than this ferry.
std::unique_ptr<Catalog> open_sqlite_catalog(const std::filesystem::path& file);

}  // namespace ferry::catalog
