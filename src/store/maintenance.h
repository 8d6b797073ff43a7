// Whole-repository maintenance: check, prune, stats. Callers hold the locks named per function.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "store/repository.h"

namespace ferry {
class Progress;
}

namespace ferry::store {

struct CheckReport {
  std::vector<std::string> errors;    // anything that makes data unreadable or wrong
  std::vector<std::string> notes;     // harmless findings (packs an interrupted run left unindexed)
  // Damaged or missing chunks, each with the snapshots that reference it.
  std::map<std::string, std::vector<std::string>> damaged_chunks;
  uint64_t packs = 0, chunks = 0, snapshots = 0, bytes_read = 0;
  bool ok() const { return errors.empty(); }
};

// Verifies index files, pack headers against the index, snapshots against the index and their digests;
// with read_data also decrypts every blob and checks its chunk id. Caller holds LockKind::kRead.
CheckReport check(Repository& repo, bool read_data, Progress* progress);

// Drops the damaged chunks that `report` found from the index (new index files, written before the old
// ones are deleted), so the next replication of an affected disk stores them again instead of
// deduplicating against damaged data. Snapshots that use them stay unreadable until then. Returns the
// number of chunks dropped. Caller holds LockKind::kWrite and LockKind::kExclusive.
uint64_t repair(Repository& repo, const CheckReport& report);

struct PruneReport {
  uint64_t snapshots = 0;
  uint64_t packs_deleted = 0, packs_rewritten = 0, packs_written = 0;
  uint64_t chunks_removed = 0;
  uint64_t bytes_before = 0, bytes_after = 0;
};

// Deletes chunks no snapshot references: packs with no live chunk are deleted, packs with some are
// rewritten with only the live ones (blobs are copied, not re-encrypted). Refuses to run if any snapshot
// or index cannot be read. Caller holds LockKind::kWrite and LockKind::kExclusive.
PruneReport prune(Repository& repo);

struct StoreStats {
  uint64_t snapshots = 0, packs = 0, chunks = 0;
  uint64_t stored_bytes = 0;   // bytes of packs, index files and snapshots
  uint64_t unique_bytes = 0;   // plaintext bytes of all unique chunks
  uint64_t logical_bytes = 0;  // sum of the snapshots' disk sizes
  uint64_t data_bytes = 0;     // sum of the snapshots' non-zero chunk bytes
};
StoreStats stats(Repository& repo);

}  // namespace ferry::store
