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

// The secrets of a repository: the HMAC-SHA-256 key for chunk ids, and the AES-256-GCM data keys by number. Rotation
// adds a data key; new data is sealed under the newest, older data stays readable under its own. A connector's view
// holds the id key only (it never seals: the server does). Wiped from memory on destruction.
struct DataKeys {
  std::array<uint8_t, 32> id{};
  std::vector<std::array<uint8_t, 32>> data;
  DataKeys() = default;
  DataKeys(const DataKeys&) = default;
  DataKeys& operator=(const DataKeys&) = default;
  ~DataKeys();
  uint32_t current() const { return static_cast<uint32_t>(data.size() - 1); }  // REQUIRES: !data.empty()
};

struct RepositoryConfig {
  int version = 2;
  std::string id;
  uint32_t chunk_size = 0;
  uint32_t pack_size = 0;
  int zstd_level = 1;
  bool encrypted = false;
  std::string key_id;
};

// One pack's blobs, as its header and the index files list them (formats.md §9-10).
struct PackEntry {
  ChunkId id;
  uint32_t offset = 0;
  uint32_t stored_len = 0;
  uint32_t raw_len = 0;
  uint8_t compression = 0;
};
struct PackListing {
  std::string pack;  // 64 hex digits
  uint32_t key = 0;  // data key its blobs and header are sealed under
  std::vector<PackEntry> entries;
};

// Where a chunk is stored.
struct Location {
  uint32_t pack = 0;  // Repository::pack_name() / pack_key() of this number
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

// Decodes a snapshot's zstd-compressed plaintext (Repository::snapshot_plaintext, a parent handed to a connector).
// Throws kCorrupt naming the snapshot.
Snapshot decode_snapshot_plaintext(std::string_view compressed, const std::string& id);

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
  // Opens, unwrapping the keys with the master key named in the config (if encrypted); a wrong master key fails with
  // kCrypto before anything is read or written. A store of format version 1 is refused with kUnsupported.
  static std::unique_ptr<Repository> open(std::unique_ptr<Backend> backend, const Keyring& keyring);
  ~Repository();

  const RepositoryConfig& config() const { return config_; }
  Backend& backend() { return *backend_; }
  std::unique_ptr<Codec> new_codec() const;

  // Index.
  std::optional<Location> find(const ChunkId& id) const;
  std::string pack_name(uint32_t pack) const;
  uint32_t pack_key(uint32_t pack) const;  // the data key its blobs and header are sealed under
  size_t chunk_count() const;
  // Packs found on open that no index file lists (left by an interrupted run); they are indexed by the next commit.
  std::vector<std::string> unindexed_packs() const;
  // Packs found on open whose trailer could not be read, and index files that could not be read, with the reason.
  std::vector<std::pair<std::string, std::string>> unreadable_packs() const;
  std::vector<std::pair<std::string, std::string>> unreadable_indexes() const;

  // Reads, authenticates and decompresses a chunk into out[0 .. raw_len) and checks its HMAC against `id`: what
  // comes back is the chunk that was stored, or an error naming it.
  void read_chunk(Codec& codec, const ChunkId& id, char* out, uint32_t expected_len) const;

  // Opens a blob already read from pack `pack` (check --read-data reads whole packs); checks the HMAC as read_chunk.
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
  // Stores the snapshot (assigning its id); returns the bytes written. A view hands the server its plaintext.
  uint64_t save_snapshot(Snapshot& snapshot);
  void delete_snapshot(const std::string& id);

  // Sealing of metadata objects (index, snapshot): the current data key's number, then a box bound to the object's
  // type and name, so a renamed or swapped object fails authentication (docs/formats.md §5).
  std::string seal_object(char type, const std::string& name, std::string_view plaintext) const;
  std::string unseal_object(char type, const std::string& name, std::string_view sealed, const std::string& what) const;
  // The pack header box is sealed under the pack's key (named in its trailer).
  std::string seal_pack_header(uint32_t key, const std::string& name, std::string_view plaintext) const;
  std::string unseal_pack_header(uint32_t key, const std::string& name, std::string_view box, const std::string& what) const;
  bool is_view() const { return view_; }
  uint32_t current_key() const;  // the data key new data is sealed under

  // --- Keys ---
  // Adds a data key and makes it current: data written from now on is sealed under it; older data stays readable
  // under its own key. Rewrites keys/data atomically. With `new_master_key_id`, every key is also re-wrapped under that
  // master key (and the config names it). REQUIRES: the write lock; not a view.
  void rotate_keys(const Keyring& keyring, bool new_data_key, const std::string& new_master_key_id = "");
  // SHA-256 (hex) of the key file as stored: a server records it and notices a swapped key file.
  std::string key_file_digest() const;

  // --- Serving connectors (docs/formats.md, "Connector protocol") ---
  // A connector's view of a repository held by the server: it holds the id key only (to name chunks), never a data
  // key. Chunks it writes are compressed but not sealed, and go to `backend` (which uploads them) in the layout the
  // server seals in place; nothing is read from the backend. find() answers from the chunks this view wrote, the
  // parents' chunks, and what `lookup` said the server has: replicate() asks `lookup` (batched) which chunk ids the
  // server lacks before compressing them. `parents` are the snapshots latest_snapshot() knows (chunk tables only).
  using Lookup = std::function<std::vector<bool>(const std::vector<ChunkId>& ids)>;  // true = the server lacks it
  static std::unique_ptr<Repository> open_view(std::unique_ptr<Backend> backend, const RepositoryConfig& config, std::string_view id_key,
                                               Lookup lookup, std::vector<Snapshot> parents);
  const Lookup* lookup() const { return lookup_ ? &lookup_ : nullptr; }
  // A view notes ids the server said it has, so they are not asked for again.
  void note_present(const std::vector<ChunkId>& ids);

  // The id key a connector's view needs to name chunks (32 bytes). Never the data keys: those stay on the server.
  std::string id_key() const;
  // A stored snapshot's plaintext, zstd-compressed (formats.md §11): what a connector gets for a parent.
  std::string snapshot_plaintext(const std::string& id) const;

  // Which of `ids` the repository does not have (true = lacks).
  std::vector<bool> lacks(const std::vector<ChunkId>& ids) const;
  // Accepts a pack written by a view (formats.md §8, "wire pack"), in place: its listing must be well formed and
  // cover the body exactly, and every blob must decompress to its length and hash to its chunk id. Then the server
  // seals every blob and the header under its current data key in `data` itself, stores it durably and indexes it
  // from the listing it verified. A chunk the store already has keeps its first location. Receiving a pack already
  // stored is a no-op. Throws kCorrupt / kInvalidArgument naming the pack and the chunk; stores nothing then.
  // REQUIRES: data[0 .. size) is writable; page-aligned memory lets the backend write it without a copy.
  void receive_pack(const std::string& name, char* data, size_t size);
  // Accepts a snapshot's plaintext (zstd-compressed, formats.md §11) from a view: it must decode, be named
  // `expected_name` (if given; kInvalidArgument otherwise), carry a correct digest and reference only stored chunks.
  // Then it is sealed and stored under `id`; an id already stored is accepted again only with the same plaintext
  // (kConflict otherwise). Returns it decoded.
  Snapshot receive_snapshot(const std::string& id, std::string_view plaintext, const std::string& expected_name = "");
  // Writes an index file listing every pack no index file lists yet (received packs, adopted packs); the server calls
  // it when a disk's snapshot arrives, so index files are only ever written by the server from packs it verified.
  uint64_t index_unindexed();

  // Rebuilds the in-memory index from the backend (used by maintenance after rewriting indexes).
  void reload_index();

  // Every (chunk, location) pair known, including duplicates across packs.
  void for_each_entry(const std::function<void(const ChunkId&, const Location&)>& fn) const;

 private:
  friend class ChunkWriter;
  Repository() = default;
  void load_index();
  uint32_t add_pack_locked(const std::string& name, uint32_t key);
  std::string unseal_with(uint32_t key, char type, const std::string& name, std::string_view box, const std::string& what) const;

  std::unique_ptr<Backend> backend_;
  bool view_ = false;
  Lookup lookup_;                  // set for a view
  std::vector<Snapshot> parents_;  // a view's parents
  RepositoryConfig config_;
  DataKeys keys_;
  std::string key_file_digest_;
  mutable std::shared_mutex mu_;
  std::mutex receive_mu_;  // receive_snapshot
  struct Pack {
    std::string name;
    uint32_t key;
  };
  std::vector<Pack> packs_;
  std::unordered_map<std::string, uint32_t> pack_numbers_;
  std::unordered_map<ChunkId, Location, ChunkIdHash> index_;
  std::vector<std::pair<ChunkId, Location>> duplicates_;
  std::vector<PackListing> unindexed_;
  std::vector<std::pair<std::string, std::string>> unreadable_;
  std::vector<std::pair<std::string, std::string>> unreadable_indexes_;
};

}  // namespace ferry::store
