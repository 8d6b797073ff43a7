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
using e2e::contains;
using e2e::local_config;
using e2e::ServerOptions;
using e2e::ServerProcess;
using nlohmann::json;
using testing::kMiB;
using testing::TempDir;
using namespace std::chrono_literals;

constexpr uint64_t kPackSize = 16 * kMiB;  // the store's default pack size
constexpr int kConnectorThreads = 1;       // replication workers of the connectors below (--threads)
// Packs a killed attempt may have sealed (or been sending) without the server keeping them: a few per worker.
constexpr uint64_t kInFlightSlack = 3 * kConnectorThreads * kPackSize;

// One disk for every kill test, big enough that a run lasts a few seconds, and the store size of one clean
// replication of it (`ferry replicate` into a fresh store: the same chunking and packing as a run).
class ServiceE2EFaults : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    shared_ = new TempDir();
    disk_ = shared_->path() / "big.raw";
    testing::make_raw_disk(disk_, 512 * kMiB, 7);
    testing::mutate_disk(disk_, 8, 200, kMiB);  // ~200 MiB of incompressible data
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

  // A server with a connector serving the big disk (then `more_disks`), its catalog imported and a job for the
  // disks' machine.
  void deploy(ServerOptions options = {}, std::vector<fs::path> more_disks = {}) {
    server_ = std::make_unique<ServerProcess>(dir_.path() / "server", options);
    server_->start();
    more_disks.insert(more_disks.begin(), disk_);
    connector_ = std::make_unique<ConnectorProcess>(*server_, local_config(dir_.path(), more_disks), dir_.path() / "connector",
                                                    std::vector<std::string>{"--threads", std::to_string(kConnectorThreads)});
    connector_id_ = connector_->register_and_wait();
    admin().import_servers();
    job_ = admin().create_job(admin().servers().at(0).at("serverId"));
  }

  const Client& admin() const { return server_->admin(); }

  // Apparent size of the files in the server's store (no du process: polled often).
  uint64_t store_bytes() const {
    uint64_t n = 0;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(server_->store_dir(), ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
      if (it->is_regular_file(ec)) n += it->file_size(ec);
    return n;
  }

  // Starts a run and returns while it is ACTIVE and past `fraction` of its work: its bytesDone (runs list), or,
  // finer than the connector's once-a-second progress reports, the packs that have reached the server's store
  // compared with a clean replication. Throws if the run ends first (the disk would be too small to test a kill).
  std::string start_run_and_wait_for(double fraction) {
    std::string run = admin().start_run(job_);
    json r;
    int polls = 0;
    bool reached = e2e::wait_for(
        [&] {
          bool stored_enough = store_bytes() > fraction * static_cast<double>(clean_size_);
          if (!stored_enough && polls++ % 5 != 0) return false;
          r = admin().run_of(job_, run);
          if (r["state"] != "PENDING" && r["state"] != "ACTIVE") return true;
          double total = r.value("bytesTotal", 0.0), done = r.value("bytesDone", 0.0);
          return r["state"] == "ACTIVE" && (stored_enough || (total > 0 && done > fraction * total));
        },
        120s, 50ms);
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
    admin().export_image(run.at("amiId"), "raw", exported, disk_.filename().string());
    std::string message;
    EXPECT_TRUE(testing::images_identical(exported, "raw", disk_, "raw", &message)) << message;
    fs::remove(exported);
    CliResult check = e2e::store_check(*server_);
    EXPECT_EQ(check.exit_code, 0) << e2e::describe(check);
    uint64_t stored = e2e::disk_usage(server_->store_dir());
    EXPECT_LE(stored, clean_size_ + kInFlightSlack) << "a clean replication stores " << clean_size_ << " bytes";
    EXPECT_GE(stored, clean_size_ - clean_size_ / 10);
  }

  // The acceptance's "the next run completes": after the fault, a further run of the unchanged disk completes
  // and sends almost nothing (everything is on the server already).
  void expect_next_run_completes() {
    json next = admin().wait_run_ended(job_, admin().start_run(job_), 300s);
    ASSERT_EQ(next["state"], "COMPLETED") << next.dump(2);
    EXPECT_LT(next.at("bytesUploaded").get<uint64_t>(), clean_size_ / 10) << next.dump(2);
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

TempDir* ServiceE2EFaults::shared_ = nullptr;
fs::path ServiceE2EFaults::disk_;
uint64_t ServiceE2EFaults::clean_size_ = 0;

TEST_F(ServiceE2EFaults, ConnectorKilledMidRunResumesAndCompletes) {
  deploy();
  std::string run = start_run_and_wait_for(0.4);
  ASSERT_EQ(connector_->kill(), 128 + SIGKILL);
  uint64_t at_kill = e2e::disk_usage(server_->store_dir());
  json killed = admin().run_of(job_, run);
  ASSERT_EQ(killed["state"], "ACTIVE") << "the kill came too late to test anything: " << killed.dump(2);
  connector_->start();  // no token: it is registered

  json done = completed_after(run);
  // Whichever run completed (the resumed one, or a new one after a FAILED), it sent only what the server did not
  // have yet: its packs are deduplicated against those received before the kill. bytesUploaded is what the server
  // received for the run, kept across the connector's restart: what it exceeds the disk's stored size by was sent twice.
  uint64_t uploaded = done.at("bytesUploaded");
  if (done["replicationRunId"] == run) {
    EXPECT_GE(uploaded + kInFlightSlack, at_kill) << "bytesUploaded forgot what arrived before the kill: " << done.dump(2);
    EXPECT_LE(uploaded, clean_size_ + kInFlightSlack) << "stored before the kill: " << at_kill << ", received in all: " << uploaded;
  } else {
    EXPECT_LE(uploaded + at_kill, clean_size_ + kInFlightSlack) << "stored before the kill: " << at_kill << ", resent: " << uploaded;
  }
  expect_one_good_image(done);
  expect_next_run_completes();
}

TEST_F(ServiceE2EFaults, ServerKilledMidRunRestartsAndTheRunCompletes) {
  deploy();
  std::string run = start_run_and_wait_for(0.3);
  ASSERT_EQ(server_->kill(), 128 + SIGKILL);
  std::this_thread::sleep_for(1s);
  server_->restart();  // same port: the connector retries its uploads there

  json done = completed_after(run);
  EXPECT_EQ(done["replicationRunId"], run) << "the run itself survives a server restart";
  // One connector process did the whole run: what it sent counts the retried uploads too.
  EXPECT_LE(done.at("bytesUploaded").get<uint64_t>(), clean_size_ + kInFlightSlack);
  expect_one_good_image(done);
  EXPECT_TRUE(connector_->running());
  expect_next_run_completes();
}

TEST_F(ServiceE2EFaults, ConnectorStoppedMidRunLeavesTheRunToItsNextStart) {
  fs::path second = dir_.path() / "second.raw";
  testing::make_raw_disk(second, 8 * kMiB, 3);
  deploy({}, {second});
  std::string run = start_run_and_wait_for(0.2);
  // SIGTERM: the connector stops within a batch of reads and exits without failing the run.
  EXPECT_EQ(connector_->stop(), 0);
  json stopped = admin().run_of(job_, run);
  EXPECT_EQ(stopped["state"], "ACTIVE") << stopped.dump(2);

  connector_->start();
  json done = admin().wait_run_ended(job_, run, 300s);
  ASSERT_EQ(done["state"], "COMPLETED") << done.dump(2);
  std::string log = testing::read_file(server_->log_file());
  EXPECT_TRUE(contains(log, "run " + run + " resumed on connector " + connector_id_)) << log;
  // What the first attempt uploaded is not sent again (beyond packs in flight).
  EXPECT_LE(done.at("bytesUploaded").get<uint64_t>(), clean_size_ + kInFlightSlack);
  expect_one_good_image(done);
  admin().export_image(done.at("amiId"), "raw", dir_.path() / "second-exported.raw", "second.raw");
  EXPECT_TRUE(testing::images_identical(dir_.path() / "second-exported.raw", "raw", second, "raw"));
}

TEST_F(ServiceE2EFaults, ConnectorGoneForGoodFailsTheRunWithAClearMessage) {
  ServerOptions options;
  // Short, yet long enough that a loaded machine does not fail the run of a live connector.
  options.args = {"--run-stall-timeout", "4", "--connector-timeout", "3"};
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
TEST(ServiceE2E, RepeatedFailuresPauseTheJob) {
  TempDir dir;
  fs::path disk = dir.path() / "disk.raw", moved = dir.path() / "disk.raw.away";
  testing::make_raw_disk(disk, 4 * kMiB, 1);
  ServerOptions options;
  options.args = {"--max-failures", "2"};
  ServerProcess server(dir.path() / "server", options);
  server.start();
  const Client& admin = server.admin();
  ConnectorProcess connector(server, local_config(dir.path(), {disk}), dir.path() / "connector");
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
