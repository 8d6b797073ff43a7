// Client verbs: connectors, servers, jobs, runs and images, over the SMS API (and ferry's own operations), signed
// with SigV4. Tables for people, --json for scripts.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <iostream>
#include <set>
#include <thread>

#include "cli/commands.h"
#include "cli/output.h"
#include "client/client.h"
#include "common/hex.h"

namespace ferry::cli {

using nlohmann::json;

namespace {

// Flags override nothing until given: the region too (Profile's default is for resolved profiles).
client::Profile no_overrides() {
  client::Profile p;
  p.region.clear();
  return p;
}

struct ClientArgs {
  std::string profile;
  client::Profile overrides = no_overrides();
  bool json = false;
};

client::Client connect(const ClientArgs& a) { return client::Client(client::resolve_profile(a.profile, a.overrides)); }

std::string str(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return "";
  if (j[key].is_string()) return j[key].get<std::string>();
  return j[key].dump();
}

std::string when(const json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number()) return "-";
  return format_time(static_cast<int64_t>(j[key].get<double>()));
}

// Follows nextToken until the last page, gathering `list_key`.
json all_pages(client::Client& c, const std::string& op, json input, const char* list_key, json* last = nullptr) {
  json all = json::array();
  for (;;) {
    json page = c.sms(op, input);
    for (auto& x : page[list_key]) all.push_back(x);
    if (last) *last = page;
    if (!page.contains("nextToken")) break;
    input["nextToken"] = page["nextToken"];
  }
  return all;
}

// Accepts "now", epoch seconds, or an ISO-8601 UTC time (2026-11-26T10:00:00Z).
double parse_time(const std::string& s) {
  if (s.empty() || s == "now")
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  if (s.find_first_not_of("0123456789.") == std::string::npos) return std::stod(s);
  struct tm tm = {};
  const char* end = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!end || (*end && std::string(end) != "Z"))
    fail(ErrorKind::kInvalidArgument, "time '" + s + "' is not 'now', epoch seconds or YYYY-MM-DDTHH:MM:SSZ");
  return static_cast<double>(timegm(&tm));
}

// --- connectors ---

int connectors_list(const ClientArgs& a) {
  auto c = connect(a);
  json list = all_pages(c, "GetConnectors", json::object(), "connectorList");
  if (a.json) return print_json(list), 0;
  std::vector<std::vector<std::string>> rows;
  for (auto& x : list)
    rows.push_back({str(x, "connectorId"), str(x, "status"), str(x, "vmManagerType"), str(x, "vmManagerName"), str(x, "ipAddress"), str(x, "version"),
                    when(x, "associatedOn")});
  print_table({"CONNECTOR", "STATUS", "MANAGER TYPE", "MANAGERS", "IP", "VERSION", "ASSOCIATED"}, rows);
  return 0;
}

int connectors_token(const ClientArgs& a, int hours, const std::string& domain) {
  auto c = connect(a);
  json in = {{"validHours", hours}};
  if (!domain.empty()) in["trustDomain"] = domain;
  json r = c.ferry("CreateRegistrationToken", in);
  if (a.json) return print_json(r), 0;
  std::cout << r["registrationToken"].get<std::string>() << "\n";
  std::cerr << "One-time registration token, valid until " << when(r, "expiresOn") << ". Start a connector with:\n  ferry connector --server "
            << c.profile().endpoint << " --token <token> --config connector.json --state /var/lib/ferry-connector\n";
  return 0;
}

int connectors_disassociate(const ClientArgs& a, const std::string& id) {
  auto c = connect(a);
  c.sms("DisassociateConnector", {{"connectorId", id}});
  if (!a.json) std::cout << "Connector " << id << " disassociated.\n";
  return 0;
}

// --- servers ---

int servers_import(const ClientArgs& a, bool wait) {
  auto c = connect(a);
  c.sms("ImportServerCatalog");
  std::string status = "IMPORTING";
  json page;
  for (int i = 0; wait && i < 600; i++) {
    page = c.sms("GetServers", {{"maxResults", 1}});
    status = str(page, "serverCatalogStatus");
    if (status != "IMPORTING") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  if (a.json) return print_json({{"serverCatalogStatus", status}}), 0;
  std::cout << "Server catalog " << (wait ? status : std::string("import requested")) << "\n";
  return wait && status != "AVAILABLE" ? 1 : 0;
}

int servers_list(const ClientArgs& a) {
  auto c = connect(a);
  json last;
  json list = all_pages(c, "GetServers", {{"maxResults", 1000}}, "serverList", &last);
  if (a.json) return print_json({{"serverCatalogStatus", last.value("serverCatalogStatus", "")}, {"serverList", list}}), 0;
  std::vector<std::vector<std::string>> rows;
  for (auto& s : list) {
    auto& vm = s["vmServer"];
    std::string disks = std::to_string(s.value("disks", json::array()).size());
    uint64_t size = 0;
    for (auto& d : s.value("disks", json::array())) size += d.value("size", uint64_t{0});
    rows.push_back({str(s, "serverId"), str(vm, "vmName"), str(vm, "vmManagerType"), str(vm, "vmManagerName"), disks + " (" + human_bytes(size) + ")",
                    s.contains("replicationJobId") ? str(s, "replicationJobId") : "-", s.contains("error") ? "NOT REPLICABLE: " + str(s, "error") : "ok"});
  }
  print_table({"SERVER", "VM", "MANAGER", "MANAGER NAME", "DISKS", "JOB", "STATUS"}, rows);
  std::cout << list.size() << " server(s); catalog " << last.value("serverCatalogStatus", "") << "\n";
  return 0;
}

int servers_delete_catalog(const ClientArgs& a) {
  auto c = connect(a);
  c.sms("DeleteServerCatalog");
  if (!a.json) std::cout << "Server catalog deleted.\n";
  return 0;
}

// --- jobs ---

struct JobArgs {
  std::string id, server, seed, license, role, description, kms_key;  // seed empty: not given (create: now)
  int frequency = -1, keep = -1;
  bool run_once = false, encrypted = false, no_encrypt = false;
};

json job_input(const JobArgs& j, bool create) {
  json in = json::object();
  if (create) {
    in["serverId"] = j.server;
    in["seedReplicationTime"] = parse_time(j.seed);
  } else if (!j.seed.empty()) {
    in["nextReplicationRunStartTime"] = parse_time(j.seed);
  }
  if (j.frequency >= 0) in["frequency"] = j.frequency;
  if (j.run_once) in["runOnce"] = true;
  if (j.keep >= 0) in["numberOfRecentAmisToKeep"] = j.keep;
  if (j.encrypted) in["encrypted"] = true;
  if (j.no_encrypt) in["encrypted"] = false;
  if (!j.kms_key.empty()) in["kmsKeyId"] = j.kms_key;
  if (!j.license.empty()) in["licenseType"] = j.license;
  if (!j.role.empty()) in["roleName"] = j.role;
  if (!j.description.empty()) in["description"] = j.description;
  return in;
}

int jobs_create(const ClientArgs& a, const JobArgs& j) {
  auto c = connect(a);
  json r = c.sms("CreateReplicationJob", job_input(j, true));
  if (a.json) return print_json(r), 0;
  std::cout << r["replicationJobId"].get<std::string>() << "\n";
  return 0;
}

void print_jobs(const json& list) {
  std::vector<std::vector<std::string>> rows;
  for (auto& j : list) {
    std::string last = "-";
    if (j.contains("replicationRunList") && !j["replicationRunList"].empty()) {
      auto& r = j["replicationRunList"][0];
      last = str(r, "state") + " " + str(r["stageDetails"], "stageProgress");
    }
    rows.push_back({str(j, "replicationJobId"), str(j, "serverId"), str(j.value("vmServer", json::object()), "vmName"), str(j, "state"),
                    j.value("runOnce", false) ? "once" : str(j, "frequency") + " h", when(j, "nextReplicationRunStartTime"), last,
                    j.contains("latestAmiId") ? str(j, "latestAmiId") : "-"});
  }
  print_table({"JOB", "SERVER", "VM", "STATE", "EVERY", "NEXT RUN", "LAST RUN", "LATEST IMAGE"}, rows);
  for (auto& j : list)
    if (j.contains("statusMessage")) std::cout << str(j, "replicationJobId") << ": " << str(j, "statusMessage") << "\n";
}

int jobs_list(const ClientArgs& a, const std::string& id) {
  auto c = connect(a);
  json list = id.empty() ? all_pages(c, "GetReplicationJobs", json::object(), "replicationJobList")
                         : c.sms("GetReplicationJobs", {{"replicationJobId", id}})["replicationJobList"];
  if (a.json) return print_json(id.empty() ? list : list[0]), 0;
  print_jobs(list);
  return 0;
}

int jobs_update(const ClientArgs& a, const JobArgs& j) {
  auto c = connect(a);
  json in = job_input(j, false);
  in["replicationJobId"] = j.id;
  c.sms("UpdateReplicationJob", in);
  if (!a.json) std::cout << "Job " << j.id << " updated.\n";
  return 0;
}

int jobs_delete(const ClientArgs& a, const std::string& id) {
  auto c = connect(a);
  c.sms("DeleteReplicationJob", {{"replicationJobId", id}});
  if (!a.json) std::cout << "Job " << id << " deleted (its images are kept).\n";
  return 0;
}

// --- runs ---

std::string bar(double fraction, int width) {
  int full = static_cast<int>(std::lround(std::clamp(fraction, 0.0, 1.0) * width));
  return "[" + std::string(full, '#') + std::string(width - full, '.') + "]";
}

// Polls GetReplicationRuns until every watched run has ended; draws one progress line per run on a terminal,
// prints state changes otherwise. Returns 0 if all completed.
int watch(client::Client& c, const std::vector<std::pair<std::string, std::string>>& runs, bool json_out, double interval) {
  bool tty = ::isatty(1) && !json_out;
  std::map<std::string, std::string> last_state;
  std::map<std::string, json> final;
  size_t drawn = 0;
  for (;;) {
    std::vector<std::string> lines;
    bool all_done = true;
    for (auto& [job, run] : runs) {
      json r, page = c.sms("GetReplicationRuns", {{"replicationJobId", job}, {"maxResults", 25}});
      for (auto& x : page["replicationRunList"])
        if (x["replicationRunId"] == run) r = x;
      if (r.is_null()) fail(ErrorKind::kNotFound, "run " + run + " is not among the recent runs of job " + job);
      std::string state = str(r, "state");
      bool done = state == "COMPLETED" || state == "FAILED" || state == "DELETED" || state == "MISSED";
      if (done) final[run] = r;
      all_done = all_done && done;
      double total = r.value("bytesTotal", 0.0), got = r.value("bytesDone", 0.0);
      std::string line = run + " " + state + " " + bar(state == "COMPLETED" ? 1.0 : (total > 0 ? got / total : 0.0), 30) + " " +
                         str(r["stageDetails"], "stageProgress") + " " + str(r["stageDetails"], "stage");
      if (total > 0) line += "  " + human_bytes(static_cast<uint64_t>(got)) + "/" + human_bytes(static_cast<uint64_t>(total));
      if (r.contains("amiId")) line += "  image " + str(r, "amiId");
      if (r.contains("statusMessage")) line += "  " + str(r, "statusMessage");
      if (tty) {
        lines.push_back(line);
      } else if (!json_out && last_state[run] != state) {
        std::cout << line << std::endl;
      }
      last_state[run] = state;
    }
    if (tty) {
      if (drawn) std::cout << "\x1b[" << drawn << "A";
      for (auto& l : lines) std::cout << "\r\x1b[2K" << l << "\n";
      std::cout << std::flush;
      drawn = lines.size();
    }
    if (all_done) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(interval * 1000)));
  }
  bool ok = true;
  json out = json::array();
  for (auto& [job, run] : runs) {
    ok = ok && final[run].value("state", "") == "COMPLETED";
    out.push_back(final[run]);
  }
  if (json_out) print_json(out);
  return ok ? 0 : 1;
}

int runs_start(const ClientArgs& a, const std::string& job, const std::string& description, bool wait) {
  auto c = connect(a);
  json r = c.sms("StartOnDemandReplicationRun", {{"replicationJobId", job}, {"description", description}});
  std::string run = r["replicationRunId"];
  if (!wait) {
    if (a.json) return print_json(r), 0;
    std::cout << run << "\n";
    return 0;
  }
  return watch(c, {{job, run}}, a.json, 1.0);
}

int runs_list(const ClientArgs& a, const std::string& job) {
  auto c = connect(a);
  json list = all_pages(c, "GetReplicationRuns", {{"replicationJobId", job}}, "replicationRunList");
  if (a.json) return print_json(list), 0;
  std::vector<std::vector<std::string>> rows;
  for (auto& r : list)
    rows.push_back({str(r, "replicationRunId"), str(r, "type"), str(r, "state"), str(r["stageDetails"], "stageProgress"), when(r, "scheduledStartTime"),
                    when(r, "completedTime"), r.contains("amiId") ? str(r, "amiId") : "-", str(r, "statusMessage")});
  print_table({"RUN", "TYPE", "STATE", "PROGRESS", "STARTED", "COMPLETED", "IMAGE", "MESSAGE"}, rows);
  return 0;
}

// Watches the given runs, or with none, every open run of every job.
int runs_watch(const ClientArgs& a, const std::vector<std::string>& ids, double interval) {
  auto c = connect(a);
  std::vector<std::pair<std::string, std::string>> runs;
  json jobs = all_pages(c, "GetReplicationJobs", json::object(), "replicationJobList");
  auto named = [&](const std::string& id) { return std::find(ids.begin(), ids.end(), id) != ids.end(); };
  std::set<std::string> found;
  for (auto& j : jobs) {
    std::string job_id = str(j, "replicationJobId");
    bool job_named = named(job_id);
    if (job_named) found.insert(job_id);
    for (auto& r : j.value("replicationRunList", json::array())) {
      std::string id = r["replicationRunId"], state = r["state"];
      bool open = state == "PENDING" || state == "ACTIVE", run_named = named(id);
      if (run_named) found.insert(id);
      // Named runs whatever their state; the open runs of named jobs; with no names, every open run.
      if (ids.empty() ? open : run_named || (job_named && open)) runs.emplace_back(job_id, id);
    }
  }
  for (auto& id : ids)
    if (!found.count(id)) fail(ErrorKind::kNotFound, "'" + id + "' is neither a replication job nor one of its recent runs");
  if (runs.empty()) {
    if (!a.json) std::cout << "No runs in progress.\n";
    else print_json(json::array());
    return 0;
  }
  return watch(c, runs, a.json, interval);
}

// --- images ---

int images_list(const ClientArgs& a, const std::string& job) {
  auto c = connect(a);
  json in = json::object();
  if (!job.empty()) in["replicationJobId"] = job;
  json list = c.ferry("ListImages", in)["imageList"];
  // Oldest first, as runs made them (the server lists them by id).
  std::stable_sort(list.begin(), list.end(), [](const json& x, const json& y) { return x.value("createdOn", 0.0) < y.value("createdOn", 0.0); });
  if (a.json) return print_json(list), 0;
  std::vector<std::vector<std::string>> rows;
  for (auto& i : list) {
    std::string disks;
    for (auto& d : i["disks"]) disks += (disks.empty() ? "" : ", ") + str(d, "name") + " " + human_bytes(d.value("size", uint64_t{0}));
    rows.push_back({str(i, "imageId"), str(i, "serverId"), str(i, "replicationJobId"), when(i, "createdOn"), str(i, "store"), disks});
  }
  print_table({"IMAGE", "SERVER", "JOB", "CREATED", "STORE", "DISKS"}, rows);
  return 0;
}

int images_export(const ClientArgs& a, const std::string& image, const std::string& disk, const std::string& format, const std::string& output) {
  auto c = connect(a);
  c.set_retry_for(std::chrono::seconds(0));
  c.set_read_timeout(std::chrono::hours(24));
  // The server resolves the name inside its export directory (relative, or absolute below it).
  json r = c.ferry("ExportImage", {{"imageId", image}, {"diskName", disk}, {"format", format}, {"outputPath", output}});
  if (a.json) return print_json(r), 0;
  std::cout << "Wrote " << str(r, "outputPath") << " (" << format << ") on the server.\n";
  return 0;
}

int images_delete(const ClientArgs& a, const std::string& image) {
  auto c = connect(a);
  c.ferry("DeleteImage", {{"imageId", image}});
  if (!a.json) std::cout << "Image " << image << " deleted; its space is reclaimed when no run writes to its store.\n";
  return 0;
}

// --- stores ---

int stores_list(const ClientArgs& a) {
  auto c = connect(a);
  json list = c.ferry("ListStores", json::object())["storeList"];
  if (a.json) return print_json(list), 0;
  std::vector<std::vector<std::string>> rows;
  for (auto& s : list) {
    std::string state = s.contains("error") ? "UNUSABLE: " + str(s, "error") : s.contains("full") ? "FULL: " + str(s, "full") : "ok";
    rows.push_back({str(s, "name"), s.value("encrypted", false) ? "master key " + str(s, "keyId") : "no", std::to_string(s.value("dataKeys", 0)),
                    std::to_string(s.value("images", 0)), human_bytes(s.value("freeBytes", uint64_t{0})) + " of " + human_bytes(s.value("sizeBytes", uint64_t{0})),
                    std::to_string(s.value("activeRuns", json::array()).size()), state});
  }
  print_table({"STORE", "ENCRYPTED", "DATA KEYS", "IMAGES", "FREE", "RUNS", "STATE"}, rows);
  return 0;
}

int stores_prune(const ClientArgs& a, const std::string& store) {
  auto c = connect(a);
  c.set_retry_for(std::chrono::seconds(0));
  c.set_read_timeout(std::chrono::hours(24));
  json r = c.ferry("PruneStore", {{"store", store}});
  if (a.json) return print_json(r), 0;
  std::cout << "Pruned store " << store << ": " << r.value("packsDeleted", 0) << " packs deleted, " << r.value("packsRewritten", 0) << " rewritten, "
            << human_bytes(r.value("bytesBefore", uint64_t{0})) << " -> " << human_bytes(r.value("bytesAfter", uint64_t{0})) << ".\n";
  return 0;
}

int stores_check(const ClientArgs& a, const std::string& store, bool read_data) {
  auto c = connect(a);
  c.set_retry_for(std::chrono::seconds(0));
  c.set_read_timeout(std::chrono::hours(24));
  json r = c.ferry("CheckStore", {{"store", store}, {"readData", read_data}});
  if (a.json) {
    print_json(r);
    return r.value("ok", false) ? 0 : 1;
  }
  for (auto& n : r.value("notes", json::array())) std::cout << "note: " << n.get<std::string>() << "\n";
  for (auto& e : r.value("errors", json::array())) std::cout << "error: " << e.get<std::string>() << "\n";
  std::cout << "Store " << store << ": " << r.value("packs", 0) << " packs, " << r.value("chunks", 0) << " chunks, " << r.value("snapshots", 0)
            << " snapshots" << (read_data ? ", every chunk read and hashed" : "") << ": " << (r.value("ok", false) ? "no errors" : "ERRORS") << ".\n";
  return r.value("ok", false) ? 0 : 1;
}

int stores_rotate(const ClientArgs& a, const std::string& store, const std::string& master_key, bool no_new_data_key) {
  auto c = connect(a);
  json in = {{"store", store}, {"newDataKey", !no_new_data_key}};
  if (!master_key.empty()) in["masterKeyId"] = master_key;
  json r = c.ferry("RotateStoreKeys", in);
  if (a.json) return print_json(r), 0;
  std::cout << "Store " << store << ": " << r.value("dataKeys", 0) << " data key(s), new data sealed under the newest"
            << (r.value("encrypted", false) ? "; every key wrapped by master key " + str(r, "keyId") : std::string()) << ".\n";
  return 0;
}

}  // namespace

void add_client_commands(CLI::App& app, std::function<int()>& action) {
  static ClientArgs ca;
  auto common = [](CLI::App* cmd) {
    cmd->add_option("--profile", ca.profile, "Profile in the ferry config file (FERRY_PROFILE, default 'default')");
    cmd->add_option("--endpoint", ca.overrides.endpoint, "Server URL (FERRY_ENDPOINT)");
    cmd->add_option("--region", ca.overrides.region, "Region name to sign with (any)");
    cmd->add_option("--ca-file", ca.overrides.ca_file, "CA bundle for an https endpoint");
    cmd->add_flag("--insecure-http", ca.overrides.insecure_http,
                  "Allow a plain http:// endpoint that is not on loopback (refused without it: requests would cross "
                  "the network in clear)");
    cmd->add_flag("--json", ca.json, "Machine-readable output");
  };
  auto verb = [&](CLI::App* parent, const char* name, const char* help) {
    auto* v = parent->add_subcommand(name, help);
    common(v);
    return v;
  };

  auto* con = app.add_subcommand("connectors", "Connectors registered with the server")->require_subcommand(1);
  verb(con, "list", "List connectors and their health")->callback([&] { action = [] { return connectors_list(ca); }; });
  static int hours = 24;
  static std::string domain;
  auto* tok = verb(con, "token", "Create a one-time registration token for a new connector");
  tok->add_option("--valid-hours", hours, "Validity")->capture_default_str();
  tok->add_option("--trust-domain", domain,
                  "The connector's trust domain (a site, a tenant): its servers go to stores of that domain, which deduplicate only among themselves");
  tok->callback([&] { action = [] { return connectors_token(ca, hours, domain); }; });
  static std::string id;
  auto* dis = verb(con, "disassociate", "Disassociate a connector (its credentials stop working)");
  dis->add_option("connector-id", id)->required();
  dis->callback([&] { action = [] { return connectors_disassociate(ca, id); }; });

  auto* srv = app.add_subcommand("servers", "The server catalog (machines found by connectors)")->require_subcommand(1);
  static bool wait = false;
  auto* imp = verb(srv, "import", "Ask every healthy connector for its inventory");
  imp->add_flag("--wait", wait, "Wait until the catalog is AVAILABLE");
  imp->callback([&] { action = [] { return servers_import(ca, wait); }; });
  verb(srv, "list", "List the server catalog")->callback([&] { action = [] { return servers_list(ca); }; });
  verb(srv, "delete-catalog", "Delete every server from the catalog")->callback([&] { action = [] { return servers_delete_catalog(ca); }; });

  static JobArgs job;
  auto job_options = [](CLI::App* v) {
    v->add_option("--seed-time", job.seed, "First run (create) or next run (update): now, epoch seconds or YYYY-MM-DDTHH:MM:SSZ");
    v->add_option("--frequency", job.frequency, "Hours between runs (1-24)");
    v->add_flag("--run-once", job.run_once, "A single run");
    v->add_option("--keep", job.keep, "Number of recent images to keep (numberOfRecentAmisToKeep; 0 = all)");
    v->add_flag("--encrypted", job.encrypted, "Encrypt the images");
    v->add_option("--kms-key-id", job.kms_key, "Master key id (default: the server's)");
    v->add_option("--license-type", job.license, "AWS or BYOL");
    v->add_option("--role-name", job.role, "Role name (kept for SMS compatibility)");
    v->add_option("--description", job.description, "Description");
  };
  auto* jobs = app.add_subcommand("jobs", "Replication jobs")->require_subcommand(1);
  auto* jc = verb(jobs, "create", "Create a replication job for a server");
  jc->add_option("server-id", job.server)->required();
  job_options(jc);
  jc->callback([&] { action = [] { return jobs_create(ca, job); }; });
  verb(jobs, "list", "List replication jobs")->callback([&] { action = [] { return jobs_list(ca, ""); }; });
  auto* js = verb(jobs, "show", "Show one job");
  js->add_option("job-id", job.id)->required();
  js->callback([&] { action = [] { return jobs_list(ca, job.id); }; });
  auto* ju = verb(jobs, "update", "Change a job");
  ju->add_option("job-id", job.id)->required();
  job_options(ju);
  ju->add_flag("--no-encrypt", job.no_encrypt, "Stop encrypting new images");
  ju->callback([&] { action = [] { return jobs_update(ca, job); }; });
  auto* jd = verb(jobs, "delete", "Delete a job (its images are kept)");
  jd->add_option("job-id", job.id)->required();
  jd->callback([&] { action = [] { return jobs_delete(ca, job.id); }; });

  auto* runs = app.add_subcommand("runs", "Replication runs")->require_subcommand(1);
  static std::string description;
  auto* rs = verb(runs, "start", "Start an on-demand run now");
  rs->add_option("job-id", job.id)->required();
  rs->add_option("--description", description, "Description");
  rs->add_flag("--wait", wait, "Watch it until it ends (exit 1 if it fails)");
  rs->callback([&] { action = [] { return runs_start(ca, job.id, description, wait); }; });
  auto* rl = verb(runs, "list", "List a job's runs");
  rl->add_option("job-id", job.id)->required();
  rl->callback([&] { action = [] { return runs_list(ca, job.id); }; });
  static std::vector<std::string> watch_ids;
  static double interval = 1.0;
  auto* rw = verb(runs, "watch", "Live progress of runs until they end (default: every run in progress)");
  rw->add_option("ids", watch_ids, "Run or job ids");
  rw->add_option("--interval", interval, "Seconds between refreshes")->capture_default_str();
  rw->callback([&] { action = [] { return runs_watch(ca, watch_ids, interval); }; });

  auto* images = app.add_subcommand("images", "Images made by completed runs (the SMS AMIs)")->require_subcommand(1);
  auto* il = verb(images, "list", "List images");
  il->add_option("--job", job.id, "Only this job's");
  il->callback([&] { action = [] { return images_list(ca, job.id); }; });
  static std::string image, disk, format = "raw", output;
  auto* ie = verb(images, "export", "Write one disk of an image as a disk file (on the server's file system)");
  ie->add_option("image-id", image)->required();
  ie->add_option("--disk", disk, "Disk name (needed when the image has several)");
  ie->add_option("--format,-f", format, "raw, qcow2, vmdk, vhd, vhd-fixed, vhdx or vdi")->capture_default_str();
  ie->add_option("--output,-o", output, "Output path in the server's export directory (--export-dir)")->required();
  ie->callback([&] { action = [] { return images_export(ca, image, disk, format, output); }; });
  auto* idel = verb(images, "delete", "Delete an image");
  idel->add_option("image-id", image)->required();
  idel->callback([&] { action = [] { return images_delete(ca, image); }; });

  auto* stores = app.add_subcommand("stores", "The server's image stores: space, prune, check, keys")->require_subcommand(1);
  static std::string store, master_key;
  static bool read_data = false, no_new_data_key = false;
  verb(stores, "list", "List stores: encryption, keys, images, free space, whether full")->callback([&] { action = [] { return stores_list(ca); }; });
  auto* sp = verb(stores, "prune", "Reclaim the space of deleted images now (refused while a run writes to the store)");
  sp->add_option("store", store)->required();
  sp->callback([&] { action = [] { return stores_prune(ca, store); }; });
  auto* sc = verb(stores, "check", "Verify a store while the server serves (exit 1 on errors)");
  sc->add_option("store", store)->required();
  sc->add_flag("--read-data", read_data, "Also read, decrypt and hash every chunk");
  sc->callback([&] { action = [] { return stores_check(ca, store, read_data); }; });
  auto* sr = verb(stores, "rotate-keys", "Seal new data under a new data key (old data stays readable); optionally re-wrap every key");
  sr->add_option("store", store)->required();
  sr->add_option("--master-key", master_key, "Re-wrap every key under this master key from the server's keyring");
  sr->add_flag("--no-new-data-key", no_new_data_key, "Only re-wrap (with --master-key)");
  sr->callback([&] { action = [] { return stores_rotate(ca, store, master_key, no_new_data_key); }; });
}

}  // namespace ferry::cli
