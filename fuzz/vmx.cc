// Fuzzes the .vmx parser and the disk list taken from it (src/inventory/vmware.cc): any text a datastore holds.
// Only ferry::Error may leave; anything else (another exception, a crash, a sanitizer report) is a bug.
#include <cstdint>
#include <string>

#include "common/error.h"
#include "inventory/internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  try {
    auto vmx = ferry::inventory::parse_vmx(text, "fuzz.vmx");
    if (vmx.error.empty()) ferry::inventory::vmx_disks(vmx, "/datastore/vm");
  } catch (const ferry::Error&) {
  }
  return 0;
}
