// OpenSSL (AES-256-GCM, HMAC-SHA-256, SHA-256, DRBG) and zstd behind the Codec.
#include "store/crypto.h"

#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <zstd.h>

#include <cstring>

#include "common/buffer.h"
#include "common/error.h"

namespace ferry::store {

namespace {

struct CipherCtx {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  ~CipherCtx() { EVP_CIPHER_CTX_free(ctx); }
};

void seal_into(EVP_CIPHER_CTX* ctx, const uint8_t key[32], std::string_view aad, const void* pt, size_t len,
               std::string& out) {
  out.resize(kNonceSize + len + kTagSize);
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  random_bytes(o, kNonceSize);
  int n = 0, f = 0;
  if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key, o) != 1 ||
      EVP_EncryptUpdate(ctx, nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()), static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx, o + kNonceSize, &n, static_cast<const unsigned char*>(pt), static_cast<int>(len)) != 1 ||
      EVP_EncryptFinal_ex(ctx, o + kNonceSize + n, &f) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kTagSize, o + kNonceSize + len) != 1)
    fail(ErrorKind::kCrypto, "AES-256-GCM encryption failed");
}

// Returns false if the tag does not verify.
bool unseal_into(EVP_CIPHER_CTX* ctx, const uint8_t key[32], std::string_view aad, std::string_view box, unsigned char* out) {
  if (box.size() < kBoxOverhead) return false;
  const auto* b = reinterpret_cast<const unsigned char*>(box.data());
  size_t len = box.size() - kBoxOverhead;
  int n = 0, f = 0;
  if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key, b) != 1 ||
      EVP_DecryptUpdate(ctx, nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()), static_cast<int>(aad.size())) != 1 ||
      EVP_DecryptUpdate(ctx, out, &n, b + kNonceSize, static_cast<int>(len)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kTagSize, const_cast<unsigned char*>(b + kNonceSize + len)) != 1)
    return false;
  return EVP_DecryptFinal_ex(ctx, out + n, &f) == 1;
}

}  // namespace

void random_bytes(void* out, size_t len) {
  if (RAND_bytes(static_cast<unsigned char*>(out), static_cast<int>(len)) != 1)
    fail(ErrorKind::kCrypto, "the random number generator failed");
}

std::string sha256(std::string_view data) {
  std::string out(32, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

std::string seal(const uint8_t key[32], std::string_view aad, std::string_view plaintext) {
  CipherCtx c;
  std::string out;
  seal_into(c.ctx, key, aad, plaintext.data(), plaintext.size(), out);
  return out;
}

std::string unseal(const uint8_t key[32], std::string_view aad, std::string_view box, const std::string& what) {
  CipherCtx c;
  std::string out(box.size() >= kBoxOverhead ? box.size() - kBoxOverhead : 0, '\0');
  if (!unseal_into(c.ctx, key, aad, box, reinterpret_cast<unsigned char*>(out.data())))
    fail(ErrorKind::kCrypto, what + ": authentication failed (the data was altered or damaged, or the key is wrong)");
  return out;
}

std::string zstd_compress(std::string_view data, int level) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), level);
  if (ZSTD_isError(n)) fail(ErrorKind::kIo, std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

std::string zstd_decompress(std::string_view data, size_t max_size, const std::string& what) {
  unsigned long long size = ZSTD_getFrameContentSize(data.data(), data.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > max_size)
    fail(ErrorKind::kCorrupt, what + ": not a valid zstd frame");
  std::string out(size, '\0');
  size_t n = ZSTD_decompress(out.data(), out.size(), data.data(), data.size());
  if (ZSTD_isError(n) || n != size) fail(ErrorKind::kCorrupt, what + ": zstd data is damaged");
  return out;
}

struct Codec::Impl {
  ~Impl();
  DataKeys keys;
  int level;
  CipherCtx cipher;
  EVP_MAC* mac = nullptr;
  EVP_MAC_CTX* mac_template = nullptr;
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  std::string comp_buf, box_plain;
  AlignedBuffer scratch;
  size_t scratch_size = 0;
};

char* codec_scratch(Codec::Impl& codec, size_t n) {
  if (codec.scratch_size < n) {
    codec.scratch = make_aligned_buffer(n);
    codec.scratch_size = n;
  }
  return codec.scratch.get();
}

Codec::Impl::~Impl() {
  EVP_MAC_CTX_free(mac_template);
  EVP_MAC_free(mac);
  ZSTD_freeCCtx(cctx);
  ZSTD_freeDCtx(dctx);
}

std::unique_ptr<Codec::Impl> make_codec(const DataKeys& keys, int zstd_level) {
  auto impl = std::make_unique<Codec::Impl>();
  impl->keys = keys;
  impl->level = zstd_level;
  impl->mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  impl->mac_template = impl->mac ? EVP_MAC_CTX_new(impl->mac) : nullptr;
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", const_cast<char*>("SHA256"), 0), OSSL_PARAM_construct_end()};
  if (!impl->mac_template || EVP_MAC_init(impl->mac_template, impl->keys.id.data(), 32, params) != 1)
    fail(ErrorKind::kCrypto, "cannot set up HMAC-SHA-256");
  ZSTD_CCtx_setParameter(impl->cctx, ZSTD_c_compressionLevel, zstd_level);
  return impl;
}

std::unique_ptr<Codec> Repository::new_codec() const {
  DataKeys k;
  k.enc = enc_key_;
  k.id = id_key_;
  return std::unique_ptr<Codec>(new Codec(make_codec(k, config_.zstd_level)));
}

Codec::Codec(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Codec::~Codec() = default;

ChunkId Codec::chunk_id(const void* data, size_t len) {
  ChunkId id;
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_dup(impl_->mac_template);
  size_t outl = 0;
  if (!ctx || EVP_MAC_update(ctx, static_cast<const unsigned char*>(data), len) != 1 ||
      EVP_MAC_final(ctx, id.bytes.data(), &outl, id.bytes.size()) != 1 || outl != 32) {
    EVP_MAC_CTX_free(ctx);
    fail(ErrorKind::kCrypto, "HMAC-SHA-256 failed");
  }
  EVP_MAC_CTX_free(ctx);
  return id;
}

// A chunk box's additional data: 'C' || chunk id, so a blob cannot be passed off as another chunk. On the stack:
// one per chunk sealed or opened.
struct ChunkAad {
  explicit ChunkAad(const ChunkId& id) {
    bytes[0] = 'C';
    std::memcpy(bytes.data() + 1, id.bytes.data(), 32);
  }
  operator std::string_view() const { return {bytes.data(), bytes.size()}; }
  std::array<char, 33> bytes;
};
static ChunkAad chunk_aad(const ChunkId& id) { return ChunkAad(id); }

std::string seal_chunk(Codec::Impl& codec, const ChunkId& id, const void* data, size_t len, Compression* compression) {
  std::string& comp = codec.comp_buf;
  comp.resize(ZSTD_compressBound(len));
  size_t n = ZSTD_compress2(codec.cctx, comp.data(), comp.size(), data, len);
  const void* payload = data;
  size_t payload_len = len;
  *compression = Compression::kNone;
  // Keep the compressed form only when it saves at least 1/32 of the chunk.
  if (!ZSTD_isError(n) && n < len - len / 32) {
    payload = comp.data();
    payload_len = n;
    *compression = Compression::kZstd;
  }
  std::string out;
  seal_into(codec.cipher.ctx, codec.keys.enc.data(), chunk_aad(id), payload, payload_len, out);
  return out;
}

namespace {

// Authenticates and decrypts a chunk's box into `target` (box.size() - kBoxOverhead bytes); `where` names the pack.
void unseal_chunk(Codec::Impl& codec, const ChunkId& id, std::string_view box, unsigned char* target, const std::string& where) {
  if (!unseal_into(codec.cipher.ctx, codec.keys.enc.data(), chunk_aad(id), box, target))
    fail(ErrorKind::kCrypto, "chunk " + id.hex() + " in " + where + ": authentication failed (the data is damaged or altered, or was sealed with another key)");
}

void check_box_size(const ChunkId& id, std::string_view box, const std::string& where) {
  if (box.size() < kBoxOverhead) fail(ErrorKind::kCorrupt, "chunk " + id.hex() + " in " + where + ": stored blob is too short");
}

}  // namespace

void open_chunk(Codec::Impl& codec, const ChunkId& id, std::string_view box, Compression compression, uint32_t raw_len,
                char* out, const std::string& where) {
  check_box_size(id, box, where);
  size_t plain_len = box.size() - kBoxOverhead;
  unsigned char* target;
  if (compression == Compression::kNone) {
    if (plain_len != raw_len)
      fail(ErrorKind::kCorrupt, "chunk " + id.hex() + " in " + where + ": stored length does not match the index");
    target = reinterpret_cast<unsigned char*>(out);
  } else {
    codec.box_plain.resize(plain_len);
    target = reinterpret_cast<unsigned char*>(codec.box_plain.data());
  }
  unseal_chunk(codec, id, box, target, where);
  if (compression == Compression::kZstd) {
    size_t n = ZSTD_decompressDCtx(codec.dctx, out, raw_len, codec.box_plain.data(), plain_len);
    if (ZSTD_isError(n) || n != raw_len)
      fail(ErrorKind::kCorrupt, "chunk " + id.hex() + " in " + where + ": compressed data is damaged");
  } else if (compression != Compression::kNone) {
    fail(ErrorKind::kCorrupt, "chunk " + id.hex() + " in " + where + ": unknown compression " + std::to_string(int(compression)));
  }
}

void authenticate_chunk(Codec::Impl& codec, const ChunkId& id, std::string_view box, const std::string& where) {
  check_box_size(id, box, where);
  codec.box_plain.resize(box.size() - kBoxOverhead);
  unseal_chunk(codec, id, box, reinterpret_cast<unsigned char*>(codec.box_plain.data()), where);
}

}  // namespace ferry::store
