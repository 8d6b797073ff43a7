// disk — read any VM disk a migration meets, and write disks in the formats a target needs.
//
// A Source presents a disk's virtual contents (not its container): size, which ranges hold data and
// which read as zeros, and reads. Two implementations sit behind open_source():
//  - raw files and block devices are read directly (pread), with SEEK_DATA/SEEK_HOLE for holes;
//  - every other format (qcow2, VMDK in all its layouts, VHD, VHDX, VDI, the VMDK inside an OVA) is
//    served by a read-only qemu-nbd started for the purpose and read through libnbd, whose block status
//    (base:allocation) reports zero and unallocated ranges so they are neither read nor stored.
// A Sink writes a new disk of a given format, crash-safely: nothing appears at the target path until
// finish() has made the whole image durable.
// Thread safety: Source::read and Sink::write may be called concurrently (replication keeps several reads
// in flight); the other methods are called from one thread at a time.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace ferry::disk {

struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool zero = false;  // reads as zeros (a hole, an unallocated grain, a zero cluster)
};

struct DiskInfo {
  std::string path;         // as given
  std::string format;       // qemu's driver name: raw, qcow2, vmdk, vpc, vhdx, vdi
  std::string subformat;    // vmdk create-type, vhd "fixed"/"dynamic", or empty
  std::string container;    // "ova" when the disk sits inside an OVA, else empty
  std::string member;       // the OVA member holding the disk
  uint64_t virtual_size = 0;
  std::string describe() const;  // "vmdk (streamOptimized) in ova"
};

class Source {
 public:
  virtual ~Source() = default;
  virtual const DiskInfo& info() const = 0;
  uint64_t size() const { return info().virtual_size; }
  // Extents covering [offset, offset+length) in order, without gaps.
  virtual std::vector<Extent> extents(uint64_t offset, uint64_t length) = 0;
  // Reads exactly `len` bytes; throws naming the disk on any failure.
  virtual void read(void* buf, size_t len, uint64_t offset) = 0;
};

struct OpenOptions {
  std::string format;  // force a format (qemu driver name or alias); empty = from the extension, else probed
};

// Opens a disk. For an OVA, "file.ova#member.vmdk" opens a named disk; "file.ova" its only disk (an OVA
// with several disks must be opened member by member).
// Validates the container up front: a damaged header, a missing extent or an OVA without a disk fails
// here with a one-line message naming the file and the problem.
std::unique_ptr<Source> open_source(const std::string& spec, const OpenOptions& options = {});

// Disks inside an OVA, as member names, in the order the OVF lists them.
std::vector<std::string> ova_disks(const std::filesystem::path& ova);

enum class TargetFormat { kRaw, kQcow2, kVmdk, kVhd, kVhdFixed, kVhdx, kVdi };
// Accepts raw, qcow2, vmdk, vhd (dynamic), vhd-fixed, vhdx, vdi. Throws kInvalidArgument otherwise.
TargetFormat parse_target_format(const std::string& name);
std::string to_string(TargetFormat format);
// qemu driver name, for qemu-img compare and friends.
std::string qemu_format(TargetFormat format);

class Sink {
 public:
  virtual ~Sink() = default;  // without finish(): removes the partial image
  // Announces, before any write, every byte range that will be written (sorted, not overlapping);
  // formats laid out up front (qcow2) need it, others ignore it. Writes outside the plan are errors.
  virtual void plan(const std::vector<std::pair<uint64_t, uint64_t>>& data_ranges) { (void)data_ranges; }
  virtual void write(const void* buf, size_t len, uint64_t offset) = 0;
  // Flushes, makes durable and moves the image to its target path.
  virtual void finish() = 0;
};

// Creates a new image of `size` bytes that reads as zeros until written. Refuses to overwrite an existing file.
std::unique_ptr<Sink> create_sink(const std::filesystem::path& path, TargetFormat format, uint64_t size);

}  // namespace ferry::disk
