// The CLI's verbs for the data path. Each returns the process exit code; errors are thrown as ferry::Error.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace ferry::cli {

struct Common {
  std::string store;    // --store / FERRY_STORE
  std::string keyring;  // --keyring / FERRY_KEYRING
  bool json = false;
};

struct InitArgs {
  bool encrypt = false;
  std::string key_id;
  uint32_t chunk_size = 64 * 1024;
  int compression_level = -3;
};
int store_init(const Common& c, const InitArgs& a);
int store_check(const Common& c, bool read_data, bool repair);
int store_prune(const Common& c);
int store_stats(const Common& c);
int store_rotate_keys(const Common& c, bool new_data_key, const std::string& master_key);

struct ReplicateArgs {
  std::string disk;
  std::string name;
  std::string format;
  InitArgs init;  // used when the store does not exist yet, and checked against it when it does
  unsigned threads = 0;
};
int replicate(const Common& c, const ReplicateArgs& a);

int snapshots_list(const Common& c, const std::string& name);
int snapshots_show(const Common& c, const std::string& id);
int snapshots_delete(const Common& c, const std::string& id);

struct ExportArgs {
  std::string snapshot;
  std::string format = "raw";
  std::string output;
  unsigned threads = 0;
};
int image_export(const Common& c, const ExportArgs& a);

// Service verbs (service_commands.cc, client_commands.cc) register themselves on the app.
}  // namespace ferry::cli
namespace CLI {
class App;
}
namespace ferry::cli {
void add_service_commands(CLI::App& app, std::function<int()>& action);
void add_client_commands(CLI::App& app, std::function<int()>& action);

int keys_create(const Common& c, const std::string& key_id);
int keys_list(const Common& c);

}  // namespace ferry::cli
