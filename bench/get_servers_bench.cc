// get_servers_bench — how long one GetServers page takes with a large server catalog (issue target: median under
// 20 ms with 10,000 servers). Run by bench/service.sh, or on its own:
//
//   get_servers_bench --ferry build-bench/ferry [--servers 10000] [--rounds 5] [--work DIR] [--json FILE]
//
// It makes a server data directory with `ferry server init --json`, fills the catalog with --servers servers
// through catalog::Catalog (one connector, one replace_inventory, as an inventory report would), starts the real
// `ferry server` on a free loopback port, and walks every page of GetServers with client::Client (SigV4-signed,
// one kept-alive connection, as `ferry servers list` does) for maxResults 50, 100 and 1000, --rounds times each.
// Each page's latency is the wall time of the call: signing, HTTP, authentication, the SQL page, JSON both ways.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "catalog/catalog.h"
#include "client/client.h"
#include "common/fs.h"
#include "common/process.h"

extern char** environ;

namespace ferry::bench {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Args {
  std::string ferry;
  int servers = 10000;
  int rounds = 5;
  std::filesystem::path work;
  std::string json_file;
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "get_servers_bench: " << why << "\n"
            << "usage: get_servers_bench --ferry PATH [--servers N] [--rounds N] [--work DIR] [--json FILE]\n";
  std::exit(2);
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i++) {
    std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(k + " needs a value");
      return argv[++i];
    };
    if (k == "--ferry") a.ferry = value();
    else if (k == "--servers") a.servers = std::stoi(value());
    else if (k == "--rounds") a.rounds = std::stoi(value());
    else if (k == "--work") a.work = value();
    else if (k == "--json") a.json_file = value();
    else usage("unknown argument '" + k + "'");
  }
  if (a.ferry.empty()) usage("--ferry is required");
  if (a.servers < 1 || a.rounds < 1) usage("--servers and --rounds must be positive");
  if (a.work.empty()) a.work = std::filesystem::temp_directory_path() / ("get-servers-bench." + std::to_string(::getpid()));
  return a;
}

// `ferry server` as a child process; SIGTERM (then SIGKILL) when this goes out of scope, also on an exception.
class ServerProcess {
 public:
  ServerProcess(const std::string& ferry, const std::filesystem::path& data, const std::filesystem::path& address_file,
                const std::filesystem::path& log) {
    std::vector<std::string> args = {ferry, "server", "--data", data.string(), "--listen", "127.0.0.1:0", "--address-file",
                                     address_file.string()};
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    int rc = posix_spawn(&pid_, ferry.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("cannot start " + ferry + ": " + std::strerror(rc));
  }
  ~ServerProcess() {
    if (pid_ <= 0 || exited_) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 200; i++) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  bool running() {
    if (!exited_ && ::waitpid(pid_, nullptr, WNOHANG) == pid_) exited_ = true;
    return !exited_;
  }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
};

// A plausible discovered VM: a vSphere-like name, path, guest and one or two disks.
catalog::Server make_server(int i) {
  char uuid[40];
  std::snprintf(uuid, sizeof uuid, "420b%04x-5f1c-4e2a-9d3b-%012x", i & 0xffff, i * 2654435761u);
  catalog::Server s;
  s.vm_manager_id = "vmware:dc1";
  s.vm_manager_type = "VSPHERE";
  s.vm_manager_name = "dc1";
  s.vm_id = uuid;
  s.vm_name = "app-" + std::to_string(i);
  s.vm_path = "/srv/vmfs/volumes/datastore" + std::to_string(i % 8) + "/" + s.vm_name + "/" + s.vm_name + ".vmx";
  s.guest_os = i % 3 ? "ubuntu64Guest" : "windows2019srv_64Guest";
  s.cpus = 2 << (i % 3);
  s.memory_mib = 4096u << (i % 3);
  std::string dir = "/srv/vmfs/volumes/datastore" + std::to_string(i % 8) + "/" + s.vm_name + "/";
  s.disks.push_back({"scsi0:0", dir + s.vm_name + ".vmdk", "vmdk", uint64_t{40} << 30});
  if (i % 2) s.disks.push_back({"scsi0:1", dir + s.vm_name + "_1.vmdk", "vmdk", uint64_t{200} << 30});
  return s;
}

double percentile(std::vector<double> xs, double p) {
  std::sort(xs.begin(), xs.end());
  if (xs.empty()) return 0;
  double rank = p / 100.0 * static_cast<double>(xs.size() - 1);
  size_t lo = static_cast<size_t>(rank);
  size_t hi = std::min(lo + 1, xs.size() - 1);
  return xs[lo] + (xs[hi] - xs[lo]) * (rank - static_cast<double>(lo));
}

int run(const Args& a) {
  namespace fs = std::filesystem;
  fs::remove_all(a.work);
  fs::create_directories(a.work);
  fs::path data = a.work / "data";

  auto init = run_process({a.ferry, "server", "init", "--data", data.string(), "--json"});
  if (init.exit_code != 0) throw std::runtime_error("ferry server init failed: " + init.err + init.out);
  json creds = json::parse(init.out);

  auto t0 = Clock::now();
  {
    auto cat = catalog::open_sqlite_catalog(data / "ferry.db");
    catalog::Connector c;
    c.id = catalog::Catalog::new_id("c-");
    c.name = "bench";
    c.version = "bench";
    c.capabilities = {"VSPHERE"};
    c.vm_manager_type = "VSPHERE";
    c.vm_manager_name = "dc1";
    c.vm_manager_id = "dc1";
    c.associated_on = c.last_heartbeat = std::time(nullptr);
    cat->put_connector(c);
    std::vector<catalog::Server> servers;
    servers.reserve(a.servers);
    for (int i = 0; i < a.servers; i++) servers.push_back(make_server(i));
    cat->replace_inventory(c.id, 1, std::move(servers), std::time(nullptr));
    cat->set_catalog_status(catalog::CatalogStatus::kAvailable, std::time(nullptr));
    if (cat->server_count() != static_cast<size_t>(a.servers))
      throw std::runtime_error("catalog holds " + std::to_string(cat->server_count()) + " servers, expected " + std::to_string(a.servers));
  }
  double fill_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::cerr << "catalog filled with " << a.servers << " servers in " << fill_s << " s\n";

  fs::path address_file = a.work / "address";
  ServerProcess server(a.ferry, data, address_file, a.work / "server.log");
  for (int i = 0; !fs::exists(address_file); i++) {
    if (i > 600 || !server.running()) throw std::runtime_error("ferry server did not start; see " + (a.work / "server.log").string());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string endpoint = read_file(address_file);
  while (!endpoint.empty() && (endpoint.back() == '\n' || endpoint.back() == '\r')) endpoint.pop_back();

  client::Profile profile;
  profile.endpoint = endpoint;
  profile.credentials = {creds.at("accessKeyId"), creds.at("secretAccessKey")};
  client::Client client(profile);

  // One untimed walk warms the connection, SQLite's page cache and the server's statement cache.
  auto walk = [&](int max_results, std::vector<double>* latencies_ms, size_t* bytes) {
    json in = {{"maxResults", max_results}};
    size_t seen = 0;
    for (;;) {
      auto start = Clock::now();
      json page = client.sms("GetServers", in);
      double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      if (latencies_ms) latencies_ms->push_back(ms);
      if (bytes && seen == 0) *bytes = page.dump().size();
      seen += page.at("serverList").size();
      if (!page.contains("nextToken")) break;
      in["nextToken"] = page["nextToken"];
    }
    if (seen != static_cast<size_t>(a.servers))
      throw std::runtime_error("paging saw " + std::to_string(seen) + " servers, expected " + std::to_string(a.servers));
  };
  walk(50, nullptr, nullptr);

  json results = json::array();
  std::printf("| maxResults | pages per walk | walks | page bytes | median ms | p90 ms | p99 ms | max ms | walk ms (median) |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int max_results : {50, 100, 1000}) {
    std::vector<double> pages, walks;
    size_t bytes = 0;
    for (int r = 0; r < a.rounds; r++) {
      size_t before = pages.size();
      walk(max_results, &pages, &bytes);
      double sum = 0;
      for (size_t i = before; i < pages.size(); i++) sum += pages[i];
      walks.push_back(sum);
    }
    size_t per_walk = pages.size() / a.rounds;
    double med = percentile(pages, 50), p90 = percentile(pages, 90), p99 = percentile(pages, 99), mx = percentile(pages, 100);
    double walk_med = percentile(walks, 50);
    std::printf("| %d | %zu | %d | %zu | %.2f | %.2f | %.2f | %.2f | %.0f |\n", max_results, per_walk, a.rounds, bytes, med, p90, p99, mx,
                walk_med);
    std::fflush(stdout);
    results.push_back({{"maxResults", max_results}, {"pagesPerWalk", per_walk}, {"walks", a.rounds}, {"firstPageBytes", bytes},
                       {"medianMs", med}, {"p90Ms", p90}, {"p99Ms", p99}, {"maxMs", mx}, {"walkMedianMs", walk_med}});
  }
  if (!a.json_file.empty())
    write_file_atomic(a.json_file, json{{"servers", a.servers}, {"rounds", a.rounds}, {"fillSeconds", fill_s}, {"results", results}}.dump(2) + "\n");
  return 0;
}

}  // namespace
}  // namespace ferry::bench

int main(int argc, char** argv) {
  auto args = ferry::bench::parse_args(argc, argv);
  try {
    int rc = ferry::bench::run(args);
    std::filesystem::remove_all(args.work);
    return rc;
  } catch (const std::exception& e) {
    std::cerr << "get_servers_bench: " << e.what() << " (work directory kept: " << args.work.string() << ")\n";
    return 1;
  }
}
