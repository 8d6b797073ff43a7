// `ferry server` and `ferry connector`: the two long-running processes.
#include <signal.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <iostream>
#include <thread>

#include "api/server.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "client/client.h"
#include "common/fs.h"
#include "common/log.h"
#include "connector/connector.h"
#include "service/service.h"

namespace ferry::cli {

namespace {

// Blocks SIGINT/SIGTERM in the calling thread and so in every thread it starts afterwards. Call it before any
// thread is started: a thread that does not block them would take the signal's default action (exit at once).
sigset_t block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

// Runs `on_signal` on a dedicated thread when SIGINT or SIGTERM arrives (block_stop_signals() must have run first).
class SignalWatcher {
 public:
  explicit SignalWatcher(std::function<void()> on_signal) {
    sigset_t set = block_stop_signals();
    thread_ = std::thread([this, set, fn = std::move(on_signal)] {
      int sig = 0;
      sigwait(&set, &sig);
      if (!done_) fn();
    });
  }
  ~SignalWatcher() {
    // Wake the watcher if no signal came.
    done_ = true;
    pthread_kill(thread_.native_handle(), SIGTERM);
    thread_.join();
  }

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};

struct ServerArgs {
  std::string data = "/var/lib/ferry";
  std::string listen = "127.0.0.1:8443";
  std::string tls_cert, tls_key;
  bool insecure_http = false;  // plain HTTP on a non-loopback address
  std::string address_file;
  bool json_logs = false;
  std::string log_level = "info";
  int connector_timeout = 30;
  int run_stall_timeout = 600;
  int pending_timeout = 3600;
  int max_failures = 3;
  std::string export_dir;
  uint64_t store_min_free_mib = 0;
  size_t max_connections_per_address = api::ListenOptions{}.max_connections_per_address;
  size_t pack_buffer_mib = api::ListenOptions{}.pack_buffer_bytes >> 20;
  std::string profile;  // init: also save the admin key as this profile
  std::string endpoint; // init: endpoint to save in the profile
  std::string ca_file;  // init: CA bundle to save in the profile
  bool json = false;
};

int server_init(const ServerArgs& a) {
  auto r = service::init_data_dir(a.data);
  if (!a.profile.empty()) {
    client::Profile p;
    p.endpoint = a.endpoint.empty() ? "http://" + a.listen : a.endpoint;
    p.credentials = {r.access_key_id, r.secret_access_key};
    if (!a.ca_file.empty()) p.ca_file = std::filesystem::absolute(a.ca_file).string();
    client::save_profile(client::default_config_path(), a.profile, p);
  }
  if (a.json) {
    print_json({{"dataDir", a.data}, {"accessKeyId", r.access_key_id}, {"secretAccessKey", r.secret_access_key}, {"masterKeyId", r.master_key_id}});
    return 0;
  }
  std::cout << "Created ferry server data directory " << a.data << "\n"
            << "  master key:        " << r.master_key_id << " (in " << a.data << "/keyring; back it up: without it encrypted images are lost)\n"
            << "  admin access key:  " << r.access_key_id << "\n"
            << "  admin secret key:  " << r.secret_access_key << "\n"
            << "The secret is shown only this once.";
  if (!a.profile.empty()) std::cout << " It was saved as profile '" << a.profile << "' in " << client::default_config_path() << ".";
  std::cout << "\nStart the server with: ferry server --data " << a.data << (a.listen != ServerArgs{}.listen ? " --listen " + a.listen : "") << "\n";
  return 0;
}

// Every connection and every open pack takes a descriptor; the usual soft limit (1024) would run out before the
// HTTP server's connection limit does. The hard limit is what the administrator allows.
void raise_open_files_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  rlimit raised = limit;
  raised.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &raised) != 0) spdlog::warn("cannot raise the open-files limit from {}: {}", limit.rlim_cur, std::strerror(errno));
}

// The host of a listen address, host:port ("[::1]:8443" for IPv6; an empty host listens on every interface).
std::string_view listen_host(std::string_view listen) {
  if (listen.starts_with('[')) return listen.substr(0, listen.find(']') + 1);
  return listen.substr(0, listen.rfind(':'));
}

int server_run(const ServerArgs& a) {
  // Plain HTTP off loopback would carry registration tokens, the connectors' new secrets and disk data in clear:
  // refused unless --insecure-http says so.
  bool exposed = a.tls_cert.empty() && !client::is_loopback_host(listen_host(a.listen));
  if (exposed && !a.insecure_http)
    fail(ErrorKind::kInvalidArgument,
         "refusing to serve plain HTTP on " + a.listen + ": '" + std::string(listen_host(a.listen)) +
             "' is not a loopback address, and connectors and clients reaching it would send registration tokens, "
             "connector secrets and disk data in clear text; give --tls-cert and --tls-key, or --insecure-http "
             "to accept that");
  block_stop_signals();  // before the service and the HTTP server start their threads
  init_logging(a.json_logs, a.log_level);
  raise_open_files_limit();
  service::Config config;
  config.data_dir = a.data;
  config.connector_timeout = std::chrono::seconds(a.connector_timeout);
  config.run_stall_timeout = std::chrono::seconds(a.run_stall_timeout);
  config.pending_timeout = std::chrono::seconds(a.pending_timeout);
  config.max_consecutive_failures = a.max_failures;
  config.export_dir = a.export_dir;
  if (a.store_min_free_mib > (uint64_t{1} << 40)) fail(ErrorKind::kInvalidArgument, "--store-min-free is out of range");
  config.store_min_free = a.store_min_free_mib << 20;
  service::Service svc(config);
  api::HttpServer http(svc, {a.listen, a.tls_cert, a.tls_key, a.max_connections_per_address, a.pack_buffer_mib << 20});
  std::string url = http.bind();
  if (!a.address_file.empty()) write_file_atomic(a.address_file, url + "\n");
  svc.start_scheduler();
  SignalWatcher signals([&] {
    spdlog::info("stopping");
    svc.stop();  // first: releases held heartbeats, which the HTTP server's stop waits for
    http.stop();
  });
  spdlog::info("ferry server {} listening on {} (data {})", FERRY_VERSION, url, a.data);
  if (exposed)
    spdlog::warn("plain HTTP on a non-loopback address (--insecure-http): requests stay signed, but registration tokens, "
                 "connector secrets and disk data cross the network in clear");
  http.serve();
  svc.stop();
  spdlog::info("stopped");
  return 0;
}

struct ConnectorArgs {
  connector::Config config;
  std::string config_file;
  int poll_ms = 2000;
  bool json_logs = false;
  std::string log_level = "info";
};

int connector_run(ConnectorArgs& a) {
  block_stop_signals();
  init_logging(a.json_logs, a.log_level);
  if (a.config_file.empty()) fail(ErrorKind::kInvalidArgument, "give the VM managers to serve with --config FILE");
  connector::Config c = connector::load_config(a.config_file, a.config);
  c.poll_interval = std::chrono::milliseconds(a.poll_ms);
  if (c.state_dir.empty()) fail(ErrorKind::kInvalidArgument, "give a state directory with --state DIR");
  std::atomic<bool> stop{false};
  SignalWatcher signals([&] {
    spdlog::info("stopping");
    stop = true;
  });
  connector::run(c, stop);
  return 0;
}

}  // namespace

void add_service_commands(CLI::App& app, std::function<int()>& action) {
  static ServerArgs server;
  auto* s = app.add_subcommand("server", "Run the ferry server (API, catalog, scheduler, image store)");
  s->require_subcommand(0, 1);
  auto add_data = [](CLI::App* cmd) { cmd->add_option("--data", server.data, "Data directory")->envname("FERRY_DATA")->capture_default_str(); };
  add_data(s);
  s->add_option("--listen", server.listen, "host:port to listen on (port 0: any free port)")->capture_default_str();
  s->add_option("--tls-cert", server.tls_cert, "PEM certificate: serve HTTPS");
  s->add_option("--tls-key", server.tls_key, "PEM private key of --tls-cert");
  s->add_flag("--insecure-http", server.insecure_http,
              "Serve plain HTTP on an address other than loopback (refused without it: tokens, secrets and disk data "
              "would cross the network in clear)");
  s->add_option("--address-file", server.address_file, "Write the URL the server listens on to this file");
  s->add_flag("--log-json", server.json_logs, "Logs as JSON lines");
  s->add_option("--log-level", server.log_level, "debug, info, warn or error")->capture_default_str();
  s->add_option("--connector-timeout", server.connector_timeout, "Seconds without heartbeat before a connector is UNHEALTHY")->capture_default_str();
  s->add_option("--run-stall-timeout", server.run_stall_timeout, "Seconds an ACTIVE run may go without progress while its connector is unhealthy")->capture_default_str();
  s->add_option("--pending-timeout", server.pending_timeout, "Seconds a run may wait for a connector")->capture_default_str();
  s->add_option("--max-failures", server.max_failures, "Consecutive failed runs before a job is PAUSED_ON_FAILURE")->capture_default_str();
  s->add_option("--export-dir", server.export_dir, "ExportImage writes only below this directory (default DATA/exports)");
  s->add_option("--store-min-free", server.store_min_free_mib,
                "MiB a store's file system keeps free; runs into a store with less wait (default 2% of the file system, 16 MiB-1 GiB)");
  s->add_option("--max-connections-per-address", server.max_connections_per_address,
                "Connections one client address (IPv6: /64) may hold; raise it for many connector hosts behind one NAT address")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20))
      ->capture_default_str();
  s->add_option("--pack-buffer-mib", server.pack_buffer_mib, "Memory for pack uploads being received (MiB; at least the largest pack)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20))
      ->capture_default_str();
  s->callback([s, &action] {
    if (s->get_subcommands().empty()) action = [] { return server_run(server); };
  });
  auto* init = s->add_subcommand("init", "Create a data directory, master key and the first admin access key");
  add_data(init);
  init->add_option("--save-profile", server.profile, "Also save the admin key as this profile in the ferry config file");
  init->add_option("--endpoint", server.endpoint, "Endpoint to save in the profile (default http://<listen>)");
  init->add_option("--ca-file", server.ca_file, "CA bundle to save in the profile (for an https endpoint)");
  init->add_option("--listen", server.listen, "host:port the server will listen on")->capture_default_str();
  init->add_flag("--json", server.json, "Machine-readable output");
  init->callback([&action] { action = [] { return server_init(server); }; });

  static ConnectorArgs conn;
  auto* c = app.add_subcommand("connector", "Run a connector next to the source machines");
  c->add_option("--server", conn.config.server, "Server URL (http://host:port)")->envname("FERRY_SERVER");
  c->add_option("--token", conn.config.token, "One-time registration token (first start)")->envname("FERRY_REGISTRATION_TOKEN");
  c->add_option("--config", conn.config_file, "Connector configuration (JSON: VM managers to serve)")->required();
  c->add_option("--state", conn.config.state_dir, "State directory (its credentials)")->required();
  c->add_option("--name", conn.config.name, "Name shown in GetConnectors (default: host name)");
  c->add_option("--ca-file", conn.config.ca_file, "CA bundle for an https server");
  c->add_flag("--insecure-http", conn.config.insecure_http,
              "Allow a plain http:// server that is not on loopback (refused without it: the registration token, "
              "this connector's secret and disk data would cross the network in clear)");
  c->add_option("--poll-interval-ms", conn.poll_ms, "Heartbeat interval; the server holds each heartbeat up to this long and answers as soon as a run or an inventory request is waiting")->capture_default_str();
  c->add_option("--threads", conn.config.threads, "Replication worker threads (default: one per core)");
  c->add_option("--max-runs", conn.config.max_runs, "Runs done at the same time")->capture_default_str();
  c->add_flag("--log-json", conn.json_logs, "Logs as JSON lines");
  c->add_option("--log-level", conn.log_level, "debug, info, warn or error")->capture_default_str();
  c->callback([&action] { action = [] { return connector_run(conn); }; });
}

}  // namespace ferry::cli
