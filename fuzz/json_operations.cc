// Fuzzes every operation of the JSON API (api::operations(): the SMS operations and ferry's own) on a real
// service::Service over a data directory made once (init_data_dir) on tmpfs when there is one. An input is
// "OperationName\n" and a body: the name picks the operation (AWSServerMigrationService_V2016_10_24.X or
// FerryService_V1.X; an unknown name picks one by its hash), the body is read as the server reads a request body.
// The string values "SERVER" and "JOB" in a body stand for a server the catalog holds and a job on it, so inputs reach
// past the lookups; both are put back before each input if an earlier one deleted them. Only refusals may escape:
// service::OperationError and ferry::Error, and nlohmann's parse errors (a malformed body); any other exception, a
// crash, a sanitizer report, or an answer that cannot be written as JSON is a bug.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "api/internal.h"
#include "common/error.h"
#include "service/service.h"

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// The service and what inputs refer to: a connector, the server it reported, a job on that server.
struct World {
  std::string dir;
  std::unique_ptr<ferry::service::Service> svc;
  std::string connector_id, server_id, job_id;

  World() {
    spdlog::set_level(spdlog::level::warn);  // the service logs every job it makes at info
    const char* base = fs::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";  // tmpfs: the catalog's fsyncs cost nothing
    dir = std::string(base) + "/ferry-fuzz-json-operations-XXXXXX";
    if (!::mkdtemp(dir.data())) std::abort();
    ferry::service::init_data_dir(fs::path(dir) / "data");
    ferry::service::Config config;
    config.data_dir = fs::path(dir) / "data";
    svc = std::make_unique<ferry::service::Service>(config);
  }
  ~World() {
    svc.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  // Puts back the connector, the server and the job if an input removed them (DisassociateConnector,
  // DeleteServerCatalog, DeleteReplicationJob).
  void restore() {
    auto connector = connector_id.empty() ? std::nullopt : svc->catalog().get_connector(connector_id);
    if (!connector || connector->disassociated) {
      ferry::catalog::Connector info;
      info.name = "fuzz";
      info.vm_manager_type = "VSPHERE";
      info.vm_manager_id = "vmware:esx1";
      connector_id = svc->register_connector(svc->create_registration_token(std::chrono::hours(1)), info).connector_id;
      server_id.clear();
    }
    if (server_id.empty() || !svc->catalog().get_server(server_id)) {
      ferry::catalog::Server s;
      s.vm_id = "564d0a1b-2c3d-4e5f-6071-8293a4b5c6d7";
      s.vm_name = "web01";
      s.vm_manager_id = "vmware:esx1";
      s.vm_manager_type = "VSPHERE";
      s.cpus = 2;
      s.disks.push_back({"scsi0:0", "/nonexistent/web01.vmdk", "vmdk", uint64_t{32} << 20});
      std::vector<ferry::catalog::Server> servers{s};
      svc->report_inventory(connector_id, 1, std::move(servers));
      server_id = svc->catalog().list_servers({}, {}).items.at(0).id;
      job_id.clear();
    }
    if (job_id.empty() || !svc->catalog().get_job(job_id) || svc->catalog().get_job(job_id)->server_id != server_id) {
      ferry::service::Service::JobRequest r;
      r.server_id = server_id;
      r.seed_time = 4102444800;  // 2100: the scheduler never runs here anyway
      r.frequency = 12;
      try {
        job_id = svc->create_job(r);
      } catch (const ferry::service::OperationError&) {  // the server has a job already (made by an input): use it
        job_id = svc->catalog().list_jobs({}).items.at(0).id;
      }
    }
  }
};

// Replaces the string values "SERVER" and "JOB", anywhere in `j`, with real ids.
void substitute(json& j, const World& w) {
  if (j.is_string()) {
    if (j == "SERVER") j = w.server_id;
    else if (j == "JOB") j = w.job_id;
  } else if (j.is_structured()) {
    for (auto& x : j) substitute(x, w);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World world;  // made once; destroyed (its directory removed) at exit
  const auto& ops = ferry::api::operations();
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t eol = in.find('\n');
  std::string name(in.substr(0, eol));
  std::string_view body = eol == std::string_view::npos ? std::string_view() : in.substr(eol + 1);
  auto op = ops.find("AWSServerMigrationService_V2016_10_24." + name);
  if (op == ops.end()) op = ops.find("FerryService_V1." + name);
  if (op == ops.end()) op = std::next(ops.begin(), static_cast<long>(std::hash<std::string>{}(name) % ops.size()));

  world.restore();
  try {
    json input = ferry::api::parse_request(body);
    substitute(input, world);
    json output = op->second(*world.svc, input);
    (void)output.dump();  // as the server writes it: throws on invalid UTF-8
  } catch (const ferry::Error&) {  // service::OperationError included
  } catch (const json::parse_error&) {
  }
  return 0;
}
