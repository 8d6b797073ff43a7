// service::Service without HTTP: SMS semantics of jobs and runs, the scheduler driven with explicit times,
// failure counting and pausing, stalled and orphaned runs, retention. A real data directory and SQLite catalog.
#include "service/service.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "fixtures/fixtures.h"

namespace fx = ferry::testing;
using namespace ferry;
using service::OperationError;
using service::Service;

namespace {

catalog::Time now() { return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count(); }

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service::init_data_dir(data());
    service::Config c;
    c.data_dir = data();
    c.connector_timeout = std::chrono::seconds(30);
    c.run_stall_timeout = std::chrono::seconds(60);
    c.pending_timeout = std::chrono::seconds(600);
    c.max_consecutive_failures = 2;
    svc = std::make_unique<Service>(c);
    // A registered connector reporting one good and one broken VM.
    std::string token = svc->create_registration_token(std::chrono::hours(1));
    catalog::Connector info;
    info.name = "dc1";
    info.vm_manager_type = "VSPHERE";
    auto reg = svc->register_connector(token, info);
    connector = reg.connector_id;
    connector_key = reg.access_key_id;
    svc->heartbeat(connector, info, "127.0.0.1");
    catalog::Server good, bad;
    good.vm_id = "vm-1";
    good.vm_name = "web01";
    good.disks.push_back({"scsi0:0", "/nonexistent/web01.vmdk", "vmdk", 1 << 20});
    bad.vm_id = "vm-2";
    bad.vm_name = "broken";
    bad.error = "broken.vmx line 3: expected 'key = \"value\"'";
    svc->report_inventory(connector, 1, {good, bad});
    for (auto& s : svc->catalog().list_servers({}).items) (s.vm_id == "vm-1" ? good_server : bad_server) = s.id;
  }

  std::filesystem::path data() const { return tmp_.path() / "data"; }

  std::string job(int frequency = 12, int keep = 0, catalog::Time seed = 0) {
    Service::JobRequest r;
    r.server_id = good_server;
    r.seed_time = seed ? seed : now() + 3600;
    r.frequency = frequency;
    r.keep = keep;
    return svc->create_job(r);
  }

  std::string open_run(const std::string& job_id) {
    for (auto& r : svc->catalog().open_runs())
      if (r.job_id == job_id) return r.id;
    return "";
  }

  static std::string type_of(const std::function<void()>& fn) {
    try {
      fn();
    } catch (const OperationError& e) {
      return e.type();
    }
    return "no error";
  }

  fx::TempDir tmp_;
  std::unique_ptr<Service> svc;
  std::string connector, connector_key, good_server, bad_server;
};

TEST_F(ServiceTest, InitRefusesAnExistingDataDirectory) {
  EXPECT_THROW(service::init_data_dir(data()), Error);
}

TEST_F(ServiceTest, ASecondServerOnTheSameDataDirectoryIsRefused) {
  service::Config c;
  c.data_dir = data();
  EXPECT_THROW(Service second(c), Error);
}

TEST_F(ServiceTest, RegistrationTokenWorksOnce) {
  std::string token = svc->create_registration_token(std::chrono::hours(1));
  svc->register_connector(token, {});
  EXPECT_EQ(type_of([&] { svc->register_connector(token, {}); }), "UnauthorizedOperationException");
  EXPECT_EQ(type_of([&] { svc->register_connector("ferry-reg-made-up", {}); }), "UnauthorizedOperationException");
}

// No SMS operation takes a run id; the connector endpoints do, and an unknown one is named in the error.
TEST_F(ServiceTest, UnknownRunIdsAreInvalidParameterNamingTheId) {
  const std::string unknown = "sms-run-00000000000000000";
  for (auto& call : std::vector<std::function<void()>>{
           [&] { svc->begin_run(connector, unknown); },
           [&] { svc->run_progress(connector, unknown, {}); },
           [&] { svc->complete_run(connector, unknown); },
       }) {
    try {
      call();
      ADD_FAILURE() << "no error for an unknown run id";
    } catch (const OperationError& e) {
      EXPECT_EQ(e.type(), "InvalidParameterException");
      EXPECT_NE(std::string(e.what()).find(unknown), std::string::npos) << e.what();
    }
  }
}

TEST_F(ServiceTest, JobErrorsAreTheSmsTypes) {
  Service::JobRequest r;
  r.server_id = good_server;
  EXPECT_EQ(type_of([&] { svc->create_job(r); }), "MissingRequiredParameterException");  // no seed time
  r.seed_time = now();
  EXPECT_EQ(type_of([&] { svc->create_job(r); }), "MissingRequiredParameterException");  // no frequency, not runOnce
  r.frequency = 0;
  EXPECT_EQ(type_of([&] { svc->create_job(r); }), "InvalidParameterException");
  r.frequency = 12;
  r.license_type = "GPL";
  EXPECT_EQ(type_of([&] { svc->create_job(r); }), "InvalidParameterException");
  r.license_type = "BYOL";
  r.encrypted = true;
  r.kms_key_id = "no-such-key";
  EXPECT_EQ(type_of([&] { svc->create_job(r); }), "InvalidParameterException");
  r.kms_key_id.reset();
  Service::JobRequest bad = r;
  bad.server_id = bad_server;
  EXPECT_EQ(type_of([&] { svc->create_job(bad); }), "ServerCannotBeReplicatedException");
  bad.server_id = "s-00000000000000000";
  EXPECT_EQ(type_of([&] { svc->create_job(bad); }), "InvalidParameterException");
  svc->create_job(r);
  EXPECT_EQ(type_of([&] { svc->create_job(r); }), "ReplicationJobAlreadyExistsException");
  EXPECT_EQ(type_of([&] { svc->get_job("sms-job-00000000000000000"); }), "ReplicationJobNotFoundException");
  EXPECT_EQ(type_of([&] { svc->delete_job("sms-job-00000000000000000"); }), "ReplicationJobNotFoundException");
  EXPECT_EQ(type_of([&] { svc->start_on_demand_run("sms-job-00000000000000000", ""); }), "ReplicationJobNotFoundException");
}

TEST_F(ServiceTest, OneRunAtATimePerJob) {
  std::string j = job();
  svc->start_on_demand_run(j, "first");
  EXPECT_EQ(type_of([&] { svc->start_on_demand_run(j, "second"); }), "ReplicationRunLimitExceededException");
}

TEST_F(ServiceTest, SchedulerStartsRunsAtSeedTimeThenEveryFrequency) {
  catalog::Time seed = now() + 100;
  std::string j = job(6, 0, seed);
  svc->tick(seed - 1);
  EXPECT_EQ(open_run(j), "");
  svc->tick(seed);
  std::string run = open_run(j);
  ASSERT_NE(run, "");
  EXPECT_EQ(svc->catalog().get_run(run)->type, "AUTOMATIC");
  EXPECT_EQ(svc->get_job(j).next_run_time, seed + 6 * 3600);
  // A slot that comes while the previous run is open is skipped, and the next one is still on the grid.
  svc->tick(seed + 6 * 3600 + 10);
  EXPECT_EQ(svc->get_job(j).next_run_time, seed + 12 * 3600);
}

TEST_F(ServiceTest, RepeatedFailuresPauseTheJobAndOnDemandResumesIt) {
  std::string j = job();
  for (int i = 0; i < 2; i++) {
    std::string run = svc->start_on_demand_run(j, "");
    svc->begin_run(connector, run);
    svc->fail_run(connector, run, "disk scsi0:0: cannot open");
    EXPECT_EQ(svc->catalog().get_run(run)->state, "FAILED");
    EXPECT_EQ(svc->catalog().get_run(run)->status_message, "disk scsi0:0: cannot open");
  }
  auto paused = svc->get_job(j);
  EXPECT_EQ(paused.state, "PAUSED_ON_FAILURE");
  EXPECT_EQ(paused.next_run_time, 0);
  EXPECT_NE(paused.status_message.find("cannot open"), std::string::npos);
  svc->start_on_demand_run(j, "retry");
  EXPECT_EQ(svc->get_job(j).state, "ACTIVE");
}

TEST_F(ServiceTest, RunOfASilentConnectorFailsNamingIt) {
  std::string j = job();
  std::string run = svc->start_on_demand_run(j, "");
  svc->begin_run(connector, run);
  // 45 s on: the connector is past its 30 s timeout (UNHEALTHY), but the run's 60 s stall timeout has not passed.
  svc->tick(now() + 45);
  EXPECT_EQ(svc->catalog().get_run(run)->state, "ACTIVE");
  svc->tick(now() + 61);  // now both: the connector's heartbeat is older than its timeout, and no progress for 60 s
  auto r = svc->catalog().get_run(run);
  EXPECT_EQ(r->state, "FAILED");
  EXPECT_NE(r->status_message.find(connector), std::string::npos) << r->status_message;
}

TEST_F(ServiceTest, RunNobodyPicksUpFails) {
  std::string j = job();
  std::string run = svc->start_on_demand_run(j, "");
  svc->tick(now() + 601);
  auto r = svc->catalog().get_run(run);
  EXPECT_EQ(r->state, "FAILED");
  EXPECT_NE(r->status_message.find("no healthy connector"), std::string::npos) << r->status_message;
}

TEST_F(ServiceTest, DeletingAJobFailsItsOpenRunAndStopsTheConnector) {
  std::string j = job();
  std::string run = svc->start_on_demand_run(j, "");
  svc->begin_run(connector, run);
  svc->delete_job(j);
  EXPECT_EQ(svc->catalog().get_run(run)->state, "FAILED");
  EXPECT_FALSE(svc->run_progress(connector, run, {}));
}

TEST_F(ServiceTest, ARunNeedsEveryDiskBeforeItCompletes) {
  std::string j = job();
  std::string run = svc->start_on_demand_run(j, "");
  svc->begin_run(connector, run);
  EXPECT_EQ(type_of([&] { svc->complete_run(connector, run); }), "OperationNotPermittedException");
}

TEST_F(ServiceTest, AnotherConnectorCannotTouchTheRun) {
  std::string j = job();
  std::string run = svc->start_on_demand_run(j, "");
  std::string token = svc->create_registration_token(std::chrono::hours(1));
  std::string other = svc->register_connector(token, {}).connector_id;
  // Not even a run that has not begun yet (it would be the first to claim it).
  EXPECT_EQ(type_of([&] { svc->fail_run(other, run, "not mine"); }), "UnauthorizedOperationException");
  EXPECT_EQ(svc->catalog().get_run(run)->state, "PENDING");
  EXPECT_EQ(type_of([&] { svc->begin_run(other, run); }), "UnauthorizedOperationException");
  svc->begin_run(connector, run);
  std::string pack = "x";
  EXPECT_EQ(type_of([&] { svc->receive_pack(other, run, std::string(64, 'a'), pack.data(), pack.size()); }), "UnauthorizedOperationException");
  EXPECT_EQ(type_of([&] { svc->lookup_chunks(other, run, {store::ChunkId{}}); }), "UnauthorizedOperationException");
  EXPECT_EQ(type_of([&] { svc->parent_snapshot(other, run, std::string(32, 'a')); }), "UnauthorizedOperationException");
  EXPECT_EQ(type_of([&] { svc->run_progress(other, run, {}); }), "UnauthorizedOperationException");
  EXPECT_EQ(type_of([&] { svc->complete_run(other, run); }), "UnauthorizedOperationException");
  EXPECT_EQ(type_of([&] { svc->fail_run(other, run, "not mine"); }), "UnauthorizedOperationException");
  EXPECT_EQ(svc->catalog().get_run(run)->state, "ACTIVE");
}

TEST_F(ServiceTest, AConnectorReadsOnlyItsRunsParentsAndAsksAboutNoMoreChunksThanItsDisksHold) {
  std::string j = job();
  std::string run = svc->start_on_demand_run(j, "");
  auto task = svc->begin_run(connector, run);
  EXPECT_TRUE(task.parents.empty());
  EXPECT_EQ(task.id_key.size(), 32u);
  // No parent yet: any snapshot id is refused, whoever's it is.
  EXPECT_EQ(type_of([&] { svc->parent_snapshot(connector, run, std::string(32, 'a')); }), "UnauthorizedOperationException");
  // The lookup budget follows the run's disks (1 MiB here: 16 chunks, twice over, plus a fixed allowance).
  std::vector<store::ChunkId> ids(Service::kMaxLookupIds);
  size_t asked = 0;
  std::string last;
  for (int i = 0; i < 20 && last.empty(); i++) {
    last = type_of([&] { svc->lookup_chunks(connector, run, ids); });
    if (last == "no error") {
      asked += ids.size();
      last.clear();
    }
  }
  EXPECT_EQ(last, "OperationNotPermittedException");
  EXPECT_LE(asked, 65536u + 2 * 16u);
  std::vector<store::ChunkId> too_many(Service::kMaxLookupIds + 1);
  EXPECT_EQ(type_of([&] { svc->lookup_chunks(connector, run, too_many); }), "InvalidParameterException");
}

TEST_F(ServiceTest, DisassociatedConnectorLosesItsKeysAndIsToldSo) {
  ASSERT_TRUE(svc->access_key(connector_key));
  svc->disassociate_connector(connector);
  EXPECT_FALSE(svc->access_key(connector_key));
  catalog::Connector info;
  EXPECT_TRUE(svc->heartbeat(connector, info, "127.0.0.1").disassociated);
  EXPECT_EQ(type_of([&] { svc->disassociate_connector(connector); }), "InvalidParameterException");
}

// Long poll: a held heartbeat is answered as soon as there is something new for the connector. Each heartbeat may
// wait 10 s (the cap: a third of the 30 s connector timeout); had the wakeup failed, it would be answered at its
// deadline with the work computed before the change, which the checks below reject.
TEST_F(ServiceTest, AHeldHeartbeatIsAnsweredWithANewRunAsSoonAsItIsCreated) {
  std::string j = job();
  service::ConnectorHas has;
  has.inventory_reported = svc->catalog().get_connector(connector)->inventory_requested;
  has.wait = std::chrono::seconds(10);
  auto held = std::async(std::launch::async, [&] { return svc->heartbeat(connector, {}, "127.0.0.1", has); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let it reach its wait (if not, it sees the run at once)
  std::string run = svc->start_on_demand_run(j, "");
  auto w = held.get();
  EXPECT_EQ(w.runs, std::vector<std::string>{run});
}

TEST_F(ServiceTest, AHeldHeartbeatWakesForAnInventoryRequestAndForDisassociation) {
  service::ConnectorHas has;
  int64_t requested = svc->catalog().get_connector(connector)->inventory_requested;
  has.inventory_reported = requested;
  has.wait = std::chrono::seconds(10);
  auto held = std::async(std::launch::async, [&] { return svc->heartbeat(connector, {}, "127.0.0.1", has); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  svc->import_server_catalog();
  EXPECT_GT(held.get().inventory_requested, requested);

  has.inventory_reported = svc->catalog().get_connector(connector)->inventory_requested;
  held = std::async(std::launch::async, [&] { return svc->heartbeat(connector, {}, "127.0.0.1", has); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  svc->disassociate_connector(connector);
  EXPECT_TRUE(held.get().disassociated);
}

TEST_F(ServiceTest, AHeartbeatWithNothingNewIsHeldUntilItsWaitAndStopReleasesIt) {
  std::string j = job();
  std::string run = svc->start_on_demand_run(j, "");
  svc->begin_run(connector, run);
  service::ConnectorHas has;
  has.running = {run};  // the connector already runs the only open run: nothing new
  has.inventory_reported = svc->catalog().get_connector(connector)->inventory_requested;
  has.wait = std::chrono::milliseconds(300);
  auto w = svc->heartbeat(connector, {}, "127.0.0.1", has);
  EXPECT_EQ(w.runs, std::vector<std::string>{run});  // answered at the deadline, with the same work

  has.wait = std::chrono::seconds(10);
  auto t0 = std::chrono::steady_clock::now();
  auto held = std::async(std::launch::async, [&] { return svc->heartbeat(connector, {}, "127.0.0.1", has); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  svc->stop();
  held.get();
  // Released by stop(), not by its 10 s deadline (a functional bound, not a speed measurement).
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(8));
}

TEST_F(ServiceTest, ImportNeedsAHealthyConnector) {
  svc->import_server_catalog();
  EXPECT_EQ(svc->catalog().catalog_status(), catalog::CatalogStatus::kImporting);
  EXPECT_GE(svc->catalog().get_connector(connector)->inventory_requested, 1);
  svc->disassociate_connector(connector);
  EXPECT_EQ(type_of([&] { svc->import_server_catalog(); }), "NoConnectorsAvailableException");
}

}  // namespace
