// Pieces every catalog backend shares and no caller needs: page tokens, the JSON kept in text columns,
// and the names enums are stored under. Private to src/catalog/.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "catalog/catalog.h"

namespace ferry::catalog::internal {

inline constexpr int kMaxPageSize = 1000;

// PageRequest::max_results clamped to [1, kMaxPageSize].
int page_size(const PageRequest& page);

// A page token names the list it belongs to ("servers", "runs", ...) and the sort key of the last item
// returned (one string per key column), so a page is stable under concurrent inserts.
std::string encode_token(const std::string& list, const std::vector<std::string>& key);
// The key in `token`, or nullopt for an empty token (the first page). Throws kInvalidArgument
// "nextToken '<token>' is not valid" if it is malformed, was issued by another list, or has a key of
// another length than `key_fields`.
std::optional<std::vector<std::string>> decode_token(const std::string& token, const std::string& list,
                                                     size_t key_fields);
// Throws that kInvalidArgument, for a backend that finds a decoded key unusable.
[[noreturn]] void fail_bad_token(const std::string& token, const std::string& list);

// JSON text columns. The decoders throw kCorrupt naming `what` (the row) when the text is not what the
// encoder writes.
std::string disks_to_json(const std::vector<Disk>& disks);
std::vector<Disk> disks_from_json(const std::string& text, const std::string& what);
std::string image_disks_to_json(const std::vector<ImageDisk>& disks);
std::vector<ImageDisk> image_disks_from_json(const std::string& text, const std::string& what);
std::string strings_to_json(const std::vector<std::string>& strings);
std::vector<std::string> strings_from_json(const std::string& text, const std::string& what);

// Throws kCorrupt naming `what` for an unknown name.
CatalogStatus catalog_status_from_string(const std::string& name, const std::string& what);

}  // namespace ferry::catalog::internal
