// Hex and byte packing.
#include "common/hex.h"

#include <cstdio>

#include "common/error.h"

namespace ferry {

std::string to_hex(const void* data, size_t len) {
  static const char* digits = "0123456789abcdef";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string out(len * 2, '0');
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  return out;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string from_hex(std::string_view hex) {
  if (hex.size() % 2) fail(ErrorKind::kInvalidArgument, "'" + std::string(hex) + "' is not a hex string (odd length)");
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); i++) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) fail(ErrorKind::kInvalidArgument, "'" + std::string(hex) + "' is not a hex string");
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return out;
}

std::string_view ByteReader::bytes(size_t n) {
  if (n > remaining()) fail(ErrorKind::kCorrupt, what_ + ": truncated (need " + std::to_string(n) + " bytes at offset " + std::to_string(pos_) + ")");
  auto v = data_.substr(pos_, n);
  pos_ += n;
  return v;
}

void ByteReader::get(void* out, size_t n) {
  auto v = bytes(n);
  std::memcpy(out, v.data(), n);
}

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 5) { v /= 1024; u++; }
  char buf[32];
  if (u == 0) std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
  else std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace ferry
