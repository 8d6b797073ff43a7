// Byte layouts of packs, index files and snapshots (internal to store/). docs/formats.md is the
// normative description; keep the two in step and bump the magic on any change.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "store/repository.h"

namespace ferry::store {

inline constexpr std::string_view kPackMagic = "FRYPACK2";      // last 8 bytes of a stored pack
inline constexpr std::string_view kWirePackMagic = "FRYWIRE2";  // last 8 bytes of a pack as a connector sends it
inline constexpr std::string_view kPackHeaderMagic = "FPH2";
inline constexpr std::string_view kIndexMagic = "FIX2";
inline constexpr std::string_view kSnapshotMagic = "FSN1";
inline constexpr size_t kPackEntrySize = 32 + 4 + 4 + 4 + 1;
inline constexpr size_t kPackTrailerSize = 4 + 4 + 8;  // header box length, data key number, magic

// Largest objects read whole: what a legitimate store can hold (an index file of kMaxIndexEntries, a snapshot of a
// disk with 2^31 bytes of chunk table), so a planted multi-GiB file is refused by name instead of read.
inline constexpr uint64_t kMaxIndexObject = uint64_t{1} << 30;
inline constexpr uint64_t kMaxSnapshotObject = (uint64_t{1} << 31) + 4096;
inline constexpr uint64_t kMaxSmallObject = uint64_t{1} << 20;  // config, key file

std::string encode_pack_header(const std::vector<PackEntry>& entries);
std::vector<PackEntry> decode_pack_header(std::string_view plaintext, const std::string& what);
// What closes pack `name` after its blobs: the header box (sealed under data key `key`; from a view, the same layout
// unsealed), its length, the key number and the magic.
std::string encode_pack_trailer(const Repository& repo, const std::string& name, uint32_t key, const std::vector<PackEntry>& entries);
// Reads and authenticates the header at the end of stored pack `name`; throws kCorrupt / kCrypto naming the pack.
PackListing read_pack_header(const Repository& repo, Backend& backend, const std::string& name);

// A pack as a connector uploads it (kWirePackMagic): blobs back to back from offset 0, each laid out as a box with
// zero nonce and tag around its payload, then the header plaintext laid out the same way. parse_wire_pack checks the
// layout (blobs in order, covering everything before the header, lengths within `chunk_size`, no id twice, at most
// `max_entries` blobs) and returns the entries; header_offset is where the header box starts.
struct WirePack {
  std::vector<PackEntry> entries;
  size_t header_offset = 0;
  size_t header_len = 0;
};
WirePack parse_wire_pack(std::string_view pack, uint32_t chunk_size, size_t max_entries, const std::string& what);

// Index files: plaintext, compressed and sealed by the caller.
std::string encode_index(const std::vector<PackListing>& packs);
std::vector<PackListing> decode_index(std::string_view plaintext, const std::string& what);

// Snapshots: plaintext (formats.md §11).
std::string encode_snapshot(const Snapshot& s);
Snapshot decode_snapshot(std::string_view plaintext, const std::string& id);

// zstd level 3 / one bounded frame: index files and snapshots are stored compressed.
std::string compress_object(std::string_view plaintext);
std::string decompress_object(std::string_view compressed, uint64_t max_size, const std::string& what);

// The key file keys/data (formats.md §4.2). decode_keys sets c.key_id from the file (after a re-wrap it names the new
// master key); throws kCorrupt naming `where`, or kCrypto when the master key does not open it.
std::string encode_keys(const RepositoryConfig& c, const DataKeys& keys, const Keyring& keyring);
DataKeys decode_keys(RepositoryConfig& c, const std::string& text, const Keyring& keyring, const std::string& where);

std::string new_object_name();  // 64 random hex digits
// Object names are 64 lower-case hex digits (packs, index files), snapshot ids 32.
bool is_lower_hex(std::string_view name, size_t digits);

// Index files hold at most this many entries (~190 MB of plaintext), well inside what readers accept.
inline constexpr size_t kMaxIndexEntries = size_t{4} << 20;
// How many index files write_index_files() makes for `packs`.
size_t index_file_count(const std::vector<PackListing>& packs);
// Writes `packs` as one or more sealed index files; returns the bytes written.
uint64_t write_index_files(const Repository& repo, Backend& backend, const std::vector<PackListing>& packs);

}  // namespace ferry::store
