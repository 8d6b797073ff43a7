// The two ends of a connector upload: a repository view that names and compresses chunks where the disk is (it holds
// the id key only), and the server's acceptance of its packs and snapshots: every chunk verified against its id,
// then sealed and indexed by the server itself.
#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "common/error.h"
#include "common/fault.h"
#include "common/hex.h"
#include "store/crypto.h"
#include "store/format.h"
#include "store/repository.h"

namespace ferry::store {

std::unique_ptr<Repository> Repository::open_view(std::unique_ptr<Backend> backend, const RepositoryConfig& config, std::string_view id_key,
                                                  Lookup lookup, std::vector<Snapshot> parents) {
  if (id_key.size() != 32) fail(ErrorKind::kInvalidArgument, "a repository view needs the 32-byte id key");
  if (!lookup) fail(ErrorKind::kInvalidArgument, "a repository view needs a way to ask which chunks the server lacks");
  std::unique_ptr<Repository> repo(new Repository());
  repo->config_ = config;
  std::memcpy(repo->keys_.id.data(), id_key.data(), 32);
  repo->backend_ = std::move(backend);
  repo->view_ = true;
  repo->lookup_ = std::move(lookup);
  repo->parents_ = std::move(parents);
  repo->load_index();
  return repo;
}

std::string Repository::id_key() const { return std::string(reinterpret_cast<const char*>(keys_.id.data()), keys_.id.size()); }

std::string Repository::snapshot_plaintext(const std::string& id) const {
  if (view_) fail(ErrorKind::kUnsupported, "a repository view holds no snapshots");
  std::string what = "snapshot '" + id + "'";
  uint64_t size = backend_->size(ObjectType::kSnapshot, id);
  if (size > kMaxSnapshotObject) fail(ErrorKind::kCorrupt, what + " is " + std::to_string(size) + " bytes, larger than any snapshot ferry writes");
  return unseal_object('S', id, backend_->get(ObjectType::kSnapshot, id), what);
}

Snapshot decode_snapshot_plaintext(std::string_view compressed, const std::string& id) {
  std::string what = "snapshot '" + id + "'";
  return decode_snapshot(decompress_object(compressed, kMaxSnapshotObject, what), id);
}

void Repository::note_present(const std::vector<ChunkId>& ids) {
  const Location remote{UINT32_MAX, 0, 0, 0, 0};
  std::unique_lock lock(mu_);
  for (auto& id : ids) index_.emplace(id, remote);
}

std::vector<bool> Repository::lacks(const std::vector<ChunkId>& ids) const {
  std::vector<bool> out(ids.size());
  std::shared_lock lock(mu_);
  for (size_t i = 0; i < ids.size(); i++) out[i] = !index_.count(ids[i]);
  return out;
}

void Repository::receive_pack(const std::string& name, char* data, size_t size) {
  if (!is_lower_hex(name, 64)) fail(ErrorKind::kInvalidArgument, "pack name '" + name + "' is not 64 lower-case hex digits");
  if (view_) fail(ErrorKind::kUnsupported, "a repository view cannot receive packs");
  {
    std::shared_lock lock(mu_);
    if (pack_numbers_.count(name)) return;  // a retried upload of a pack already stored
  }
  std::string where = "uploaded pack '" + name + "'";
  // A pack closes once it reaches pack_size, so it exceeds it by at most a blob and its header; every blob takes at
  // least a box's overhead. What a connector can make the server hold per pack follows from the store's config.
  const size_t max_entries = config_.pack_size / kBoxOverhead + 1;
  const uint64_t max_size = uint64_t{config_.pack_size} + 2 * uint64_t{config_.chunk_size} + 1024 + max_entries * (kPackEntrySize + 1);
  if (size > max_size)
    fail(ErrorKind::kInvalidArgument, where + " is " + std::to_string(size) + " bytes; this store's packs are at most " + std::to_string(max_size));
  WirePack wire = parse_wire_pack(std::string_view(data, size), config_.chunk_size, max_entries, where);
  uint32_t key = current_key();
  auto codec = new_codec();
  for (auto& e : wire.entries)
    verify_and_seal_chunk(*codec->impl_, key, e.id, data + e.offset, e.stored_len, static_cast<Compression>(e.compression), e.raw_len, where);
  {
    std::array<uint8_t, 32> k;
    {
      std::shared_lock lock(mu_);
      k = keys_.data[key];
    }
    seal_in_place(k.data(), "ferry-object:P:" + name, data + wire.header_offset, wire.header_len);
    wipe(k.data(), k.size());
  }
  std::memcpy(data + size - 12, &key, 4);
  std::memcpy(data + size - 8, kPackMagic.data(), kPackMagic.size());
  auto writer = backend_->create(ObjectType::kPack);
  writer->append(std::string_view(data, size));
  writer->commit(name);
  // Indexed from the listing verified above; a chunk the store already has keeps its first (verified) location.
  std::unique_lock lock(mu_);
  uint32_t p = add_pack_locked(name, key);
  for (auto& e : wire.entries) index_.emplace(e.id, Location{p, e.offset, e.stored_len, e.raw_len, e.compression});
  unindexed_.push_back({name, key, std::move(wire.entries)});
}

uint64_t Repository::index_unindexed() {
  std::vector<PackListing> listings;
  {
    std::unique_lock lock(mu_);
    listings.swap(unindexed_);
  }
  if (listings.empty()) return 0;
  try {
    return write_index_files(*this, *backend_, listings);
  } catch (...) {
    std::unique_lock lock(mu_);  // not indexed after all: the next call tries again (a restart adopts them anyway)
    unindexed_.insert(unindexed_.end(), std::make_move_iterator(listings.begin()), std::make_move_iterator(listings.end()));
    throw;
  }
}

Snapshot Repository::receive_snapshot(const std::string& id, std::string_view data, const std::string& expected_name) {
  if (!is_lower_hex(id, 32)) fail(ErrorKind::kInvalidArgument, "snapshot id '" + id + "' is not 32 lower-case hex digits");
  if (view_) fail(ErrorKind::kUnsupported, "a repository view cannot receive snapshots");
  std::string what = "uploaded snapshot '" + id + "'";
  std::lock_guard receiving(receive_mu_);  // one at a time: the id check and the write are one step
  std::string plain = decompress_object(data, kMaxSnapshotObject, what);
  Snapshot s = decode_snapshot(plain, id);
  if (!expected_name.empty() && s.name != expected_name)
    fail(ErrorKind::kInvalidArgument, what + " is named '" + s.name + "', expected '" + expected_name + "'");
  if (s.chunk_size != config_.chunk_size) fail(ErrorKind::kCorrupt, what + ": chunk size differs from the store's");
  if (!(s.compute_digest() == s.digest)) fail(ErrorKind::kCorrupt, what + ": its digest does not match its chunk table");
  {
    std::shared_lock lock(mu_);
    size_t missing = 0;
    std::string first;
    for (auto& [index, chunk] : s.chunks)
      if (!index_.count(chunk) && missing++ == 0) first = chunk.hex();
    if (missing)
      fail(ErrorKind::kCorrupt, what + " references " + std::to_string(missing) + " chunk(s) the store does not have (first: " + first + ")");
  }
  if (backend_->exists(ObjectType::kSnapshot, id)) {
    // A retried upload is the same snapshot; anything else under that id is refused, never stored over it.
    std::string stored_what = "snapshot '" + id + "'";
    std::string stored = decompress_object(unseal_object('S', id, backend_->get(ObjectType::kSnapshot, id), stored_what), kMaxSnapshotObject,
                                           stored_what);
    if (stored != plain) fail(ErrorKind::kConflict, what + ": a different snapshot with this id is already stored");
    return s;
  }
  index_unindexed();  // packs, then an index listing them, then the snapshot (formats.md §3)
  backend_->put(ObjectType::kSnapshot, id, seal_object('S', id, data));  // `data` is one checked zstd frame
  return s;
}

}  // namespace ferry::store
