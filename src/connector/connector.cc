// The connector: registration, heartbeats, inventory reports, and runs executed through a repository view whose
// backend uploads to the server.
#include "connector/connector.h"

#include <openssl/crypto.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "auth/sigv4.h"
#include "client/client.h"
#include "common/fault.h"
#include "common/fs.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/progress.h"
#include "disk/disk.h"
#include "replicate/replicate.h"
#include "store/repository.h"

namespace ferry::connector {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string hostname() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

// The MAC address of the first network interface that has one (not loopback), or "".
std::string mac_address() {
  std::error_code ec;
  std::vector<fs::path> interfaces;
  for (auto& e : fs::directory_iterator("/sys/class/net", ec)) interfaces.push_back(e.path());
  std::sort(interfaces.begin(), interfaces.end());
  for (auto& dir : interfaces) {
    if (dir.filename() == "lo") continue;
    std::ifstream in(dir / "address");
    std::string mac;
    if (std::getline(in, mac) && !mac.empty() && mac != "00:00:00:00:00:00") return mac;
  }
  return "";
}

// The id a VM manager's servers carry in vmServerAddress.vmManagerId.
std::string manager_id(const inventory::ManagerConfig& m) { return m.type + ":" + m.name; }

// What the connector tells the server about itself (registration and every heartbeat). A connector serving
// several managers lists their ids, comma-separated, so servers can be matched to it by vmManagerId.
json self_description(const Config& c) {
  std::set<std::string> caps;
  std::string type, names, ids;
  for (auto& m : c.managers) {
    auto plugin = inventory::make_plugin(m);
    for (auto& cap : plugin->capabilities()) caps.insert(cap);
    if (type.empty()) type = plugin->manager_type();
    else if (type != plugin->manager_type()) type = "MULTIPLE";
    names += (names.empty() ? "" : ",") + m.name;
    ids += (ids.empty() ? "" : ",") + manager_id(m);
  }
  static const std::string mac = mac_address();
  return {{"name", c.name.empty() ? hostname() : c.name},
          {"version", FERRY_VERSION},
          {"capabilities", std::vector<std::string>(caps.begin(), caps.end())},
          {"vmManagerType", type},
          {"vmManagerName", names},
          {"vmManagerId", ids},
          {"macAddress", mac}};
}

struct Credentials {
  std::string connector_id;
  client::Profile profile;
};

fs::path credentials_file(const Config& c) { return c.state_dir / "credentials.json"; }

Credentials load_or_register(const Config& c) {
  fs::path file = credentials_file(c);
  Credentials creds;
  creds.profile.endpoint = c.server;
  creds.profile.ca_file = c.ca_file;
  creds.profile.insecure_http = c.insecure_http;
  if (fs::exists(file)) {
    json j = json::parse(read_file(file));
    creds.connector_id = j.at("connectorId");
    creds.profile.credentials = {j.at("accessKeyId"), j.at("secretAccessKey")};
    if (creds.profile.endpoint.empty()) creds.profile.endpoint = j.value("server", "");
    return creds;
  }
  if (c.token.empty())
    fail(ErrorKind::kInvalidArgument, "this connector is not registered yet (no " + file.string() +
                                          "): give a registration token with --token (create one with 'ferry connectors token')");
  if (c.server.empty()) fail(ErrorKind::kInvalidArgument, "no server given: use --server URL");
  // Registration is the one unsigned request: the token is the credential.
  client::Client anon(creds.profile, "ferry-connector");
  json body = self_description(c);
  body["token"] = c.token;
  client::Response r = anon.send("POST", "/connector/v1/register", body.dump(), "application/json");
  client::throw_if_error(r);
  json j = json::parse(r.body);
  creds.connector_id = j.at("connectorId");
  creds.profile.credentials = {j.at("accessKeyId"), j.at("secretAccessKey")};
  fs::create_directories(c.state_dir);
  json saved = {{"connectorId", creds.connector_id}, {"accessKeyId", creds.profile.credentials.access_key_id},
                {"secretAccessKey", creds.profile.credentials.secret_access_key}, {"server", c.server}};
  write_file_atomic(file, saved.dump(2) + "\n", 0600);
  spdlog::info("registered with {} as connector {}", c.server, creds.connector_id);
  return creds;
}

json inventory_report(const Config& c) {
  json servers = json::array();
  for (auto& m : c.managers) {
    auto plugin = inventory::make_plugin(m);
    std::vector<inventory::VmInfo> vms;
    try {
      vms = plugin->discover();
    } catch (const std::exception& e) {
      spdlog::error("inventory of {} '{}' failed: {}", m.type, m.name, e.what());
      continue;
    }
    for (auto& vm : vms) {
      json disks = json::array();
      for (auto& d : vm.disks) disks.push_back({{"name", d.name}, {"path", d.path}, {"format", d.format}, {"size", d.size}});
      // vm ids are unique per manager; several managers on one connector are told apart by the manager id.
      servers.push_back({{"vmId", vm.vm_id},
                         {"vmName", vm.name},
                         {"vmPath", vm.path},
                         {"vmManagerId", manager_id(m)},
                         {"vmManagerType", plugin->manager_type()},
                         {"vmManagerName", m.name},
                         {"guestOs", vm.guest_os},
                         {"cpus", vm.cpus},
                         {"memoryMiB", vm.memory_mib},
                         {"disks", disks},
                         {"error", vm.error}});
      if (!vm.error.empty()) spdlog::warn("{} '{}': VM '{}' cannot be replicated: {}", m.type, m.name, vm.name, vm.error);
    }
  }
  return servers;
}

// A store::Backend that is the server: packs and snapshots written by the run's ChunkWriter and replicate() are
// uploaded. Nothing is read or removed: the view knows its parents and asks the server about chunks itself, and
// packs of a failed attempt stay on the server, which indexes them, so the retry does not send them again.
class UploadBackend : public store::Backend {
 public:
  UploadBackend(client::Client& client, std::string run_id, size_t pack_size)
      : client_(client), run_id_(std::move(run_id)), pack_size_(pack_size) {}

  void set_disk(const std::string& disk) {
    std::lock_guard lock(mu_);
    disk_ = disk;
  }

  std::string location() const override { return client_.profile().endpoint + " run " + run_id_; }

  void put(store::ObjectType type, const std::string& name, std::string_view data) override {
    if (type != store::ObjectType::kSnapshot) fail(ErrorKind::kUnsupported, std::string("a connector does not write ") + store::to_string(type) + " objects");
    std::string disk;
    {
      std::lock_guard lock(mu_);
      disk = disk_;
    }
    fault_point("connector-snapshot");
    // A snapshot is plaintext the server checks against what it stored: its body is signed, unlike packs.
    upload("/connector/v1/runs/" + run_id_ + "/snapshots/" + name, std::string(data), {{"X-Ferry-Disk", disk}});
  }

  class PackUpload : public store::ObjectWriter {
   public:
    explicit PackUpload(UploadBackend& b) : b_(b), buf_(b.take_buffer()) {}
    ~PackUpload() override { b_.return_buffer(std::move(buf_)); }
    void append(std::string_view data) override { buf_.append(data); }
    uint64_t size() const override { return buf_.size(); }
    // Every blob in a pack is checked by the server against its chunk id (which needs the id key to forge), so its
    // body is not hashed into the signature.
    void commit(const std::string& name) override {
      fault_point("connector-upload");
      b_.upload("/connector/v1/runs/" + b_.run_id_ + "/packs/" + name, buf_, {{"X-Amz-Content-Sha256", auth::kUnsignedPayload}});
    }

   private:
    UploadBackend& b_;
    std::string buf_;
  };
  std::unique_ptr<store::ObjectWriter> create(store::ObjectType type) override {
    if (type != store::ObjectType::kPack) fail(ErrorKind::kUnsupported, "a connector streams only packs");
    return std::make_unique<PackUpload>(*this);
  }

  std::string get(store::ObjectType, const std::string& name) override {
    fail(ErrorKind::kUnsupported, "a connector cannot read '" + name + "' from the server");
  }
  void read_range(store::ObjectType, const std::string& name, uint64_t, size_t, char*) override {
    fail(ErrorKind::kUnsupported, "a connector cannot read '" + name + "' from the server");
  }
  uint64_t size(store::ObjectType, const std::string& name) override {
    fail(ErrorKind::kUnsupported, "a connector cannot stat '" + name + "' on the server");
  }
  bool exists(store::ObjectType, const std::string&) override { return false; }
  std::vector<std::string> list(store::ObjectType) override { return {}; }
  void remove(store::ObjectType, const std::string&) override {}
  std::unique_ptr<Lock> lock(LockKind, const std::string&) override { return std::make_unique<Lock>(); }

 private:
  // Pack buffers are reused: a fresh 16 MiB buffer per pack costs a page fault per 4 KiB, and growing one by
  // appending copies it several times over.
  std::string take_buffer() {
    std::lock_guard lock(mu_);
    if (spare_.empty()) {
      std::string b;
      b.reserve(pack_size_ + pack_size_ / 8);  // a pack ends past pack_size by its last blob and the trailer
      return b;
    }
    std::string b = std::move(spare_.back());
    spare_.pop_back();
    return b;
  }
  // Kept for reuse: as many as a ChunkWriter has packs in flight (one being filled, two in its finished queue, two
  // being uploaded), so that no pack buffer is freed and faulted in afresh (16 MiB of page clearing per pack).
  void return_buffer(std::string b) {
    b.clear();
    std::lock_guard lock(mu_);
    if (spare_.size() < 8) spare_.push_back(std::move(b));
  }

  void upload(const std::string& path, const std::string& data, std::vector<std::pair<std::string, std::string>> headers) {
    auto r = client_.send("PUT", path, data, "application/octet-stream", headers);
    client::throw_if_error(r);
  }

  client::Client& client_;
  std::string run_id_;
  std::mutex mu_;
  std::string disk_;
  size_t pack_size_;
  std::vector<std::string> spare_;  // guarded by mu_
};

// Asks the server which of `ids` the run's store lacks (POST runs/{run}/lookup: ids in, one bit per id out).
std::vector<bool> lookup_chunks(client::Client& http, const std::string& run_id, const std::vector<store::ChunkId>& ids) {
  std::vector<bool> out;
  out.reserve(ids.size());
  constexpr size_t kPerRequest = 8192;
  for (size_t from = 0; from < ids.size(); from += kPerRequest) {
    size_t n = std::min(kPerRequest, ids.size() - from);
    std::string body(n * 32, '\0');
    for (size_t i = 0; i < n; i++) std::memcpy(body.data() + 32 * i, ids[from + i].bytes.data(), 32);
    auto r = http.send("POST", "/connector/v1/runs/" + run_id + "/lookup", body, "application/octet-stream");
    client::throw_if_error(r);
    if (r.body.size() != (n + 7) / 8) fail(ErrorKind::kCorrupt, "the server's chunk lookup answer has " + std::to_string(r.body.size()) + " bytes, expected " + std::to_string((n + 7) / 8));
    for (size_t i = 0; i < n; i++) out.push_back((static_cast<uint8_t>(r.body[i / 8]) >> (i % 8)) & 1);
  }
  return out;
}

class Agent {
 public:
  Agent(const Config& config, const std::atomic<bool>& stop) : config_(config), stop_(stop) {}

  void run() {
    creds_ = load_or_register(config_);
    client_ = std::make_unique<client::Client>(creds_.profile, "ferry-connector");
    // A server restart must not kill runs: uploads wait for it as long as a run may stall.
    client_->set_retry_for(std::chrono::minutes(10));
    heartbeat_client_ = std::make_unique<client::Client>(creds_.profile, "ferry-connector");
    heartbeat_client_->set_retry_for(std::chrono::seconds(0));
    spdlog::info("connector {} serving {} VM manager(s), server {}", creds_.connector_id, config_.managers.size(), creds_.profile.endpoint);
    while (!stop_) {
      // Heartbeats start at most once per poll interval. The server holds each until it has something new for
      // this connector (up to the interval), so a new run starts as soon as it is created, not a poll later.
      auto next = std::chrono::steady_clock::now() + config_.poll_interval;
      try {
        // A heartbeat that brought work is followed at once by the next (which the server holds until there is more):
        // a run created right after an inventory request or another run must not wait out the interval.
        if (poll()) next = std::chrono::steady_clock::now();
      } catch (const client::ApiError& e) {
        spdlog::error("heartbeat: {}", e.what());
        if (e.status() == 400 || e.status() == 403) {
          if (e.type() == "UnrecognizedClientException") fail(ErrorKind::kUnauthorized, "the server no longer knows this connector's access key (disassociated?)");
        }
      } catch (const std::exception& e) {
        spdlog::warn("heartbeat: {}", e.what());
      } catch (...) {
        spdlog::error("heartbeat: an unknown exception");
      }
      if (disassociated_) break;
      while (!stop_ && std::chrono::steady_clock::now() < next) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (auto& [id, t] : workers_)
      if (t.joinable()) t.join();
    if (disassociated_) fail(ErrorKind::kUnauthorized, "connector " + creds_.connector_id + " was disassociated from the server; stopping");
  }

 private:
  // One heartbeat and what it asks for. Returns whether it brought something to do (an inventory request, a run).
  bool poll() {
    bool acted = false;
    json hb = self_description(config_);
    {
      std::lock_guard lock(mu_);
      json running = json::array();
      for (auto& [id, t] : workers_)
        if (std::find(finished_.begin(), finished_.end(), id) == finished_.end()) running.push_back(id);
      hb["running"] = running;
    }
    hb["inventoryReported"] = reported_;
    hb["waitMs"] = config_.poll_interval.count();
    fault_point("connector-heartbeat");
    auto r = heartbeat_client_->send("POST", "/connector/v1/heartbeat", hb.dump(), "application/json");
    client::throw_if_error(r);
    json w = json::parse(r.body);
    if (w.value("disassociated", false)) {
      disassociated_ = true;
      return false;
    }
    int64_t requested = w.value("inventoryRequested", int64_t{0});
    if (requested > reported_) {
      fault_point("connector-inventory");
      json body = {{"generation", requested}, {"servers", inventory_report(config_)}};
      auto ir = client_->send("POST", "/connector/v1/inventory", body.dump(), "application/json");
      client::throw_if_error(ir);
      reported_ = requested;
      acted = true;
    }
    reap();
    for (auto& id : w.value("runs", std::vector<std::string>{})) {
      std::lock_guard lock(mu_);
      // A run this connector just finished can still be in an answer computed before it ended: not again soon (an
      // answer is at most a poll interval old; a run held back by the server is offered again later, and taken).
      auto now = std::chrono::steady_clock::now();
      std::erase_if(done_, [&](const auto& d) { return now - d.second > std::chrono::seconds(30); });
      bool recent = std::any_of(done_.begin(), done_.end(), [&](const auto& d) { return d.first == id; });
      if (workers_.count(id) || recent) continue;
      if (workers_.size() - finished_.size() >= config_.max_runs) continue;
      workers_[id] = std::thread([this, id] {
        do_run(id);
        std::lock_guard l(mu_);
        finished_.push_back(id);
      });
      acted = true;
    }
    return acted;
  }

  void reap() {
    std::vector<std::thread> done;
    {
      std::lock_guard lock(mu_);
      for (auto& id : finished_) {
        done.push_back(std::move(workers_[id]));
        workers_.erase(id);
        done_.emplace_back(id, std::chrono::steady_clock::now());
      }
      finished_.clear();
    }
    for (auto& t : done) t.join();
  }

  // One run's guard: whatever happens in it, the connector and its other runs go on.
  void do_run(const std::string& run_id) {
    try {
      execute(run_id);
    } catch (const client::ApiError& e) {
      // The server refused something about the run itself (deleted, failed, no longer ACTIVE, its store full): it
      // already knows why, so there is nothing to report back.
      spdlog::error("run {}: {}", run_id, e.what());
      if (e.type() != "OperationNotPermittedException" && e.type() != "InsufficientStorageException") report_failure(run_id, e.what());
    } catch (const std::exception& e) {
      // Stopping (SIGTERM) leaves the run ACTIVE, as a crash would: the next start resumes it after the disks
      // already committed, instead of failing a run nobody asked to fail.
      if (stop_) {
        spdlog::warn("run {} interrupted by the connector's shutdown ({}); it resumes when the connector starts again", run_id, e.what());
        return;
      }
      spdlog::error("run {} failed: {}", run_id, e.what());
      report_failure(run_id, e.what());
    } catch (...) {
      spdlog::error("run {} failed: an unknown exception", run_id);
      report_failure(run_id, "the connector failed with an unknown exception");
    }
  }

  void report_failure(const std::string& run_id, const std::string& message) {
    try {
      auto r = client_->send("POST", "/connector/v1/runs/" + run_id + "/fail", json{{"message", message}}.dump(), "application/json");
      client::throw_if_error(r);
    } catch (const std::exception& e) {
      spdlog::error("run {}: could not report the failure: {}", run_id, e.what());
    }
  }

  void execute(const std::string& run_id) {
    fault_point("connector-begin");
    auto r = client_->send("POST", "/connector/v1/runs/" + run_id + "/begin", "{}", "application/json");
    client::throw_if_error(r);
    json task = json::parse(r.body);
    json sc = task.at("storeConfig");
    store::RepositoryConfig config;
    config.id = sc.at("id");
    config.chunk_size = sc.at("chunkSize");
    config.pack_size = sc.at("packSize");
    config.zstd_level = sc.at("zstdLevel");
    std::map<std::string, std::string> parent_ids;
    for (auto& p : task.at("parents")) parent_ids[p.at("name")] = p.at("snapshotId");
    std::set<std::string> completed;
    for (auto& d : task.at("completed")) completed.insert(d.at("name").get<std::string>());
    json server = task.at("server");
    std::string server_id = server.at("serverId");

    // The parents of the disks still to do, as chunk tables: what the last image holds need not be asked about.
    std::vector<store::Snapshot> parents;
    for (auto& [disk, snapshot_id] : parent_ids) {
      if (completed.count(disk)) continue;
      auto pr = client_->send("GET", "/connector/v1/runs/" + run_id + "/parents/" + snapshot_id, "", "application/octet-stream");
      client::throw_if_error(pr);
      parents.push_back(store::decode_snapshot_plaintext(pr.body, snapshot_id));
    }
    auto backend = std::make_unique<UploadBackend>(*client_, run_id, config.pack_size);
    UploadBackend* uploads = backend.get();
    client::Client* http = client_.get();
    std::string id_key = from_hex(task.at("idKey").get<std::string>());
    auto repo = store::Repository::open_view(std::move(backend), config, id_key,
                                             [http, run_id](const std::vector<store::ChunkId>& ids) { return lookup_chunks(*http, run_id, ids); },
                                             std::move(parents));
    OPENSSL_cleanse(id_key.data(), id_key.size());  // the view keeps its own copy, wiped with it

    std::vector<json> todo;
    uint64_t total = 0, skipped = 0;
    for (auto& d : server.at("disks")) {
      total += d.value("size", uint64_t{0});
      if (completed.count(d.at("name").get<std::string>())) skipped += d.value("size", uint64_t{0});
      else todo.push_back(d);
    }
    spdlog::info("run {}: server {} ({}), {} disk(s) to replicate{}", run_id, server_id, server.value("vmServer", json::object()).value("vmName", ""),
                 todo.size(), completed.empty() ? "" : ", resuming after " + std::to_string(completed.size()));

    // Progress goes to the server once a second from its own thread.
    Progress progress("", total, false);
    progress.add(skipped);
    std::string stage = "Preparing";
    std::mutex stage_mu;
    std::atomic<bool> reporting{true}, cancelled{false};
    auto report = [&] {
      std::string s;
      {
        std::lock_guard lock(stage_mu);
        s = stage;
      }
      uint64_t done = progress.done();
      int percent = total ? static_cast<int>(done * 100 / total) : 0;
      json body = {{"stage", s}, {"percent", percent}, {"bytesTotal", total}, {"bytesDone", done}};
      fault_point("connector-progress");
      auto pr = client_->send("POST", "/connector/v1/runs/" + run_id + "/progress", body.dump(), "application/json");
      client::throw_if_error(pr);
      if (!json::parse(pr.body).value("continue", true)) cancelled = true;
    };
    std::thread reporter([&] {
      while (reporting) {
        for (int i = 0; i < 20 && reporting; i++) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          if (stop_) cancelled = true;
        }
        try {
          report();
        } catch (const std::exception& e) {
          spdlog::warn("run {}: progress report: {}", run_id, e.what());
        }
      }
    });
    struct StopReporter {
      std::atomic<bool>& flag;
      std::thread& t;
      ~StopReporter() {
        flag = false;
        if (t.joinable()) t.join();
      }
    } stop_reporter{reporting, reporter};

    size_t i = 0;
    for (auto& d : todo) {
      i++;
      if (cancelled) fail(ErrorKind::kConflict, "run " + run_id + " stopped before disk " + d.at("name").get<std::string>());
      std::string name = d.at("name"), path = d.at("path");
      {
        std::lock_guard lock(stage_mu);
        stage = "Replicating disk " + name + " (" + std::to_string(i) + " of " + std::to_string(todo.size()) + ")";
      }
      uploads->set_disk(name);
      // The path comes back from the server's catalog: it is checked again here, now, against what this connector's
      // managers may read (a compromised or confused server must not make it read anything else).
      try {
        inventory::check_disk(config_.managers, path, d.value("format", ""));
      } catch (const Error& e) {
        fail(e.kind(), "disk " + name + " ('" + path + "') is not one this connector may read: " + e.what());
      }
      try {
        // Read in the format the VM manager declared (libvirt's driver type, the OVF's, qemu-img's at discovery):
        // a guest's disk is never probed (a raw disk whose guest wrote a qcow2 header would be misread, and a
        // qcow2 on a block device would be read raw).
        disk::OpenOptions open;
        open.format = d.value("format", "");
        fault_point("connector-disk");
        auto source = disk::open_source(path, open);
        replicate::Options options;
        options.name = server_id + "/" + name;
        options.threads = config_.threads;
        options.progress = &progress;
        // Stops mid-disk when the connector shuts down or the server says the run is over (the reporter sets it).
        options.cancel = &cancelled;
        auto result = replicate::replicate(*source, *repo, options);
        spdlog::info("run {}: disk {} done: {} read, {} new, {} stored", run_id, name, human_bytes(result.snapshot.stats.bytes_read),
                     human_bytes(result.snapshot.stats.bytes_new), human_bytes(result.snapshot.stats.bytes_stored));
      } catch (const client::ApiError&) {
        throw;
      } catch (const std::exception& e) {
        fail(ErrorKind::kIo, "disk " + name + " ('" + path + "'): " + e.what());
      }
    }
    {
      std::lock_guard lock(stage_mu);
      stage = "Creating image";
    }
    reporting = false;
    if (reporter.joinable()) reporter.join();
    report();
    fault_point("connector-complete");
    auto cr = client_->send("POST", "/connector/v1/runs/" + run_id + "/complete", "{}", "application/json");
    client::throw_if_error(cr);
    spdlog::info("run {} completed: image {}", run_id, json::parse(cr.body).value("imageId", ""));
  }

  const Config& config_;
  const std::atomic<bool>& stop_;
  Credentials creds_;
  std::unique_ptr<client::Client> client_, heartbeat_client_;
  int64_t reported_ = 0;
  bool disassociated_ = false;
  std::mutex mu_;
  std::map<std::string, std::thread> workers_;
  std::vector<std::string> finished_;
  std::deque<std::pair<std::string, std::chrono::steady_clock::time_point>> done_;  // runs it finished lately, and when
};

}  // namespace

Config load_config(const fs::path& file, Config base) {
  json j;
  try {
    j = json::parse(read_file(file));
  } catch (const json::exception& e) {
    fail(ErrorKind::kInvalidArgument, "connector config '" + file.string() + "' is not valid JSON: " + e.what());
  }
  auto where = [&](const std::string& f) { return "connector config '" + file.string() + "': " + f; };
  try {
    if (base.name.empty()) base.name = j.value("name", "");
    if (base.server.empty()) base.server = j.value("server", "");
    if (!j.contains("managers") || !j["managers"].is_array() || j["managers"].empty())
      fail(ErrorKind::kInvalidArgument, where("'managers' must list at least one VM manager"));
    for (auto& m : j["managers"]) {
      inventory::ManagerConfig mc;
      mc.type = m.at("type");
      mc.name = m.value("name", mc.type);
      mc.path = m.value("path", "");
      if (m.contains("devices")) mc.devices = m["devices"].get<std::vector<std::string>>();
      if (m.contains("allow")) mc.allow = m["allow"].get<std::vector<std::string>>();
      // Relative paths, of a manager's root, a local device or an "allow" entry, are relative to the configuration file.
      auto resolve = [&](std::string& p) {
        if (!p.empty() && fs::path(p).is_relative()) p = (fs::absolute(file).parent_path() / p).lexically_normal().string();
      };
      resolve(mc.path);
      for (auto& d : mc.devices) resolve(d);
      for (auto& a : mc.allow) {
        if (a.empty()) fail(ErrorKind::kInvalidArgument, where("manager '" + mc.name + "': an empty \"allow\" entry"));
        resolve(a);
      }
      inventory::make_plugin(mc);  // validates the type
      base.managers.push_back(mc);
    }
  } catch (const json::exception& e) {
    fail(ErrorKind::kInvalidArgument, where(e.what()));
  }
  return base;
}

void run(const Config& config, const std::atomic<bool>& stop) {
  Agent agent(config, stop);
  agent.run();
}

}  // namespace ferry::connector
