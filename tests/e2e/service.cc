// The end-to-end service fixture: server and connector processes with RAII guards, the CLI client verbs, and
// generated VMs for the inventory plugins.
#include "e2e/service.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "client/client.h"
#include "fixtures/fixtures.h"

namespace ferry::e2e {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::string slurp(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string tail(const std::string& text, size_t bytes) { return text.size() <= bytes ? text : "..." + text.substr(text.size() - bytes); }

std::string joined(const std::vector<std::string>& args) {
  std::string out;
  for (auto& a : args) out += (out.empty() ? "" : " ") + a;
  return out;
}

void write_text(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.flush()) throw std::runtime_error("cannot write " + file.string());
}

// Printed when a test failed (or FERRY_E2E_LOGS is set), so the processes' side of the story is in the test output.
void print_log_if_failed(const std::string& who, const fs::path& log) {
  if ((!::testing::Test::HasFailure() && !std::getenv("FERRY_E2E_LOGS")) || !fs::exists(log)) return;
  std::cerr << "---- end of " << who << " log " << log << " ----\n" << tail(slurp(log), 6000) << "\n---- end ----\n";
}

}  // namespace

bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds timeout, std::chrono::milliseconds interval) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(interval);
  }
}

uint64_t disk_usage(const fs::path& dir) {
  if (!fs::exists(dir)) return 0;
  std::string out = testing::run_checked({"du", "-s", "-B1", dir.string()});
  return std::stoull(out);
}

// ---------------------------------------------------------------------------------------------
// Process

Process::~Process() {
  if (running()) kill();
}

void Process::start(const std::vector<std::string>& args, const Env& env, const fs::path& log) {
  if (pid_ > 0) throw std::logic_error("process " + std::to_string(pid_) + " is still running");
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot open " + log.string());
  std::string banner = "==== ferry " + joined(args) + "\n";
  (void)!::write(fd, banner.data(), banner.size());
  try {
    pid_ = spawn_ferry(args, env, fd, fd);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  exit_code_ = -1;
}

bool Process::running() { return wait(0ms) == -1 && pid_ > 0; }

int Process::wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return exit_code_;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      return exit_code_;
    }
    if (r < 0) throw std::runtime_error("waitpid " + std::to_string(pid_) + " failed");
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(20ms);
  }
}

int Process::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return exit_code_;
  ::kill(pid_, SIGTERM);
  if (wait(grace) != -1) return exit_code_;
  return kill();
}

int Process::kill() {
  if (pid_ <= 0) return exit_code_;
  ::kill(pid_, SIGKILL);
  return wait(std::chrono::hours(1));
}

// ---------------------------------------------------------------------------------------------
// Client

Client Client::with_env(const Env& overrides) const {
  Env e = env_;
  for (auto& [k, v] : overrides) e[k] = v;
  return Client(e, args_);
}

CliResult Client::run(const std::vector<std::string>& args) const {
  std::vector<std::string> all = args;
  all.insert(all.end(), args_.begin(), args_.end());
  return ferry(all, env_);
}

json Client::json(const std::vector<std::string>& args) const {
  std::vector<std::string> all = args;
  all.push_back("--json");
  CliResult r = run(all);
  if (r.exit_code != 0) throw std::runtime_error("ferry " + joined(all) + ": " + describe(r));
  try {
    return nlohmann::json::parse(r.out);
  } catch (const nlohmann::json::exception&) {
    throw std::runtime_error("ferry " + joined(all) + " printed no JSON: " + describe(r));
  }
}

std::string Client::create_token() const {
  auto t = json({"connectors", "token"});
  return t.at("registrationToken");
}

nlohmann::json Client::connectors() const { return json({"connectors", "list"}); }

void Client::import_servers() const {
  auto r = json({"servers", "import", "--wait"});
  if (r.at("serverCatalogStatus") != "AVAILABLE") throw std::runtime_error("server catalog import ended as " + r.dump());
}

nlohmann::json Client::servers() const { return json({"servers", "list"}).at("serverList"); }

nlohmann::json Client::server_named(const std::string& vm_name) const {
  auto list = servers();
  for (auto& s : list)
    if (s.at("vmServer").at("vmName") == vm_name) return s;
  throw std::runtime_error("no VM '" + vm_name + "' in the server catalog: " + list.dump(2));
}

std::string Client::create_job(const std::string& server_id, const std::vector<std::string>& extra) const {
  std::vector<std::string> args = {"jobs", "create", server_id};
  bool seeded = false, periodic = false;
  for (auto& a : extra) {
    seeded = seeded || a == "--seed-time";
    periodic = periodic || a == "--frequency" || a == "--run-once";
  }
  if (!seeded) {
    auto tomorrow = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count() + 86400;
    args.insert(args.end(), {"--seed-time", std::to_string(tomorrow)});
  }
  if (!periodic) args.insert(args.end(), {"--frequency", "24"});
  args.insert(args.end(), extra.begin(), extra.end());
  return json(args).at("replicationJobId");
}

nlohmann::json Client::job(const std::string& job_id) const { return json({"jobs", "show", job_id}); }

nlohmann::json Client::runs(const std::string& job_id) const { return json({"runs", "list", job_id}); }

nlohmann::json Client::run_of(const std::string& job_id, const std::string& run_id) const {
  auto list = runs(job_id);
  for (auto& r : list)
    if (r.at("replicationRunId") == run_id) return r;
  throw std::runtime_error("run " + run_id + " is not among the runs of job " + job_id + ": " + list.dump(2));
}

std::string Client::start_run(const std::string& job_id) const { return json({"runs", "start", job_id}).at("replicationRunId"); }

nlohmann::json Client::wait_run_ended(const std::string& job_id, const std::string& run_id, std::chrono::seconds timeout) const {
  nlohmann::json run;
  bool ended = wait_for(
      [&] {
        run = run_of(job_id, run_id);
        return run.at("state") == "COMPLETED" || run.at("state") == "FAILED";
      },
      timeout, 250ms);
  if (!ended) throw std::runtime_error("run " + run_id + " has not ended after " + std::to_string(timeout.count()) + " s: " + run.dump(2));
  return run;
}

nlohmann::json Client::images(const std::string& job_id) const {
  std::vector<std::string> args = {"images", "list"};
  if (!job_id.empty()) args.insert(args.end(), {"--job", job_id});
  return json(args);
}

void Client::export_image(const std::string& image_id, const std::string& format, const fs::path& output, const std::string& disk) const {
  std::vector<std::string> args = {"images", "export", image_id, "-f", format, "-o", output.string()};
  if (!disk.empty()) args.insert(args.end(), {"--disk", disk});
  json(args);
}

// ---------------------------------------------------------------------------------------------
// ServerProcess

ServerProcess::ServerProcess(const fs::path& dir, ServerOptions options)
    : dir_(dir), data_(dir / "data"), log_(dir / "server.log"), options_(std::move(options)) {
  fs::create_directories(dir_);
  CliResult init = ferry({"server", "init", "--data", data_.string(), "--json"}, {{"FERRY_CONFIG", (dir_ / "ferry-config").string()}});
  if (init.exit_code != 0) throw std::runtime_error("ferry server init: " + describe(init));
  auto j = init.json();
  access_key_id_ = j.at("accessKeyId");
  secret_ = j.at("secretAccessKey");
}

ServerProcess::~ServerProcess() {
  print_log_if_failed("server", log_);
  if (process_.running()) process_.stop(10s);
}

void ServerProcess::start(uint16_t port) {
  fs::path address = dir_ / "address";
  fs::remove(address);
  // Exports may go anywhere in the test's own directory (the server refuses anything outside its --export-dir).
  std::vector<std::string> args = {"server", "--data", data_.string(), "--listen", "127.0.0.1:" + std::to_string(port), "--address-file",
                                   address.string(), "--export-dir", dir_.parent_path().string()};
  if (!options_.tls_cert.empty()) args.insert(args.end(), {"--tls-cert", options_.tls_cert.string(), "--tls-key", options_.tls_key.string()});
  args.insert(args.end(), options_.args.begin(), options_.args.end());
  Env env = {{"FERRY_CONFIG", (dir_ / "ferry-config").string()}};
  process_.start(args, env, log_);

  // The address file appears (atomically) once the socket is bound; /health answers once it serves.
  if (!wait_for([&] { return fs::exists(address) || !process_.running(); }, 60s, 20ms) || !fs::exists(address))
    throw std::runtime_error("ferry server did not write " + address.string() + "; its log:\n" + tail(slurp(log_), 4000));
  std::string url = slurp(address);
  while (!url.empty() && (url.back() == '\n' || url.back() == '\r')) url.pop_back();
  url_ = url;
  port_ = static_cast<uint16_t>(std::stoi(url_.substr(url_.rfind(':') + 1)));

  client::Profile profile;
  profile.endpoint = url_;
  profile.ca_file = options_.ca_file.string();
  client::Client health(profile);
  health.set_retry_for(0s);
  bool up = wait_for(
      [&] {
        if (!process_.running()) return true;
        try {
          auto r = health.send("GET", "/health", "");
          // Serving: "ok", or "degraded" with what needs attention (a test may have broken a store on purpose).
          return r.status == 200 && (r.body == "ok\n" || r.body.rfind("degraded\n", 0) == 0);
        } catch (const std::exception&) {
          return false;
        }
      },
      60s, 50ms);
  if (!up || !process_.running()) throw std::runtime_error("ferry server at " + url_ + " does not answer /health; its log:\n" + tail(slurp(log_), 4000));

  Env client_env = {{"FERRY_ENDPOINT", url_},
                    {"AWS_ACCESS_KEY_ID", access_key_id_},
                    {"AWS_SECRET_ACCESS_KEY", secret_},
                    {"FERRY_CONFIG", (dir_ / "ferry-config").string()}};
  std::vector<std::string> client_args;
  if (!options_.ca_file.empty()) client_args = {"--ca-file", options_.ca_file.string()};
  admin_ = Client(client_env, client_args);
}

CliResult store_check(const ServerProcess& server, const std::string& store, bool read_data) {
  std::vector<std::string> args = {"store", "check", "--store", server.store_dir(store).string(), "--keyring", server.keyring_dir().string()};
  if (read_data) args.push_back("--read-data");
  return ferry(args);
}

// ---------------------------------------------------------------------------------------------
// ConnectorProcess

ConnectorProcess::ConnectorProcess(const ServerProcess& server, fs::path config, fs::path state_dir, std::vector<std::string> args)
    : server_(server), config_(std::move(config)), state_(std::move(state_dir)), args_(std::move(args)) {
  log_ = state_.parent_path() / (state_.filename().string() + ".log");
}

ConnectorProcess::~ConnectorProcess() {
  print_log_if_failed("connector", log_);
  if (process_.running()) process_.stop(10s);
}

void ConnectorProcess::start(const std::string& token) {
  std::vector<std::string> args = {"connector", "--server", server_.url(), "--config", config_.string(), "--state", state_.string(),
                                   "--poll-interval-ms", "300"};
  if (!token.empty()) args.insert(args.end(), {"--token", token});
  if (!server_.options().ca_file.empty()) args.insert(args.end(), {"--ca-file", server_.options().ca_file.string()});
  args.insert(args.end(), args_.begin(), args_.end());
  process_.start(args, {{"FERRY_CONFIG", (state_.parent_path() / "ferry-config").string()}}, log_);
}

std::string ConnectorProcess::register_and_wait() {
  start(server_.admin().create_token());
  if (!wait_for([&] { return fs::exists(state_ / "credentials.json") || !process_.running(); }, 30s, 50ms) ||
      !fs::exists(state_ / "credentials.json"))
    throw std::runtime_error("the connector did not register; its log:\n" + log());
  wait_status("HEALTHY");
  return id();
}

void ConnectorProcess::wait_status(const std::string& status, std::chrono::seconds timeout) const {
  std::string cid = id();
  nlohmann::json list;
  bool ok = wait_for(
      [&] {
        list = server_.admin().connectors();
        for (auto& c : list)
          if (c.at("connectorId") == cid && c.at("status") == status) return true;
        return false;
      },
      timeout, 200ms);
  if (!ok) throw std::runtime_error("connector " + cid + " is not " + status + " after " + std::to_string(timeout.count()) + " s: " + list.dump(2));
}

nlohmann::json ConnectorProcess::credentials() const {
  fs::path file = state_ / "credentials.json";
  if (!fs::exists(file)) throw std::runtime_error("the connector has no " + file.string() + " (not registered)");
  return nlohmann::json::parse(slurp(file));
}

std::string ConnectorProcess::log() const { return tail(slurp(log_), 4000); }

void write_connector_config(const fs::path& file, const std::string& name, const nlohmann::json& managers) {
  write_text(file, nlohmann::json{{"name", name}, {"managers", managers}}.dump(2) + "\n");
}

fs::path local_config(const fs::path& dir, const std::vector<fs::path>& devices) {
  nlohmann::json list = nlohmann::json::array();
  for (auto& d : devices) list.push_back(d.string());
  fs::path file = dir / "connector.json";
  write_connector_config(file, "agent", nlohmann::json::array({{{"type", "local"}, {"name", "host"}, {"devices", list}}}));
  return file;
}

// ---------------------------------------------------------------------------------------------
// Generated VMs

namespace {

// make_disk names its output after the raw file's stem; a VM wants its own name.
fs::path converted(const fs::path& raw, const std::string& kind, const fs::path& dir, const fs::path& name) {
  fs::path made = testing::make_disk(raw, kind, dir);
  fs::path target = dir / name;
  if (made != target) fs::rename(made, target);
  return target;
}

}  // namespace

SourceDisk add_vmware_vm(const fs::path& root, const std::string& name, const fs::path& raw) {
  fs::path dir = root / name;
  fs::create_directories(dir);
  // A monolithicSparse VMDK names no other file, so it may be renamed.
  fs::path vmdk = converted(raw, "vmdk-monolithicSparse", dir, name + ".vmdk");
  write_text(dir / (name + ".vmx"), ".encoding = \"UTF-8\"\nconfig.version = \"8\"\ndisplayName = \"" + name +
                                        "\"\nguestOS = \"ubuntu-64\"\nnumvcpus = \"2\"\nmemsize = \"2048\"\n"
                                        "scsi0.present = \"TRUE\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"" +
                                        name + ".vmdk\"\n");
  return {vmdk, "vmdk"};
}

SourceDisk add_libvirt_vm(const fs::path& root, const fs::path& images, const std::string& name, const fs::path& raw) {
  fs::create_directories(images);
  fs::path qcow2 = converted(raw, "qcow2", images, name + ".qcow2");
  write_text(root / (name + ".xml"),
             "<domain type='kvm'>\n  <name>" + name +
                 "</name>\n  <memory unit='MiB'>1024</memory>\n  <vcpu placement='static'>1</vcpu>\n"
                 "  <os>\n    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>\n  </os>\n  <devices>\n"
                 "    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      <source file='" +
                 fs::absolute(qcow2).string() + "'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n");
  return {qcow2, "qcow2"};
}

SourceDisk add_hyperv_vm(const fs::path& root, const std::string& name, const fs::path& raw) {
  fs::path dir = root / name / "Virtual Hard Disks";
  fs::create_directories(dir);
  return {converted(raw, "vhdx", dir, name + ".vhdx"), "vhdx"};
}

SourceDisk add_azure_vm(const fs::path& root, const std::string& name, const fs::path& raw) {
  fs::create_directories(root);
  return {converted(raw, "vhd-fixed", root, name + ".vhd"), testing::qemu_format("vhd-fixed")};
}

SourceDisk add_ova_vm(const fs::path& root, const fs::path& raw) {
  fs::create_directories(root);
  testing::make_disk(raw, "ova", root);
  return {raw, "raw"};
}

}  // namespace ferry::e2e
