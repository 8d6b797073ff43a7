// End-to-end fixture for the ferry service: `ferry server` and `ferry connector` as real processes on loopback
// ports, driven through the CLI's client verbs with --json, and source VMs generated for every inventory plugin.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "e2e/cli.h"

namespace ferry::e2e {

// Helpers below throw std::runtime_error (naming the command and quoting what it printed) when something that
// must work does not; GoogleTest reports that as the test's failure, and the RAII guards below still stop every
// process the test started.

using Env = std::map<std::string, std::string>;

// Calls `done` every `interval` until it returns true or `timeout` has passed; returns its last answer.
// For generous deadlines on things that happen eventually, never for measuring time.
bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds timeout,
              std::chrono::milliseconds interval = std::chrono::milliseconds(200));

// Bytes the files under `dir` occupy on disk (du), 0 if it does not exist.
uint64_t disk_usage(const std::filesystem::path& dir);

// One child process of the ferry binary, stdout and stderr appended to a log file. Killed with SIGKILL (and
// reaped) at destruction if still running.
class Process {
 public:
  Process() = default;
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // REQUIRES: not running.
  void start(const std::vector<std::string>& args, const Env& env, const std::filesystem::path& log);
  bool running();
  // The exit code (128+N if killed by signal N) once it has exited within `timeout`; -1 if still running.
  int wait(std::chrono::milliseconds timeout);
  // SIGTERM, then SIGKILL if it has not exited within `grace`. Returns the exit code. No-op (returns the last
  // exit code) if not running.
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(20));
  // SIGKILL, reaped. Returns the exit code.
  int kill();
  pid_t pid() const { return pid_; }  // -1 when not running

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

// The client verbs of the ferry CLI with one set of credentials (environment variables, as a user would set them).
class Client {
 public:
  Client() = default;
  // `args` are added to every verb (e.g. {"--ca-file", "ca.pem"}).
  Client(Env env, std::vector<std::string> args) : env_(std::move(env)), args_(std::move(args)) {}

  const Env& env() const { return env_; }
  Client with_env(const Env& overrides) const;

  // `ferry ARGS...` as is.
  CliResult run(const std::vector<std::string>& args) const;
  // `ferry ARGS... --json`; throws unless it exits 0, returns the parsed output.
  nlohmann::json json(const std::vector<std::string>& args) const;

  // Typical calls.
  std::string create_token() const;
  nlohmann::json connectors() const;
  void import_servers() const;                        // servers import --wait
  nlohmann::json servers() const;                     // servers list: the serverList
  nlohmann::json server_named(const std::string& vm_name) const;  // throws if not in the catalog
  // jobs create; `extra` e.g. {"--keep", "1"}. Without --seed-time in `extra` the first run is a day away, so the
  // test starts runs on demand.
  std::string create_job(const std::string& server_id, const std::vector<std::string>& extra = {}) const;
  nlohmann::json job(const std::string& job_id) const;  // jobs show
  nlohmann::json runs(const std::string& job_id) const;  // runs list, newest first
  nlohmann::json run_of(const std::string& job_id, const std::string& run_id) const;  // throws if not listed
  std::string start_run(const std::string& job_id) const;  // runs start (no wait): the run id
  // Polls until the run is COMPLETED or FAILED (or `timeout`: throws); returns the run.
  nlohmann::json wait_run_ended(const std::string& job_id, const std::string& run_id,
                                std::chrono::seconds timeout = std::chrono::seconds(120)) const;
  nlohmann::json images(const std::string& job_id = "") const;
  // images export on the server's file system; throws on failure.
  void export_image(const std::string& image_id, const std::string& format, const std::filesystem::path& output,
                    const std::string& disk = "") const;

 private:
  Env env_;
  std::vector<std::string> args_;
};

struct ServerOptions {
  std::vector<std::string> args;  // extra flags of `ferry server`: --connector-timeout 2, --log-json, ...
  std::filesystem::path tls_cert, tls_key;  // both set: serve https
  std::filesystem::path ca_file;            // what clients trust (for the self-signed tls_cert: itself)
};

// A ferry server data directory (made with `ferry server init --json` at construction) and its process.
// The destructor stops the server (SIGKILL if SIGTERM does not end it) and, if the test failed (or the environment
// sets FERRY_E2E_LOGS), prints the end of its log; so does ConnectorProcess's.
class ServerProcess {
 public:
  // `dir` holds data/, server.log, address and the client config file.
  explicit ServerProcess(const std::filesystem::path& dir, ServerOptions options = {});
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Starts the server on 127.0.0.1:`port` (0: any free port) and waits until GET /health answers.
  // REQUIRES: not running.
  void start(uint16_t port = 0);
  // The same port as the last start.
  void restart() { start(port_); }
  int kill() { return process_.kill(); }
  // SIGTERM; returns the exit code.
  int stop() { return process_.stop(); }
  bool running() { return process_.running(); }
  pid_t pid() const { return process_.pid(); }

  const std::string& url() const { return url_; }
  std::filesystem::path store_dir(const std::string& store = "plain") const { return data_ / "stores" / store; }
  std::filesystem::path keyring_dir() const { return data_ / "keyring"; }
  const std::filesystem::path& log_file() const { return log_; }
  const ServerOptions& options() const { return options_; }
  // The admin's client.
  const Client& admin() const { return admin_; }

 private:
  std::filesystem::path dir_, data_, log_;
  ServerOptions options_;
  Process process_;
  std::string url_, access_key_id_, secret_;
  uint16_t port_ = 0;
  Client admin_;
};

// `ferry store check --store STORE --keyring KEYRING [--read-data]` run beside the live server (the check takes
// a read lock). Returns its result; exit code 0 means clean.
CliResult store_check(const ServerProcess& server, const std::string& store = "plain", bool read_data = true);

// A `ferry connector` with its configuration file and state directory. The destructor stops it.
class ConnectorProcess {
 public:
  // `config` is a connector.json (write_connector_config); the state goes to `state_dir`, the log beside it.
  // `args` are extra flags (e.g. {"--threads", "1"}).
  ConnectorProcess(const ServerProcess& server, std::filesystem::path config, std::filesystem::path state_dir,
                   std::vector<std::string> args = {});
  ~ConnectorProcess();
  ConnectorProcess(const ConnectorProcess&) = delete;
  ConnectorProcess& operator=(const ConnectorProcess&) = delete;

  // Starts it; `token` only for the first start (registration).
  void start(const std::string& token = "");
  // Creates a token, starts it and waits until the server lists it HEALTHY. Returns the connector id.
  std::string register_and_wait();
  // Waits until the server lists this connector as `status` (HEALTHY or UNHEALTHY).
  void wait_status(const std::string& status, std::chrono::seconds timeout = std::chrono::seconds(30)) const;
  int kill() { return process_.kill(); }
  int stop() { return process_.stop(); }
  bool running() { return process_.running(); }
  int wait(std::chrono::milliseconds timeout) { return process_.wait(timeout); }

  // From state_dir/credentials.json (throws if not registered).
  nlohmann::json credentials() const;
  std::string id() const { return credentials().at("connectorId"); }
  const std::filesystem::path& log_file() const { return log_; }
  std::string log() const;

 private:
  const ServerProcess& server_;
  std::filesystem::path config_, state_, log_;
  std::vector<std::string> args_;
  Process process_;
};

// Writes a connector.json: {"name": name, "managers": managers}.
void write_connector_config(const std::filesystem::path& file, const std::string& name, const nlohmann::json& managers);

// A connector.json in `dir` with one "local" manager (named "host") offering `devices`; returns its path.
std::filesystem::path local_config(const std::filesystem::path& dir, const std::vector<std::filesystem::path>& devices);

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A disk of a generated VM, for comparing an exported image with it.
struct SourceDisk {
  std::filesystem::path path;  // the file qemu opens
  std::string format;          // qemu driver name ("vmdk", "qcow2", "vhdx", "vpc", "raw")
};

// Generated VMs, one per inventory plugin, from a raw disk (testing::make_raw_disk). Each returns its disk.
// vmware:  ROOT/NAME/NAME.vmx (guest ubuntu-64, 2 vCPUs, 2048 MiB) and ROOT/NAME/NAME.vmdk (monolithicSparse)
SourceDisk add_vmware_vm(const std::filesystem::path& root, const std::string& name, const std::filesystem::path& raw);
// libvirt: ROOT/NAME.xml naming IMAGES/NAME.qcow2 (absolute path)
SourceDisk add_libvirt_vm(const std::filesystem::path& root, const std::filesystem::path& images, const std::string& name,
                          const std::filesystem::path& raw);
// hyperv:  ROOT/NAME/Virtual Hard Disks/NAME.vhdx
SourceDisk add_hyperv_vm(const std::filesystem::path& root, const std::string& name, const std::filesystem::path& raw);
// azure:   ROOT/NAME.vhd, a fixed VHD
SourceDisk add_azure_vm(const std::filesystem::path& root, const std::string& name, const std::filesystem::path& raw);
// ova:     ROOT/STEM-ova.ova (testing::make_disk; the VM is named STEM-ova); its disk compares with `raw`
SourceDisk add_ova_vm(const std::filesystem::path& root, const std::filesystem::path& raw);

}  // namespace ferry::e2e
