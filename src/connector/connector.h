// connector — the agent installed next to the source machines. It only ever connects out to the server
// (firewall-friendly pull model): it registers once with a one-time token, then heartbeats with its own
// SigV4 credentials; each heartbeat answer says whether to report the inventory and which runs to do.
// A run is done here: the disks are read, hashed, compressed and sealed on this machine, and only packs the
// server lacks are uploaded (docs/formats.md, "Connector protocol").
//
// Promises: a dropped connection or a restarted server is retried (uploads resume, nothing the server acknowledged
// is sent again); a restarted connector picks its ACTIVE runs up again and skips what the server already has.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "inventory/inventory.h"

namespace ferry::connector {

struct Config {
  std::string server;  // http://127.0.0.1:8443
  std::string ca_file;
  bool insecure_http = false;  // allow a plain http:// server that is not on loopback (client::Profile::insecure_http)
  std::string token;   // one-time registration token (first start only)
  std::filesystem::path state_dir;  // credentials.json lives here (0600)
  std::string name;    // shown in GetConnectors; default: host name
  std::vector<inventory::ManagerConfig> managers;
  std::chrono::milliseconds poll_interval{2000};
  unsigned threads = 0;  // replication workers; 0 = one per core
  unsigned max_runs = 1;  // runs done at the same time
};

// Reads a connector configuration file (JSON): {"name": "...", "server": "...", "managers": [{"type": "vmware",
// "name": "dc1", "path": "/srv/vmfs", "allow": ["/srv/iso"]}, {"type": "local", "name": "this-host", "devices":
// ["/dev/sdb"]}]}. A manager's VMs read only below its "path" (for local: its "devices") and its "allow" entries
// (inventory.h, Confinement). Fields already set in `base` (from flags) win. Relative paths (a manager's "path",
// local "devices", "allow" entries) are relative to the file. Throws kInvalidArgument naming the file and the field.
Config load_config(const std::filesystem::path& file, Config base);

// Runs until `stop` becomes true or the server disassociates the connector. Throws on a registration failure.
void run(const Config& config, const std::atomic<bool>& stop);

}  // namespace ferry::connector
