// The server core: SMS operations over the catalog, the connector's side of a run, scheduler and retention.
#include "service/service.h"


#include <algorithm>
#include <cstring>
#include <condition_variable>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "auth/sigv4.h"
#include "common/fault.h"
#include "common/fs.h"
#include "common/hex.h"
#include "common/log.h"
#include "disk/disk.h"
#include "image/export.h"
#include "service/export_target.h"
#include "service/stores.h"
#include "store/maintenance.h"

namespace ferry::service {

using catalog::Time;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

Time now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string random_string(size_t n, const char* alphabet) {
  std::string out(n, ' ');
  size_t k = std::strlen(alphabet);
  std::vector<uint8_t> raw(n);
  FILE* f = std::fopen("/dev/urandom", "rb");
  if (!f || std::fread(raw.data(), 1, n, f) != n) fail(ErrorKind::kIo, "cannot read /dev/urandom");
  std::fclose(f);
  for (size_t i = 0; i < n; i++) out[i] = alphabet[raw[i] % k];
  return out;
}

constexpr const char* kUpperAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";  // 32 symbols: no modulo bias
constexpr const char* kSecretAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

catalog::AccessKey new_access_key(const std::string& prefix, const std::string& role, const std::string& connector_id) {
  catalog::AccessKey k;
  k.id = prefix + random_string(20 - prefix.size(), kUpperAlnum);
  k.secret = random_string(40, kSecretAlphabet);
  k.role = role;
  k.connector_id = connector_id;
  k.created = now_seconds();
  return k;
}

fs::path catalog_file(const fs::path& dir) { return dir / "ferry.db"; }
fs::path settings_file(const fs::path& dir) { return dir / "server.json"; }

std::string snapshot_name(const std::string& server_id, const std::string& disk) { return server_id + "/" + disk; }

}  // namespace

InitResult init_data_dir(const fs::path& dir) {
  if (fs::exists(settings_file(dir)))
    fail(ErrorKind::kInvalidArgument, "'" + dir.string() + "' already holds a ferry server (server.json exists); nothing was changed");
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_all);
  store::Keyring keyring(dir / "keyring");
  fs::create_directories(keyring.dir());
  fs::permissions(keyring.dir(), fs::perms::owner_all);
  InitResult r;
  r.master_key_id = "ferry-master";
  if (!keyring.has(r.master_key_id)) keyring.create(r.master_key_id);
  auto cat = catalog::open_sqlite_catalog(catalog_file(dir));
  auto key = new_access_key("AKIA", "admin", "");
  cat->add_access_key(key);
  r.access_key_id = key.id;
  r.secret_access_key = key.secret;
  json settings = {{"version", 1}, {"default_key_id", r.master_key_id}};
  write_file_atomic(settings_file(dir), settings.dump(2) + "\n", 0600);
  return r;
}

struct Service::Impl {
  Service& self;
  store::Keyring keyring;
  std::string default_key_id;
  std::unique_ptr<FileLock> server_lock;  // one server per data directory

  // Serializes read-modify-write sequences on runs and jobs (the catalog makes each call atomic, not sequences).
  std::mutex mu;

  std::unique_ptr<Stores> stores;

  // Chunk ids each open run has asked about (lookup_chunks), against its budget; forgotten when the run ends.
  std::mutex lookups_mu;
  std::map<std::string, uint64_t> lookups;
  void forget_lookups(const std::string& run_id) {
    std::lock_guard lock(lookups_mu);
    lookups.erase(run_id);
  }

  std::thread scheduler;
  std::mutex stop_mu;
  std::condition_variable stop_cv;  // stopping, or new work for connectors (work_generation)
  bool stopping = false;
  uint64_t work_generation = 0;  // bumped when a run is created, an inventory requested, a connector disassociated
  int held_heartbeats = 0;

  // Wakes held heartbeats: call after the catalog change is committed, so their re-read sees it.
  void new_work() {
    {
      std::lock_guard lock(stop_mu);
      ++work_generation;
    }
    stop_cv.notify_all();
  }

  explicit Impl(Service& s) : self(s), keyring(s.config_.data_dir / "keyring") {}

  // The store a job's runs write to: "plain" or the master key id, in the trust domain of the connector that
  // reports the job's server ("<domain>.<store>"; the shared domain has no prefix).
  std::string store_of(const catalog::ReplicationJob& job) const {
    std::string base = !job.encrypted ? "plain" : job.kms_key_id.empty() ? default_key_id : job.kms_key_id;
    std::string domain;
    if (auto server = self.catalog_->get_server(job.server_id))
      if (auto c = self.catalog_->get_connector(server->connector_id)) domain = c->domain;
    return domain.empty() ? base : domain + "." + base;
  }

  store::Repository& store_for(const catalog::ReplicationJob& job) {
    Stores::Spec spec;
    spec.encrypt = job.encrypted;
    spec.key_id = job.kms_key_id.empty() ? default_key_id : job.kms_key_id;
    return stores->open(store_of(job), spec);
  }

  catalog::ReplicationRun run_for(const std::string& connector_id, const std::string& run_id, bool must_be_active) {
    auto run = self.catalog_->get_run(run_id);
    if (!run) throw OperationError("InvalidParameterException", "no replication run '" + run_id + "'", ErrorKind::kNotFound);
    // A run belongs to the connector doing it, or (not yet begun) to the connector that reports its server.
    std::string owner = run->connector_id;
    if (owner.empty())
      if (auto job = self.catalog_->get_job(run->job_id))
        if (auto server = self.catalog_->get_server(job->server_id)) owner = server->connector_id;
    if (owner != connector_id)
      throw OperationError("UnauthorizedOperationException", "run " + run_id + " is not this connector's", ErrorKind::kUnauthorized);
    if (must_be_active && run->state != "ACTIVE")
      throw OperationError("OperationNotPermittedException", "run " + run_id + " is " + run->state + ", not ACTIVE", ErrorKind::kConflict);
    return *run;
  }

  // Marks a run FAILED and counts the failure against its job. Caller holds mu.
  void fail_run_locked(catalog::ReplicationRun run, const std::string& message) {
    if (run.state == "COMPLETED" || run.state == "FAILED") return;
    forget_lookups(run.id);
    Time now = now_seconds();
    run.state = "FAILED";
    run.status_message = message;
    run.completed_time = now;
    run.updated = now;
    auto job = self.catalog_->get_job(run.job_id);
    self.catalog_->transaction([&] {
      self.catalog_->update_run(run);
      if (!job) return;
      job->consecutive_failures++;
      job->status_message = message;
      if (job->consecutive_failures >= self.config_.max_consecutive_failures) {
        job->state = "PAUSED_ON_FAILURE";
        job->next_run_time = 0;
        job->status_message = std::to_string(job->consecutive_failures) + " consecutive runs failed; the job is paused (start a run on demand to resume). Last: " + message;
      } else if (job->state == "PENDING") {
        job->state = "FAILED";
      }
      self.catalog_->update_job(*job);
    });
    spdlog::warn("run {} of job {} failed: {}", run.id, run.job_id, message);
  }

  // Removes images beyond the job's numberOfRecentAmisToKeep from the catalog (call inside the transaction that
  // adds the newest one, so no reader ever sees more than N) and returns them; their data goes with drop_data().
  std::vector<catalog::Image> drop_excess_images(const catalog::ReplicationJob& job, const std::string& newest = "") {
    std::vector<catalog::Image> dropped;
    if (job.number_of_recent_amis_to_keep <= 0) return dropped;
    auto images = self.catalog_->images_of_job(job.id);  // oldest first, by creation second
    // The image just made is the newest whatever the clock says: runs finishing within one second tie on `created`.
    std::stable_partition(images.begin(), images.end(), [&](const catalog::Image& i) { return i.id != newest; });
    int excess = static_cast<int>(images.size()) - job.number_of_recent_amis_to_keep;
    for (int i = 0; i < excess; i++) {
      self.catalog_->delete_image(images[i].id);
      dropped.push_back(images[i]);
    }
    return dropped;
  }

  // Deletes the snapshots of images already gone from the catalog. A crash before this leaves snapshots no image
  // names; collect_orphans() removes them at the next start.
  void drop_data(const std::vector<catalog::Image>& images) {
    for (auto& image : images) {
      auto& repo = stores->open(image.store);
      for (auto& d : image.disks) {
        try {
          repo.delete_snapshot(d.snapshot_id);
        } catch (const Error& e) {
          if (e.kind() != ErrorKind::kNotFound) throw;
        }
        self.catalog_->release_snapshot(image.store, d.snapshot_id);
      }
      stores->request_prune(image.store);
      spdlog::info("deleted image {} of job {}", image.id, image.job_id);
    }
  }

  // At start, before any request: snapshots that neither an image nor an open run's committed disks name are
  // left by a crash between the catalog and the store; delete them so prune can reclaim their chunks. A store that
  // cannot be opened is reported and skipped: the server serves the others.
  void collect_orphans() {
    std::set<std::string> live;
    for (auto& image : self.images("")) for (auto& d : image.disks) live.insert(d.snapshot_id);
    for (auto& run : self.catalog_->open_runs()) for (auto& d : run.disks) live.insert(d.snapshot_id);
    for (auto& name : stores->on_disk()) {
      try {
        auto& repo = stores->open(name);
        size_t n = 0;
        for (auto& id : repo.snapshot_ids())
          if (!live.count(id)) {
            repo.delete_snapshot(id);
            self.catalog_->release_snapshot(name, id);
            n++;
          }
        if (n) {
          stores->request_prune(name);
          spdlog::warn("store '{}': deleted {} snapshot(s) no image refers to (left by an interrupted deletion)", name, n);
        }
      } catch (const std::exception& e) {
        spdlog::error("store '{}' is not served: {}", name, e.what());
      }
    }
  }

  // Names of the ACTIVE runs writing to `store`. Caller holds mu, under which runs begin and end.
  std::vector<std::string> runs_writing(const std::string& store) {
    std::vector<std::string> out;
    for (auto& run : self.catalog_->open_runs())
      if (run.state == "ACTIVE")
        if (auto job = self.catalog_->get_job(run.job_id); job && store_of(*job) == store) out.push_back(run.id);
    return out;
  }

  // Caller holds mu (no run begins meanwhile) and the store's maintenance lock.
  store::PruneReport prune_locked(const std::string& name) {
    auto& repo = stores->open(name);
    // Someone reading the store beside the server (ferry store check, export) holds it shared: give up rather than
    // block every request behind the service lock.
    auto exclusive = repo.backend().try_lock(store::Backend::LockKind::kExclusive, "ferry server prune");
    if (!exclusive)
      throw OperationError("OperationNotPermittedException", "store '" + name + "' is being read by another ferry process; try again later",
                           ErrorKind::kConflict);
    auto report = store::prune(repo);
    spdlog::info("pruned store '{}': {} packs deleted, {} rewritten, {} -> {} bytes", name, report.packs_deleted, report.packs_rewritten,
                 report.bytes_before, report.bytes_after);
    return report;
  }

  void prune_idle_stores() {
    for (auto& name : stores->take_prune_requests()) {
      std::lock_guard big(mu);  // no run begins while we prune
      if (!runs_writing(name).empty()) {
        stores->request_prune(name);  // later, when idle
        continue;
      }
      try {
        auto maintenance = stores->maintenance(name);
        prune_locked(name);
      } catch (const OperationError& e) {
        if (e.kind() == ErrorKind::kConflict) stores->request_prune(name);
        else spdlog::error("prune of store '{}' failed: {}", name, e.what());
      } catch (const std::exception& e) {
        spdlog::error("prune of store '{}' failed: {}", name, e.what());
      }
    }
  }
};

namespace {

// Files that hold secrets must be readable by their owner only: a catalog (access keys), a keyring (master keys).
void require_private(const fs::path& path, const std::string& what) {
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return;
  using p = fs::perms;
  if ((st.permissions() & (p::group_all | p::others_all)) != p::none)
    fail(ErrorKind::kUnauthorized, what + " '" + path.string() + "' is readable or writable by other users; it holds secrets: run 'chmod " +
                                       (fs::is_directory(st) ? "700" : "600") + " " + path.string() + "' and start again");
}

}  // namespace

Service::Service(Config config) : config_(std::move(config)) {
  if (!fs::exists(settings_file(config_.data_dir)))
    fail(ErrorKind::kNotFound, "'" + config_.data_dir.string() + "' is not a ferry server data directory (run 'ferry server init --data " +
                                   config_.data_dir.string() + "' first)");
  impl_ = std::make_unique<Impl>(*this);
  impl_->server_lock = std::make_unique<FileLock>(config_.data_dir / "server.lock", FileLock::Mode::kExclusive, "ferry server", false);
  if (!impl_->server_lock->held())
    fail(ErrorKind::kConflict, "another ferry server is running on '" + config_.data_dir.string() + "'");
  json settings = json::parse(read_file(settings_file(config_.data_dir)));
  impl_->default_key_id = settings.value("default_key_id", "ferry-master");
  require_private(catalog_file(config_.data_dir), "the catalog");
  require_private(impl_->keyring.dir(), "the keyring");
  std::error_code ec;
  for (auto& entry : fs::directory_iterator(impl_->keyring.dir(), ec)) require_private(entry.path(), "the master key");
  catalog_ = catalog::open_sqlite_catalog(catalog_file(config_.data_dir));
  if (config_.export_dir.empty()) config_.export_dir = config_.data_dir / "exports";
  fs::create_directories(config_.export_dir);
  impl_->stores = std::make_unique<Stores>(config_.data_dir / "stores", *catalog_, impl_->keyring, config_.store_min_free);
  impl_->collect_orphans();
}

Service::~Service() {
  stop();
}

void Service::start_scheduler() {
  impl_->scheduler = std::thread([this] {
    for (;;) {
      {
        std::unique_lock lock(impl_->stop_mu);
        if (impl_->stop_cv.wait_for(lock, config_.scheduler_tick, [this] { return impl_->stopping; })) return;
      }
      try {
        tick(now_seconds());
      } catch (const std::exception& e) {
        spdlog::error("scheduler: {}", e.what());
      } catch (...) {
        spdlog::error("scheduler: an unknown exception");
      }
    }
  });
}

void Service::stop() {
  if (!impl_) return;
  {
    std::lock_guard lock(impl_->stop_mu);
    impl_->stopping = true;
  }
  impl_->stop_cv.notify_all();
  if (impl_->scheduler.joinable()) impl_->scheduler.join();
}

void Service::tick(Time now) {
  {
    std::lock_guard lock(impl_->mu);
    for (auto& job : catalog_->due_jobs(now)) {
      catalog::ReplicationRun run;
      run.id = catalog::Catalog::new_id("sms-run-");
      run.job_id = job.id;
      run.type = "AUTOMATIC";
      run.scheduled_start = job.next_run_time;
      run.encrypted = job.encrypted;
      run.kms_key_id = job.kms_key_id;
      run.stage = "Waiting for connector";
      run.created = run.updated = now;
      bool created = catalog_->create_run(run);
      // The next start: the first slot after now on the job's grid (missed slots are skipped, as SMS does).
      if (job.run_once || job.frequency_hours <= 0) {
        job.next_run_time = 0;
      } else {
        Time step = Time{job.frequency_hours} * 3600;
        while (job.next_run_time <= now) job.next_run_time += step;
      }
      if (job.state == "PENDING") job.state = "ACTIVE";
      catalog_->update_job(job);
      if (created) {
        spdlog::info("scheduled run {} of job {}", run.id, job.id);
        impl_->new_work();
      }
    }
    for (auto& run : catalog_->open_runs()) {
      if (run.state == "PENDING" && now - run.created > config_.pending_timeout.count()) {
        impl_->fail_run_locked(run, "no healthy connector picked the run up within " + std::to_string(config_.pending_timeout.count()) + " s");
      } else if (run.state == "ACTIVE" && now - run.updated > config_.run_stall_timeout.count()) {
        auto c = catalog_->get_connector(run.connector_id);
        if (!c || !connector_healthy(*c, now))
          impl_->fail_run_locked(run, "connector " + run.connector_id + " stopped responding during the run (no progress for " +
                                          std::to_string(now - run.updated) + " s)");
      }
    }
  }
  // Stores that have space again take their held runs.
  if (!impl_->stores->refresh().empty()) impl_->new_work();
  fault_point("server-tick");
  // An import waits for the connectors asked; one that never answers must not leave the catalog IMPORTING forever.
  if (catalog_->catalog_status() == catalog::CatalogStatus::kImporting && now - catalog_->catalog_modified() > 2 * config_.connector_timeout.count()) {
    catalog_->set_catalog_status(catalog::CatalogStatus::kAvailable, now);
    spdlog::warn("server catalog import: not every connector answered within {} s; the catalog shows what arrived", 2 * config_.connector_timeout.count());
  }
  impl_->prune_idle_stores();
}

std::optional<catalog::AccessKey> Service::access_key(const std::string& id) { return catalog_->find_access_key(id); }

std::string Service::create_registration_token(std::chrono::seconds valid_for, const std::string& domain) {
  if (!domain.empty()) {
    bool ok = domain.size() <= 64 && domain[0] != '.';
    for (char c : domain)
      if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) ok = false;
    if (!ok) throw OperationError("InvalidParameterException", "trust domain '" + domain + "' must be 1-64 letters, digits, '-' or '_'");
  }
  std::string token = "ferry-reg-" + random_string(32, kUpperAlnum);
  catalog_->add_registration_token(auth::sha256_hex(token), now_seconds() + valid_for.count(), domain);
  return token;
}

std::vector<std::string> Service::problems() {
  std::vector<std::string> out;
  for (auto& st : impl_->stores->list()) {
    if (!st.error.empty()) out.push_back(st.error);
    if (!st.full.empty()) out.push_back(st.full);
    out.insert(out.end(), st.damage.begin(), st.damage.end());
  }
  return out;
}

bool Service::connector_healthy(const catalog::Connector& c, Time now) const {
  return !c.disassociated && now - c.last_heartbeat <= config_.connector_timeout.count();
}

void Service::disassociate_connector(const std::string& connector_id) {
  std::lock_guard lock(impl_->mu);
  auto c = catalog_->get_connector(connector_id);
  if (!c || c->disassociated) throw OperationError("InvalidParameterException", "no connector '" + connector_id + "'", ErrorKind::kNotFound);
  c->disassociated = true;
  catalog_->transaction([&] {
    catalog_->put_connector(*c);
    catalog_->remove_access_keys_of(connector_id);
  });
  // Its runs cannot go on (its key is gone): they fail now, with the reason, rather than stall for an hour.
  for (auto& run : catalog_->open_runs(connector_id)) impl_->fail_run_locked(run, "connector " + connector_id + " was disassociated");
  impl_->new_work();
  spdlog::info("connector {} disassociated", connector_id);
}

void Service::import_server_catalog() {
  Time now = now_seconds();
  std::vector<std::string> healthy;
  for (auto& c : catalog_->all_connectors())
    if (connector_healthy(c, now)) healthy.push_back(c.id);
  if (healthy.empty())
    throw OperationError("NoConnectorsAvailableException", "There are no healthy connectors to import the server catalog from.");
  catalog_->transaction([&] {
    catalog_->request_inventory(healthy);
    catalog_->set_catalog_status(catalog::CatalogStatus::kImporting, now);
  });
  impl_->new_work();
  spdlog::info("server catalog import requested from {} connector(s)", healthy.size());
}

void Service::delete_server_catalog() {
  std::lock_guard lock(impl_->mu);
  try {
    catalog_->delete_all_servers(now_seconds());
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kConflict) throw OperationError("OperationNotPermittedException", e.what(), ErrorKind::kConflict);
    throw;
  }
}

catalog::ReplicationJob Service::get_job(const std::string& job_id) {
  auto job = catalog_->get_job(job_id);
  if (!job) throw OperationError("ReplicationJobNotFoundException", "The specified replication job does not exist: " + job_id, ErrorKind::kNotFound);
  return *job;
}

namespace {

void validate_job(const Service::JobRequest& r, const store::Keyring& keyring, bool creating) {
  auto bad = [](const std::string& m) { throw OperationError("InvalidParameterException", m); };
  if (r.frequency && (*r.frequency < 1 || *r.frequency > 24)) bad("frequency must be between 1 and 24 hours, not " + std::to_string(*r.frequency));
  if (creating && !r.frequency && !r.run_once.value_or(false))
    throw OperationError("MissingRequiredParameterException", "frequency is required unless runOnce is true");
  if (r.keep && (*r.keep < 0 || *r.keep > 1000)) bad("numberOfRecentAmisToKeep must be between 0 and 1000");
  if (r.license_type && *r.license_type != "AWS" && *r.license_type != "BYOL") bad("licenseType must be AWS or BYOL, not '" + *r.license_type + "'");
  if (r.kms_key_id && !r.kms_key_id->empty()) {
    try {
      store::Keyring::validate_key_id(*r.kms_key_id);
    } catch (const Error&) {
      bad("kmsKeyId '" + *r.kms_key_id + "' is not a valid key id");
    }
    if (!keyring.has(*r.kms_key_id)) bad("kmsKeyId '" + *r.kms_key_id + "' is not a key in the server's keyring");
  }
  if (r.description && r.description->size() > 255) bad("description is longer than 255 characters");
}

}  // namespace

std::string Service::create_job(const JobRequest& r) {
  if (r.server_id.empty()) throw OperationError("MissingRequiredParameterException", "serverId is required");
  if (!r.seed_time) throw OperationError("MissingRequiredParameterException", "seedReplicationTime is required");
  validate_job(r, impl_->keyring, true);
  std::lock_guard lock(impl_->mu);
  auto server = catalog_->get_server(r.server_id);
  if (!server) throw OperationError("InvalidParameterException", "no server '" + r.server_id + "' in the server catalog", ErrorKind::kNotFound);
  if (!server->error.empty())
    throw OperationError("ServerCannotBeReplicatedException", "server " + r.server_id + " cannot be replicated: " + server->error);
  if (server->disks.empty()) throw OperationError("ServerCannotBeReplicatedException", "server " + r.server_id + " has no disks");
  catalog::ReplicationJob job;
  job.id = catalog::Catalog::new_id("sms-job-");
  job.server_id = r.server_id;
  job.seed_time = *r.seed_time;
  job.run_once = r.run_once.value_or(false);
  job.frequency_hours = job.run_once ? r.frequency.value_or(0) : *r.frequency;
  job.next_run_time = job.seed_time;
  job.license_type = r.license_type.value_or("AWS");
  job.role_name = r.role_name.value_or("");
  job.description = r.description.value_or("");
  job.number_of_recent_amis_to_keep = r.keep.value_or(0);
  job.encrypted = r.encrypted.value_or(false);
  job.kms_key_id = job.encrypted ? r.kms_key_id.value_or("") : "";
  job.state = "PENDING";
  job.created = now_seconds();
  try {
    catalog_->create_job(job);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kConflict)
      throw OperationError("ReplicationJobAlreadyExistsException", "The specified replication job already exists: server " + r.server_id +
                                                                       " is replicated by another job", ErrorKind::kConflict);
    throw;
  }
  spdlog::info("created job {} for server {} ({})", job.id, job.server_id, server->vm_name);
  return job.id;
}

void Service::update_job(const std::string& job_id, const JobRequest& r) {
  validate_job(r, impl_->keyring, false);
  std::lock_guard lock(impl_->mu);
  auto job = get_job(job_id);
  if (r.seed_time) {
    job.seed_time = *r.seed_time;
    job.next_run_time = *r.seed_time;
  }
  if (r.frequency) job.frequency_hours = *r.frequency;
  if (r.run_once) job.run_once = *r.run_once;
  if (r.license_type) job.license_type = *r.license_type;
  if (r.role_name) job.role_name = *r.role_name;
  if (r.description) job.description = *r.description;
  if (r.keep) job.number_of_recent_amis_to_keep = *r.keep;
  if (r.encrypted) job.encrypted = *r.encrypted;
  if (r.kms_key_id) job.kms_key_id = *r.kms_key_id;
  if (!job.encrypted) job.kms_key_id.clear();
  std::vector<catalog::Image> dropped;
  catalog_->transaction([&] {
    catalog_->update_job(job);
    dropped = impl_->drop_excess_images(job);
  });
  impl_->drop_data(dropped);
}

void Service::delete_job(const std::string& job_id) {
  std::lock_guard lock(impl_->mu);
  auto job = get_job(job_id);
  for (auto& run : catalog_->open_runs())
    if (run.job_id == job_id) impl_->fail_run_locked(run, "the replication job was deleted");
  catalog_->delete_job(job_id, now_seconds());
  spdlog::info("deleted job {}", job_id);
}

std::string Service::start_on_demand_run(const std::string& job_id, const std::string& description) {
  if (description.size() > 255) throw OperationError("InvalidParameterException", "description is longer than 255 characters");
  std::lock_guard lock(impl_->mu);
  auto job = get_job(job_id);
  catalog::ReplicationRun run;
  run.id = catalog::Catalog::new_id("sms-run-");
  run.job_id = job_id;
  run.type = "ON_DEMAND";
  run.description = description;
  run.encrypted = job.encrypted;
  run.kms_key_id = job.kms_key_id;
  run.scheduled_start = now_seconds();
  run.stage = "Waiting for connector";
  run.created = run.updated = run.scheduled_start;
  if (!catalog_->create_run(run))
    throw OperationError("ReplicationRunLimitExceededException", "job " + job_id + " already has a replication run in progress; one run at a time",
                         ErrorKind::kConflict);
  impl_->new_work();
  if (job.state == "PENDING" || job.state == "PAUSED_ON_FAILURE" || job.state == "FAILED") {
    job.state = "ACTIVE";
    catalog_->update_job(job);
  }
  spdlog::info("on-demand run {} of job {}", run.id, job_id);
  return run.id;
}

std::vector<catalog::Image> Service::images(const std::string& job_id) {
  if (!job_id.empty()) return catalog_->images_of_job(job_id);
  std::vector<catalog::Image> all;
  catalog::PageRequest page;
  page.max_results = 1000;
  for (;;) {
    auto p = catalog_->list_images(page);
    for (auto& i : p.items) all.push_back(std::move(i));
    if (p.next_token.empty()) break;
    page.token = p.next_token;
  }
  return all;
}

std::string Service::export_image(const std::string& image_id, const std::string& disk, const std::string& format, const std::string& output) {
  auto image = catalog_->get_image(image_id);
  if (!image) throw OperationError("InvalidParameterException", "no image '" + image_id + "'", ErrorKind::kNotFound);
  const catalog::ImageDisk* d = nullptr;
  for (auto& x : image->disks)
    if (x.name == disk || (disk.empty() && image->disks.size() == 1)) d = &x;
  if (!d) {
    std::string names;
    for (auto& x : image->disks) names += (names.empty() ? "" : ", ") + x.name;
    if (disk.empty())
      throw OperationError("MissingRequiredParameterException",
                           "image " + image_id + " has " + std::to_string(image->disks.size()) + " disks; name the one to export (" + names + ")");
    throw OperationError("InvalidParameterException", "image " + image_id + " has no disk '" + disk + "' (disks: " + names + ")");
  }
  disk::TargetFormat target;
  try {
    target = disk::parse_target_format(format);
  } catch (const Error& e) {
    throw OperationError("InvalidParameterException", e.what());
  }
  ExportTarget where(config_.export_dir, output);
  auto& repo = impl_->stores->open(image->store);
  auto snapshot = repo.load_snapshot(d->snapshot_id);
  try {
    auto sink = disk::create_sink(where.path(), target, snapshot.size);
    image::export_snapshot(repo, snapshot, *sink, {});
  } catch (const Error& e) {
    // The caller's name is shown, not the descriptor path the sink wrote through.
    std::string message = e.what();
    for (size_t at; (at = message.find(where.path().parent_path().string())) != std::string::npos;)
      message.replace(at, where.path().parent_path().string().size(), where.shown().parent_path().string());
    if (e.kind() == ErrorKind::kConflict) throw OperationError("InvalidParameterException", message, ErrorKind::kConflict);
    if (e.kind() == ErrorKind::kNoSpace) throw OperationError("InsufficientStorageException", "export of image " + image_id + ": " + message, ErrorKind::kNoSpace);
    throw Error(e.kind(), message);
  }
  spdlog::info("exported disk {} of image {} to {}", d->name, image_id, where.shown().string());
  return where.shown().string();
}

void Service::delete_image(const std::string& image_id) {
  std::lock_guard lock(impl_->mu);
  auto image = catalog_->get_image(image_id);
  if (!image) throw OperationError("InvalidParameterException", "no image '" + image_id + "'", ErrorKind::kNotFound);
  catalog_->delete_image(image_id);
  impl_->drop_data({*image});
}

// --- Connector side ---

Service::Registration Service::register_connector(const std::string& token, const catalog::Connector& info) {
  Time now = now_seconds();
  auto domain = catalog_->consume_registration_token(auth::sha256_hex(token), now);
  if (!domain)
    throw OperationError("UnauthorizedOperationException", "the registration token is unknown, expired or already used; create one with 'ferry connectors token'",
                         ErrorKind::kUnauthorized);
  catalog::Connector c = info;
  c.domain = *domain;
  c.id = catalog::Catalog::new_id("c-");
  c.associated_on = now;
  c.last_heartbeat = now;
  auto key = new_access_key("AKCO", "connector", c.id);
  catalog_->transaction([&] {
    catalog_->put_connector(c);
    catalog_->add_access_key(key);
  });
  spdlog::info("connector {} ({}) registered", c.id, c.name);
  return {c.id, key.id, key.secret};
}

ConnectorWork Service::heartbeat(const std::string& connector_id, const catalog::Connector& info, const std::string& ip, const ConnectorHas& has) {
  uint64_t generation;
  {
    std::lock_guard lock(impl_->stop_mu);
    generation = impl_->work_generation;
  }
  ConnectorWork w;
  auto c = catalog_->get_connector(connector_id);
  if (!c || c->disassociated) {
    w.disassociated = true;
    return w;
  }
  bool changed = c->version != info.version || c->capabilities != info.capabilities || c->vm_manager_type != info.vm_manager_type ||
                 c->vm_manager_name != info.vm_manager_name || c->vm_manager_id != info.vm_manager_id || c->mac_address != info.mac_address;
  if (changed) {
    c->version = info.version;
    c->capabilities = info.capabilities;
    c->vm_manager_type = info.vm_manager_type;
    c->vm_manager_name = info.vm_manager_name;
    c->vm_manager_id = info.vm_manager_id;
    c->mac_address = info.mac_address;
    c->ip_address = ip;
    c->last_heartbeat = now_seconds();
    catalog_->put_connector(*c);
  } else {
    catalog_->heartbeat(connector_id, now_seconds(), ip);
  }
  auto work = [&] {
    ConnectorWork out;
    out.inventory_requested = c->inventory_requested;
    for (auto& run : catalog_->open_runs(connector_id)) {
      if (!run.connector_id.empty() && run.connector_id != connector_id) continue;
      // A run into a full store is held (PENDING) until it has space again; an ACTIVE one learns from its uploads.
      if (run.state == "PENDING")
        if (auto job = catalog_->get_job(run.job_id); job && impl_->stores->full(impl_->store_of(*job))) continue;
      out.runs.push_back(run.id);
    }
    return out;
  };
  w = work();
  auto news = [&](const ConnectorWork& answer) {
    if (answer.disassociated || answer.inventory_requested > has.inventory_reported) return true;
    return std::any_of(answer.runs.begin(), answer.runs.end(), [&](const std::string& r) {
      return std::find(has.running.begin(), has.running.end(), r) == has.running.end();
    });
  };
  if (has.wait <= std::chrono::milliseconds(0) || news(w)) return w;

  // Long poll: wait for new work, the deadline, or stop(). Held heartbeats take HTTP threads, so only so many wait.
  auto longest = std::chrono::duration_cast<std::chrono::milliseconds>(config_.connector_timeout) / 3;
  auto deadline = std::chrono::steady_clock::now() + std::min(has.wait, longest);
  {
    std::lock_guard lock(impl_->stop_mu);
    if (impl_->held_heartbeats >= kMaxHeldHeartbeats) return w;
    ++impl_->held_heartbeats;
  }
  struct Release {
    Impl& impl;
    ~Release() {
      std::lock_guard lock(impl.stop_mu);
      --impl.held_heartbeats;
    }
  } release{*impl_};
  for (;;) {
    {
      std::unique_lock lock(impl_->stop_mu);
      bool woken = impl_->stop_cv.wait_until(lock, deadline, [&] { return impl_->stopping || impl_->work_generation != generation; });
      if (!woken || impl_->stopping) return w;
      generation = impl_->work_generation;
    }
    c = catalog_->get_connector(connector_id);
    if (!c || c->disassociated) {
      ConnectorWork gone;
      gone.disassociated = true;
      return gone;
    }
    w = work();
    if (news(w)) return w;
  }
}

void Service::report_inventory(const std::string& connector_id, int64_t generation, std::vector<catalog::Server> servers) {
  auto c = catalog_->get_connector(connector_id);
  if (!c) throw OperationError("UnauthorizedOperationException", "unknown connector " + connector_id, ErrorKind::kUnauthorized);
  for (auto& s : servers) {
    s.connector_id = connector_id;
    if (s.vm_manager_id.empty()) s.vm_manager_id = c->vm_manager_id;
  }
  size_t n = servers.size(), bad = 0;
  for (auto& s : servers) bad += !s.error.empty();
  catalog_->replace_inventory(connector_id, generation, std::move(servers), now_seconds());
  spdlog::info("connector {} reported {} server(s), {} not replicable", connector_id, n, bad);
}

RunTask Service::begin_run(const std::string& connector_id, const std::string& run_id) {
  std::lock_guard lock(impl_->mu);
  auto run = impl_->run_for(connector_id, run_id, false);
  if (run.state != "PENDING" && run.state != "ACTIVE")
    throw OperationError("OperationNotPermittedException", "run " + run_id + " is " + run.state, ErrorKind::kConflict);
  auto job = get_job(run.job_id);
  auto server = catalog_->get_server(job.server_id);
  if (!server) {
    impl_->fail_run_locked(run, "server " + job.server_id + " is no longer in the server catalog");
    throw OperationError("OperationNotPermittedException", "server " + job.server_id + " is gone", ErrorKind::kConflict);
  }
  if (server->connector_id != connector_id)
    throw OperationError("UnauthorizedOperationException", "server " + server->id + " is served by connector " + server->connector_id,
                         ErrorKind::kUnauthorized);
  RunTask t;
  t.run_id = run.id;
  t.job_id = job.id;
  t.server = *server;
  t.store = impl_->store_of(job);
  if (auto full = impl_->stores->full(t.store); full && run.state == "PENDING")
    throw OperationError("InsufficientStorageException", *full, ErrorKind::kNoSpace);
  auto& repo = impl_->store_for(job);
  t.store_config = repo.config();
  t.id_key = repo.id_key();
  fault_point("server-begin");
  t.completed = run.disks;
  // Parents: the newest image of this job still kept.
  auto images = catalog_->images_of_job(job.id);
  if (!images.empty() && images.back().store == t.store)
    for (auto& d : images.back().disks) t.parents.emplace_back(d.name, d.snapshot_id);
  Time now = now_seconds();
  if (run.state == "PENDING") {
    run.state = "ACTIVE";
    run.connector_id = connector_id;
    run.stage = "Preparing";
    run.stage_progress = "0%";
    run.updated = now;
    catalog_->update_run(run);
    if (job.state != "ACTIVE" && job.state != "PAUSED_ON_FAILURE") {
      job.state = "ACTIVE";
      catalog_->update_job(job);
    }
    spdlog::info("run {} started on connector {}", run.id, connector_id);
  } else {
    run.updated = now;
    catalog_->update_run(run);
    spdlog::info("run {} resumed on connector {} ({} of {} disks done)", run.id, connector_id, run.disks.size(), server->disks.size());
  }
  return t;
}

std::string Service::parent_snapshot(const std::string& connector_id, const std::string& run_id, const std::string& snapshot_id) {
  auto run = impl_->run_for(connector_id, run_id, true);
  auto job = get_job(run.job_id);
  // The parents are the disks of the job's newest image (begin_run): nothing else of the store.
  auto images = catalog_->images_of_job(job.id);
  std::string store = impl_->store_of(job);
  bool parent = !images.empty() && images.back().store == store &&
                std::any_of(images.back().disks.begin(), images.back().disks.end(), [&](const catalog::ImageDisk& d) { return d.snapshot_id == snapshot_id; });
  if (!parent)
    throw OperationError("UnauthorizedOperationException", "snapshot " + snapshot_id + " is not a parent of run " + run_id, ErrorKind::kUnauthorized);
  return impl_->store_for(job).snapshot_plaintext(snapshot_id);
}

std::vector<bool> Service::lookup_chunks(const std::string& connector_id, const std::string& run_id, const std::vector<store::ChunkId>& ids) {
  if (ids.size() > kMaxLookupIds)
    throw OperationError("InvalidParameterException", "a lookup asks about at most " + std::to_string(kMaxLookupIds) + " chunks, not " +
                                                          std::to_string(ids.size()));
  auto run = impl_->run_for(connector_id, run_id, true);
  auto job = get_job(run.job_id);
  auto& repo = impl_->store_for(job);
  // The run may ask about no more chunks than its disks hold (twice over, for resumed and retried passes).
  uint64_t budget = 65536;
  if (auto server = catalog_->get_server(job.server_id))
    for (auto& d : server->disks) budget += 2 * ((d.size + repo.config().chunk_size - 1) / repo.config().chunk_size);
  std::string refused;
  {
    std::lock_guard lock(impl_->lookups_mu);
    uint64_t& asked = impl_->lookups[run_id];
    if (asked + ids.size() > budget)
      refused = "run " + run_id + " asked about " + std::to_string(asked + ids.size()) + " chunks, more than its disks hold (at most " +
                std::to_string(budget) + "); the run is stopped";
    else
      asked += ids.size();
  }
  if (!refused.empty()) {
    std::lock_guard lock(impl_->mu);
    if (auto fresh = catalog_->get_run(run_id)) impl_->fail_run_locked(*fresh, refused);
    throw OperationError("OperationNotPermittedException", refused, ErrorKind::kConflict);
  }
  return repo.lacks(ids);
}

void Service::receive_pack(const std::string& connector_id, const std::string& run_id, const std::string& name, char* data, size_t size) {
  auto run = impl_->run_for(connector_id, run_id, true);
  auto job = get_job(run.job_id);
  std::string store = impl_->store_of(job);
  auto& repo = impl_->store_for(job);
  catalog_->add_run_bytes_uploaded(run_id, size);  // what arrived, resends included
  fault_point("server-pack");
  try {
    impl_->stores->reserve(store, size);
    repo.receive_pack(name, data, size);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kNoSpace) throw;
    if (!dynamic_cast<const OperationError*>(&e)) impl_->stores->note_no_space(store, size, e.what());
    std::string why = impl_->stores->full(store).value_or(e.what());
    // The run cannot go on: it fails now, with the reason, instead of retrying into a full disk.
    {
      std::lock_guard lock(impl_->mu);
      if (auto fresh = catalog_->get_run(run_id)) impl_->fail_run_locked(*fresh, why);
    }
    throw OperationError("InsufficientStorageException", why, ErrorKind::kNoSpace);
  }
}

void Service::receive_snapshot(const std::string& connector_id, const std::string& run_id, const std::string& disk,
                               const std::string& snapshot_id, std::string_view plaintext) {
  auto run = impl_->run_for(connector_id, run_id, true);
  auto job = get_job(run.job_id);
  auto server = catalog_->get_server(job.server_id);
  if (!server) throw OperationError("OperationNotPermittedException", "server " + job.server_id + " is gone", ErrorKind::kConflict);
  const catalog::Disk* d = nullptr;
  for (auto& x : server->disks)
    if (x.name == disk) d = &x;
  if (!d) throw OperationError("InvalidParameterException", "server " + server->id + " has no disk '" + disk + "'");
  std::string store = impl_->store_of(job);
  auto& repo = impl_->store_for(job);
  // No other job may own this snapshot id; the store checks the rest (name, digest, chunks) before storing it.
  if (!catalog_->claim_snapshot(store, snapshot_id, job.id, now_seconds()))
    throw OperationError("UnauthorizedOperationException", "snapshot " + snapshot_id + " belongs to another replication job", ErrorKind::kUnauthorized);
  fault_point("server-snapshot");
  store::Snapshot snap;
  try {
    snap = repo.receive_snapshot(snapshot_id, plaintext, snapshot_name(server->id, disk));
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kConflict || e.kind() == ErrorKind::kInvalidArgument)
      throw OperationError("InvalidParameterException", e.what(), e.kind());
    throw;
  }
  std::lock_guard lock(impl_->mu);
  auto fresh = impl_->run_for(connector_id, run_id, true);
  std::erase_if(fresh.disks, [&](const catalog::ImageDisk& x) { return x.name == disk; });
  fresh.disks.push_back({disk, snapshot_id, snap.size});
  fresh.updated = now_seconds();
  catalog_->update_run(fresh);
  spdlog::info("run {}: disk {} committed as snapshot {} ({} new chunks, {} bytes new)", run_id, disk, snapshot_id, snap.stats.chunks_new,
               snap.stats.bytes_new);
}

bool Service::run_progress(const std::string& connector_id, const std::string& run_id, const RunProgress& p) {
  std::lock_guard lock(impl_->mu);
  auto run = impl_->run_for(connector_id, run_id, false);
  if (run.state != "ACTIVE") return false;
  if (!catalog_->get_job(run.job_id)) return false;
  run.stage = p.stage;
  run.stage_progress = std::to_string(std::clamp(p.percent, 0, 100)) + "%";
  run.bytes_total = p.bytes_total;
  run.bytes_done = p.bytes_done;
  // bytes_uploaded is the server's own count (receive_pack): it survives connector restarts and counts resends.
  run.updated = now_seconds();
  catalog_->update_run(run);
  return true;
}

std::string Service::complete_run(const std::string& connector_id, const std::string& run_id) {
  fault_point("server-complete");
  std::lock_guard lock(impl_->mu);
  auto run = impl_->run_for(connector_id, run_id, false);
  if (run.state == "COMPLETED") return run.ami_id;  // a retried completion
  if (run.state != "ACTIVE")
    throw OperationError("OperationNotPermittedException", "run " + run_id + " is " + run.state + ", not ACTIVE", ErrorKind::kConflict);
  auto job = get_job(run.job_id);
  auto server = catalog_->get_server(job.server_id);
  if (!server) throw OperationError("OperationNotPermittedException", "server " + job.server_id + " is gone", ErrorKind::kConflict);
  catalog::Image image;
  for (auto& d : server->disks) {
    auto it = std::find_if(run.disks.begin(), run.disks.end(), [&](const catalog::ImageDisk& x) { return x.name == d.name; });
    if (it == run.disks.end())
      throw OperationError("OperationNotPermittedException", "run " + run_id + " has not committed disk '" + d.name + "'", ErrorKind::kConflict);
    image.disks.push_back(*it);
  }
  Time now = now_seconds();
  image.id = catalog::Catalog::new_id("ami-");
  image.job_id = job.id;
  image.run_id = run.id;
  image.server_id = server->id;
  image.store = impl_->store_of(job);
  image.created = now;
  impl_->forget_lookups(run.id);
  run.state = "COMPLETED";
  run.stage = "Completed";
  run.stage_progress = "100%";
  run.ami_id = image.id;
  run.completed_time = now;
  run.updated = now;
  run.status_message.clear();
  job.latest_ami_id = image.id;
  job.consecutive_failures = 0;
  job.status_message.clear();
  if (job.run_once) job.state = "COMPLETED";
  else if (job.state != "ACTIVE") job.state = "ACTIVE";
  if (job.state == "ACTIVE" && job.next_run_time == 0 && job.frequency_hours > 0) {
    job.next_run_time = job.seed_time;
    while (job.next_run_time <= now) job.next_run_time += Time{job.frequency_hours} * 3600;
  }
  std::vector<catalog::Image> dropped;
  catalog_->transaction([&] {
    catalog_->add_image(image);
    catalog_->update_run(run);
    catalog_->update_job(job);
    dropped = impl_->drop_excess_images(job, image.id);
  });
  spdlog::info("run {} completed: image {} of server {}", run.id, image.id, server->id);
  impl_->drop_data(dropped);
  return image.id;
}

void Service::fail_run(const std::string& connector_id, const std::string& run_id, const std::string& message) {
  std::lock_guard lock(impl_->mu);
  auto run = impl_->run_for(connector_id, run_id, false);
  impl_->fail_run_locked(run, message.empty() ? "the connector reported a failure" : message);
}

// --- Stores ---

std::vector<Service::StoreInfo> Service::stores() {
  std::vector<StoreInfo> out;
  auto images = this->images("");
  std::lock_guard lock(impl_->mu);
  for (auto& i : impl_->stores->list()) {
    StoreInfo s;
    s.name = i.name;
    s.repository_id = i.repository_id;
    s.key_id = i.key_id;
    s.encrypted = i.encrypted;
    s.data_keys = i.data_keys;
    s.chunks = i.chunks;
    s.fs_free = i.fs_free;
    s.fs_size = i.fs_size;
    s.reserve = i.reserve;
    s.full = i.full;
    s.error = i.error;
    s.images = std::count_if(images.begin(), images.end(), [&](const catalog::Image& img) { return img.store == i.name; });
    s.active_runs = impl_->runs_writing(i.name);
    out.push_back(std::move(s));
  }
  return out;
}

store::PruneReport Service::prune_store(const std::string& name) {
  Stores::validate_name(name);
  std::lock_guard big(impl_->mu);  // no run begins into the store while it is pruned
  impl_->stores->open(name);
  auto writing = impl_->runs_writing(name);
  if (!writing.empty()) {
    std::string runs;
    for (auto& r : writing) runs += (runs.empty() ? "" : ", ") + r;
    throw OperationError("OperationNotPermittedException", "store '" + name + "' is being written by run(s) " + runs +
                                                               "; prune it when they end (the server also prunes it by itself once idle)",
                         ErrorKind::kConflict);
  }
  auto maintenance = impl_->stores->maintenance(name);
  auto report = impl_->prune_locked(name);
  if (!impl_->stores->refresh().empty()) impl_->new_work();
  return report;
}

store::CheckReport Service::check_store(const std::string& name, bool read_data) {
  Stores::validate_name(name);
  auto& repo = impl_->stores->open(name);
  // Beside running uploads (they only add packs); not beside a prune, which this waits for.
  auto maintenance = impl_->stores->maintenance(name);
  return store::check(repo, read_data, nullptr);
}

void Service::rotate_store_keys(const std::string& name, bool new_data_key, const std::string& new_master_key_id) {
  Stores::validate_name(name);
  if (!new_master_key_id.empty()) {
    try {
      store::Keyring::validate_key_id(new_master_key_id);
    } catch (const Error& e) {
      throw OperationError("InvalidParameterException", e.what());
    }
    if (!impl_->keyring.has(new_master_key_id))
      throw OperationError("InvalidParameterException", "master key '" + new_master_key_id + "' is not in the server's keyring");
  }
  auto maintenance = impl_->stores->maintenance(name);
  try {
    impl_->stores->rotate_keys(name, new_data_key, new_master_key_id);
  } catch (const OperationError&) {
    throw;
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kInvalidArgument) throw OperationError("InvalidParameterException", e.what());
    throw;
  }
}

}  // namespace ferry::service
