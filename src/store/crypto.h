// Chunk ids, authenticated encryption and compression for one repository (internal to store/).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "store/repository.h"

namespace ferry::store {

constexpr size_t kNonceSize = 12;
constexpr size_t kTagSize = 16;
constexpr size_t kBoxOverhead = kNonceSize + kTagSize;

// AES-256-GCM box: nonce(12) || ciphertext || tag(16). `aad` binds the box to its role. Any length up to what
// memory holds (OpenSSL's int-sized updates are fed in pieces).
std::string seal(const uint8_t key[32], std::string_view aad, std::string_view plaintext);
// Throws kCrypto with `what` in the message if authentication fails.
std::string unseal(const uint8_t key[32], std::string_view aad, std::string_view box, const std::string& what);
// Seals box[kNonceSize .. box_len - kTagSize) in place and fills in nonce and tag. REQUIRES: box_len >= kBoxOverhead.
void seal_in_place(const uint8_t key[32], std::string_view aad, char* box, size_t box_len);

void random_bytes(void* out, size_t len);
std::string sha256(std::string_view data);
// Overwrites secret bytes (OPENSSL_cleanse: not optimised away).
void wipe(void* p, size_t n);

enum class Compression : uint8_t { kNone = 0, kZstd = 1 };

// A page-aligned per-codec scratch buffer of at least n bytes (for reading blobs).
char* codec_scratch(Codec::Impl& codec, size_t n);
std::unique_ptr<Codec::Impl> make_codec(const DataKeys& keys, int zstd_level);

// Compresses (when it pays) and seals a chunk under the current data key into `out`; the box's AAD binds the chunk
// id, the compression and the plaintext length (docs/formats.md §5). A codec without data keys (a connector's view)
// writes the same layout unsealed: zero nonce, the payload in clear, zero tag, for the server to seal in place.
void seal_chunk(Codec::Impl& codec, const ChunkId& id, const void* data, size_t len, Compression* compression, std::string& out);

// Opens a stored chunk sealed under data key `key`: authenticates, decrypts, decompresses into `out` (exactly raw_len
// bytes) and checks that its HMAC is `id`, so a chunk read back is the chunk that was replicated. `where` names the
// pack for errors.
void open_chunk(Codec::Impl& codec, uint32_t key, const ChunkId& id, std::string_view box, Compression compression, uint32_t raw_len,
                char* out, const std::string& where);

// The server's acceptance of one unsealed blob from a connector (`box`, laid out as seal_chunk writes it without
// keys): the payload must decompress to exactly raw_len bytes whose HMAC is `id`; then it is sealed in place under
// data key `key`. Throws kCorrupt naming the chunk and `where`; the box is unchanged then.
void verify_and_seal_chunk(Codec::Impl& codec, uint32_t key, const ChunkId& id, char* box, size_t box_len, Compression compression,
                           uint32_t raw_len, const std::string& where);

std::string zstd_compress(std::string_view data, int level);
// One zstd frame that records its content size (at most max_size) and nothing after it.
std::string zstd_decompress(std::string_view data, size_t max_size, const std::string& what);

}  // namespace ferry::store
