// Encoders and decoders for the store's binary formats.
#include "store/format.h"

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "common/error.h"
#include "common/fault.h"
#include "common/hex.h"
#include "store/crypto.h"

namespace ferry::store {

namespace {

void put_entry(ByteWriter& w, const PackEntry& e) {
  w.bytes(e.id.bytes.data(), 32);
  w.u32(e.offset);
  w.u32(e.stored_len);
  w.u32(e.raw_len);
  w.u8(e.compression);
}

PackEntry get_entry(ByteReader& r) {
  PackEntry e;
  r.get(e.id.bytes.data(), 32);
  e.offset = r.u32();
  e.stored_len = r.u32();
  e.raw_len = r.u32();
  e.compression = r.u8();
  return e;
}

void expect_magic(ByteReader& r, std::string_view magic, const std::string& what) {
  if (r.remaining() < magic.size() || r.bytes(magic.size()) != magic)
    fail(ErrorKind::kCorrupt, what + ": wrong magic (expected '" + std::string(magic) + "'); unknown format version?");
}

struct Tail {
  uint32_t hlen = 0, key = 0;
  uint64_t header_offset = 0;
};

// The last kPackTrailerSize bytes of a pack of `size` bytes: header box length, key number, magic.
Tail parse_tail(std::string_view trailer, uint64_t size, std::string_view magic, const std::string& what) {
  if (size < kPackTrailerSize + kBoxOverhead) fail(ErrorKind::kCorrupt, what + ": truncated (" + std::to_string(size) + " bytes)");
  if (trailer.substr(8) != magic) {
    if (trailer.substr(8) == "FRYPACK1")
      fail(ErrorKind::kUnsupported, what + ": a pack of store format version 1, which this ferry no longer reads");
    fail(ErrorKind::kCorrupt, what + ": no pack trailer (truncated or not a ferry pack)");
  }
  Tail t;
  std::memcpy(&t.hlen, trailer.data(), 4);
  std::memcpy(&t.key, trailer.data() + 4, 4);
  if (t.hlen < kBoxOverhead || t.hlen > size - kPackTrailerSize)
    fail(ErrorKind::kCorrupt, what + ": header length " + std::to_string(t.hlen) + " is out of range");
  t.header_offset = size - kPackTrailerSize - t.hlen;
  return t;
}

}  // namespace

bool is_lower_hex(std::string_view name, size_t digits) {
  return name.size() == digits && std::all_of(name.begin(), name.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string new_object_name() {
  uint8_t raw[32];
  random_bytes(raw, sizeof raw);
  return to_hex(raw, sizeof raw);
}

std::string encode_pack_header(const std::vector<PackEntry>& entries) {
  ByteWriter w;
  w.bytes(kPackHeaderMagic);
  w.u32(static_cast<uint32_t>(entries.size()));
  for (auto& e : entries) put_entry(w, e);
  return std::move(w.data());
}

std::vector<PackEntry> decode_pack_header(std::string_view plaintext, const std::string& what) {
  ByteReader r(plaintext, what);
  expect_magic(r, kPackHeaderMagic, what);
  uint32_t n = r.u32();
  if (static_cast<uint64_t>(n) * kPackEntrySize != r.remaining()) fail(ErrorKind::kCorrupt, what + ": header length does not match its entry count");
  std::vector<PackEntry> entries;
  entries.reserve(n);
  for (uint32_t i = 0; i < n; i++) entries.push_back(get_entry(r));
  return entries;
}

std::string encode_pack_trailer(const Repository& repo, const std::string& name, uint32_t key, const std::vector<PackEntry>& entries) {
  std::string header = encode_pack_header(entries);
  std::string out;
  if (repo.is_view()) {
    out.assign(kNonceSize, '\0');
    out.append(header);
    out.append(kTagSize, '\0');
  } else {
    out = repo.seal_pack_header(key, name, header);
  }
  uint32_t hlen = static_cast<uint32_t>(out.size());
  out.append(reinterpret_cast<const char*>(&hlen), 4);
  out.append(reinterpret_cast<const char*>(&key), 4);
  out.append(repo.is_view() ? kWirePackMagic : kPackMagic);
  return out;
}

PackListing read_pack_header(const Repository& repo, Backend& backend, const std::string& name) {
  std::string what = "pack '" + name + "'";
  uint64_t size = backend.size(ObjectType::kPack, name);
  std::string trailer = size >= kPackTrailerSize ? backend.get_range(ObjectType::kPack, name, size - kPackTrailerSize, kPackTrailerSize) : "";
  Tail t = parse_tail(trailer, size, kPackMagic, what);
  PackListing l{name, t.key, {}};
  std::string box = backend.get_range(ObjectType::kPack, name, t.header_offset, t.hlen);
  l.entries = decode_pack_header(repo.unseal_pack_header(t.key, name, box, what + " header"), what + " header");
  for (auto& e : l.entries)
    if (static_cast<uint64_t>(e.offset) + e.stored_len > t.header_offset) fail(ErrorKind::kCorrupt, what + ": a blob extends past the header");
  return l;
}

WirePack parse_wire_pack(std::string_view pack, uint32_t chunk_size, size_t max_entries, const std::string& what) {
  Tail t = parse_tail(pack.size() >= kPackTrailerSize ? pack.substr(pack.size() - kPackTrailerSize) : std::string_view{}, pack.size(),
                      kWirePackMagic, what);
  WirePack w;
  w.header_offset = t.header_offset;
  w.header_len = t.hlen;
  w.entries = decode_pack_header(pack.substr(t.header_offset + kNonceSize, t.hlen - kBoxOverhead), what + " header");
  if (w.entries.empty()) fail(ErrorKind::kCorrupt, what + ": lists no blobs");
  if (w.entries.size() > max_entries)
    fail(ErrorKind::kCorrupt, what + ": lists " + std::to_string(w.entries.size()) + " blobs, more than a pack of this store holds (" +
                                  std::to_string(max_entries) + ")");
  // Blobs back to back from offset 0 up to the header: no byte of the pack is outside a listed blob or the header.
  uint64_t next = 0;
  std::unordered_set<ChunkId, ChunkIdHash> ids;
  for (auto& e : w.entries) {
    std::string which = what + ": blob of chunk " + e.id.hex();
    if (e.offset != next) fail(ErrorKind::kCorrupt, which + " is at offset " + std::to_string(e.offset) + ", expected " + std::to_string(next));
    if (e.stored_len < kBoxOverhead) fail(ErrorKind::kCorrupt, which + " is shorter than a box");
    if (e.raw_len == 0 || e.raw_len > chunk_size)
      fail(ErrorKind::kCorrupt, which + " has length " + std::to_string(e.raw_len) + " (the store's chunks are at most " +
                                    std::to_string(chunk_size) + " bytes)");
    if (e.compression > 1) fail(ErrorKind::kCorrupt, which + " has unknown compression " + std::to_string(e.compression));
    if (!ids.insert(e.id).second) fail(ErrorKind::kCorrupt, which + " is listed twice");
    next += e.stored_len;
  }
  if (next != w.header_offset)
    fail(ErrorKind::kCorrupt, what + ": its blobs end at " + std::to_string(next) + " but its header starts at " + std::to_string(w.header_offset));
  return w;
}

std::string encode_index(const std::vector<PackListing>& packs) {
  ByteWriter w;
  w.bytes(kIndexMagic);
  w.u32(static_cast<uint32_t>(packs.size()));
  for (auto& p : packs) {
    w.bytes(from_hex(p.pack));
    w.u32(p.key);
    w.u32(static_cast<uint32_t>(p.entries.size()));
    for (auto& e : p.entries) put_entry(w, e);
  }
  return std::move(w.data());
}

std::vector<PackListing> decode_index(std::string_view plain, const std::string& what) {
  ByteReader r(plain, what);
  expect_magic(r, kIndexMagic, what);
  uint32_t n = r.u32();
  if (static_cast<uint64_t>(n) * (32 + 4 + 4) > r.remaining()) fail(ErrorKind::kCorrupt, what + ": pack count is larger than the file");
  std::vector<PackListing> packs(n);
  for (auto& p : packs) {
    p.pack = to_hex(r.bytes(32));
    p.key = r.u32();
    uint32_t count = r.u32();
    if (static_cast<uint64_t>(count) * kPackEntrySize > r.remaining()) fail(ErrorKind::kCorrupt, what + ": truncated");
    p.entries.reserve(count);
    for (uint32_t i = 0; i < count; i++) p.entries.push_back(get_entry(r));
  }
  if (!r.done()) fail(ErrorKind::kCorrupt, what + ": trailing bytes");
  return packs;
}

std::string compress_object(std::string_view plaintext) { return zstd_compress(plaintext, 3); }

std::string decompress_object(std::string_view compressed, uint64_t max_size, const std::string& what) {
  // Index entries and chunk tables are mostly random ids: they never shrink 8-fold. A frame that claims more is
  // refused before memory is taken for it (a small upload could otherwise claim gigabytes).
  uint64_t plausible = 8 * uint64_t{compressed.size()} + (uint64_t{1} << 20);
  return zstd_decompress(compressed, std::min(max_size, plausible), what);
}

namespace {
template <typename Fn>
void for_each_index_group(const std::vector<PackListing>& packs, Fn fn) {
  std::vector<PackListing> group;
  size_t entries = 0;
  for (auto& p : packs) {
    if (!group.empty() && entries + p.entries.size() > kMaxIndexEntries) {
      fn(group);
      group.clear();
      entries = 0;
    }
    group.push_back(p);
    entries += p.entries.size();
  }
  if (!group.empty()) fn(group);
}
}  // namespace

size_t index_file_count(const std::vector<PackListing>& packs) {
  size_t n = 0;
  for_each_index_group(packs, [&](const std::vector<PackListing>&) { n++; });
  return n;
}

uint64_t write_index_files(const Repository& repo, Backend& backend, const std::vector<PackListing>& packs) {
  uint64_t bytes = 0;
  for_each_index_group(packs, [&](const std::vector<PackListing>& group) {
    std::string name = new_object_name();
    std::string data = repo.seal_object('I', name, compress_object(encode_index(group)));
    fault_point("index");
    backend.put(ObjectType::kIndex, name, data);
    bytes += data.size();
  });
  return bytes;
}

std::string encode_snapshot(const Snapshot& s) {
  nlohmann::json meta = {
      {"name", s.name},
      {"source", s.source},
      {"source_format", s.source_format},
      {"size", s.size},
      {"chunk_size", s.chunk_size},
      {"created", s.created},
      {"parent", s.parent},
      {"digest", s.digest.hex()},
      {"stats",
       {{"bytes_read", s.stats.bytes_read},
        {"bytes_new", s.stats.bytes_new},
        {"bytes_stored", s.stats.bytes_stored},
        {"chunks_new", s.stats.chunks_new},
        {"chunks_changed", s.stats.chunks_changed},
        {"seconds", s.stats.seconds}}},
  };
  // Invalid UTF-8 in a name or path (from a datastore) is replaced, not a failure to record the snapshot.
  std::string json = meta.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  ByteWriter w;
  w.bytes(kSnapshotMagic);
  w.u32(static_cast<uint32_t>(json.size()));
  w.bytes(json);
  w.u64(s.chunks.size());
  for (auto& [index, id] : s.chunks) {
    w.u64(index);
    w.bytes(id.bytes.data(), 32);
  }
  return std::move(w.data());
}

namespace {

// JSON numbers of the snapshot metadata, range-checked before narrowing (a snapshot may come from a connector).
uint64_t json_u64(const nlohmann::json& j, const char* key, const std::string& what) {
  const auto& v = j.at(key);
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  fail(ErrorKind::kCorrupt, what + ": '" + key + "' is not a non-negative integer");
}

uint32_t json_u32(const nlohmann::json& j, const char* key, const std::string& what) {
  uint64_t v = json_u64(j, key, what);
  if (v > UINT32_MAX) fail(ErrorKind::kCorrupt, what + ": '" + key + "' is out of range");
  return static_cast<uint32_t>(v);
}

std::string json_string(const nlohmann::json& j, const char* key, const std::string& what) {
  const auto& v = j.at(key);
  if (!v.is_string()) fail(ErrorKind::kCorrupt, what + ": '" + key + "' is not a string");
  return v.get<std::string>();
}

}  // namespace

Snapshot decode_snapshot(std::string_view plain, const std::string& id) {
  std::string what = "snapshot '" + id + "'";
  ByteReader r(plain, what);
  expect_magic(r, kSnapshotMagic, what);
  uint32_t jlen = r.u32();
  Snapshot s;
  s.id = id;
  try {
    auto meta = nlohmann::json::parse(r.bytes(jlen));
    if (!meta.is_object()) fail(ErrorKind::kCorrupt, what + ": metadata is not an object");
    s.name = json_string(meta, "name", what);
    s.source = json_string(meta, "source", what);
    s.source_format = json_string(meta, "source_format", what);
    s.size = json_u64(meta, "size", what);
    s.chunk_size = json_u32(meta, "chunk_size", what);
    if (!meta.at("created").is_number_integer()) fail(ErrorKind::kCorrupt, what + ": 'created' is not an integer");
    s.created = meta.at("created").get<int64_t>();
    s.parent = json_string(meta, "parent", what);
    std::string digest = from_hex(json_string(meta, "digest", what));
    if (digest.size() != 32) fail(ErrorKind::kCorrupt, what + ": bad digest");
    std::memcpy(s.digest.bytes.data(), digest.data(), 32);
    auto& st = meta.at("stats");
    s.stats.bytes_read = json_u64(st, "bytes_read", what);
    s.stats.bytes_new = json_u64(st, "bytes_new", what);
    s.stats.bytes_stored = json_u64(st, "bytes_stored", what);
    s.stats.chunks_new = json_u64(st, "chunks_new", what);
    s.stats.chunks_changed = json_u64(st, "chunks_changed", what);
    if (!st.at("seconds").is_number()) fail(ErrorKind::kCorrupt, what + ": 'seconds' is not a number");
    s.stats.seconds = st.at("seconds").get<double>();
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::kCorrupt, what + ": bad metadata: " + e.what());
  }
  if (s.chunk_size < 4096 || s.chunk_size > (8u << 20) || (s.chunk_size & (s.chunk_size - 1)) || s.size > (uint64_t{1} << 56))
    fail(ErrorKind::kCorrupt, what + ": chunk size or disk size is out of range");
  uint64_t n = r.u64();
  if (n > r.remaining() / 40 || n != r.remaining() / 40 || r.remaining() % 40) fail(ErrorKind::kCorrupt, what + ": chunk table length is wrong");
  s.chunks.resize(n);
  uint64_t limit = s.chunk_count();
  for (uint64_t i = 0; i < n; i++) {
    s.chunks[i].first = r.u64();
    r.get(s.chunks[i].second.bytes.data(), 32);
    if (s.chunks[i].first >= limit || (i > 0 && s.chunks[i].first <= s.chunks[i - 1].first))
      fail(ErrorKind::kCorrupt, what + ": chunk table is not in order or out of range");
  }
  return s;
}

}  // namespace ferry::store
