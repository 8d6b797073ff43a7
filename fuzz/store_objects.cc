// Fuzzes the decoders of the store's objects (docs/formats.md sections 4.2 and 8-11) with what a damaged disk, a
// planted file or a connector could hand them: the first byte picks the decoder, the rest is the object.
//   0 pack header plaintext   1 index plaintext   2 snapshot plaintext   3 a zstd frame (bounded)
//   4 a pack as a connector uploads it: parsed, then every blob verified and sealed in place by a real store
//   5 a key file (unencrypted and encrypted stores)
// A decoder may only refuse with ferry::Error; anything else (another exception, a crash, a sanitizer report) is a bug.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "common/error.h"
#include "store/crypto.h"
#include "store/format.h"
#include "store/repository.h"

namespace fs = std::filesystem;
using namespace ferry::store;

namespace {

// One real store (unencrypted) and one keyring, made once per process.
struct World {
  World() {
    dir = fs::temp_directory_path() / ("ferry-fuzz-store-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    keyring = std::make_unique<Keyring>(dir / "keyring");
    fs::create_directories(keyring->dir());
    keyring->create("k");
    InitOptions o;
    o.chunk_size = 4096;
    o.pack_size = 1 << 20;
    Repository::init(*open_local_backend(dir / "store", true), o, *keyring);
    repo = Repository::open(open_local_backend(dir / "store", false), *keyring);
  }
  ~World() { fs::remove_all(dir); }
  fs::path dir;
  std::unique_ptr<Keyring> keyring;
  std::unique_ptr<Repository> repo;
};

World& world() {
  static World w;
  return w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 6) {
      case 0: decode_pack_header(body, "pack header"); break;
      case 1: decode_index(body, "index"); break;
      case 2: decode_snapshot(body, "0123456789abcdef0123456789abcdef"); break;
      case 3: zstd_decompress(body, 1u << 24, "zstd frame"); break;
      case 4: {
        // Accepted packs are stored: a fresh name each time keeps the store's index from growing without bound.
        world().repo->receive_pack(new_object_name(), body.data(), body.size());
        break;
      }
      case 5: {
        RepositoryConfig plain;
        plain.id = "00112233445566778899aabbccddeeff";
        decode_keys(plain, body, *world().keyring, "key file");
        RepositoryConfig encrypted = plain;
        encrypted.encrypted = true;
        encrypted.key_id = "k";
        decode_keys(encrypted, body, *world().keyring, "key file");
        break;
      }
    }
  } catch (const ferry::Error&) {
  }
  return 0;
}
