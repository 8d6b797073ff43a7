// replicate — one replication run: read a disk, store what the store lacks, commit a snapshot.
//
// The run is a pipeline on all cores: the calling thread reads the disk's data extents in batches of
// whole chunks (zero ranges reported by the source are never read); worker threads drop all-zero
// chunks, hash the rest (keyed chunk id), and hand chunks the store lacks to the ChunkWriter, which
// compresses, encrypts and packs them. A run against a disk replicated before (same name) reads it
// again but stores only the chunks whose ids changed; the result is again a complete snapshot.
// Nothing is visible until the snapshot is saved, and a failed run removes what it wrote.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "disk/disk.h"
#include "store/repository.h"

namespace ferry {
class Progress;
}

namespace ferry::replicate {

struct Options {
  std::string name;             // the disk's identity across runs; empty = the source path made absolute
  unsigned threads = 0;         // hashing/compression workers; 0 = one per core
  Progress* progress = nullptr; // advanced by the bytes of the disk covered (data read or zero skipped)
  // When it becomes true the run stops soon (within a batch of reads) and fails with kConflict; nothing is committed.
  const std::atomic<bool>* cancel = nullptr;
};

struct Result {
  store::Snapshot snapshot;
  uint64_t snapshot_bytes = 0;  // size of the snapshot object
};

// REQUIRES: the caller holds the store's write lock.
Result replicate(disk::Source& source, store::Repository& repo, const Options& options);

}  // namespace ferry::replicate
