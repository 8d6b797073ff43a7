// OpenSSL (AES-256-GCM, HMAC-SHA-256, SHA-256, DRBG) and zstd behind the Codec.
#include "store/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <zstd.h>

#include <climits>
#include <cstring>

#include "common/buffer.h"
#include "common/error.h"

namespace ferry::store {

namespace {

struct CipherCtx {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  ~CipherCtx() { EVP_CIPHER_CTX_free(ctx); }
};

// OpenSSL's update calls take an int length: larger inputs go in pieces of at most 1 GiB.
constexpr size_t kPiece = size_t{1} << 30;

bool encrypt_update(EVP_CIPHER_CTX* ctx, unsigned char* out, const unsigned char* in, size_t len) {
  for (size_t done = 0; done < len;) {
    int n = static_cast<int>(std::min(kPiece, len - done)), got = 0;
    if (EVP_EncryptUpdate(ctx, out ? out + done : nullptr, &got, in + done, n) != 1) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

bool decrypt_update(EVP_CIPHER_CTX* ctx, unsigned char* out, const unsigned char* in, size_t len) {
  for (size_t done = 0; done < len;) {
    int n = static_cast<int>(std::min(kPiece, len - done)), got = 0;
    if (EVP_DecryptUpdate(ctx, out ? out + done : nullptr, &got, in + done, n) != 1) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Seals `len` bytes at `pt` into o[kNonceSize .. kNonceSize+len) and writes nonce and tag around them; `pt` may be
// o + kNonceSize (in place).
void seal_at(EVP_CIPHER_CTX* ctx, const uint8_t key[32], std::string_view aad, const void* pt, size_t len, unsigned char* o) {
  random_bytes(o, kNonceSize);
  int f = 0;
  if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key, o) != 1 ||
      !encrypt_update(ctx, nullptr, reinterpret_cast<const unsigned char*>(aad.data()), aad.size()) ||
      !encrypt_update(ctx, o + kNonceSize, static_cast<const unsigned char*>(pt), len) ||
      EVP_EncryptFinal_ex(ctx, o + kNonceSize + len, &f) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kTagSize, o + kNonceSize + len) != 1)
    fail(ErrorKind::kCrypto, "AES-256-GCM encryption failed");
}

void seal_into(EVP_CIPHER_CTX* ctx, const uint8_t key[32], std::string_view aad, const void* pt, size_t len, std::string& out) {
  out.resize(kNonceSize + len + kTagSize);
  seal_at(ctx, key, aad, pt, len, reinterpret_cast<unsigned char*>(out.data()));
}

// Returns false if the tag does not verify.
bool unseal_into(EVP_CIPHER_CTX* ctx, const uint8_t key[32], std::string_view aad, std::string_view box, unsigned char* out) {
  if (box.size() < kBoxOverhead) return false;
  const auto* b = reinterpret_cast<const unsigned char*>(box.data());
  size_t len = box.size() - kBoxOverhead;
  int f = 0;
  if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key, b) != 1 ||
      !decrypt_update(ctx, nullptr, reinterpret_cast<const unsigned char*>(aad.data()), aad.size()) ||
      !decrypt_update(ctx, out, b + kNonceSize, len) ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kTagSize, const_cast<unsigned char*>(b + kNonceSize + len)) != 1)
    return false;
  return EVP_DecryptFinal_ex(ctx, out + len, &f) == 1;
}

}  // namespace

void random_bytes(void* out, size_t len) {
  for (size_t done = 0; done < len;) {
    int n = static_cast<int>(std::min(kPiece, len - done));
    if (RAND_bytes(static_cast<unsigned char*>(out) + done, n) != 1) fail(ErrorKind::kCrypto, "the random number generator failed");
    done += static_cast<size_t>(n);
  }
}

void wipe(void* p, size_t n) { OPENSSL_cleanse(p, n); }

DataKeys::~DataKeys() {
  wipe(id.data(), id.size());
  for (auto& k : data) wipe(k.data(), k.size());
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

void seal_in_place(const uint8_t key[32], std::string_view aad, char* box, size_t box_len) {
  CipherCtx c;
  seal_at(c.ctx, key, aad, box + kNonceSize, box_len - kBoxOverhead, reinterpret_cast<unsigned char*>(box));
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
  // Exactly one frame: bytes after it (another frame, a skippable one) would be data nobody checks.
  if (ZSTD_findFrameCompressedSize(data.data(), data.size()) != data.size())
    fail(ErrorKind::kCorrupt, what + ": bytes follow the zstd frame");
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
  EVP_MAC_CTX* mac_ctx = nullptr;
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  std::string comp_buf;
  AlignedBuffer scratch, plain;
  size_t scratch_size = 0, plain_size = 0;
  char* plain_buffer(size_t n) {
    if (plain_size < n) {
      plain = make_aligned_buffer(n);
      plain_size = n;
    }
    return plain.get();
  }
};

char* codec_scratch(Codec::Impl& codec, size_t n) {
  if (codec.scratch_size < n) {
    codec.scratch = make_aligned_buffer(n);
    codec.scratch_size = n;
  }
  return codec.scratch.get();
}

Codec::Impl::~Impl() {
  EVP_MAC_CTX_free(mac_ctx);
  EVP_MAC_free(mac);
  ZSTD_freeCCtx(cctx);
  ZSTD_freeDCtx(dctx);
}

std::unique_ptr<Codec::Impl> make_codec(const DataKeys& keys, int zstd_level) {
  auto impl = std::make_unique<Codec::Impl>();
  impl->keys = keys;
  impl->level = zstd_level;
  impl->mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  impl->mac_ctx = impl->mac ? EVP_MAC_CTX_new(impl->mac) : nullptr;
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", const_cast<char*>("SHA256"), 0), OSSL_PARAM_construct_end()};
  if (!impl->mac_ctx || EVP_MAC_init(impl->mac_ctx, impl->keys.id.data(), 32, params) != 1)
    fail(ErrorKind::kCrypto, "cannot set up HMAC-SHA-256");
  ZSTD_CCtx_setParameter(impl->cctx, ZSTD_c_compressionLevel, zstd_level);
  return impl;
}

std::unique_ptr<Codec> Repository::new_codec() const { return std::unique_ptr<Codec>(new Codec(make_codec(keys_, config_.zstd_level))); }

Codec::Codec(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Codec::~Codec() = default;

namespace {

// HMAC-SHA-256 under the id key. The codec's context is keyed once; re-initialising it without a key restarts it
// from the keyed state (no allocation per chunk).
ChunkId hmac_id(Codec::Impl& c, const void* data, size_t len) {
  ChunkId id;
  size_t outl = 0;
  if (EVP_MAC_init(c.mac_ctx, nullptr, 0, nullptr) != 1 || EVP_MAC_update(c.mac_ctx, static_cast<const unsigned char*>(data), len) != 1 ||
      EVP_MAC_final(c.mac_ctx, id.bytes.data(), &outl, id.bytes.size()) != 1 || outl != 32)
    fail(ErrorKind::kCrypto, "HMAC-SHA-256 failed");
  return id;
}

// A chunk box's additional data: 'C' || chunk id || compression || raw_len (u32 LE). A blob can be passed off neither
// as another chunk nor as the same chunk stored another way (the index's compression and length are authenticated
// with it). On the stack: one per chunk sealed or opened.
struct ChunkAad {
  ChunkAad(const ChunkId& id, Compression compression, uint32_t raw_len) {
    bytes[0] = 'C';
    std::memcpy(bytes.data() + 1, id.bytes.data(), 32);
    bytes[33] = static_cast<char>(compression);
    std::memcpy(bytes.data() + 34, &raw_len, 4);
  }
  operator std::string_view() const { return {bytes.data(), bytes.size()}; }
  std::array<char, 38> bytes;
};

const uint8_t* data_key(const Codec::Impl& codec, uint32_t key, const std::string& where) {
  if (key >= codec.keys.data.size())
    fail(ErrorKind::kCorrupt, where + ": sealed with data key " + std::to_string(key) + ", which this store's key file does not have");
  return codec.keys.data[key].data();
}

std::string chunk_where(const ChunkId& id, const std::string& where) { return "chunk " + id.hex() + " in " + where; }

// Decompresses `payload` into `out` (exactly raw_len bytes) or copies it; throws kCorrupt.
void expand(Codec::Impl& codec, const ChunkId& id, std::string_view payload, Compression compression, uint32_t raw_len, char* out,
            const std::string& where) {
  if (compression == Compression::kNone) {
    if (payload.size() != raw_len) fail(ErrorKind::kCorrupt, chunk_where(id, where) + ": stored length does not match the index");
    if (payload.data() != out) std::memcpy(out, payload.data(), raw_len);
  } else if (compression == Compression::kZstd) {
    // One frame that decompresses to exactly raw_len bytes, with nothing after it.
    if (ZSTD_findFrameCompressedSize(payload.data(), payload.size()) != payload.size())
      fail(ErrorKind::kCorrupt, chunk_where(id, where) + ": compressed data is damaged or has bytes after its frame");
    size_t n = ZSTD_decompressDCtx(codec.dctx, out, raw_len, payload.data(), payload.size());
    if (ZSTD_isError(n) || n != raw_len) fail(ErrorKind::kCorrupt, chunk_where(id, where) + ": compressed data is damaged");
  } else {
    fail(ErrorKind::kCorrupt, chunk_where(id, where) + ": unknown compression " + std::to_string(int(compression)));
  }
}

void check_id(Codec::Impl& codec, const ChunkId& id, const char* data, uint32_t len, const std::string& where) {
  if (!(hmac_id(codec, data, len) == id)) fail(ErrorKind::kCorrupt, chunk_where(id, where) + ": content does not hash to its id");
}

}  // namespace

ChunkId Codec::chunk_id(const void* data, size_t len) { return hmac_id(*impl_, data, len); }

void seal_chunk(Codec::Impl& codec, const ChunkId& id, const void* data, size_t len, Compression* compression, std::string& out) {
  if (len > UINT32_MAX) fail(ErrorKind::kInvalidArgument, "chunk of " + std::to_string(len) + " bytes is too large");
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
  if (codec.keys.data.empty()) {
    // A connector's view: the server verifies and seals it (verify_and_seal_chunk).
    out.assign(kNonceSize, '\0');
    out.append(static_cast<const char*>(payload), payload_len);
    out.append(kTagSize, '\0');
    return;
  }
  seal_into(codec.cipher.ctx, codec.keys.data.back().data(), ChunkAad(id, *compression, static_cast<uint32_t>(len)), payload, payload_len,
            out);
}

void open_chunk(Codec::Impl& codec, uint32_t key, const ChunkId& id, std::string_view box, Compression compression, uint32_t raw_len,
                char* out, const std::string& where) {
  if (box.size() < kBoxOverhead) fail(ErrorKind::kCorrupt, chunk_where(id, where) + ": stored blob is too short");
  size_t plain_len = box.size() - kBoxOverhead;
  const uint8_t* k = data_key(codec, key, where);
  // Uncompressed chunks decrypt straight into `out` (their length is checked first), compressed ones into scratch.
  char* target;
  if (compression == Compression::kNone) {
    if (plain_len != raw_len) fail(ErrorKind::kCorrupt, chunk_where(id, where) + ": stored length does not match the index");
    target = out;
  } else {
    target = codec.plain_buffer(plain_len);
  }
  if (!unseal_into(codec.cipher.ctx, k, ChunkAad(id, compression, raw_len), box, reinterpret_cast<unsigned char*>(target)))
    fail(ErrorKind::kCrypto, chunk_where(id, where) +
                                 ": authentication failed (the data is damaged or altered, or was sealed with another key)");
  expand(codec, id, std::string_view(target, plain_len), compression, raw_len, out, where);
  check_id(codec, id, out, raw_len, where);
}

void verify_and_seal_chunk(Codec::Impl& codec, uint32_t key, const ChunkId& id, char* box, size_t box_len, Compression compression,
                           uint32_t raw_len, const std::string& where) {
  if (box_len < kBoxOverhead) fail(ErrorKind::kCorrupt, chunk_where(id, where) + ": blob is too short");
  size_t payload_len = box_len - kBoxOverhead;
  std::string_view payload(box + kNonceSize, payload_len);
  if (compression == Compression::kNone) {
    if (payload_len != raw_len) fail(ErrorKind::kCorrupt, chunk_where(id, where) + ": its length does not match its entry");
    check_id(codec, id, payload.data(), raw_len, where);
  } else {
    char* plain = codec.plain_buffer(raw_len);
    expand(codec, id, payload, compression, raw_len, plain, where);
    check_id(codec, id, plain, raw_len, where);
  }
  seal_at(codec.cipher.ctx, data_key(codec, key, where), ChunkAad(id, compression, raw_len), box + kNonceSize, payload_len,
          reinterpret_cast<unsigned char*>(box));
}

}  // namespace ferry::store
