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

std::string key_aad(const std::string& repo_id, const std::string& key_id) { return "ferry-data-key-v1:" + repo_id + ":" + key_id; }

json parse_json(const std::string& text, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(ErrorKind::kCorrupt, what + " is not valid JSON: " + e.what());
  }
}

}  // namespace

void Repository::init(Backend& backend, const InitOptions& options, const Keyring& keyring) {
  if (backend.exists(ObjectType::kConfig, "config"))
    fail(ErrorKind::kInvalidArgument, "a ferry store already exists at '" + backend.location() + "'");
  if (options.zstd_level < -5 || options.zstd_level > 19)
    fail(ErrorKind::kInvalidArgument, "compression level must be between -5 (fastest) and 19 (smallest)");
  if (options.chunk_size < 4096 || options.chunk_size > (8u << 20) || (options.chunk_size & (options.chunk_size - 1)))
    fail(ErrorKind::kInvalidArgument, "chunk size must be a power of two between 4 KiB and 8 MiB");
  uint8_t raw_id[16];
  random_bytes(raw_id, sizeof raw_id);
  RepositoryConfig c;
  c.id = to_hex(raw_id, sizeof raw_id);
  c.chunk_size = options.chunk_size;
  c.pack_size = options.pack_size;
  c.zstd_level = options.zstd_level;
  c.encrypted = options.encrypt;
  c.key_id = options.key_id;

  uint8_t keys[64];
  random_bytes(keys, sizeof keys);
  json key_doc = {{"version", 1}, {"repository", c.id}};
  if (options.encrypt) {
    if (options.key_id.empty()) fail(ErrorKind::kInvalidArgument, "--encrypt needs a master key id (--key-id)");
    auto master = keyring.get(options.key_id);
    std::string wrapped = seal(master.data(), key_aad(c.id, c.key_id), std::string_view(reinterpret_cast<char*>(keys), 64));
    key_doc["key_id"] = c.key_id;
    key_doc["algorithm"] = "aes-256-gcm";
    key_doc["wrapped"] = to_hex(wrapped);
  } else {
    key_doc["key_id"] = "";
    key_doc["algorithm"] = "none";
    key_doc["keys"] = to_hex(keys, sizeof keys);
  }
  json config = {{"version", c.version}, {"id", c.id},          {"chunk_size", c.chunk_size}, {"pack_size", c.pack_size},
                 {"zstd_level", c.zstd_level}, {"encrypted", c.encrypted}, {"key_id", c.key_id}};
  // The key first: a config without a key would be a store nobody can open.
  backend.put(ObjectType::kKey, kKeyObject, key_doc.dump(2) + "\n");
  backend.put(ObjectType::kConfig, "config", config.dump(2) + "\n");
}

std::unique_ptr<Repository> Repository::open(std::unique_ptr<Backend> backend, const Keyring& keyring) {
  std::unique_ptr<Repository> repo(new Repository());
  std::string where = "store '" + backend->location() + "'";
  json config = parse_json(backend->get(ObjectType::kConfig, "config"), where + " config");
  RepositoryConfig& c = repo->config_;
  try {
    c.version = config.at("version");
    if (c.version != 1) fail(ErrorKind::kUnsupported, where + " has format version " + std::to_string(c.version) + "; this ferry reads version 1");
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
  json key_doc = parse_json(backend->get(ObjectType::kKey, kKeyObject), where + " key file");
  std::string keys;
  try {
    if (key_doc.at("repository") != c.id) fail(ErrorKind::kCorrupt, where + ": key file belongs to another repository");
    std::string alg = key_doc.at("algorithm");
    if (c.encrypted) {
      if (alg != "aes-256-gcm" || key_doc.at("key_id") != c.key_id) fail(ErrorKind::kCorrupt, where + ": key file does not match the config");
      auto master = keyring.get(c.key_id);
      std::string wrapped = from_hex(key_doc.at("wrapped").get<std::string>());
      try {
        keys = unseal(master.data(), key_aad(c.id, c.key_id), wrapped, "data key");
      } catch (const Error&) {
        fail(ErrorKind::kCrypto, "master key '" + c.key_id + "' from keyring '" + keyring.dir().string() + "' does not open " + where +
                                     " (wrong key?); nothing was read or written");
      }
    } else {
      if (alg != "none") fail(ErrorKind::kCorrupt, where + ": key file does not match the config");
      keys = from_hex(key_doc.at("keys").get<std::string>());
    }
  } catch (const json::exception& e) {
    fail(ErrorKind::kCorrupt, where + " key file: " + e.what());
  }
  if (keys.size() != 64) fail(ErrorKind::kCorrupt, where + ": data keys have the wrong length");
  std::memcpy(repo->enc_key_.data(), keys.data(), 32);
  std::memcpy(repo->id_key_.data(), keys.data() + 32, 32);
  repo->backend_ = std::move(backend);
  repo->load_index();
  return repo;
}

Repository::~Repository() = default;


std::string Repository::seal_object(char type, const std::string& name, std::string_view plaintext) const {
  return seal(enc_key_.data(), std::string("ferry-object:") + type + ":" + name, plaintext);
}

std::string Repository::unseal_object(char type, const std::string& name, std::string_view box, const std::string& what) const {
  return unseal(enc_key_.data(), std::string("ferry-object:") + type + ":" + name, box, what);
}

uint32_t Repository::add_pack_locked(const std::string& name) {
  auto [it, inserted] = pack_numbers_.emplace(name, static_cast<uint32_t>(packs_.size()));
  if (inserted) packs_.push_back(name);
  return it->second;
}

void Repository::load_index() {
  std::unique_lock lock(mu_);
  packs_.clear();
  pack_numbers_.clear();
  index_.clear();
  duplicates_.clear();
  unindexed_.clear();
  unreadable_.clear();
  unreadable_indexes_.clear();
  if (known_) {
    // A view: the repository's chunks live elsewhere; only their presence matters here.
    const Location remote{UINT32_MAX, 0, 0, 0, 0};
    for (auto& id : known_()) index_.emplace(id, remote);
    return;
  }
  auto add_listing = [&](const std::string& pack, const std::vector<PackEntry>& entries) {
    uint32_t p = add_pack_locked(pack);
    for (auto& e : entries) {
      Location loc{p, e.offset, e.stored_len, e.raw_len, e.compression};
      auto [it, inserted] = index_.emplace(e.id, loc);
      if (!inserted && it->second.pack != p) duplicates_.emplace_back(e.id, loc);
    }
  };
  // Listings from the index files, in a stable order.
  std::vector<std::pair<std::string, std::vector<PackEntry>>> listed;
  auto index_names = backend_->list(ObjectType::kIndex);
  std::sort(index_names.begin(), index_names.end());
  for (auto& name : index_names) {
    std::string what = "index '" + name + "'";
    try {
      for (auto& l : decode_index(unseal_object('I', name, backend_->get(ObjectType::kIndex, name), what), what))
        listed.emplace_back(std::move(l.pack), std::move(l.entries));
    } catch (const Error& e) {
      unreadable_indexes_.emplace_back(name, e.what());
    }
  }
  auto on_disk = backend_->list(ObjectType::kPack);
  std::unordered_set<std::string> present(on_disk.begin(), on_disk.end()), seen, damaged;
  // A listed pack that is missing or shorter than its listing (a truncated upload) must not be used for
  // deduplication: its chunks are dropped from the index, so the next run stores them again.
  for (auto& [pack, entries] : listed) {
    if (!seen.insert(pack).second || damaged.count(pack)) continue;
    uint64_t need = 0;
    for (auto& e : entries) need = std::max<uint64_t>(need, uint64_t{e.offset} + e.stored_len);
    std::string why;
    if (!present.count(pack)) {
      why = "pack '" + pack + "' is listed in the index but missing from the store";
    } else {
      uint64_t size = backend_->size(ObjectType::kPack, pack);
      if (size < need + kPackTrailerSize + kBoxOverhead)
        why = "pack '" + pack + "' is truncated (" + std::to_string(size) + " bytes, its index needs more than " + std::to_string(need) + ")";
    }
    if (!why.empty()) {
      damaged.insert(pack);
      unreadable_.emplace_back(pack, why);
    }
  }
  for (auto& [pack, entries] : listed)
    if (!damaged.count(pack)) add_listing(pack, entries);
  std::sort(on_disk.begin(), on_disk.end());
  for (auto& name : on_disk) {
    if (seen.count(name)) continue;
    try {
      add_listing(name, read_pack_header(*this, *backend_, name));
      unindexed_.push_back(name);
    } catch (const Error& e) {
      unreadable_.emplace_back(name, e.what());
    }
  }
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
  return packs_.at(pack);
}

size_t Repository::chunk_count() const {
  std::shared_lock lock(mu_);
  return index_.size();
}

std::vector<std::string> Repository::unindexed_packs() const {
  std::shared_lock lock(mu_);
  return unindexed_;
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
  auto loc = find(id);
  if (!loc) fail(ErrorKind::kNotFound, "chunk " + id.hex() + " is missing from store '" + backend_->location() + "'");
  std::string pack = pack_name(loc->pack);
  if (loc->raw_len != expected_len)
    fail(ErrorKind::kCorrupt, "chunk " + id.hex() + " in pack '" + pack + "' has length " + std::to_string(loc->raw_len) + ", expected " +
                                  std::to_string(expected_len));
  char* box = codec_scratch(*codec.impl_, loc->stored_len);
  backend_->read_range(ObjectType::kPack, pack, loc->offset, loc->stored_len, box);
  open_chunk(*codec.impl_, id, std::string_view(box, loc->stored_len), static_cast<Compression>(loc->compression), loc->raw_len, out,
             "pack '" + pack + "' at offset " + std::to_string(loc->offset));
}

void Repository::open_blob(Codec& codec, const ChunkId& id, const Location& loc, std::string_view box, char* out,
                           const std::string& pack) const {
  open_chunk(*codec.impl_, id, box, static_cast<Compression>(loc.compression), loc.raw_len, out,
             "pack '" + pack + "' at offset " + std::to_string(loc.offset));
}

std::vector<std::string> Repository::snapshot_ids() const { return backend_->list(ObjectType::kSnapshot); }

Snapshot Repository::load_snapshot(const std::string& id) const {
  std::string what = "snapshot '" + id + "'";
  return decode_snapshot(unseal_object('S', id, backend_->get(ObjectType::kSnapshot, id), what), id);
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
  std::string data = seal_object('S', snapshot.id, encode_snapshot(snapshot));
  fault_point("snapshot");
  backend_->put(ObjectType::kSnapshot, snapshot.id, data);
  return data.size();
}

void Repository::delete_snapshot(const std::string& id) {
  if (!backend_->exists(ObjectType::kSnapshot, id)) fail(ErrorKind::kNotFound, "no snapshot '" + id + "' in store '" + backend_->location() + "'");
  backend_->remove(ObjectType::kSnapshot, id);
}

}  // namespace ferry::store
