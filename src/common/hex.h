// Hex encoding and little-endian integer packing used by the on-disk formats.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace ferry {

// The on-disk formats are little-endian and ByteWriter copies integers as they are in memory.
static_assert(std::endian::native == std::endian::little, "ferry's formats assume a little-endian host");

std::string to_hex(const void* data, size_t len);
inline std::string to_hex(std::string_view s) { return to_hex(s.data(), s.size()); }
// Throws kInvalidArgument when `hex` is not an even-length hex string.
std::string from_hex(std::string_view hex);

// Appends little-endian integers to a byte buffer, and reads them back with bounds checks.
class ByteWriter {
 public:
  void u8(uint8_t v) { buf_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) { put(&v, 4); }
  void u64(uint64_t v) { put(&v, 8); }
  void bytes(const void* p, size_t n) { put(p, n); }
  void bytes(std::string_view s) { put(s.data(), s.size()); }
  std::string& data() { return buf_; }

 private:
  void put(const void* p, size_t n) { buf_.append(static_cast<const char*>(p), n); }
  std::string buf_;
};

class ByteReader {
 public:
  // `what` names the object being parsed, for error messages.
  ByteReader(std::string_view data, std::string what) : data_(data), what_(std::move(what)) {}
  uint8_t u8() { uint8_t v; get(&v, 1); return v; }
  uint32_t u32() { uint32_t v; get(&v, 4); return v; }
  uint64_t u64() { uint64_t v; get(&v, 8); return v; }
  std::string_view bytes(size_t n);
  void get(void* out, size_t n);
  size_t remaining() const { return data_.size() - pos_; }
  bool done() const { return pos_ == data_.size(); }

 private:
  std::string_view data_;
  size_t pos_ = 0;
  std::string what_;
};

std::string human_bytes(uint64_t n);

}  // namespace ferry
