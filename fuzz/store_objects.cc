// Fuzzes the decoders of the store's objects (docs/formats.md sections 9-11): the first byte picks the decoder, the
// rest is the object's plaintext (index files and snapshots are compressed first, as they are stored). A decoder
// may only refuse with ferry::Error; anything else (another exception, a crash, a sanitizer report) is a bug.
#include <cstdint>
#include <string>

#include "common/error.h"
#include "store/crypto.h"
#include "store/format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 4) {
      case 0: ferry::store::decode_pack_header(body, "pack header"); break;
      case 1: ferry::store::decode_index(ferry::store::zstd_compress(body, 1), "index"); break;
      case 2: ferry::store::decode_snapshot(ferry::store::zstd_compress(body, 1), "0123456789abcdef0123456789abcdef"); break;
      case 3: ferry::store::zstd_decompress(body, 1u << 24, "zstd frame"); break;
    }
  } catch (const ferry::Error&) {
  }
  return 0;
}
