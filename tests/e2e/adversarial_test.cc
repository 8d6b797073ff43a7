// The standing adversarial suite (issue: hardening): real `ferry server` and `ferry connector` processes on loopback,
// each test one class of defect a hostile but authorised user found, driven the way that user would: the CLI, the
// client library with a connector's own key, planted files, a full file system, a job deleted mid-run, and a throw
// injected at every stage of a run. What is checked is what an operator sees: clear 4xx errors, runs that end FAILED
// with a reason, processes that stay up, images that stay bit-exact.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "e2e/service.h"
#include "fixtures/fixtures.h"

namespace ferry {
namespace {

namespace fs = std::filesystem;
using e2e::Client;
using e2e::CliResult;
using e2e::ConnectorProcess;
using e2e::contains;
using e2e::local_config;
using e2e::ServerOptions;
using e2e::ServerProcess;
using nlohmann::json;
using testing::kMiB;
using testing::TempDir;
using namespace std::chrono_literals;

// `bytes` of incompressible data (so its store size is its size), deterministic for a seed.
void write_random(const fs::path& path, uint64_t bytes, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  std::vector<uint64_t> block(1 << 16);
  for (uint64_t done = 0; done < bytes; done += block.size() * 8) {
    for (auto& w : block) w = rng();
    out.write(reinterpret_cast<const char*>(block.data()), static_cast<std::streamsize>(std::min<uint64_t>(block.size() * 8, bytes - done)));
  }
  if (!out.flush()) throw std::runtime_error("cannot write " + path.string());
}

// Sets an environment variable for the processes this test starts, and unsets it at the end of the scope.
struct ScopedEnv {
  ScopedEnv(const char* name, const std::string& value) : name_(name) { ::setenv(name, value.c_str(), 1); }
  ~ScopedEnv() { ::unsetenv(name_); }
  const char* name_;
};

// A connector.json in `dir` with one "local" manager per disk: one VM each.
fs::path one_vm_per_disk(const fs::path& dir, const std::vector<fs::path>& disks) {
  json managers = json::array();
  for (size_t i = 0; i < disks.size(); i++)
    managers.push_back({{"type", "local"}, {"name", "host" + std::to_string(i)}, {"devices", json::array({disks[i].string()})}});
  fs::path file = dir / "connector.json";
  e2e::write_connector_config(file, "agent", managers);
  return file;
}

// A server and a connector serving `disks` (one VM each, by "local" managers), with the catalog imported.
class Deployment {
 public:
  Deployment(const fs::path& dir, const std::vector<fs::path>& disks, ServerOptions options = {}, std::vector<std::string> connector_args = {},
             std::function<void(ServerProcess&)> before_start = {}) {
    server = std::make_unique<ServerProcess>(dir / "server", std::move(options));
    if (before_start) before_start(*server);
    server->start();
    connector = std::make_unique<ConnectorProcess>(*server, one_vm_per_disk(dir, disks), dir / "connector", std::move(connector_args));
    connector_id = connector->register_and_wait();
    admin().import_servers();
  }
  const Client& admin() const { return server->admin(); }
  // The server id of the VM whose disk is `disk`.
  std::string server_of(const fs::path& disk) const {
    for (auto& s : admin().servers())
      for (auto& d : s.value("disks", json::array()))
        if (d.value("path", "") == disk.string()) return s.at("serverId");
    throw std::runtime_error("no server for " + disk.string());
  }
  // Creates a job for `disk` and runs it once to completion; returns the job id and the image id.
  std::pair<std::string, std::string> replicate(const fs::path& disk, const std::vector<std::string>& job_args = {}) {
    std::string job = admin().create_job(server_of(disk), job_args);
    json done = admin().wait_run_ended(job, admin().start_run(job), 300s);
    if (done["state"] != "COMPLETED") throw std::runtime_error("run did not complete: " + done.dump(2));
    return {job, done.at("amiId")};
  }
  std::unique_ptr<ServerProcess> server;
  std::unique_ptr<ConnectorProcess> connector;
  std::string connector_id;
};

// The admin's credentials, for calls the CLI cannot make.
client::Profile admin_profile(const Deployment& d) {
  client::Profile p;
  p.endpoint = d.server->url();
  p.credentials = {d.admin().env().at("AWS_ACCESS_KEY_ID"), d.admin().env().at("AWS_SECRET_ACCESS_KEY")};
  return p;
}

// GET url, the body.
std::string http_get(const std::string& url) {
  std::string out;
  testing::run({"curl", "-s", "--max-time", "10", url}, &out);
  return out;
}

// --- Class 1: the connector reads only what its managers reach ---

TEST(Adversarial, AVmdkExtentOutsideTheDatastoreIsRefusedAndAPathFromTheServerIsCheckedAgain) {
  TempDir dir;
  fs::path datastore = dir.path() / "datastore", secret = dir.path() / "secret.bin";
  write_random(secret, kMiB, 12);  // a host file next to the datastore, which must never reach an image
  fs::path raw = dir.path() / "good.raw";
  write_random(raw, 2 * kMiB, 13);
  e2e::add_vmware_vm(datastore, "good", raw);
  // "evil": a descriptor VMDK whose extent climbs out of the datastore.
  fs::create_directories(datastore / "evil");
  std::ofstream(datastore / "evil" / "evil.vmx") << ".encoding = \"UTF-8\"\ndisplayName = \"evil\"\nguestOS = \"ubuntu-64\"\n"
                                                   "scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"evil.vmdk\"\n";
  std::ofstream(datastore / "evil" / "evil.vmdk") << "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
                                                    "createType=\"monolithicFlat\"\n\nRW 2048 FLAT \"../../secret.bin\" 0\n\n"
                                                    "ddb.adapterType = \"lsilogic\"\n";
  auto server = std::make_unique<ServerProcess>(dir.path() / "server");
  server->start();
  fs::path config = dir.path() / "connector.json";
  e2e::write_connector_config(config, "agent", json::array({{{"type", "vmware"}, {"name", "dc1"}, {"path", datastore.string()}}}));
  ConnectorProcess connector(*server, config, dir.path() / "connector");
  connector.register_and_wait();
  server->admin().import_servers();
  json evil = server->admin().server_named("evil"), good = server->admin().server_named("good");
  EXPECT_TRUE(contains(evil.value("error", ""), "resolves to " + fs::weakly_canonical(secret).string())) << evil.dump(2);
  EXPECT_TRUE(contains(evil.value("error", ""), "outside the root")) << evil.dump(2);
  EXPECT_FALSE(good.contains("error")) << good.dump(2);
  CliResult refused = server->admin().run({"jobs", "create", evil.at("serverId"), "--frequency", "12"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_TRUE(contains(refused.err, "ServerCannotBeReplicatedException")) << refused.err;

  // Time of use: a server whose catalog names another file (compromised, or a datastore changed since the import)
  // gets a failed run naming the reason, not the file.
  std::string job = server->admin().create_job(good.at("serverId"));
  ASSERT_EQ(server->stop(), 0);
  fs::path db = server->keyring_dir().parent_path() / "ferry.db";
  testing::run_checked({"python3", "-c",
                        "import sqlite3, sys, json\n"
                        "c = sqlite3.connect(sys.argv[1])\n"
                        "for sid, disks in c.execute('SELECT id, disks FROM servers').fetchall():\n"
                        "  d = json.loads(disks)\n"
                        "  for x in d: x['path'] = sys.argv[2]; x['format'] = 'raw'\n"
                        "  c.execute('UPDATE servers SET disks = ? WHERE id = ?', (json.dumps(d), sid))\n"
                        "c.commit()\n",
                        db.string(), secret.string()});
  server->restart();
  json run = server->admin().wait_run_ended(job, server->admin().start_run(job), 120s);
  EXPECT_EQ(run["state"], "FAILED") << run.dump(2);
  EXPECT_TRUE(contains(run.value("statusMessage", ""), "not one this connector may read")) << run.dump(2);
  EXPECT_TRUE(server->admin().images(job).empty());
}

// --- Class 2: exports stay inside the export directory and never replace a file ---

TEST(Adversarial, ExportsStayInsideTheExportDirectoryAndNeverReplace) {
  TempDir dir;
  fs::path disk = dir.path() / "small.raw";
  write_random(disk, 4 * kMiB, 1);
  Deployment d(dir.path(), {disk});
  auto [job, image] = d.replicate(disk);
  // The fixture's export directory is the test's directory: everything outside it must stay untouched.
  fs::path outside = fs::temp_directory_path() / ("ferry-escape-" + std::to_string(::getpid()));
  fs::create_directories(outside);
  fs::create_symlink(outside, dir.path() / "link-out");
  fs::create_directories(dir.path() / "exports");
  fs::create_symlink(outside / "target.raw", dir.path() / "exports" / "dangling.raw");
  std::ofstream(dir.path() / "exists.raw") << "keep me";
  struct Attempt {
    std::string output, why;
  };
  std::vector<Attempt> attempts = {
      {"../escape.raw", "'..'"},
      {"exports/../../escape.raw", "'..'"},
      {outside.string() + "/abs.raw", "outside the export directory"},
      {"link-out/through-link.raw", "symbolic link"},
      {"exports/dangling.raw", "already exists"},
      {"exists.raw", "already exists"},
      {std::string(300, 'n') + ".raw", "longer than"},
      {"/proc/self/escape.raw", "outside the export directory"},
      {dir.path().string(), "export directory itself"},
  };
  for (auto& a : attempts) {
    CliResult r = d.admin().run({"images", "export", image, "-f", "raw", "-o", a.output});
    EXPECT_EQ(r.exit_code, 1) << a.output << ": " << r.out << r.err;
    EXPECT_TRUE(contains(r.err, "InvalidParameterException")) << a.output << ": " << r.err;
    EXPECT_TRUE(contains(r.err, a.why)) << a.output << ": " << r.err;
  }
  // A NUL byte (only an API client can send one): a 4xx naming it, not a file named up to the NUL.
  client::Client api(admin_profile(d));
  try {
    api.ferry("ExportImage", {{"imageId", image}, {"format", "raw"}, {"outputPath", std::string("nul\0../../escape.raw", 20)}});
    ADD_FAILURE() << "an output path with a NUL byte was accepted";
  } catch (const client::ApiError& e) {
    EXPECT_EQ(e.type(), "InvalidParameterException") << e.what();
    EXPECT_TRUE(contains(e.what(), "NUL")) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir.path() / "nul"));
  EXPECT_TRUE(fs::is_empty(outside)) << "something was written outside the export directory";
  EXPECT_EQ(testing::run_checked({"cat", (dir.path() / "exists.raw").string()}), "keep me");
  // A place the server cannot write (a read-only file system, where even root cannot): a 4xx saying so.
  fs::path ro = dir.path() / "read-only";
  fs::create_directories(ro);
  if (::mount("tmpfs", ro.c_str(), "tmpfs", MS_RDONLY, "size=1m") == 0) {
    CliResult r = d.admin().run({"images", "export", image, "-f", "raw", "-o", "read-only/x.raw"});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_TRUE(contains(r.err, "InvalidParameterException") && contains(r.err, "cannot write")) << r.err;
    ::umount2(ro.c_str(), MNT_DETACH);
  } else {
    ADD_FAILURE() << "cannot mount a read-only tmpfs (CI runs as root): " << std::strerror(errno);
  }
  // A good name still works, relative to the export directory, and the file is the disk.
  CliResult ok = d.admin().run({"images", "export", image, "-f", "raw", "-o", "exports/good.raw", "--json"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.json().value("outputPath", ""), (dir.path() / "exports" / "good.raw").string());
  EXPECT_TRUE(testing::images_identical(dir.path() / "exports" / "good.raw", "raw", disk, "raw"));
  fs::remove_all(outside);
}

// --- Class 6: lifecycles that end under a run ---

TEST(Adversarial, DeletingAJobMidRunFailsItCleanlyAndTheConnectorStaysUp) {
  TempDir dir;
  fs::path big = dir.path() / "big.raw", other = dir.path() / "other.raw";
  write_random(big, 96 * kMiB, 2);
  write_random(other, 8 * kMiB, 3);
  // Each pack upload of the connector takes 300 ms more: the run is still ACTIVE when the job goes.
  ScopedEnv slow("FERRY_FAULT_DELAY", "connector-upload:300");
  Deployment d(dir.path(), {big, other});
  std::string job = d.admin().create_job(d.server_of(big));
  std::string run = d.admin().start_run(job);
  ASSERT_TRUE(e2e::wait_for([&] { return d.admin().run_of(job, run).value("bytesUploaded", uint64_t{0}) > 0; }, 60s));
  CliResult del = d.admin().run({"jobs", "delete", job});
  ASSERT_EQ(del.exit_code, 0) << del.err;
  // The run ends FAILED with the reason, at once (the SMS API no longer lists a deleted job's runs: the server's log
  // says it); the connector stops the run when the server refuses its next upload or progress, and stays up.
  std::string server_log = testing::run_checked({"cat", d.server->log_file().string()});
  EXPECT_TRUE(contains(server_log, "run " + run + " of job " + job + " failed: the replication job was deleted")) << server_log;
  ASSERT_TRUE(e2e::wait_for([&] { return contains(d.connector->log(), "run " + run); }, 30s));
  std::this_thread::sleep_for(2s);  // the connector's upload in flight meets the refusal
  EXPECT_TRUE(d.connector->running()) << d.connector->log();
  EXPECT_FALSE(contains(d.connector->log(), "terminate")) << d.connector->log();
  auto [job2, image2] = d.replicate(other);
  fs::path out = dir.path() / "other-export.raw";
  d.admin().export_image(image2, "raw", out);
  EXPECT_TRUE(testing::images_identical(out, "raw", other, "raw"));
  // A normal run leaves no error in the connector's log (it used to restart a run it had just completed).
  EXPECT_FALSE(contains(d.connector->log(), "is COMPLETED")) << d.connector->log();
}

TEST(Adversarial, DisassociatingTheConnectorFailsItsRunWithTheReason) {
  TempDir dir;
  fs::path big = dir.path() / "big.raw";
  write_random(big, 64 * kMiB, 4);
  ScopedEnv slow("FERRY_FAULT_DELAY", "connector-upload:300");
  Deployment d(dir.path(), {big});
  std::string job = d.admin().create_job(d.server_of(big));
  std::string run = d.admin().start_run(job);
  ASSERT_TRUE(e2e::wait_for([&] { return d.admin().run_of(job, run).value("state", "") == "ACTIVE"; }, 60s));
  // Deleting the server catalog under a live job is refused, naming why; the run goes on.
  CliResult del = d.admin().run({"servers", "delete-catalog"});
  EXPECT_EQ(del.exit_code, 1);
  EXPECT_TRUE(contains(del.err, "OperationNotPermittedException")) << del.err;
  EXPECT_EQ(d.admin().run_of(job, run)["state"], "ACTIVE");
  ASSERT_EQ(d.admin().run({"connectors", "disassociate", d.connector_id}).exit_code, 0);
  json r = d.admin().run_of(job, run);
  EXPECT_EQ(r["state"], "FAILED") << r.dump(2);
  EXPECT_TRUE(contains(r.value("statusMessage", ""), "disassociated")) << r.dump(2);
}

// A throw that is not a ferry::Error (a bug's shape) injected once at each stage of a run, in the connector or the
// server: no process ends, the run ends (COMPLETED after a retry, or FAILED with a message), and the next run completes.
class InjectedThrow : public ::testing::TestWithParam<const char*> {};

TEST_P(InjectedThrow, EndsNoProcessAndTheNextRunCompletes) {
  TempDir dir;
  fs::path disk = dir.path() / "disk.raw";
  write_random(disk, 40 * kMiB, 5);
  ScopedEnv fault("FERRY_FAULT_THROW", std::string(GetParam()) + ":1");
  Deployment d(dir.path(), {disk});
  std::string job = d.admin().create_job(d.server_of(disk));
  json first = d.admin().wait_run_ended(job, d.admin().start_run(job), 120s);
  if (first["state"] == "FAILED") {
    EXPECT_FALSE(first.value("statusMessage", "").empty()) << first.dump(2);
  }
  EXPECT_TRUE(d.server->running()) << "the server died";
  EXPECT_TRUE(d.connector->running()) << "the connector died: " << d.connector->log();
  json next = d.admin().wait_run_ended(job, d.admin().start_run(job), 120s);
  EXPECT_EQ(next["state"], "COMPLETED") << next.dump(2);
  fs::path out = dir.path() / "export.raw";
  d.admin().export_image(next.at("amiId"), "raw", out);
  EXPECT_TRUE(testing::images_identical(out, "raw", disk, "raw"));
}

INSTANTIATE_TEST_SUITE_P(EveryStage, InjectedThrow,
                         ::testing::Values("connector-heartbeat", "connector-inventory", "connector-begin", "connector-disk", "connector-upload",
                                           "connector-progress", "connector-snapshot", "connector-complete", "server-begin", "server-pack",
                                           "server-snapshot", "server-complete", "server-tick"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// --- Class 7: a full store fails the run at once, holds new runs, and prune through the server brings space back ---

TEST(Adversarial, AFullStoreFailsTheRunFastHoldsNewOnesAndPruneThroughTheServerFreesIt) {
  TempDir dir;
  fs::path a = dir.path() / "a.raw", b = dir.path() / "b.raw";
  write_random(a, 90 * kMiB, 6);
  write_random(b, 120 * kMiB, 7);
  fs::path stores;
  bool mounted = false;
  Deployment d(dir.path(), {a, b}, {}, {}, [&](ServerProcess& server) {
    stores = server.store_dir().parent_path();
    fs::create_directories(stores);
    mounted = ::mount("tmpfs", stores.c_str(), "tmpfs", 0, "size=200m") == 0;
  });
  struct Unmount {
    fs::path p;
    bool on;
    ~Unmount() {
      if (on) ::umount2(p.c_str(), MNT_DETACH);
    }
  } unmount{stores, mounted};
  if (!mounted) GTEST_SKIP() << "cannot mount a tmpfs here (needs root): " << std::strerror(errno);

  auto [job_a, image_a] = d.replicate(a);
  std::string job_b = d.admin().create_job(d.server_of(b));
  auto started = std::chrono::steady_clock::now();
  json failed = d.admin().wait_run_ended(job_b, d.admin().start_run(job_b), 120s);
  auto took = std::chrono::steady_clock::now() - started;
  ASSERT_EQ(failed["state"], "FAILED") << failed.dump(2);
  std::string why = failed.value("statusMessage", "");
  EXPECT_TRUE(contains(why, "store 'plain' is full")) << why;
  EXPECT_TRUE(contains(why, "free")) << why;
  EXPECT_LT(took, 60s) << "a full store must fail the run within seconds, not after retries";
  // The condition shows on the server's health and on the job.
  std::string health = http_get(d.server->url() + "/health");
  EXPECT_TRUE(contains(health, "degraded") && contains(health, "store 'plain' is full")) << health;
  EXPECT_TRUE(contains(d.admin().job(job_b).value("statusMessage", ""), "full")) << d.admin().job(job_b).dump(2);
  // A new run into the full store is held (PENDING), not started into the full disk.
  std::string held = d.admin().start_run(job_b);
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(d.admin().run_of(job_b, held)["state"], "PENDING");
  CliResult list = d.admin().run({"stores", "list"});
  EXPECT_TRUE(contains(list.out, "FULL")) << list.out;
  // Space comes back without a restart: delete A's image, prune through the server; the held run then completes.
  ASSERT_EQ(d.admin().run({"images", "delete", image_a}).exit_code, 0);
  CliResult prune = d.admin().run({"stores", "prune", "plain"});
  EXPECT_EQ(prune.exit_code, 0) << prune.out << prune.err;
  json done = d.admin().wait_run_ended(job_b, held, 180s);
  ASSERT_EQ(done["state"], "COMPLETED") << done.dump(2);
  fs::path out = dir.path() / "b-export.raw";
  d.admin().export_image(done.at("amiId"), "raw", out);
  EXPECT_TRUE(testing::images_identical(out, "raw", b, "raw"));
  CliResult check = d.admin().run({"stores", "check", "plain", "--read-data"});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_TRUE(d.server->running());
}

// --- Class 5: an oversized or corrupt object is reported by name, and the server still starts ---

TEST(Adversarial, OversizedAndCorruptStoreObjectsAreNamedAndTheServerStillServes) {
  TempDir dir;
  fs::path disk = dir.path() / "disk.raw";
  write_random(disk, 8 * kMiB, 8);
  Deployment d(dir.path(), {disk});
  auto [job, image] = d.replicate(disk);
  ASSERT_EQ(d.server->stop(), 0);
  // A 2.5 GiB index file (sparse) and a pack that is not a pack, as a careless export or a disk error could leave.
  std::string big_index(64, 'e'), bad_pack(64, 'f');
  fs::path index = d.server->store_dir() / "index" / big_index;
  { std::ofstream(index) << ""; }
  fs::resize_file(index, (uint64_t{5} << 29));
  fs::create_directories(d.server->store_dir() / "packs" / "ff");
  std::ofstream(d.server->store_dir() / "packs" / "ff" / bad_pack) << "not a pack";
  d.server->restart();
  std::string health = http_get(d.server->url() + "/health");
  EXPECT_TRUE(contains(health, "degraded")) << health;
  EXPECT_TRUE(contains(health, big_index)) << health;
  EXPECT_TRUE(contains(health, bad_pack)) << health;
  // The image still exports bit-exact, and the store check names both objects (no crash).
  fs::path out = dir.path() / "export.raw";
  d.admin().export_image(image, "raw", out);
  EXPECT_TRUE(testing::images_identical(out, "raw", disk, "raw"));
  CliResult check = d.admin().run({"stores", "check", "plain"});
  EXPECT_EQ(check.exit_code, 1);
  EXPECT_TRUE(contains(check.out, big_index) && contains(check.out, bad_pack)) << check.out;
  EXPECT_TRUE(d.server->running());
}

// --- Class 9: a store whose key file or config was replaced is refused by name; the others serve ---

TEST(Adversarial, AStoreWhoseKeyFileWasReplacedIsRefusedAndTheOthersServe) {
  TempDir dir;
  fs::path a = dir.path() / "a.raw", b = dir.path() / "b.raw";
  write_random(a, 4 * kMiB, 14);
  write_random(b, 4 * kMiB, 15);
  Deployment d(dir.path(), {a, b});
  auto [job_a, image_a] = d.replicate(a);                   // store "plain"
  auto [job_b, image_b] = d.replicate(b, {"--encrypted"});  // store "ferry-master"
  ASSERT_EQ(d.server->stop(), 0);
  // Behind the server's back: the plain store's key file is rewritten (here by a key rotation outside the server).
  CliResult rot = e2e::ferry({"store", "rotate-keys", "--store", d.server->store_dir("plain").string()});
  ASSERT_EQ(rot.exit_code, 0) << rot.err;
  d.server->restart();
  std::string health = http_get(d.server->url() + "/health");
  EXPECT_TRUE(contains(health, "degraded") && contains(health, "store 'plain'") && contains(health, "key file the server did not write")) << health;
  CliResult refused = d.admin().run({"images", "export", image_a, "-f", "raw", "-o", "a-export.raw"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_TRUE(contains(refused.err, "store 'plain'") && contains(refused.err, "key file")) << refused.out << refused.err;
  fs::path out = dir.path() / "b-export.raw";
  d.admin().export_image(image_b, "raw", out);
  EXPECT_TRUE(testing::images_identical(out, "raw", b, "raw"));
}

// --- Class 8: secrets are readable by their owner only ---

TEST(Adversarial, SecretFilesAreOwnerOnlyAndTheServerRefusesToStartOtherwise) {
  TempDir dir;
  fs::path disk = dir.path() / "disk.raw";
  write_random(disk, kMiB, 9);
  Deployment d(dir.path(), {disk});
  fs::path data = d.server->keyring_dir().parent_path();
  auto mode = [](const fs::path& p) { struct stat st{}; ::stat(p.c_str(), &st); return st.st_mode & 0777; };
  EXPECT_EQ(mode(data / "ferry.db"), 0600u);
  EXPECT_EQ(mode(d.server->keyring_dir()), 0700u);
  for (auto& e : fs::directory_iterator(d.server->keyring_dir())) EXPECT_EQ(mode(e.path()), 0600u) << e.path();
  EXPECT_EQ(mode(dir.path() / "connector" / "credentials.json"), 0600u);
  ASSERT_EQ(d.server->stop(), 0);
  ::chmod((data / "ferry.db").c_str(), 0644);
  EXPECT_THROW(d.server->restart(), std::runtime_error);
  EXPECT_TRUE(contains(testing::run_checked({"cat", d.server->log_file().string()}), "chmod 600")) << "the refusal says how to fix it";
}

// --- Class 10: a connector reaches only its own runs ---

TEST(Adversarial, AConnectorCannotTouchAnotherConnectorsRunOrSnapshots) {
  TempDir dir;
  fs::path a = dir.path() / "a.raw", b = dir.path() / "b.raw";
  write_random(a, 32 * kMiB, 16);
  write_random(b, kMiB, 17);
  ScopedEnv slow("FERRY_FAULT_DELAY", "connector-upload:300");
  auto server = std::make_unique<ServerProcess>(dir.path() / "server");
  server->start();
  fs::create_directories(dir.path() / "ca");
  fs::create_directories(dir.path() / "cb");
  ConnectorProcess ca(*server, one_vm_per_disk(dir.path() / "ca", {a}), dir.path() / "ca" / "state");
  ConnectorProcess cb(*server, one_vm_per_disk(dir.path() / "cb", {b}), dir.path() / "cb" / "state");
  ca.register_and_wait();
  cb.register_and_wait();
  server->admin().import_servers();
  std::string server_a;
  for (auto& s : server->admin().servers())
    if (s.value("connectorId", "") == ca.id()) server_a = s.at("serverId");
  std::string job = server->admin().create_job(server_a);
  json first = server->admin().wait_run_ended(job, server->admin().start_run(job), 120s);
  ASSERT_EQ(first["state"], "COMPLETED") << first.dump(2);
  std::string run = server->admin().start_run(job);
  ASSERT_TRUE(e2e::wait_for([&] { return server->admin().run_of(job, run).value("state", "") == "ACTIVE"; }, 60s));
  // Connector B, with its own valid key, against A's run.
  client::Profile p;
  p.endpoint = server->url();
  p.credentials = {cb.credentials().at("accessKeyId"), cb.credentials().at("secretAccessKey")};
  client::Client b_client(p, "ferry-connector");
  b_client.set_retry_for(0s);
  std::string snapshot = server->admin().images(job).at(0).at("disks").at(0).at("snapshotId");
  struct Call {
    std::string method, path, body;
  };
  std::vector<Call> calls = {
      {"POST", "/connector/v1/runs/" + run + "/begin", "{}"},
      {"GET", "/connector/v1/runs/" + run + "/parents/" + snapshot, ""},
      {"POST", "/connector/v1/runs/" + run + "/lookup", std::string(32, 'x')},
      {"POST", "/connector/v1/runs/" + run + "/progress", "{}"},
      {"POST", "/connector/v1/runs/" + run + "/fail", R"({"message":"not mine"})"},
      {"POST", "/connector/v1/runs/" + run + "/complete", "{}"},
  };
  for (auto& c : calls) {
    auto r = b_client.send(c.method, c.path, c.body, c.method == "GET" ? "application/octet-stream" : "application/json");
    EXPECT_EQ(r.status, 400) << c.path << ": " << r.body;
    EXPECT_TRUE(contains(r.body, "UnauthorizedOperationException")) << c.path << ": " << r.body;
  }
  // The retired routes of protocol version 1 (the store's chunk list and any snapshot) are gone.
  for (std::string path : {std::string("/connector/v1/stores/plain/chunks"), "/connector/v1/stores/plain/snapshots/" + snapshot})
    EXPECT_EQ(b_client.send("GET", path, "", "application/octet-stream").status, 404) << path;
  json done = server->admin().wait_run_ended(job, run, 120s);
  EXPECT_EQ(done["state"], "COMPLETED") << "the run was disturbed: " << done.dump(2);
}

// --- Class 10: key rotation, trust domains ---

TEST(Adversarial, RotatedKeysSealNewDataAndOldImagesStillReadBitExact) {
  TempDir dir;
  fs::path disk = dir.path() / "disk.raw";
  write_random(disk, 16 * kMiB, 10);
  Deployment d(dir.path(), {disk});
  auto [job, first] = d.replicate(disk, {"--encrypted"});
  CliResult rot = d.admin().run({"stores", "rotate-keys", "ferry-master", "--json"});
  ASSERT_EQ(rot.exit_code, 0) << rot.err;
  EXPECT_EQ(rot.json().value("dataKeys", 0), 2);
  testing::mutate_disk(disk, 3, 8, kMiB);
  json second = d.admin().wait_run_ended(job, d.admin().start_run(job), 120s);
  ASSERT_EQ(second["state"], "COMPLETED") << second.dump(2);
  fs::path out = dir.path() / "second.raw";
  d.admin().export_image(second.at("amiId"), "raw", out);
  EXPECT_TRUE(testing::images_identical(out, "raw", disk, "raw"));
  CliResult check = d.admin().run({"stores", "check", "ferry-master", "--read-data"});
  EXPECT_EQ(check.exit_code, 0) << check.out;
}

TEST(Adversarial, AConnectorOfAnotherTrustDomainReplicatesIntoItsOwnStores) {
  TempDir dir;
  fs::path disk = dir.path() / "disk.raw";
  write_random(disk, 4 * kMiB, 11);
  auto server = std::make_unique<ServerProcess>(dir.path() / "server");
  server->start();
  std::string token = server->admin().json({"connectors", "token", "--trust-domain", "site-a"}).at("registrationToken");
  ConnectorProcess connector(*server, local_config(dir.path(), {disk}), dir.path() / "connector");
  connector.start(token);
  ASSERT_TRUE(e2e::wait_for([&] { return fs::exists(dir.path() / "connector" / "credentials.json"); }, 30s)) << connector.log();
  connector.wait_status("HEALTHY");
  server->admin().import_servers();
  std::string job = server->admin().create_job(server->admin().servers().at(0).at("serverId"));
  json done = server->admin().wait_run_ended(job, server->admin().start_run(job), 120s);
  ASSERT_EQ(done["state"], "COMPLETED") << done.dump(2);
  json images = server->admin().images(job);
  ASSERT_EQ(images.size(), 1u);
  EXPECT_EQ(images[0]["store"], "site-a.plain");
  EXPECT_TRUE(fs::exists(server->store_dir("site-a.plain") / "config"));
  EXPECT_FALSE(fs::exists(server->store_dir("plain") / "config"));
}

}  // namespace
}  // namespace ferry
