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
  std::chrono::seconds connector_timeout{30};  // HEALTHY while the last heartbeat is younger than this
  std::chrono::seconds run_stall_timeout{600};  // an ACTIVE run whose connector is silent this long FAILS
  std::chrono::seconds pending_timeout{3600};   // a PENDING run no connector picks up FAILS
  int max_consecutive_failures = 3;             // then the job is PAUSED_ON_FAILURE
  store::Repository::Verify verify = store::Repository::Verify::kAuthenticate;
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
  std::string store;  // "plain" or the master key id
  store::RepositoryConfig store_config;
  std::string data_keys;                           // 64 bytes
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
  std::string create_registration_token(std::chrono::seconds valid_for);

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
  // Writes one disk of an image to `output` in `format` on the server's file system.
  void export_image(const std::string& image_id, const std::string& disk, const std::string& format, const std::string& output);
  void delete_image(const std::string& image_id);

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
  std::vector<store::ChunkId> known_chunks(const std::string& connector_id, const std::string& store);
  std::string snapshot_object(const std::string& connector_id, const std::string& store, const std::string& snapshot_id);
  void receive_pack(const std::string& connector_id, const std::string& run_id, const std::string& name, std::string_view bytes);
  void receive_index(const std::string& connector_id, const std::string& run_id, const std::string& name, std::string_view box);
  void receive_snapshot(const std::string& connector_id, const std::string& run_id, const std::string& disk,
                        const std::string& snapshot_id, std::string_view box);
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
