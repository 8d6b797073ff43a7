// The backend-independent half of the catalog: ids, page tokens, JSON columns and enum names.
#include "catalog/catalog.h"

#include <algorithm>

#include <nlohmann/json.hpp>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "catalog/catalog_internal.h"
#include "common/error.h"
#include "common/hex.h"

namespace ferry::catalog {

std::string Catalog::new_id(const std::string& prefix) {
  unsigned char raw[9];  // 72 random bits; 68 of them become the 17 hex digits
  if (RAND_bytes(raw, sizeof raw) != 1) {
    char reason[256];
    ERR_error_string_n(ERR_get_error(), reason, sizeof reason);
    fail(ErrorKind::kCrypto, "new id '" + prefix + "…': the random number generator failed: " + reason);
  }
  return prefix + to_hex(raw, sizeof raw).substr(0, 17);
}

const char* to_string(CatalogStatus status) {
  switch (status) {
    case CatalogStatus::kNotImported: return "NOT_IMPORTED";
    case CatalogStatus::kImporting: return "IMPORTING";
    case CatalogStatus::kAvailable: return "AVAILABLE";
    case CatalogStatus::kDeleted: return "DELETED";
  }
  return "NOT_IMPORTED";
}

namespace internal {

using nlohmann::json;

int page_size(const PageRequest& page) { return std::clamp(page.max_results, 1, kMaxPageSize); }

std::string encode_token(const std::string& list, const std::vector<std::string>& key) {
  json j = json::array({list});
  for (auto& k : key) j.push_back(k);
  return to_hex(j.dump());
}

void fail_bad_token(const std::string& token, const std::string& list) {
  fail(ErrorKind::kInvalidArgument, "nextToken '" + token + "' is not valid (not one this " + list + " listing issued)");
}

std::optional<std::vector<std::string>> decode_token(const std::string& token, const std::string& list,
                                                     size_t key_fields) {
  if (token.empty()) return std::nullopt;
  std::string text;
  try {
    text = from_hex(token);
  } catch (const Error&) {
    fail_bad_token(token, list);
  }
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array() || j.size() != key_fields + 1 || j[0] != list) fail_bad_token(token, list);
  std::vector<std::string> key;
  for (size_t i = 1; i < j.size(); i++) {
    if (!j[i].is_string()) fail_bad_token(token, list);
    key.push_back(j[i].get<std::string>());
  }
  return key;
}

namespace {

json parse_column(const std::string& text, const std::string& what) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_array()) fail(ErrorKind::kCorrupt, what + ": stored JSON is not an array: " + text);
  return j;
}

template <class T>
T field(const json& o, const char* name, const std::string& what) {
  auto it = o.find(name);
  if (it == o.end()) fail(ErrorKind::kCorrupt, what + ": stored JSON lacks '" + name + "'");
  try {
    return it->get<T>();
  } catch (const json::exception& e) {
    fail(ErrorKind::kCorrupt, what + ": stored JSON field '" + name + "': " + e.what());
  }
}

}  // namespace

std::string disks_to_json(const std::vector<Disk>& disks) {
  json j = json::array();
  for (auto& d : disks) j.push_back({{"name", d.name}, {"path", d.path}, {"format", d.format}, {"size", d.size}});
  return j.dump();
}

std::vector<Disk> disks_from_json(const std::string& text, const std::string& what) {
  std::vector<Disk> disks;
  for (auto& o : parse_column(text, what)) {
    if (!o.is_object()) fail(ErrorKind::kCorrupt, what + ": stored disk is not a JSON object");
    disks.push_back({field<std::string>(o, "name", what), field<std::string>(o, "path", what),
                     field<std::string>(o, "format", what), field<uint64_t>(o, "size", what)});
  }
  return disks;
}

std::string image_disks_to_json(const std::vector<ImageDisk>& disks) {
  json j = json::array();
  for (auto& d : disks) j.push_back({{"name", d.name}, {"snapshot_id", d.snapshot_id}, {"size", d.size}});
  return j.dump();
}

std::vector<ImageDisk> image_disks_from_json(const std::string& text, const std::string& what) {
  std::vector<ImageDisk> disks;
  for (auto& o : parse_column(text, what)) {
    if (!o.is_object()) fail(ErrorKind::kCorrupt, what + ": stored image disk is not a JSON object");
    disks.push_back({field<std::string>(o, "name", what), field<std::string>(o, "snapshot_id", what),
                     field<uint64_t>(o, "size", what)});
  }
  return disks;
}

std::string strings_to_json(const std::vector<std::string>& strings) { return json(strings).dump(); }

std::vector<std::string> strings_from_json(const std::string& text, const std::string& what) {
  std::vector<std::string> out;
  for (auto& s : parse_column(text, what)) {
    if (!s.is_string()) fail(ErrorKind::kCorrupt, what + ": stored list holds a non-string: " + text);
    out.push_back(s.get<std::string>());
  }
  return out;
}

CatalogStatus catalog_status_from_string(const std::string& name, const std::string& what) {
  for (auto s : {CatalogStatus::kNotImported, CatalogStatus::kImporting, CatalogStatus::kAvailable, CatalogStatus::kDeleted})
    if (name == to_string(s)) return s;
  fail(ErrorKind::kCorrupt, what + ": unknown catalog status '" + name + "'");
}

}  // namespace internal
}  // namespace ferry::catalog
