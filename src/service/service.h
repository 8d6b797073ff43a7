// service — the ferry server's behaviour, independent of HTTP: the SMS operations on the catalog, the connector
// side of replication (handing out work, accepting uploads, committing images), the scheduler and retention.
//
// Promises:
//  - A run's state lives in the catalog and every upload is durable before it is acknowledged, so a killed server
//    restarts where it stopped: ACTIVE runs stay ACTIVE and their connector resumes them; packs it had received
//    are reused, never asked for again.
//  - An image is recorded only after every disk's snapshot has been verified and stored.
//  - Old images are deleted and their space reclaimed (prune) only while no run writes to the same store.
// Concurrency: every public method is thread-safe; the HTTP server calls them from its worker threads.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "catalog/catalog.h"
#include "common/error.h"
#include "store/maintenance.h"
#include "store/repository.h"

namespace ferry::service {

// An error with the SMS exception type the API answers with.
class OperationError : public Error {
 public:
  OperationError(std::string type, const std::string& message, ErrorKind kind = ErrorKind::kInvalidArgument)
      : Error(kind, message), type_(std::move(type)) {}
  const std::string& type() const { return type_; }

 private:
  std::string type_;
};

struct Config {
  std::filesystem::path data_dir;
  std::filesystem::path export_dir;  // ExportImage writes only below it; empty: data_dir/exports
  std::chrono::seconds connector_timeout{30};  // HEALTHY while the last heartbeat is younger than this
  std::chrono::seconds run_stall_timeout{600};  // an ACTIVE run whose connector is silent this long FAILS
  std::chrono::seconds pending_timeout{3600};   // a PENDING run no connector picks up FAILS
  int max_consecutive_failures = 3;             // then the job is PAUSED_ON_FAILURE
  uint64_t store_min_free = 0;                   // bytes a store's file system keeps free; 0: 2% of it (16 MiB - 1 GiB)
  std::chrono::milliseconds scheduler_tick{1000};
};

struct InitResult {
  std::string access_key_id;
  std::string secret_access_key;
  std::string master_key_id;
};

// Creates the data directory: catalog, keyring with a new master key, and the first admin access key.
// Throws kInvalidArgument if it already holds a ferry server.
InitResult init_data_dir(const std::filesystem::path& dir);

// What a connector is told to do for one run.
struct RunTask {
  std::string run_id;
  std::string job_id;
  catalog::Server server;
  std::string store;  // "plain" or the master key id, after "<trust domain>." for a connector with one
  store::RepositoryConfig store_config;
  std::string id_key;                              // 32 bytes: to name chunks; the data keys never leave the server
  std::vector<catalog::ImageDisk> completed;       // disks already committed by this run (resume)
  std::vector<std::pair<std::string, std::string>> parents;  // disk name -> parent snapshot id
};

struct ConnectorWork {
  int64_t inventory_requested = 0;  // answer with an inventory report if newer than what was reported
  std::vector<std::string> runs;    // open runs this connector should do
  bool disassociated = false;
};

// What a connector already has, sent with its heartbeat so the server can hold the heartbeat until there is
// something new for it (long poll): a run it is not executing, a newer inventory request, disassociation.
struct ConnectorHas {
  std::vector<std::string> running;  // runs it is executing
  int64_t inventory_reported = 0;    // newest inventory generation it reported
  std::chrono::milliseconds wait{0};  // longest the server may hold the heartbeat (0: answer at once)
};

struct RunProgress {
  std::string stage;
  int percent = 0;
  uint64_t bytes_total = 0, bytes_done = 0, bytes_uploaded = 0;
};

class Service {
 public:
  explicit Service(Config config);
  ~Service();
  const Config& config() const { return config_; }
  catalog::Catalog& catalog() { return *catalog_; }

  void start_scheduler();
  void stop();
  // One scheduler pass (tests and the scheduler thread): starts due runs, times out stalled ones, prunes.
  void tick(catalog::Time now);

  // Credentials. Returns the key if it exists.
  std::optional<catalog::AccessKey> access_key(const std::string& id);
  // A one-time token; the connector it registers belongs to trust domain `domain` ("" = shared): its servers are
  // replicated into that domain's stores, which deduplicate only among themselves.
  std::string create_registration_token(std::chrono::seconds valid_for, const std::string& domain = "");

  // Health: problems an operator must act on (a full store, a store that cannot be used); empty when all is well.
  std::vector<std::string> problems();

  // --- SMS operations ---
  bool connector_healthy(const catalog::Connector& c, catalog::Time now) const;
  void disassociate_connector(const std::string& connector_id);
  void import_server_catalog();
  void delete_server_catalog();
  struct JobRequest {
    std::string server_id;
    std::optional<catalog::Time> seed_time;
    std::optional<int> frequency;
    std::optional<bool> run_once;
    std::optional<std::string> license_type, role_name, description, kms_key_id;
    std::optional<int> keep;
    std::optional<bool> encrypted;
  };
  std::string create_job(const JobRequest& request);
  void update_job(const std::string& job_id, const JobRequest& request);
  void delete_job(const std::string& job_id);
  std::string start_on_demand_run(const std::string& job_id, const std::string& description);
  catalog::ReplicationJob get_job(const std::string& job_id);  // throws ReplicationJobNotFoundException

  // Images (ferry's own operations).
  std::vector<catalog::Image> images(const std::string& job_id);
  // Writes one disk of an image in `format` to `output`, a path relative to the export directory (or absolute inside
  // it); returns the absolute path written. Never replaces a file; refuses names that leave the export directory
  // (through "..", a symbolic link or an absolute path), NUL bytes and over-long names (InvalidParameterException).
  std::string export_image(const std::string& image_id, const std::string& disk, const std::string& format, const std::string& output);
  void delete_image(const std::string& image_id);

  // Stores (ferry's own operations): prune and check run while the server serves, coordinated with its writers.
  struct StoreInfo {
    std::string name, repository_id, key_id;
    bool encrypted = false;
    uint64_t data_keys = 0, chunks = 0, images = 0;
    uint64_t fs_free = 0, fs_size = 0, reserve = 0;
    std::string full, error;
    std::vector<std::string> active_runs;
  };
  std::vector<StoreInfo> stores();
  // Removes chunks no image uses. Refused (OperationNotPermittedException, naming the runs) while a run writes to it;
  // no run starts into it meanwhile.
  store::PruneReport prune_store(const std::string& name);
  // Verifies the store (with read_data: every chunk decrypted and hashed) beside running replications.
  store::CheckReport check_store(const std::string& name, bool read_data);
  // A new data key for new data (old data stays readable), and optionally every key re-wrapped under another master key.
  void rotate_store_keys(const std::string& name, bool new_data_key, const std::string& new_master_key_id);

  // --- Connector side ---
  struct Registration {
    std::string connector_id, access_key_id, secret_access_key;
  };
  Registration register_connector(const std::string& token, const catalog::Connector& info);
  // Records the heartbeat and answers the connector's work. With has.wait > 0 the answer waits, up to that long (and at
  // most a third of connector_timeout), until there is something new for the connector; at most
  // kMaxHeldHeartbeats wait at once (the others are answered at once), and stop() releases them.
  ConnectorWork heartbeat(const std::string& connector_id, const catalog::Connector& info, const std::string& ip,
                          const ConnectorHas& has = {});
  // Each held heartbeat keeps an HTTP connection and its thread (api/http.h serves at most 1024 connections at once).
  static constexpr int kMaxHeldHeartbeats = 512;
  void report_inventory(const std::string& connector_id, int64_t generation, std::vector<catalog::Server> servers);
  RunTask begin_run(const std::string& connector_id, const std::string& run_id);
  // A parent snapshot of the run (RunTask::parents), as zstd-compressed plaintext; any other snapshot is refused.
  std::string parent_snapshot(const std::string& connector_id, const std::string& run_id, const std::string& snapshot_id);
  // Which of `ids` the run's store lacks (true = lacks). At most kMaxLookupIds per call, and in all no more than the
  // run's disks have chunks (twice over, for retries): a connector learns only about chunks it could have read.
  static constexpr size_t kMaxLookupIds = 8192;
  std::vector<bool> lookup_chunks(const std::string& connector_id, const std::string& run_id, const std::vector<store::ChunkId>& ids);
  // A pack of the run (formats.md §8, as a connector sends it): verified, sealed in place in `data` and stored.
  void receive_pack(const std::string& connector_id, const std::string& run_id, const std::string& name, char* data, size_t size);
  // A disk's snapshot plaintext: verified, sealed and stored; the disk is then committed in the run.
  void receive_snapshot(const std::string& connector_id, const std::string& run_id, const std::string& disk,
                        const std::string& snapshot_id, std::string_view plaintext);
  // Returns false if the run should stop (deleted job, run no longer ACTIVE).
  bool run_progress(const std::string& connector_id, const std::string& run_id, const RunProgress& progress);
  std::string complete_run(const std::string& connector_id, const std::string& run_id);  // returns the image id
  void fail_run(const std::string& connector_id, const std::string& run_id, const std::string& message);

  struct Impl;

 private:
  Config config_;
  std::unique_ptr<catalog::Catalog> catalog_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::service
