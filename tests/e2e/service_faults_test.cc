// End-to-end fault tests of the ferry service: the connector or the server killed (SIGKILL) in the middle of a run
// and restarted, a connector gone for good, and a source disk that cannot be read run after run. What is checked
// is what a user sees afterwards: the run's outcome and message, the exported image, a clean store, and how much
// the store grew compared with one clean replication of the same disk.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "e2e/service.h"
#include "fixtures/fixtures.h"

namespace ferry {
namespace {

namespace fs = std::filesystem;
using e2e::Client;
using e2e::CliResult;
using e2e::ConnectorProcess;
using e2e::ServerOptions;
using e2e::ServerProcess;
using nlohmann::json;
using testing::kMiB;
using testing::TempDir;
using namespace std::chrono_literals;

constexpr uint64_t kPackSize = 16 * kMiB;  // the store's default pack size
constexpr int kConnectorThreads = 2;       // replication workers of the connectors below (--threads)
// Packs a killed attempt may have sealed (or been sending) without the server keeping them: a few per worker.
constexpr uint64_t kInFlightSlack = 3 * kConnectorThreads * kPackSize;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

fs::path local_config(const fs::path& dir, const fs::path& device) {
  fs::path file = dir / "connector.json";
  e2e::write_connector_config(file, "agent", json::array({{{"type", "local"}, {"name", "host"}, {"devices", json::array({device.string()})}}}));
  return file;
}

// One disk for every kill test, big enough that a run lasts a few seconds, and the store size of one clean
// replication of it (`ferry replicate` into a fresh store: the same chunking and packing as a run).
class ServiceFaults : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    shared_ = new TempDir();
    disk_ = shared_->path() / "big.raw";
    testing::make_raw_disk(disk_, 768 * kMiB, 7);
    testing::mutate_disk(disk_, 8, 320, kMiB);  // ~320 MiB of incompressible data
    fs::path store = shared_->path() / "baseline";
    CliResult r = e2e::ferry({"replicate", disk_.string(), "--store", store.string(), "--name", "baseline"});
    ASSERT_EQ(r.exit_code, 0) << e2e::describe(r);
    clean_size_ = e2e::disk_usage(store);
    fs::remove_all(store);
  }
  static void TearDownTestSuite() {
    delete shared_;
    shared_ = nullptr;
  }

  // A server with a connector serving the big disk, its catalog imported and a job for the disk's machine.
  void deploy(ServerOptions options = {}) {
    server_ = std::make_unique<ServerProcess>(dir_.path() / "server", options);
    server_->start();
    connector_ = std::make_unique<ConnectorProcess>(*server_, local_config(dir_.path(), disk_), dir_.path() / "connector",
                                                    std::vector<std::string>{"--threads", std::to_string(kConnectorThreads)});
    connector_id_ = connector_->register_and_wait();
    admin().import_servers();
    job_ = admin().create_job(admin().servers().at(0).at("serverId"));
  }

  const Client& admin() const { return server_->admin(); }

  // Starts a run and returns once it has done more than `fraction` of its bytes (and is still ACTIVE).
  std::string start_run_and_wait_for(double fraction) {
    std::string run = admin().start_run(job_);
    json r;
    bool reached = e2e::wait_for(
        [&] {
          r = admin().run_of(job_, run);
          double total = r.value("bytesTotal", 0.0), done = r.value("bytesDone", 0.0);
          return r["state"] != "PENDING" && r["state"] != "ACTIVE" ? true : total > 0 && done > fraction * total;
        },
        120s, 100ms);
    if (!reached || r["state"] != "ACTIVE")
      throw std::runtime_error("run " + run + " did not stay ACTIVE until " + std::to_string(fraction) + " of its bytes: " + r.dump(2));
    return run;
  }

  // The run ends COMPLETED, or FAILED with a message and then a new run completes. Returns the completed run.
  json completed_after(const std::string& run_id) {
    json run = admin().wait_run_ended(job_, run_id, 300s);
    if (run["state"] == "COMPLETED") return run;
    EXPECT_FALSE(run.value("statusMessage", "").empty()) << run.dump(2);
    json next = admin().wait_run_ended(job_, admin().start_run(job_), 300s);
    EXPECT_EQ(next["state"], "COMPLETED") << next.dump(2);
    return next;
  }

  // The image is the disk, the store checks clean, and it holds at most one replication plus the packs in flight.
  void expect_one_good_image(const json& run) {
    fs::path exported = dir_.path() / "exported.raw";
    admin().export_image(run.at("amiId"), "raw", exported);
    std::string message;
    EXPECT_TRUE(testing::images_identical(exported, "raw", disk_, "raw", &message)) << message;
    fs::remove(exported);
    CliResult check = e2e::store_check(*server_);
    EXPECT_EQ(check.exit_code, 0) << e2e::describe(check);
    uint64_t stored = e2e::disk_usage(server_->store_dir());
    EXPECT_LE(stored, clean_size_ + kInFlightSlack) << "a clean replication stores " << clean_size_ << " bytes";
    EXPECT_GE(stored, clean_size_ - clean_size_ / 10);
  }

  static TempDir* shared_;
  static fs::path disk_;
  static uint64_t clean_size_;

  TempDir dir_;
  // Declared after dir_ and the connector after the server: destroyed first.
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ConnectorProcess> connector_;
  std::string connector_id_, job_;
};

TempDir* ServiceFaults::shared_ = nullptr;
fs::path ServiceFaults::disk_;
uint64_t ServiceFaults::clean_size_ = 0;

TEST_F(ServiceFaults, TheDiskTakesLongerThanAProgressReport) {
  // The kill tests below depend on it: the disk holds many packs of data.
  EXPECT_GT(clean_size_, 20 * kPackSize);
}

TEST_F(ServiceFaults, ConnectorKilledMidRunResumesAndCompletes) {
  deploy();
  std::string run = start_run_and_wait_for(0.3);
  ASSERT_EQ(connector_->kill(), 128 + SIGKILL);
  uint64_t at_kill = e2e::disk_usage(server_->store_dir());
  connector_->start();  // no token: it is registered

  json done = completed_after(run);
  if (done["replicationRunId"] == run) {
    // The resumed attempt sent only what the server did not have yet.
    uint64_t resent = done.at("bytesUploaded");
    EXPECT_LE(resent + at_kill, clean_size_ + kInFlightSlack) << "stored before the kill: " << at_kill << ", resent: " << resent;
  }
  expect_one_good_image(done);
}

TEST_F(ServiceFaults, ServerKilledMidRunRestartsAndTheRunCompletes) {
  deploy();
  std::string run = start_run_and_wait_for(0.3);
  ASSERT_EQ(server_->kill(), 128 + SIGKILL);
  std::this_thread::sleep_for(1s);
  server_->restart();  // same port: the connector retries its uploads there

  json done = completed_after(run);
  EXPECT_EQ(done["replicationRunId"], run) << "the run itself survives a server restart";
  expect_one_good_image(done);
  EXPECT_TRUE(connector_->running());
}

TEST_F(ServiceFaults, ConnectorGoneForGoodFailsTheRunWithAClearMessage) {
  ServerOptions options;
  options.args = {"--run-stall-timeout", "3", "--connector-timeout", "2"};
  deploy(options);
  std::string run = start_run_and_wait_for(0.2);
  connector_->kill();

  json failed = admin().wait_run_ended(job_, run, 60s);
  EXPECT_EQ(failed["state"], "FAILED") << failed.dump(2);
  std::string message = failed.value("statusMessage", "");
  EXPECT_TRUE(contains(message, "connector " + connector_id_)) << message;
  EXPECT_TRUE(contains(message, "stopped responding")) << message;
  EXPECT_TRUE(contains(admin().job(job_).value("statusMessage", ""), "stopped responding")) << admin().job(job_).dump(2);

  connector_->start();
  connector_->wait_status("HEALTHY");
  json next = admin().wait_run_ended(job_, admin().start_run(job_), 300s);
  EXPECT_EQ(next["state"], "COMPLETED") << next.dump(2);
  expect_one_good_image(next);
}

// Needs none of the big disk: its own small one, moved away after the import.
TEST(ServiceFailures, RepeatedFailuresPauseTheJob) {
  TempDir dir;
  fs::path disk = dir.path() / "disk.raw", moved = dir.path() / "disk.raw.away";
  testing::make_raw_disk(disk, 4 * kMiB, 1);
  ServerOptions options;
  options.args = {"--max-failures", "2"};
  ServerProcess server(dir.path() / "server", options);
  server.start();
  const Client& admin = server.admin();
  ConnectorProcess connector(server, local_config(dir.path(), disk), dir.path() / "connector");
  connector.register_and_wait();
  admin.import_servers();
  std::string job = admin.create_job(admin.servers().at(0).at("serverId"));
  fs::rename(disk, moved);

  for (int attempt = 1; attempt <= 2; attempt++) {
    json run = admin.wait_run_ended(job, admin.start_run(job));
    EXPECT_EQ(run["state"], "FAILED") << run.dump(2);
    std::string message = run.value("statusMessage", "");
    EXPECT_TRUE(contains(message, "disk.raw")) << message;
    EXPECT_TRUE(contains(message, disk.string())) << message;
    json j = admin.job(job);
    EXPECT_EQ(j["state"], attempt == 2 ? "PAUSED_ON_FAILURE" : "ACTIVE") << j.dump(2);
  }
  EXPECT_TRUE(contains(admin.job(job).value("statusMessage", ""), "2 consecutive runs failed")) << admin.job(job).dump(2);

  fs::rename(moved, disk);
  json run = admin.wait_run_ended(job, admin.start_run(job));
  EXPECT_EQ(run["state"], "COMPLETED") << run.dump(2);
  json j = admin.job(job);
  EXPECT_EQ(j["state"], "ACTIVE") << j.dump(2);
  EXPECT_FALSE(j.contains("statusMessage") && !j["statusMessage"].get<std::string>().empty()) << j.dump(2);
  admin.export_image(run.at("amiId"), "raw", dir.path() / "exported.raw");
  EXPECT_TRUE(testing::images_identical(dir.path() / "exported.raw", "raw", disk, "raw"));
}

}  // namespace
}  // namespace ferry
