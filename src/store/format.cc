// Encoders and decoders for the store's binary formats.
#include "store/format.h"

#include <functional>
#include <nlohmann/json.hpp>

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

}  // namespace

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

std::string encode_pack_trailer(const Repository& repo, const std::string& name, const std::vector<PackEntry>& entries) {
  std::string out = repo.seal_object('P', name, encode_pack_header(entries));
  uint32_t hlen = static_cast<uint32_t>(out.size());
  out.append(reinterpret_cast<const char*>(&hlen), 4);
  out.append(kPackMagic);
  return out;
}

namespace {

// A pack's header, given its size and a reader of its byte ranges (file or memory).
std::vector<PackEntry> decode_pack_tail(const Repository& repo, const std::string& name, uint64_t size,
                                        const std::function<std::string(uint64_t, size_t)>& read, const std::string& what) {
  if (size < kPackTrailerSize + kBoxOverhead) fail(ErrorKind::kCorrupt, what + ": truncated (" + std::to_string(size) + " bytes)");
  std::string trailer = read(size - kPackTrailerSize, kPackTrailerSize);
  if (std::string_view(trailer).substr(4) != kPackMagic) fail(ErrorKind::kCorrupt, what + ": no pack trailer (truncated or not a ferry pack)");
  uint32_t hlen;
  std::memcpy(&hlen, trailer.data(), 4);
  if (hlen < kBoxOverhead || hlen > size - kPackTrailerSize) fail(ErrorKind::kCorrupt, what + ": header length " + std::to_string(hlen) + " is out of range");
  uint64_t hoff = size - kPackTrailerSize - hlen;
  auto entries = decode_pack_header(repo.unseal_object('P', name, read(hoff, hlen), what + " header"), what + " header");
  for (auto& e : entries)
    if (static_cast<uint64_t>(e.offset) + e.stored_len > hoff) fail(ErrorKind::kCorrupt, what + ": a blob extends past the header");
  return entries;
}

}  // namespace

std::vector<PackEntry> read_pack_header(const Repository& repo, Backend& backend, const std::string& name) {
  return decode_pack_tail(repo, name, backend.size(ObjectType::kPack, name),
                          [&](uint64_t off, size_t len) { return backend.get_range(ObjectType::kPack, name, off, len); }, "pack '" + name + "'");
}

std::vector<PackEntry> parse_pack_header(const Repository& repo, const std::string& name, std::string_view pack, const std::string& what) {
  return decode_pack_tail(repo, name, pack.size(), [&](uint64_t off, size_t len) { return std::string(pack.substr(off, len)); }, what);
}

std::string encode_index(const std::vector<PackListing>& packs) {
  ByteWriter w;
  w.bytes(kIndexMagic);
  w.u32(static_cast<uint32_t>(packs.size()));
  for (auto& p : packs) {
    w.bytes(from_hex(p.pack));
    w.u32(static_cast<uint32_t>(p.entries.size()));
    for (auto& e : p.entries) put_entry(w, e);
  }
  return zstd_compress(w.data(), 3);
}

std::vector<PackListing> decode_index(std::string_view compressed, const std::string& what) {
  std::string plain = zstd_decompress(compressed, 1u << 30, what);
  ByteReader r(plain, what);
  expect_magic(r, kIndexMagic, what);
  uint32_t n = r.u32();
  if (static_cast<uint64_t>(n) * (32 + 4) > r.remaining()) fail(ErrorKind::kCorrupt, what + ": pack count is larger than the file");
  std::vector<PackListing> packs(n);
  for (auto& p : packs) {
    p.pack = to_hex(r.bytes(32));
    uint32_t count = r.u32();
    if (static_cast<uint64_t>(count) * kPackEntrySize > r.remaining()) fail(ErrorKind::kCorrupt, what + ": truncated");
    p.entries.reserve(count);
    for (uint32_t i = 0; i < count; i++) p.entries.push_back(get_entry(r));
  }
  if (!r.done()) fail(ErrorKind::kCorrupt, what + ": trailing bytes");
  return packs;
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
    std::string data = repo.seal_object('I', name, encode_index(group));
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
  std::string json = meta.dump();
  ByteWriter w;
  w.bytes(kSnapshotMagic);
  w.u32(static_cast<uint32_t>(json.size()));
  w.bytes(json);
  w.u64(s.chunks.size());
  for (auto& [index, id] : s.chunks) {
    w.u64(index);
    w.bytes(id.bytes.data(), 32);
  }
  return zstd_compress(w.data(), 3);
}

Snapshot decode_snapshot(std::string_view compressed, const std::string& id) {
  std::string what = "snapshot '" + id + "'";
  std::string plain = zstd_decompress(compressed, 1u << 31, what);
  ByteReader r(plain, what);
  expect_magic(r, kSnapshotMagic, what);
  uint32_t jlen = r.u32();
  Snapshot s;
  s.id = id;
  try {
    auto meta = nlohmann::json::parse(r.bytes(jlen));
    s.name = meta.at("name");
    s.source = meta.at("source");
    s.source_format = meta.at("source_format");
    s.size = meta.at("size");
    s.chunk_size = meta.at("chunk_size");
    s.created = meta.at("created");
    s.parent = meta.at("parent");
    std::string digest = from_hex(meta.at("digest").get<std::string>());
    if (digest.size() != 32) fail(ErrorKind::kCorrupt, what + ": bad digest");
    std::memcpy(s.digest.bytes.data(), digest.data(), 32);
    auto& st = meta.at("stats");
    s.stats.bytes_read = st.at("bytes_read");
    s.stats.bytes_new = st.at("bytes_new");
    s.stats.bytes_stored = st.at("bytes_stored");
    s.stats.chunks_new = st.at("chunks_new");
    s.stats.chunks_changed = st.at("chunks_changed");
    s.stats.seconds = st.at("seconds");
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::kCorrupt, what + ": bad metadata: " + e.what());
  }
  if (s.chunk_size < 4096 || (s.chunk_size & (s.chunk_size - 1)) || s.size > (uint64_t{1} << 56))
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
