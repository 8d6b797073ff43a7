// Snapshot helpers: chunk lengths, zero ranges, the disk digest.
#include <openssl/evp.h>

#include "store/repository.h"

namespace ferry::store {

uint32_t Snapshot::chunk_length(uint64_t index) const {
  uint64_t start = index * chunk_size;
  return static_cast<uint32_t>(std::min<uint64_t>(chunk_size, size - start));
}

std::vector<std::pair<uint64_t, uint64_t>> Snapshot::zero_ranges() const {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  uint64_t next = 0;  // first chunk index not yet covered
  auto add = [&](uint64_t from, uint64_t to) {
    if (from >= to) return;
    uint64_t off = from * chunk_size, end = std::min<uint64_t>(to * chunk_size, size);
    out.emplace_back(off, end - off);
  };
  for (auto& [index, id] : chunks) {
    add(next, index);
    next = index + 1;
  }
  add(next, chunk_count());
  return out;
}

ChunkId Snapshot::compute_digest() const {
  // SHA-256 over "ferry-disk-digest-v1", size, chunk size, then one 32-byte entry per chunk
  // index: the chunk id, or 32 zero bytes for a chunk that reads as zeros.
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  static const char tag[] = "ferry-disk-digest-v1";
  EVP_DigestUpdate(ctx, tag, sizeof tag - 1);
  uint64_t sz = size;
  uint32_t cs = chunk_size;
  EVP_DigestUpdate(ctx, &sz, 8);
  EVP_DigestUpdate(ctx, &cs, 4);
  static const uint8_t zeros[32] = {};
  uint64_t next = 0;
  for (auto& [index, id] : chunks) {
    for (; next < index; next++) EVP_DigestUpdate(ctx, zeros, 32);
    EVP_DigestUpdate(ctx, id.bytes.data(), 32);
    next = index + 1;
  }
  for (uint64_t n = chunk_count(); next < n; next++) EVP_DigestUpdate(ctx, zeros, 32);
  ChunkId digest;
  EVP_DigestFinal_ex(ctx, digest.bytes.data(), nullptr);
  EVP_MD_CTX_free(ctx);
  return digest;
}

}  // namespace ferry::store
