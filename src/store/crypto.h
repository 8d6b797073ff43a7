// Chunk ids, authenticated encryption and compression for one repository (internal to store/).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "store/repository.h"

namespace ferry::store {

// The two secrets of a repository: the AES-256-GCM data key and the HMAC-SHA-256 key for chunk ids.
struct DataKeys {
  std::array<uint8_t, 32> enc{};
  std::array<uint8_t, 32> id{};
};

constexpr size_t kNonceSize = 12;
constexpr size_t kTagSize = 16;
constexpr size_t kBoxOverhead = kNonceSize + kTagSize;

// AES-256-GCM box: nonce(12) || ciphertext || tag(16). `aad` binds the box to its role.
std::string seal(const uint8_t key[32], std::string_view aad, std::string_view plaintext);
// Throws kCrypto with `what` in the message if authentication fails.
std::string unseal(const uint8_t key[32], std::string_view aad, std::string_view box, const std::string& what);

void random_bytes(void* out, size_t len);
std::string sha256(std::string_view data);

enum class Compression : uint8_t { kNone = 0, kZstd = 1 };

// A page-aligned per-codec scratch buffer of at least n bytes (for reading blobs).
char* codec_scratch(Codec::Impl& codec, size_t n);
std::unique_ptr<Codec::Impl> make_codec(const DataKeys& keys, int zstd_level);
// Compresses (when it pays) and encrypts a chunk; the box's AAD is 'C' || chunk id.
std::string seal_chunk(Codec::Impl& codec, const ChunkId& id, const void* data, size_t len, Compression* compression);
// Decrypts and decompresses a chunk into `out` (exactly raw_len bytes). `where` names the pack for errors.
void open_chunk(Codec::Impl& codec, const ChunkId& id, std::string_view box, Compression compression, uint32_t raw_len,
                char* out, const std::string& where);

// Checks a chunk's box authenticates under its id without decompressing it.
void authenticate_chunk(Codec::Impl& codec, const ChunkId& id, std::string_view box, const std::string& where);

std::string zstd_compress(std::string_view data, int level);
std::string zstd_decompress(std::string_view data, size_t max_size, const std::string& what);

}  // namespace ferry::store
