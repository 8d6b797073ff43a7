// Fuzzes the OVF descriptor parser (src/inventory/ova.cc): the .ovf of an unpacked appliance or inside an OVA.
// Only ferry::Error may leave; anything else (another exception, a crash, a sanitizer report) is a bug.
#include <cstdint>
#include <string>

#include "common/error.h"
#include "inventory/internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string xml(reinterpret_cast<const char*>(data), size);
  try {
    ferry::inventory::VmInfo vm;
    ferry::inventory::parse_ovf(vm, xml, "fuzz.ovf");
  } catch (const ferry::Error&) {
  }
  return 0;
}
