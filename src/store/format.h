// Byte layouts of packs, index files and snapshots (internal to store/). docs/formats.md is the
// normative description; keep the two in step and bump the magic on any change.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "store/repository.h"

namespace ferry::store {

inline constexpr std::string_view kPackMagic = "FRYPACK1";      // last 8 bytes of a pack
inline constexpr std::string_view kPackHeaderMagic = "FPH1";
inline constexpr std::string_view kIndexMagic = "FIX1";
inline constexpr std::string_view kSnapshotMagic = "FSN1";
inline constexpr size_t kPackEntrySize = 32 + 4 + 4 + 4 + 1;
inline constexpr size_t kPackTrailerSize = 4 + 8;

struct PackEntry {
  ChunkId id;
  uint32_t offset = 0;
  uint32_t stored_len = 0;
  uint32_t raw_len = 0;
  uint8_t compression = 0;
};

struct PackListing {
  std::string pack;  // 64 hex digits
  std::vector<PackEntry> entries;
};

std::string encode_pack_header(const std::vector<PackEntry>& entries);
std::vector<PackEntry> decode_pack_header(std::string_view plaintext, const std::string& what);
// What closes pack `name` after its blobs: the sealed header, its length and the magic.
std::string encode_pack_trailer(const Repository& repo, const std::string& name, const std::vector<PackEntry>& entries);
// Reads and authenticates the header at the end of pack `name`; throws kCorrupt / kCrypto naming the pack.
std::vector<PackEntry> read_pack_header(const Repository& repo, Backend& backend, const std::string& name);
// The same for a pack held in memory (an upload); `what` names it in errors.
std::vector<PackEntry> parse_pack_header(const Repository& repo, const std::string& name, std::string_view pack, const std::string& what);

std::string encode_index(const std::vector<PackListing>& packs);
std::vector<PackListing> decode_index(std::string_view plaintext, const std::string& what);

std::string encode_snapshot(const Snapshot& s);
Snapshot decode_snapshot(std::string_view plaintext, const std::string& id);

std::string new_object_name();  // 64 random hex digits

// Index files hold at most this many entries (~190 MB of plaintext), well inside what readers accept.
inline constexpr size_t kMaxIndexEntries = size_t{4} << 20;
// How many index files write_index_files() makes for `packs`.
size_t index_file_count(const std::vector<PackListing>& packs);
// Writes `packs` as one or more sealed index files; returns the bytes written.
uint64_t write_index_files(const Repository& repo, Backend& backend, const std::vector<PackListing>& packs);

}  // namespace ferry::store
