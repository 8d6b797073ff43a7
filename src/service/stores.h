// Inside service/: the server's image stores. One repository per store name under DATA/stores, opened once and held
// (with its write lock) for the server's lifetime, checked against what the catalog recorded of it, and watched for
// free space.
//
// Promises:
//  - A store whose config or key file no longer matches the catalog's record (another repository id, another master
//    key, a key file the server did not write) is refused by name; so is one that cannot be opened. Either way the
//    server keeps serving the other stores (list() shows why).
//  - A store is "full" when a write would leave less than its reserve free (or the file system said ENOSPC): writes
//    into it are refused at once with a message naming the store, the free space and what is needed, until
//    refresh() sees the space back. The reserve keeps room for prune and the catalog on a full disk.
// Concurrency: thread-safe. Maintenance (prune, check, key rotation) of one store is serialized by maintenance().
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "catalog/catalog.h"
#include "store/repository.h"

namespace ferry::service {

class Stores {
 public:
  // `min_free`: bytes a store's file system keeps free; 0 picks 2% of its size, between 16 MiB and 1 GiB.
  Stores(std::filesystem::path root, catalog::Catalog& catalog, const store::Keyring& keyring, uint64_t min_free);
  ~Stores();

  // How to create a store that does not exist yet.
  struct Spec {
    bool encrypt = false;
    std::string key_id;  // master key of an encrypted store
  };
  // The store's repository, opened on first use (created from `create` if absent; without it, an absent store is
  // InvalidParameterException). Throws OperationError (InternalError naming the store and the cause) if it cannot
  // be used.
  store::Repository& open(const std::string& name, const std::optional<Spec>& create = std::nullopt);
  // Names of the stores on disk (directories with a config).
  std::vector<std::string> on_disk() const;
  static void validate_name(const std::string& name);  // throws InvalidParameterException

  // Space. Before writing `bytes` into the store: throws OperationError("InsufficientStorageException") and marks the
  // store full if fewer than bytes + reserve are free. note_no_space() records a write that failed with ENOSPC.
  void reserve(const std::string& name, uint64_t bytes);
  void note_no_space(const std::string& name, uint64_t bytes, const std::string& cause);
  // The reason a store is full, if it is.
  std::optional<std::string> full(const std::string& name) const;
  // Clears the full mark of stores with enough space again; returns their names.
  std::vector<std::string> refresh();

  // Prune requests (an image deleted): the service prunes these when no run writes to them.
  void request_prune(const std::string& name);
  std::vector<std::string> take_prune_requests();

  // Serializes maintenance of one store (prune, check, key rotation).
  std::unique_lock<std::mutex> maintenance(const std::string& name);
  // Key rotation: a new data key (and optionally a new master key); the catalog's record follows.
  void rotate_keys(const std::string& name, bool new_data_key, const std::string& new_master_key_id);

  struct Info {
    std::string name;
    std::string repository_id, key_id;
    bool encrypted = false;
    uint64_t data_keys = 0;
    uint64_t chunks = 0;
    uint64_t fs_free = 0, fs_size = 0, reserve = 0;
    std::string full;   // why it is full, or ""
    std::string error;  // why it cannot be used, or ""
    std::vector<std::string> damage;  // objects that could not be read, each with the reason (its data is not used)
  };
  std::vector<Info> list();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::service
