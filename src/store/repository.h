// store::Repository — the image store: a content-addressed, deduplicated, compressed and
// authenticated-encrypted repository of disk chunks and the snapshots that list them.
//
// Promises:
//  - A chunk is identified by HMAC-SHA-256 of its plaintext under the repository's id key; equal
//    chunks are stored once, whatever disk, run or machine they come from.
//  - Every stored byte is sealed with AES-256-GCM; damage or a wrong key is detected, never returned.
//  - A committed snapshot is immutable, and no chunk it references is deleted while it exists.
//  - Every write is crash-safe: after a kill at any moment the repository opens, checks clean,
//    and data already written by the killed run is reused.
// Concurrency: one ChunkWriter at a time per repository (held by the store's write lock);
// readers (export, list, check) run beside it. All const methods are thread-safe.
#pragma once

#include <array>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/backend.h"

namespace ferry::store {

struct ChunkId {
  std::array<uint8_t, 32> bytes{};
  std::string hex() const;
  bool operator==(const ChunkId& o) const { return bytes == o.bytes; }
  bool operator<(const ChunkId& o) const { return bytes < o.bytes; }
};
struct ChunkIdHash {
  size_t operator()(const ChunkId& id) const {
    size_t h;
    std::memcpy(&h, id.bytes.data(), sizeof h);
    return h;
  }
};

// Master keys by key id: ferry's stand-in for a KMS. One file per key, "<key id>.key", 0600.
class Keyring {
 public:
  explicit Keyring(std::filesystem::path dir) : dir_(std::move(dir)) {}
  // $FERRY_KEYRING, else ~/.config/ferry/keyring.
  static std::filesystem::path default_dir();
  const std::filesystem::path& dir() const { return dir_; }
  bool has(const std::string& key_id) const;
  // Throws kNotFound naming the key id and the keyring.
  std::array<uint8_t, 32> get(const std::string& key_id) const;
  // Creates a new random master key; throws kInvalidArgument if it exists.
  void create(const std::string& key_id) const;
  std::vector<std::string> list() const;
  static void validate_key_id(const std::string& key_id);

 private:
  std::filesystem::path dir_;
};

struct InitOptions {
  uint32_t chunk_size = 64 * 1024;  // see docs/architecture.md for the measurement behind it
  uint32_t pack_size = 16 * 1024 * 1024;
  int zstd_level = -3;  // zstd's fast mode: 27% less CPU than level 1 for 8% more bytes (docs/architecture.md)
  bool encrypt = false;
  std::string key_id;  // required with encrypt
};

struct RepositoryConfig {
  int version = 1;
  std::string id;
  uint32_t chunk_size = 0;
  uint32_t pack_size = 0;
  int zstd_level = 1;
  bool encrypted = false;
  std::string key_id;
};

// Where a chunk is stored.
struct Location {
  uint32_t pack = 0;  // index into Repository::pack_names()
  uint32_t offset = 0;
  uint32_t stored_len = 0;
  uint32_t raw_len = 0;
  uint8_t compression = 0;
};

struct SnapshotStats {
  uint64_t bytes_read = 0;      // data bytes read from the source (zero ranges are not read)
  uint64_t bytes_new = 0;       // plaintext bytes of chunks that were not yet stored
  uint64_t bytes_stored = 0;    // bytes added to the store (packs, index, snapshot)
  uint64_t chunks_new = 0;
  uint64_t chunks_changed = 0;  // chunks that differ from the parent snapshot
  double seconds = 0;
};

// An immutable record of one replicated disk.
struct Snapshot {
  std::string id;             // 32 hex digits, random
  std::string name;           // the disk's identity across runs (finds the parent)
  std::string source;         // what was replicated, as given
  std::string source_format;  // e.g. "vmdk (streamOptimized)"
  uint64_t size = 0;          // virtual disk size in bytes
  uint32_t chunk_size = 0;
  int64_t created = 0;        // unix seconds
  std::string parent;         // previous snapshot of the same name, or empty (a full run)
  ChunkId digest;             // see docs/formats.md "Disk digest"
  SnapshotStats stats;
  // Data chunks by chunk index (offset / chunk_size), ascending. Missing indexes read as zeros.
  std::vector<std::pair<uint64_t, ChunkId>> chunks;

  uint64_t chunk_count() const { return (size + chunk_size - 1) / chunk_size; }
  uint32_t chunk_length(uint64_t index) const;
  // Ranges [offset, length) that read as zeros, merged.
  std::vector<std::pair<uint64_t, uint64_t>> zero_ranges() const;
  // Computes the disk digest from size, chunk size and chunk ids.
  ChunkId compute_digest() const;
};

// Per-thread hashing, sealing and opening state. Make one per thread with Repository::new_codec().
class Codec {
 public:
  ~Codec();
  Codec(const Codec&) = delete;
  Codec& operator=(const Codec&) = delete;
  ChunkId chunk_id(const void* data, size_t len);
  struct Impl;

 private:
  friend class Repository;
  friend class ChunkWriter;
  explicit Codec(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class Repository;

// One run's additions. add() is thread-safe; blobs are packed and written by a background thread.
// Destroying a writer that was not committed deletes the packs it wrote (nothing references them).
class ChunkWriter {
 public:
  ~ChunkWriter();
  // Stores the chunk unless the repository (or this run) already has it. Returns true if it was new.
  bool add(Codec& codec, const ChunkId& id, const char* data, size_t len);
  // Writes the remaining pack and an index file covering this run's packs; afterwards every chunk
  // added is durable and findable.
  void commit();
  uint64_t bytes_written() const;  // bytes of packs and index written so far
  uint64_t bytes_new() const;      // plaintext bytes of new chunks

 private:
  friend class Repository;
  struct Impl;
  explicit ChunkWriter(Repository& repo);
  std::unique_ptr<Impl> impl_;
};

class Repository {
 public:
  // Creates config and key in an empty backend. Throws kInvalidArgument if a repository exists.
  static void init(Backend& backend, const InitOptions& options, const Keyring& keyring);
  // Opens, unwrapping the data keys with the master key named in the config (if encrypted);
  // a wrong master key fails with kCrypto before anything is read or written.
  static std::unique_ptr<Repository> open(std::unique_ptr<Backend> backend, const Keyring& keyring);
  ~Repository();

  const RepositoryConfig& config() const { return config_; }
  Backend& backend() { return *backend_; }
  std::unique_ptr<Codec> new_codec() const;

  // Index.
  std::optional<Location> find(const ChunkId& id) const;
  std::string pack_name(uint32_t pack) const;
  size_t chunk_count() const;
  // Packs found on open that no index file lists (left by an interrupted run); they are indexed by the next commit.
  std::vector<std::string> unindexed_packs() const;
  // Packs found on open whose trailer could not be read, and index files that could not be read, with the reason.
  std::vector<std::pair<std::string, std::string>> unreadable_packs() const;
  std::vector<std::pair<std::string, std::string>> unreadable_indexes() const;

  // Reads, authenticates and decompresses a chunk into out[0 .. raw_len).
  void read_chunk(Codec& codec, const ChunkId& id, char* out, uint32_t expected_len) const;

  // Opens a blob already read from pack `pack` (check --read-data reads whole packs).
  void open_blob(Codec& codec, const ChunkId& id, const Location& loc, std::string_view box, char* out, const std::string& pack) const;

  std::unique_ptr<ChunkWriter> begin_write();

  // Snapshots.
  std::vector<std::string> snapshot_ids() const;
  Snapshot load_snapshot(const std::string& id) const;
  // Resolves an id or a unique prefix of at least 4 digits. Throws kNotFound / kInvalidArgument.
  std::string resolve_snapshot(const std::string& id_or_prefix) const;
  std::vector<Snapshot> list_snapshots() const;
  // The newest snapshot with this name, if any.
  std::optional<Snapshot> latest_snapshot(const std::string& name) const;
  // Stores the snapshot (assigning its id); returns the bytes written.
  uint64_t save_snapshot(Snapshot& snapshot);
  void delete_snapshot(const std::string& id);

  // Sealing of metadata objects (index, snapshot, pack header); the box is bound to its type and name,
  // so a renamed or swapped object fails authentication.
  std::string seal_object(char type, const std::string& name, std::string_view plaintext) const;
  std::string unseal_object(char type, const std::string& name, std::string_view box, const std::string& what) const;

  // --- Serving connectors (docs/formats.md, "Connector protocol") ---
  // A connector reads, hashes, compresses and seals chunks itself, so it needs the data keys. The server hands
  // them over its authenticated channel; the master key never leaves the server.
  std::string data_keys() const;  // 64 bytes: encryption key || id key
  // A view of a repository held elsewhere: what is written goes to `backend` (which uploads it), no index or pack
  // is read; `known` lists the chunks the real repository has (it is called again by reload_index()).
  // find() answers from `known` and this view's own writes; reading chunks is not possible.
  static std::unique_ptr<Repository> open_view(std::unique_ptr<Backend> backend, const RepositoryConfig& config,
                                               std::string_view data_keys, std::function<std::vector<ChunkId>()> known);
  enum class Verify { kAuthenticate, kFull };
  // Accepts a pack written by a view: its trailer must authenticate under `name`, every blob must lie inside it and
  // authenticate under its chunk id (kFull also decompresses and recomputes every id). Then it is stored durably and
  // indexed. Receiving a pack already stored is a no-op. Throws kCorrupt / kCrypto naming the pack; stores nothing then.
  void receive_pack(const std::string& name, std::string_view bytes, Verify verify = Verify::kAuthenticate);
  // Accepts an index file: it must authenticate and list only received packs, exactly as their trailers do.
  void receive_index(const std::string& name, std::string_view box);
  // Accepts a snapshot: it must authenticate under `id`, carry a correct digest and reference only stored chunks.
  // Stores it and returns it decoded.
  Snapshot receive_snapshot(const std::string& id, std::string_view box);
  // Every chunk id in the index.
  std::vector<ChunkId> chunk_ids() const;

  // Rebuilds the in-memory index from the backend (used by maintenance after rewriting indexes).
  void reload_index();

  // Every (chunk, location) pair known, including duplicates across packs.
  void for_each_entry(const std::function<void(const ChunkId&, const Location&)>& fn) const;

 private:
  friend class ChunkWriter;
  Repository() = default;
  void load_index();
  uint32_t add_pack_locked(const std::string& name);

  std::unique_ptr<Backend> backend_;
  std::function<std::vector<ChunkId>()> known_;  // set for a view
  RepositoryConfig config_;
  std::array<uint8_t, 32> enc_key_{}, id_key_{};
  mutable std::shared_mutex mu_;
  std::vector<std::string> packs_;
  std::unordered_map<std::string, uint32_t> pack_numbers_;
  std::unordered_map<ChunkId, Location, ChunkIdHash> index_;
  std::vector<std::pair<ChunkId, Location>> duplicates_;
  std::vector<std::string> unindexed_;
  std::vector<std::pair<std::string, std::string>> unreadable_;
  std::vector<std::pair<std::string, std::string>> unreadable_indexes_;
};

}  // namespace ferry::store
