// The two ends of a connector upload: a repository view that seals chunks where the disk is, and the server-side
// checks that accept its packs, index files and snapshots into the real repository.
#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "common/error.h"
#include "common/hex.h"
#include "store/crypto.h"
#include "store/format.h"
#include "store/repository.h"

namespace ferry::store {

std::string Repository::data_keys() const {
  std::string keys(64, 0);
  std::memcpy(keys.data(), enc_key_.data(), 32);
  std::memcpy(keys.data() + 32, id_key_.data(), 32);
  return keys;
}

std::unique_ptr<Repository> Repository::open_view(std::unique_ptr<Backend> backend, const RepositoryConfig& config,
                                                  std::string_view data_keys, std::function<std::vector<ChunkId>()> known) {
  if (data_keys.size() != 64) fail(ErrorKind::kInvalidArgument, "data keys must be 64 bytes");
  if (!known) fail(ErrorKind::kInvalidArgument, "a repository view needs the list of known chunks");
  std::unique_ptr<Repository> repo(new Repository());
  repo->config_ = config;
  std::memcpy(repo->enc_key_.data(), data_keys.data(), 32);
  std::memcpy(repo->id_key_.data(), data_keys.data() + 32, 32);
  repo->backend_ = std::move(backend);
  repo->known_ = std::move(known);
  repo->load_index();
  return repo;
}

std::vector<ChunkId> Repository::chunk_ids() const {
  std::shared_lock lock(mu_);
  std::vector<ChunkId> ids;
  ids.reserve(index_.size());
  for (auto& [id, loc] : index_) ids.push_back(id);
  return ids;
}

namespace {

// Object names are 64 lower-case hex digits (packs, index files), snapshot ids 32.
bool is_lower_hex(const std::string& name, size_t digits) {
  return name.size() == digits && std::all_of(name.begin(), name.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

void Repository::receive_pack(const std::string& name, std::string_view bytes, Verify verify) {
  if (!is_lower_hex(name, 64)) fail(ErrorKind::kInvalidArgument, "pack name '" + name + "' is not 64 lower-case hex digits");
  if (known_) fail(ErrorKind::kUnsupported, "a repository view cannot receive packs");
  {
    std::shared_lock lock(mu_);
    if (pack_numbers_.count(name)) return;  // a retried upload of a pack already stored
  }
  std::string where = "uploaded pack '" + name + "'";
  auto entries = parse_pack_header(*this, name, bytes, where);
  auto codec = new_codec();
  std::string plain;
  for (auto& e : entries) {
    std::string_view box = bytes.substr(e.offset, e.stored_len);
    if (verify == Verify::kFull) {
      plain.resize(e.raw_len);
      open_chunk(*codec->impl_, e.id, box, static_cast<Compression>(e.compression), e.raw_len, plain.data(), where);
      if (!(codec->chunk_id(plain.data(), plain.size()) == e.id))
        fail(ErrorKind::kCorrupt, "chunk " + e.id.hex() + " in " + where + ": content does not match its id");
    } else {
      authenticate_chunk(*codec->impl_, e.id, box, where);
    }
  }
  auto writer = backend_->create(ObjectType::kPack);
  writer->append(bytes);
  writer->commit(name);
  std::unique_lock lock(mu_);
  uint32_t p = add_pack_locked(name);
  for (auto& e : entries) index_.emplace(e.id, Location{p, e.offset, e.stored_len, e.raw_len, e.compression});
  unindexed_.push_back(name);
}

void Repository::receive_index(const std::string& name, std::string_view box) {
  if (!is_lower_hex(name, 64)) fail(ErrorKind::kInvalidArgument, "index name '" + name + "' is not 64 lower-case hex digits");
  std::string what = "uploaded index '" + name + "'";
  auto listings = decode_index(unseal_object('I', name, box, what), what);
  {
    std::shared_lock lock(mu_);
    for (auto& l : listings) {
      auto p = pack_numbers_.find(l.pack);
      if (p == pack_numbers_.end()) fail(ErrorKind::kInvalidArgument, what + " lists pack '" + l.pack + "', which was never uploaded");
      for (auto& e : l.entries) {
        auto it = index_.find(e.id);
        bool match = it != index_.end() && it->second.pack == p->second && it->second.offset == e.offset &&
                     it->second.stored_len == e.stored_len && it->second.raw_len == e.raw_len;
        // A chunk stored twice (two connectors racing) is indexed at its first copy; accept the listing if the
        // pack really holds it, which the pack's own trailer decides.
        if (!match) {
          auto trailer = read_pack_header(*this, *backend_, l.pack);
          bool in_pack = std::any_of(trailer.begin(), trailer.end(), [&](const PackEntry& t) {
            return t.id == e.id && t.offset == e.offset && t.stored_len == e.stored_len && t.raw_len == e.raw_len;
          });
          if (!in_pack) fail(ErrorKind::kCorrupt, what + ": its entry for chunk " + e.id.hex() + " does not match pack '" + l.pack + "'");
        }
      }
    }
  }
  if (!backend_->exists(ObjectType::kIndex, name)) backend_->put(ObjectType::kIndex, name, box);
  std::unordered_set<std::string> covered;
  for (auto& l : listings) covered.insert(l.pack);
  std::unique_lock lock(mu_);
  std::erase_if(unindexed_, [&](const std::string& p) { return covered.count(p) > 0; });
}

Snapshot Repository::receive_snapshot(const std::string& id, std::string_view box) {
  if (!is_lower_hex(id, 32))
    fail(ErrorKind::kInvalidArgument, "snapshot id '" + id + "' is not 32 lower-case hex digits");
  std::string what = "uploaded snapshot '" + id + "'";
  Snapshot s = decode_snapshot(unseal_object('S', id, box, what), id);
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
  if (!backend_->exists(ObjectType::kSnapshot, id)) backend_->put(ObjectType::kSnapshot, id, box);
  return s;
}

}  // namespace ferry::store
