// Repository: config and keys, the in-memory index, chunk reads and snapshots.
#include "store/repository.h"

#include <algorithm>
#include <chrono>
#include <unordered_set>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fault.h"
#include "common/hex.h"
#include "store/crypto.h"
#include "store/format.h"

namespace ferry::store {

using nlohmann::json;

std::string ChunkId::hex() const { return to_hex(bytes.data(), bytes.size()); }

namespace {

constexpr const char* kKeyObject = "data";

// Additional data of a wrapped key: which store, which master key, which of the store's keys.
std::string wrap_aad(const std::string& repo_id, const std::string& master_key_id, const std::string& which) {
  return "ferry-key-v2:" + repo_id + ":" + master_key_id + ":" + which;
}
std::string data_key_name(size_t n) { return "data:" + std::to_string(n); }

json parse_json(const std::string& text, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(ErrorKind::kCorrupt, what + " is not valid JSON: " + e.what());
  }
}

// A small object (config, key file) read whole, refused by name when larger than any ferry writes.
std::string get_small(Backend& backend, ObjectType type, const std::string& name, const std::string& what) {
  uint64_t size = backend.size(type, name);
  if (size > kMaxSmallObject) fail(ErrorKind::kCorrupt, what + " is " + std::to_string(size) + " bytes, larger than any ferry writes");
  return backend.get(type, name);
}

}  // namespace

// The key file (formats.md §4.2): every key wrapped under the master key (encrypted store) or in clear.
std::string encode_keys(const RepositoryConfig& c, const DataKeys& keys, const Keyring& keyring) {
  json doc = {{"version", 2}, {"repository", c.id}, {"key_id", c.encrypted ? c.key_id : ""}, {"algorithm", c.encrypted ? "aes-256-gcm" : "none"}};
  std::array<uint8_t, 32> master{};
  if (c.encrypted) master = keyring.get(c.key_id);
  auto put = [&](const std::array<uint8_t, 32>& key, const std::string& which) {
    std::string_view raw(reinterpret_cast<const char*>(key.data()), key.size());
    return c.encrypted ? to_hex(seal(master.data(), wrap_aad(c.id, c.key_id, which), raw)) : to_hex(raw);
  };
  doc["id_key"] = put(keys.id, "id");
  json data = json::array();
  for (size_t n = 0; n < keys.data.size(); n++) data.push_back(put(keys.data[n], data_key_name(n)));
  doc["data_keys"] = data;
  wipe(master.data(), master.size());
  return doc.dump(2) + "\n";
}

// Reads the key file; `c.key_id` is set from it (after a re-wrap it names the new master key).
DataKeys decode_keys(RepositoryConfig& c, const std::string& text, const Keyring& keyring, const std::string& where) {
  json doc = parse_json(text, where + " key file");
  DataKeys keys;
  try {
    if (doc.at("version") != 2) fail(ErrorKind::kCorrupt, where + ": key file has an unknown version");
    if (doc.at("repository") != c.id) fail(ErrorKind::kCorrupt, where + ": key file belongs to another repository");
    std::string alg = doc.at("algorithm");
    if (alg != (c.encrypted ? "aes-256-gcm" : "none")) fail(ErrorKind::kCorrupt, where + ": key file does not match the config");
    std::array<uint8_t, 32> master{};
    if (c.encrypted) {
      c.key_id = doc.at("key_id").get<std::string>();
      master = keyring.get(c.key_id);
    }
    auto get = [&](const json& hex, const std::string& which) {
      std::string raw = from_hex(hex.get<std::string>());
      if (c.encrypted) {
        try {
          raw = unseal(master.data(), wrap_aad(c.id, c.key_id, which), raw, "key");
        } catch (const Error&) {
          wipe(master.data(), master.size());
          fail(ErrorKind::kCrypto, "master key '" + c.key_id + "' from keyring '" + keyring.dir().string() + "' does not open " + where +
                                       " (wrong key?); nothing was read or written");
        }
      }
      if (raw.size() != 32) fail(ErrorKind::kCorrupt, where + ": a key in the key file has the wrong length");
      std::array<uint8_t, 32> key;
      std::memcpy(key.data(), raw.data(), 32);
      wipe(raw.data(), raw.size());
      return key;
    };
    keys.id = get(doc.at("id_key"), "id");
    const json& data = doc.at("data_keys");
    if (!data.is_array() || data.empty() || data.size() > 65536) fail(ErrorKind::kCorrupt, where + ": key file lists no data keys");
    for (size_t n = 0; n < data.size(); n++) keys.data.push_back(get(data[n], data_key_name(n)));
    wipe(master.data(), master.size());
  } catch (const json::exception& e) {
    fail(ErrorKind::kCorrupt, where + " key file: " + e.what());
  }
  return keys;
}

namespace {

json config_json(const RepositoryConfig& c) {
  return {{"version", c.version}, {"id", c.id}, {"chunk_size", c.chunk_size}, {"pack_size", c.pack_size},
          {"zstd_level", c.zstd_level}, {"encrypted", c.encrypted}, {"key_id", c.key_id}};
}

}  // namespace

void Repository::init(Backend& backend, const InitOptions& options, const Keyring& keyring) {
  if (backend.exists(ObjectType::kConfig, "config"))
    fail(ErrorKind::kInvalidArgument, "a ferry store already exists at '" + backend.location() + "'");
  if (options.zstd_level < -5 || options.zstd_level > 19)
    fail(ErrorKind::kInvalidArgument, "compression level must be between -5 (fastest) and 19 (smallest)");
  if (options.chunk_size < 4096 || options.chunk_size > (8u << 20) || (options.chunk_size & (options.chunk_size - 1)))
    fail(ErrorKind::kInvalidArgument, "chunk size must be a power of two between 4 KiB and 8 MiB");
  if (options.encrypt && options.key_id.empty()) fail(ErrorKind::kInvalidArgument, "--encrypt needs a master key id (--key-id)");
  uint8_t raw_id[16];
  random_bytes(raw_id, sizeof raw_id);
  RepositoryConfig c;
  c.id = to_hex(raw_id, sizeof raw_id);
  c.chunk_size = options.chunk_size;
  c.pack_size = options.pack_size;
  c.zstd_level = options.zstd_level;
  c.encrypted = options.encrypt;
  c.key_id = options.encrypt ? options.key_id : "";
  DataKeys keys;
  random_bytes(keys.id.data(), 32);
  keys.data.emplace_back();
  random_bytes(keys.data[0].data(), 32);
  // The key first: a config without a key would be a store nobody can open.
  backend.put(ObjectType::kKey, kKeyObject, encode_keys(c, keys, keyring));
  backend.put(ObjectType::kConfig, "config", config_json(c).dump(2) + "\n");
}

std::unique_ptr<Repository> Repository::open(std::unique_ptr<Backend> backend, const Keyring& keyring) {
  std::unique_ptr<Repository> repo(new Repository());
  std::string where = "store '" + backend->location() + "'";
  json config = parse_json(get_small(*backend, ObjectType::kConfig, "config", where + " config"), where + " config");
  RepositoryConfig& c = repo->config_;
  try {
    c.version = config.at("version");
    if (c.version == 1)
      fail(ErrorKind::kUnsupported, where + " has format version 1, which this ferry does not read: version 2 binds each chunk's compression "
                                            "and length into its authentication and keeps rotatable keys. Export its images with the "
                                            "ferry that wrote it, then replicate into a new store");
    if (c.version != 2) fail(ErrorKind::kUnsupported, where + " has format version " + std::to_string(c.version) + "; this ferry reads version 2");
    c.id = config.at("id");
    c.chunk_size = config.at("chunk_size");
    c.pack_size = config.at("pack_size");
    c.zstd_level = config.at("zstd_level");
    c.encrypted = config.at("encrypted");
    c.key_id = config.at("key_id");
  } catch (const json::exception& e) {
    fail(ErrorKind::kCorrupt, where + " config: " + e.what());
  }
  if (c.chunk_size < 4096 || c.chunk_size > (8u << 20) || (c.chunk_size & (c.chunk_size - 1)) || c.pack_size < c.chunk_size ||
      c.pack_size > (1u << 30) || c.zstd_level < -5 || c.zstd_level > 19)
    fail(ErrorKind::kCorrupt, where + " config: chunk_size, pack_size or zstd_level is out of range");
  std::string key_text = get_small(*backend, ObjectType::kKey, kKeyObject, where + " key file");
  repo->keys_ = decode_keys(c, key_text, keyring, where);
  repo->key_file_digest_ = to_hex(sha256(key_text));
  repo->backend_ = std::move(backend);
  repo->load_index();
  return repo;
}

void Repository::rotate_keys(const Keyring& keyring, bool new_data_key, const std::string& new_master_key_id) {
  if (view_) fail(ErrorKind::kUnsupported, "a repository view holds no keys to rotate");
  RepositoryConfig c = config_;
  if (!new_master_key_id.empty()) {
    if (!c.encrypted) fail(ErrorKind::kInvalidArgument, "store '" + backend_->location() + "' is not encrypted: it has no master key to change");
    keyring.get(new_master_key_id);  // exists, or a clear error before anything changes
    c.key_id = new_master_key_id;
  }
  DataKeys keys = keys_;
  if (new_data_key) {
    if (keys.data.size() >= 65536) fail(ErrorKind::kInvalidArgument, "store '" + backend_->location() + "' already has 65536 data keys");
    keys.data.emplace_back();
    random_bytes(keys.data.back().data(), 32);
  }
  // Every key is re-wrapped (fresh nonces; under the new master key if one is given). The key file names its master
  // key, so a crash before the config follows still opens; the config is rewritten for readers of the config alone.
  std::string text = encode_keys(c, keys, keyring);
  backend_->put(ObjectType::kKey, kKeyObject, text);
  if (c.key_id != config_.key_id) backend_->put(ObjectType::kConfig, "config", config_json(c).dump(2) + "\n");
  std::unique_lock lock(mu_);
  config_ = c;
  keys_ = keys;
  key_file_digest_ = to_hex(sha256(text));
}

std::string Repository::key_file_digest() const {
  std::shared_lock lock(mu_);
  return key_file_digest_;
}

uint32_t Repository::current_key() const {
  std::shared_lock lock(mu_);
  if (keys_.data.empty()) fail(ErrorKind::kUnsupported, "a repository view has no data key");
  return keys_.current();
}

Repository::~Repository() = default;


namespace {
std::string object_aad(char type, const std::string& name) { return std::string("ferry-object:") + type + ":" + name; }
}  // namespace

std::string Repository::seal_object(char type, const std::string& name, std::string_view plaintext) const {
  uint32_t key = current_key();
  std::array<uint8_t, 32> k;
  {
    std::shared_lock lock(mu_);
    k = keys_.data[key];
  }
  std::string out(reinterpret_cast<const char*>(&key), 4);
  out += seal(k.data(), object_aad(type, name), plaintext);
  wipe(k.data(), k.size());
  return out;
}

std::string Repository::unseal_object(char type, const std::string& name, std::string_view sealed, const std::string& what) const {
  if (sealed.size() < 4 + kBoxOverhead) fail(ErrorKind::kCorrupt, what + ": too short to be a sealed object");
  uint32_t key;
  std::memcpy(&key, sealed.data(), 4);
  return unseal_with(key, type, name, sealed.substr(4), what);
}

std::string Repository::seal_pack_header(uint32_t key, const std::string& name, std::string_view plaintext) const {
  std::shared_lock lock(mu_);
  if (key >= keys_.data.size()) fail(ErrorKind::kUnsupported, "no data key " + std::to_string(key));
  return seal(keys_.data[key].data(), object_aad('P', name), plaintext);
}

std::string Repository::unseal_pack_header(uint32_t key, const std::string& name, std::string_view box, const std::string& what) const {
  return unseal_with(key, 'P', name, box, what);
}

std::string Repository::unseal_with(uint32_t key, char type, const std::string& name, std::string_view box, const std::string& what) const {
  std::array<uint8_t, 32> k;
  {
    std::shared_lock lock(mu_);
    if (key >= keys_.data.size())
      fail(ErrorKind::kCorrupt, what + ": sealed with data key " + std::to_string(key) + ", which this store's key file does not have");
    k = keys_.data[key];
  }
  std::string plain = unseal(k.data(), object_aad(type, name), box, what);
  wipe(k.data(), k.size());
  return plain;
}

uint32_t Repository::add_pack_locked(const std::string& name, uint32_t key) {
  auto [it, inserted] = pack_numbers_.emplace(name, static_cast<uint32_t>(packs_.size()));
  if (inserted) packs_.push_back({name, key});
  return it->second;
}

void Repository::load_index() {
  // Built aside and swapped in at the end: reading and authenticating index files and pack trailers takes the
  // keys (under mu_), and readers keep the old index meanwhile.
  std::vector<Pack> packs;
  std::unordered_map<std::string, uint32_t> pack_numbers;
  std::unordered_map<ChunkId, Location, ChunkIdHash> index;
  std::vector<std::pair<ChunkId, Location>> duplicates;
  std::vector<PackListing> unindexed;
  std::vector<std::pair<std::string, std::string>> unreadable, unreadable_indexes;
  auto swap_in = [&] {
    std::unique_lock lock(mu_);
    packs_ = std::move(packs);
    pack_numbers_ = std::move(pack_numbers);
    index_ = std::move(index);
    duplicates_ = std::move(duplicates);
    unindexed_ = std::move(unindexed);
    unreadable_ = std::move(unreadable);
    unreadable_indexes_ = std::move(unreadable_indexes);
  };
  if (view_) {
    // A view: the repository's chunks live on the server; only their presence matters here.
    const Location remote{UINT32_MAX, 0, 0, 0, 0};
    for (auto& parent : parents_)
      for (auto& [i, id] : parent.chunks) index.emplace(id, remote);
    swap_in();
    return;
  }
  auto add_listing = [&](const PackListing& l) {
    auto [it, inserted] = pack_numbers.emplace(l.pack, static_cast<uint32_t>(packs.size()));
    if (inserted) packs.push_back({l.pack, l.key});
    uint32_t p = it->second;
    for (auto& e : l.entries) {
      Location loc{p, e.offset, e.stored_len, e.raw_len, e.compression};
      auto [at, fresh] = index.emplace(e.id, loc);
      if (!fresh && at->second.pack != p) duplicates.emplace_back(e.id, loc);
    }
  };
  // Listings from the index files, in a stable order.
  std::vector<PackListing> listed;
  auto index_names = backend_->list(ObjectType::kIndex);
  std::sort(index_names.begin(), index_names.end());
  for (auto& name : index_names) {
    std::string what = "index '" + name + "'";
    try {
      uint64_t size = backend_->size(ObjectType::kIndex, name);
      if (size > kMaxIndexObject)
        fail(ErrorKind::kCorrupt, what + " is " + std::to_string(size) + " bytes, larger than any index file ferry writes");
      std::string plain = decompress_object(unseal_object('I', name, backend_->get(ObjectType::kIndex, name), what), kMaxIndexObject, what);
      for (auto& l : decode_index(plain, what)) listed.push_back(std::move(l));
    } catch (const Error& e) {
      unreadable_indexes.emplace_back(name, e.what());
    }
  }
  auto on_disk = backend_->list(ObjectType::kPack);
  std::unordered_set<std::string> present(on_disk.begin(), on_disk.end()), seen, damaged;
  // A listed pack that is missing or shorter than its listing (a truncated upload) must not be used for
  // deduplication: its chunks are dropped from the index, so the next run stores them again.
  for (auto& l : listed) {
    if (!seen.insert(l.pack).second || damaged.count(l.pack)) continue;
    uint64_t need = 0;
    for (auto& e : l.entries) need = std::max<uint64_t>(need, uint64_t{e.offset} + e.stored_len);
    std::string why;
    if (!present.count(l.pack)) {
      why = "pack '" + l.pack + "' is listed in the index but missing from the store";
    } else {
      uint64_t size = backend_->size(ObjectType::kPack, l.pack);
      if (size < need + kPackTrailerSize + kBoxOverhead)
        why = "pack '" + l.pack + "' is truncated (" + std::to_string(size) + " bytes, its index needs more than " + std::to_string(need) + ")";
    }
    if (!why.empty()) {
      damaged.insert(l.pack);
      unreadable.emplace_back(l.pack, why);
    }
  }
  for (auto& l : listed)
    if (!damaged.count(l.pack)) add_listing(l);
  std::sort(on_disk.begin(), on_disk.end());
  for (auto& name : on_disk) {
    if (seen.count(name)) continue;
    try {
      PackListing l = read_pack_header(*this, *backend_, name);
      add_listing(l);
      unindexed.push_back(std::move(l));
    } catch (const Error& e) {
      unreadable.emplace_back(name, e.what());
    }
  }
  swap_in();
}

void Repository::reload_index() { load_index(); }

std::optional<Location> Repository::find(const ChunkId& id) const {
  std::shared_lock lock(mu_);
  auto it = index_.find(id);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

std::string Repository::pack_name(uint32_t pack) const {
  std::shared_lock lock(mu_);
  return packs_.at(pack).name;
}

uint32_t Repository::pack_key(uint32_t pack) const {
  std::shared_lock lock(mu_);
  return packs_.at(pack).key;
}

size_t Repository::chunk_count() const {
  std::shared_lock lock(mu_);
  return index_.size();
}

std::vector<std::string> Repository::unindexed_packs() const {
  std::shared_lock lock(mu_);
  std::vector<std::string> names;
  for (auto& l : unindexed_) names.push_back(l.pack);
  return names;
}

std::vector<std::pair<std::string, std::string>> Repository::unreadable_packs() const {
  std::shared_lock lock(mu_);
  return unreadable_;
}

std::vector<std::pair<std::string, std::string>> Repository::unreadable_indexes() const {
  std::shared_lock lock(mu_);
  return unreadable_indexes_;
}

void Repository::for_each_entry(const std::function<void(const ChunkId&, const Location&)>& fn) const {
  std::shared_lock lock(mu_);
  for (auto& [id, loc] : index_) fn(id, loc);
  for (auto& [id, loc] : duplicates_) fn(id, loc);
}

void Repository::read_chunk(Codec& codec, const ChunkId& id, char* out, uint32_t expected_len) const {
  if (view_) fail(ErrorKind::kUnsupported, "a repository view cannot read chunks");
  Location loc;
  Pack pack;
  {
    std::shared_lock lock(mu_);
    auto it = index_.find(id);
    if (it == index_.end()) fail(ErrorKind::kNotFound, "chunk " + id.hex() + " is missing from store '" + backend_->location() + "'");
    loc = it->second;
    pack = packs_.at(loc.pack);
  }
  if (loc.raw_len != expected_len)
    fail(ErrorKind::kCorrupt, "chunk " + id.hex() + " in pack '" + pack.name + "' has length " + std::to_string(loc.raw_len) + ", expected " +
                                  std::to_string(expected_len));
  char* box = codec_scratch(*codec.impl_, loc.stored_len);
  backend_->read_range(ObjectType::kPack, pack.name, loc.offset, loc.stored_len, box);
  open_chunk(*codec.impl_, pack.key, id, std::string_view(box, loc.stored_len), static_cast<Compression>(loc.compression), loc.raw_len, out,
             "pack '" + pack.name + "' at offset " + std::to_string(loc.offset));
}

void Repository::open_blob(Codec& codec, const ChunkId& id, const Location& loc, std::string_view box, char* out,
                           const std::string& pack) const {
  open_chunk(*codec.impl_, pack_key(loc.pack), id, box, static_cast<Compression>(loc.compression), loc.raw_len, out,
             "pack '" + pack + "' at offset " + std::to_string(loc.offset));
}

std::vector<std::string> Repository::snapshot_ids() const {
  if (view_) {
    std::vector<std::string> ids;
    for (auto& p : parents_) ids.push_back(p.id);
    return ids;
  }
  return backend_->list(ObjectType::kSnapshot);
}

Snapshot Repository::load_snapshot(const std::string& id) const {
  if (view_) {
    for (auto& p : parents_)
      if (p.id == id) return p;
    fail(ErrorKind::kNotFound, "snapshot '" + id + "' is not a parent of this run");
  }
  std::string what = "snapshot '" + id + "'";
  uint64_t size = backend_->size(ObjectType::kSnapshot, id);
  if (size > kMaxSnapshotObject) fail(ErrorKind::kCorrupt, what + " is " + std::to_string(size) + " bytes, larger than any snapshot ferry writes");
  return decode_snapshot(decompress_object(unseal_object('S', id, backend_->get(ObjectType::kSnapshot, id), what), kMaxSnapshotObject, what), id);
}

std::string Repository::resolve_snapshot(const std::string& prefix) const {
  if (prefix.size() < 4) fail(ErrorKind::kInvalidArgument, "snapshot id '" + prefix + "' is too short: give at least 4 digits");
  std::vector<std::string> matches;
  for (auto& id : snapshot_ids())
    if (id.rfind(prefix, 0) == 0) matches.push_back(id);
  if (matches.empty()) fail(ErrorKind::kNotFound, "no snapshot '" + prefix + "' in store '" + backend_->location() + "'");
  if (matches.size() > 1) fail(ErrorKind::kInvalidArgument, "snapshot id '" + prefix + "' is ambiguous (" + std::to_string(matches.size()) + " match)");
  return matches[0];
}

std::vector<Snapshot> Repository::list_snapshots() const {
  std::vector<Snapshot> out;
  for (auto& id : snapshot_ids()) out.push_back(load_snapshot(id));
  std::sort(out.begin(), out.end(), [](const Snapshot& a, const Snapshot& b) {
    return a.created != b.created ? a.created < b.created : a.id < b.id;
  });
  return out;
}

std::optional<Snapshot> Repository::latest_snapshot(const std::string& name) const {
  std::optional<Snapshot> best;
  for (auto& s : list_snapshots())
    if (s.name == name) best = std::move(s);
  return best;
}

uint64_t Repository::save_snapshot(Snapshot& snapshot) {
  uint8_t raw[16];
  random_bytes(raw, sizeof raw);
  snapshot.id = to_hex(raw, sizeof raw);
  std::string plain = compress_object(encode_snapshot(snapshot));
  // A view hands the plaintext to the server, which checks it against what it stored and seals it.
  std::string data = view_ ? std::move(plain) : seal_object('S', snapshot.id, plain);
  fault_point("snapshot");
  backend_->put(ObjectType::kSnapshot, snapshot.id, data);
  return data.size();
}

void Repository::delete_snapshot(const std::string& id) {
  if (!backend_->exists(ObjectType::kSnapshot, id)) fail(ErrorKind::kNotFound, "no snapshot '" + id + "' in store '" + backend_->location() + "'");
  backend_->remove(ObjectType::kSnapshot, id);
}

}  // namespace ferry::store
