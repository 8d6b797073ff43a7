// Fuzzes the VMDK descriptor reader the confinement check trusts as much as qemu's own (src/inventory/confine.cc):
// the input is the start of an image file. Where the header says the descriptor is, the rest is parsed as one.
// Only ferry::Error may leave; anything else (another exception, a crash, a sanitizer report) is a bug.
#include <cstdint>
#include <string_view>

#include "common/error.h"
#include "inventory/internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view image(reinterpret_cast<const char*>(data), size);
  try {
    for (bool forced : {false, true}) {
      auto at = ferry::inventory::vmdk_descriptor_at(image.substr(0, 2048), forced);
      if (at && at->offset < image.size()) ferry::inventory::parse_vmdk_descriptor(image.substr(at->offset, at->length));
    }
    ferry::inventory::parse_vmdk_descriptor(image);
  } catch (const ferry::Error&) {
  }
  return 0;
}
