// image — turn a snapshot back into a disk image (raw, qcow2, vmdk, vhd, vhdx, vdi).
//
// Only data chunks are written; zero ranges stay unallocated in formats that allow it. Every chunk is
// authenticated as it is read: a damaged chunk stops the export with an error naming it, and the
// partial image is removed, so an export either is bit-identical to the source or does not exist.
#pragma once

#include <cstdint>

#include "disk/disk.h"
#include "store/repository.h"

namespace ferry {
class Progress;
}

namespace ferry::image {

struct ExportOptions {
  unsigned threads = 0;          // 0 = one per core
  Progress* progress = nullptr;  // advanced by bytes of the disk written or skipped
};

struct ExportResult {
  uint64_t bytes_written = 0;  // data bytes written into the image
  double seconds = 0;
};

// REQUIRES: the caller holds the store's read lock. Calls sink.finish() on success.
ExportResult export_snapshot(store::Repository& repo, const store::Snapshot& snapshot, disk::Sink& sink, const ExportOptions& options);

}  // namespace ferry::image
